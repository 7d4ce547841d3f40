"""Exact parameter and size accounting for an adapter (MoRe, LoRA or any PEFT tuner that injects layers)."""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass, field
from typing import Any

import safetensors.torch
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from peft.utils.other import AuxiliaryTrainingWrapper
from torch import nn
from transformers.pytorch_utils import Conv1D

from mad_models.monarch import monarch_param_count
from mad_models.peft_saving import embedding_targeted

from .layer import MoReLayer, in_out_features


@dataclass
class AdapterReport:
    """What one adapter adds to its base model. All counts are exact numbers of tensor entries.

    Attributes:
        peft_type: e.g. ``"MORE"`` or ``"LORA"``.
        adapter_name: which adapter of the model this describes.
        modules: one dict per adapted module: ``name`` (path in the base model), ``type`` (last path part,
            e.g. ``"q_proj"``), ``in_features``, ``out_features``, ``params`` (entries stored),
            ``padding_params`` (of those, entries that only touch MoRe's zero padding: 0 for LoRA and when
            ``nblocks`` divides both sizes). Modules trained in full (``modules_to_save``) have
            ``type="modules_to_save"``.
        trainable_params: every entry the adapter saves (adapter factors plus ``modules_to_save``).
        bytes_on_disk: exact size of the ``adapter_model.safetensors`` that ``save_pretrained`` writes.
        base_params: parameters of the base model without any adapter (4-bit weights counted unpacked).
        percent_of_base: ``100 * trainable_params / base_params``.
        lora_rank_equivalent: LoRA rank with the same count on the same targets,
            ``adapter params / sum(in + out)`` (``modules_to_save`` excluded; ``k*r`` for MoRe, no padding).
        padding_params: total of the per-module ``padding_params`` (included in ``trainable_params``).
    """

    peft_type: str
    adapter_name: str
    modules: list[dict[str, Any]] = field(default_factory=list)
    trainable_params: int = 0
    bytes_on_disk: int = 0
    base_params: int = 0
    percent_of_base: float = 0.0
    lora_rank_equivalent: float = 0.0
    padding_params: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        """A short summary table and the per-module table, as GitHub markdown."""
        lines = [
            f"**{self.peft_type}** adapter `{self.adapter_name}`",
            "",
            "| trainable params | % of base | base params | bytes on disk | LoRA-rank equivalent |",
            "|---:|---:|---:|---:|---:|",
            f"| {self.trainable_params:,} | {self.percent_of_base:.4f}% | {self.base_params:,} | "
            f"{self.bytes_on_disk:,} | {self.lora_rank_equivalent:.2f} |",
        ]
        if self.padding_params:
            lines += [
                "",
                f"{self.padding_params:,} of the trainable params only touch zero padding (nblocks does "
                "not divide some layer sizes).",
            ]
        lines += ["", "| module | type | in | out | params |", "|---|---|---:|---:|---:|"]
        for m in self.modules:
            shape = (m["in_features"], m["out_features"])
            lines.append(
                f"| `{m['name']}` | {m['type']} | {shape[0] if shape[0] is not None else '-'} | "
                f"{shape[1] if shape[1] is not None else '-'} | {m['params']:,} |"
            )
        return "\n".join(lines)


def _numel(p: torch.Tensor) -> int:
    n = p.numel()
    if p.__class__.__name__ == "Params4bit":  # bitsandbytes packs two 4-bit values per byte
        n *= 2 * getattr(getattr(p, "quant_storage", None), "itemsize", 1)
    return n


def _safetensors_size(state_dict: dict[str, torch.Tensor]) -> int:
    # the same preparation PeftModel.save_pretrained does: no aliased storage, contiguous tensors
    seen: dict[Any, int] = collections.Counter()
    prepared = {}
    for name, t in state_dict.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape))
        seen[key] += 1
        prepared[name] = (t.clone() if seen[key] > 1 else t).contiguous()
    return len(safetensors.torch.save(prepared, metadata={"format": "pt"}))


