"""Parameter and FLOPs-per-token accounting for a hybrid, against each component on its own.

FLOPs/token counts 2 per weight of every matmul a token goes through (linear and convolution weights,
projectors, LM heads; embedding lookups are free), plus attention scores (4 * context * d per attention
layer) and the SSM scan (about 9 * d_inner * d_state per Mamba layer). Elementwise work is ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mad_models.hybrid.components import Component, PrunedLayer, family_for

if TYPE_CHECKING:
    from mad_models.hybrid.modeling import ManticoreForCausalLM


def matmul_flops(module: nn.Module) -> float:
    """2 FLOPs per weight of each linear / convolution (incl. transformers' Conv1D) in `module`."""
    total = 0
    for sub in module.modules():
        if isinstance(sub, nn.Embedding):
            continue
        weight = getattr(sub, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2 and "Norm" not in type(sub).__name__:
            total += weight.numel()
    return 2.0 * total


def _params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def _layer_flops(component: Component, layer: int, context: int) -> float:
    return matmul_flops(component.layers[layer]) + component.extra_flops_per_token(layer, context)


def standalone_cost(config, context: int) -> dict:
    """Params and FLOPs/token of a component on its own, computed on the meta device (no memory)."""
    with torch.device("meta"):
        model = family_for(config).model_class(config)
    component = family_for(config)(model)
    flops = sum(_layer_flops(component, i, context) for i in range(component.num_layers))
    flops += matmul_flops(component.lm_head)
    return {"params": _params(model), "flops_per_token": flops}


def cost_report(model: ManticoreForCausalLM, context: int = 1024) -> dict:
    """Costs of `model`: {"params": ..., "flops_per_token": ..., "standalone": ..., "relative_flops": ...}.

    Example:
    ```python
    >>> report = hybrid.cost_report()  # doctest: +SKIP
    >>> report["flops_per_token"]["total"], report["params"]["per_block"][0]  # doctest: +SKIP
    ```
    """
    cfg = model.config
    names = list(cfg.component_names or [f"component{m}" for m in range(cfg.num_components)])
    labels = [n if names.count(n) == 1 else f"{n}#{m}" for m, n in enumerate(names)]
    kept = cfg.kept()
    last = cfg.n_blocks - 1

    per_block = []
    comp_flops = {label: 0.0 for label in labels}
    for i in range(cfg.n_blocks):
        block = {"components": {}, "component_flops": {}, "projector_params": 0, "projector_flops": 0.0}
        for m in kept[i]:
            component = model.component_wrappers[m]
            start, end = cfg.blocks_of(m)[i]
            layers = [
                component.layers[j]
                for j in range(start, end)
                if not isinstance(component.layers[j], PrunedLayer)
            ]
            block["components"][labels[m]] = sum(_params(layer) for layer in layers)
            flops = sum(_layer_flops(component, j, context) for j in range(start, end))
            block["component_flops"][labels[m]] = flops
            comp_flops[labels[m]] += flops
            key = model._key(m, i)
            for proj in (model.proj_in, model.proj_out):
                if key in proj:
                    block["projector_params"] += _params(proj[key])
                    block["projector_flops"] += matmul_flops(proj[key])
        block["flops_per_token"] = sum(block["component_flops"].values()) + block["projector_flops"]
        per_block.append(block)

    head_flops = 0.0
    for m in kept[last]:
        flops = matmul_flops(model.component_wrappers[m].lm_head)
        comp_flops[labels[m]] += flops
        head_flops += flops
    proj_params = sum(p.numel() for p in model.projector_parameters())
    proj_flops = sum(b["projector_flops"] for b in per_block)
    total_flops = sum(comp_flops.values()) + proj_flops

    standalone = {
        labels[m]: standalone_cost(cfg.component_config(m), context) for m in range(cfg.num_components)
    }
    return {
        "context": context,
        "params": {
            "total": sum(p.numel() for p in model.parameters()),
            "components": {labels[m]: _params(c) for m, c in enumerate(model.components)},
            "projectors": proj_params,
            "mixture": model.mixture.alphas.numel(),
            "per_block": [
                {"components": b["components"], "projectors": b["projector_params"]} for b in per_block
            ],
        },
        "flops_per_token": {
            "total": total_flops,
            "components": comp_flops,
            "projectors": proj_flops,
            "heads": head_flops,
            "per_block": [
                {
                    "components": b["component_flops"],
                    "projectors": b["projector_flops"],
                    "total": b["flops_per_token"],
                }
                for b in per_block
            ],
        },
        "standalone": standalone,
        "relative_flops": {k: total_flops / v["flops_per_token"] for k, v in standalone.items()},
    }


def flatten_report(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested report (dicts, lists of dicts) as one flat {"a / b / c": value} table; number lists stay."""
    out: dict[str, Any] = {}
    items = d.items() if isinstance(d, dict) else enumerate(d)
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, (dict, list)) and v and not all(isinstance(x, (int, float)) for x in v):
            out.update(flatten_report(v, key + " / "))
        else:
            out[key] = v
    return out
