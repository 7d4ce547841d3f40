"""Discretisation: a new hybrid that keeps, per block, only the components that matter.

The result runs only the kept blocks (pruned layers, projectors, embeddings and heads are not built),
its weights are the kept weights renormalised (mode "fixed"), and `config.block_components` /
`config.pruning` record what was done, so it saves and loads like any hybrid.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from mad_models.hybrid.modeling import ManticoreForCausalLM


def choose_blocks(
    weights: torch.Tensor, allowed: list[list[int]], threshold: float | None
) -> list[list[int]]:
    """Per block, the components whose weight is >= threshold (the argmax when none is, or threshold=None)."""
    kept = []
    for i, row in enumerate(weights):
        best = max(allowed[i], key=lambda m: float(row[m]))
        keep = [best] if threshold is None else [m for m in allowed[i] if float(row[m]) >= threshold]
        kept.append(keep or [best])
    return kept


def prune_hybrid(model: ManticoreForCausalLM, threshold: float | None) -> ManticoreForCausalLM:
    """See `ManticoreForCausalLM.prune` (threshold) and `.discretize` (threshold=None: argmax per block)."""
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    cfg = model.config
    weights = model.mixture.expected_weights().float().cpu()  # (n_blocks, K), no Gumbel noise
    kept_old = choose_blocks(weights, cfg.kept(), threshold)
    used = sorted({m for block in kept_old for m in block})
    new_index = {old: new for new, old in enumerate(used)}
    kept = [sorted(new_index[m] for m in block) for block in kept_old]

    d = cfg.to_dict()
    for key in ("model_type", "transformers_version", "architectures"):
        d.pop(key, None)
    pick = lambda seq: [seq[m] for m in used] if seq is not None else None  # noqa: E731
    widths = [model.component_wrappers[m].hidden_size for m in used]
    mixes = any(len(b) > 1 for b in kept)
    d.update(
        components=pick(cfg.components),
        component_names=pick(cfg.component_names),
        component_revisions=pick(cfg.component_revisions),
        layer_map=pick(cfg.layer_map),
        fresh_embeddings=pick(cfg.fresh_embeddings),
        block_components=kept,
        mixture_mode="fixed",
        # projectors map from D, so D stays unless no block mixes any more
        hidden_size=cfg.hidden_size if mixes else max(widths),
        vocab_size=max(model.component_wrappers[m].vocab_size for m in used),
        pruning={
            "method": "argmax" if threshold is None else "threshold",
            "threshold": threshold,
            "from_components": cfg.component_names,
            "from_weights": weights.tolist(),
            "kept": [[cfg.component_names[m] if cfg.component_names else m for m in b] for b in kept_old],
            "previous": cfg.pruning,
        },
    )
    new_cfg = type(cfg)(**d)
    pruned = type(model)(new_cfg).to(device=model.device, dtype=model.dtype)

    # carry the weights over, renaming component and projector indices
    def rename(key: str) -> str | None:
        match = re.match(r"components\.(\d+)\.(.*)", key)
        if match:
            old = int(match.group(1))
            return f"components.{new_index[old]}.{match.group(2)}" if old in new_index else None
        match = re.match(r"(proj_in|proj_out)\.c(\d+)_b(\d+)\.(.*)", key)
        if match:
            old = int(match.group(2))
            return (
                f"{match.group(1)}.c{new_index[old]}_b{match.group(3)}.{match.group(4)}"
                if old in new_index
                else None
            )
        return None

    state = {}
    for key, value in model.state_dict().items():
        new_key = rename(key)
        if new_key is not None:
            state[new_key] = value
    target = pruned.state_dict()
    missing = [k for k in target if k not in state and not k.startswith("mixture.")]
    if missing:
        raise RuntimeError(f"pruning could not carry over {missing[:8]}")
    pruned.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)

    new_w = torch.zeros(cfg.n_blocks, len(used))
    for i, block in enumerate(kept_old):
        total = sum(float(weights[i, m]) for m in block)
        for m in block:
            new_w[i, new_index[m]] = float(weights[i, m]) / total
    pruned.mixture.set_weights(new_w, mode="fixed")
    pruned.generation_config = model.generation_config
    return pruned.train(model.training)