def adapter_report(peft_model: nn.Module, adapter_name: str | None = None) -> AdapterReport:
    """Count what an adapter adds to its base model, exactly.

    Works for any ``PeftModel`` whose tuner injects layers (MoRe, LoRA, ...), so MoRe and LoRA can be compared
    with the same numbers.

    Example:
        >>> import peft, mad_models
        >>> from mad_models.more import MoReConfig, adapter_report
        >>> # model = peft.get_peft_model(base, MoReConfig(target_modules=["q_proj", "v_proj"]))
        >>> # rep = adapter_report(model); rep.trainable_params, rep.bytes_on_disk, rep.lora_rank_equivalent
        >>> # print(rep.to_markdown())
    """
    if not hasattr(peft_model, "peft_config") or not hasattr(peft_model, "get_base_model"):
        raise TypeError(f"adapter_report needs a peft.PeftModel, got {type(peft_model).__name__}")
    adapter_name = adapter_name or peft_model.active_adapter
    if adapter_name not in peft_model.peft_config:
        raise ValueError(
            f"no adapter named {adapter_name!r}; this model has {sorted(peft_model.peft_config)}"
        )
    config = peft_model.peft_config[adapter_name]
    base = peft_model.get_base_model()

    modules: list[dict[str, Any]] = []
    for name, module in base.named_modules():
        if isinstance(module, BaseTunerLayer):
            count = sum(p.numel() for p in _adapter_params(module, adapter_name))
            if not count:
                continue
            padding = 0
            if isinstance(module, MoReLayer):
                k, r = module.nblocks[adapter_name], module.block_rank[adapter_name]
                padding = count - monarch_param_count(
                    module.in_features, module.out_features, k, r, padded=False
                )
            modules.append(
                dict(
                    name=name,
                    type=name.rsplit(".", 1)[-1],
                    in_features=module.in_features,
                    out_features=module.out_features,
                    params=count,
                    padding_params=padding,
                )
            )
        elif isinstance(module, AuxiliaryTrainingWrapper):
            # modules_to_save: this adapter's trained copy of the module is saved in full
            copies = getattr(module, "modules_to_save", None)
            if copies is None or adapter_name not in copies:
                continue
            in_f, out_f = None, None
            if isinstance(module.original_module, (nn.Linear, Conv1D)):
                in_f, out_f = in_out_features(module.original_module)
            modules.append(
                dict(
                    name=name,
                    type="modules_to_save",
                    in_features=in_f,
                    out_features=out_f,
                    params=sum(p.numel() for p in copies[adapter_name].parameters()),
                    padding_params=0,
                )
            )

    # everything the adapter saves, as save_pretrained selects it
    state_dict = get_peft_model_state_dict(
        peft_model, adapter_name=adapter_name, save_embedding_layers=embedding_targeted(config, peft_model)
    )
    trainable = sum(t.numel() for t in state_dict.values())
    not_base = _non_base_param_ids(base)
    base_params = sum(_numel(p) for p in base.parameters() if id(p) not in not_base)
    tuned = [m for m in modules if m["type"] != "modules_to_save"]
    span = sum(m["in_features"] + m["out_features"] for m in tuned)
    peft_type = config.peft_type
    return AdapterReport(
        peft_type=getattr(peft_type, "value", str(peft_type)),
        adapter_name=adapter_name,
        modules=modules,
        trainable_params=trainable,
        bytes_on_disk=_safetensors_size(state_dict),
        base_params=base_params,
        percent_of_base=100.0 * trainable / base_params if base_params else 0.0,
        lora_rank_equivalent=sum(m["params"] for m in tuned) / span if span else 0.0,
        padding_params=sum(m["padding_params"] for m in modules),
    )


def _adapter_params(layer: BaseTunerLayer, adapter_name: str | None = None) -> list[torch.Tensor]:
    """Parameters a tuner layer holds for one adapter (or for all adapters)."""
    params = []
    for attr in layer.adapter_layer_names:
        container = getattr(layer, attr, None)
        if not isinstance(container, (nn.ModuleDict, nn.ParameterDict)):
            continue
        names = [adapter_name] if adapter_name is not None else list(container.keys())
        for key in names:
            if key in container:
                item = container[key]
                params += list(item.parameters()) if isinstance(item, nn.Module) else [item]
    return params


def _non_base_param_ids(base: nn.Module) -> set[int]:
    """ids of every parameter an adapter added: tuner factors and modules_to_save copies."""
    ids: set[int] = set()
    for module in base.modules():
        if isinstance(module, BaseTunerLayer):
            ids.update(id(p) for p in _adapter_params(module))
        elif isinstance(module, AuxiliaryTrainingWrapper):
            original = {id(p) for p in module.original_module.parameters()}
            ids.update(id(p) for p in module.parameters() if id(p) not in original)
    return ids
