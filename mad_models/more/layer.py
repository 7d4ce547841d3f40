"""MoRe adapter layers: a frozen linear layer plus ``scale * M x`` with a Monarch matrix ``M``."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from peft.utils import quantization_extra_repr, resolve_quantization_backend
from peft.utils.other import transpose
from torch import nn
from transformers.pytorch_utils import Conv1D

from mad_models.monarch import (
    monarch_factors_to_dense_pair,
    monarch_fold_limit,
    monarch_linear,
    monarch_shapes,
)

from .config import MoReConfig


def is_supported_base_layer(layer: nn.Module) -> bool:
    """nn.Linear, GPT-2's Conv1D, or a quantized linear layer PEFT knows (bitsandbytes 4/8-bit, ...)."""
    if isinstance(layer, (nn.Linear, Conv1D)):
        return True
    backend = resolve_quantization_backend(layer)
    return backend is not None and backend.layer_type == "linear"


def in_out_features(layer: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of a supported base layer: GPT-2's Conv1D stores its weight as
    (in, out); nn.Linear and the quantized linears keep ``in_features`` / ``out_features`` (a 4-bit weight is
    packed, so its shape says nothing)."""
    if isinstance(layer, Conv1D):
        in_f, out_f = getattr(layer.weight, "ds_shape", layer.weight.shape)  # ZeRO-3 keeps ds_shape
        return int(in_f), int(out_f)
    return int(layer.in_features), int(layer.out_features)


class MoReLayer(BaseTunerLayer):
    """Holds the MoRe factors of every named adapter for one base layer."""

    adapter_layer_names: tuple[str, ...] = ("more_blkdiag1", "more_blkdiag2")
    other_param_names: tuple[str, ...] = (
        "nblocks",
        "block_rank",
        "scale",
        "more_dropout",
        "dropout_position",
    )

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        base = self.get_base_layer()
        if not is_supported_base_layer(base):
            kind = f"{type(base).__module__}.{type(base).__name__}"
            raise TypeError(
                f"unsupported module type {kind}: MoRe adapts nn.Linear, transformers' Conv1D and quantized "
                "linear layers (bitsandbytes Linear4bit / Linear8bitLt). Check target_modules."
            )
        self.quantization_backend = resolve_quantization_backend(
            base, get_apply_tensor_subclass=kwargs.get("get_apply_tensor_subclass")
        )
        self.nblocks: dict[str, int] = {}
        self.block_rank: dict[str, int] = {}
        self.scale: dict[str, float] = {}
        self.dropout_position: dict[str, str] = {}  # "input" (as LoRA) or "output" (as the reference)
        self.more_dropout = nn.ModuleDict({})
        self.more_blkdiag1 = nn.ParameterDict({})  # (k, k*r, p) per adapter
        self.more_blkdiag2 = nn.ParameterDict({})  # (k, s, k*r) per adapter
        self._disable_adapters = False
        self.merged_adapters = []
        # GPT-2's Conv1D stores its weight as (in, out): merged deltas must be transposed
        self.fan_in_fan_out = isinstance(base, Conv1D)
        self.in_features, self.out_features = in_out_features(base)
        self.kwargs = kwargs
        # adapter -> (factors' identity and versions, folded pair): kept only while no gradient is taken
        self._folded_cache: dict[str, tuple[tuple, tuple[torch.Tensor, torch.Tensor]]] = {}

    def update_layer(self, adapter_name: str, config: MoReConfig, inference_mode: bool = False) -> None:
        shapes = monarch_shapes(self.in_features, self.out_features, config.nblocks, config.block_rank)
        self.nblocks[adapter_name] = config.nblocks
        self.block_rank[adapter_name] = config.block_rank
        self.scale[adapter_name] = float(config.scale)
        self.dropout_position[adapter_name] = getattr(config, "dropout_position", "input")
        self.more_dropout[adapter_name] = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.more_blkdiag1[adapter_name] = nn.Parameter(torch.empty(shapes.blkdiag1))
        self.more_blkdiag2[adapter_name] = nn.Parameter(torch.empty(shapes.blkdiag2))
        self.reset_more_parameters(adapter_name, config.init_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    @torch.no_grad()
    def reset_more_parameters(self, adapter_name: str, init_weights: bool = True) -> None:
        b1, b2 = self.more_blkdiag1[adapter_name], self.more_blkdiag2[adapter_name]
        # nn.Linear's default (kaiming_uniform_, a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)); each block
        # is its own little linear layer, so its fan-in is the block size p, not n
        nn.init.uniform_(b1, -1 / math.sqrt(b1.shape[-1]), 1 / math.sqrt(b1.shape[-1]))
        if init_weights:
            nn.init.zeros_(b2)  # M = 0: the adapted model starts exactly at the base model
        else:
            nn.init.uniform_(b2, -1 / math.sqrt(b2.shape[-1]), 1 / math.sqrt(b2.shape[-1]))

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """``scale * M`` shaped like the base weight: ``(out, in)``, or ``(in, out)`` for Conv1D."""
        b1, b2 = self.more_blkdiag1[adapter], self.more_blkdiag2[adapter]
        dtype = b1.dtype
        # half-precision matmuls are slow or missing on some CPUs: build the delta in fp32 there
        if b1.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
            b1, b2 = b1.float(), b2.float()
        a, b = monarch_factors_to_dense_pair(b1, b2, self.in_features, self.out_features)
        delta = (b @ a) * self.scale[adapter]
        return transpose(delta, self.fan_in_fan_out).to(dtype)

    def folded_factors(self, adapter: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The folded pair of ``adapter`` for ``monarch_linear``, kept between calls at inference.

        Decoding calls every layer once per token with the same factors; folding them each time costs
        about ten small ops per call, a large part of a one-token step. The pair is kept only while no
        gradient is taken, for ``k*k*r`` up to ``monarch_fold_limit(device, cached=True)`` (wider ones
        multiply unfolded: ``None``), and rebuilt when a factor changes (its storage or in-place version).
        """
        b1, b2 = self.more_blkdiag1[adapter], self.more_blkdiag2[adapter]
        if torch.is_grad_enabled() or b1.shape[0] * b1.shape[1] > monarch_fold_limit(b1.device, cached=True):
            return None
        try:
            key = (b1.data_ptr(), b2.data_ptr(), b1._version, b2._version, b1.dtype, b1.device)
        except RuntimeError:  # inference tensors keep no version counter: never cache them
            return None
        hit = self._folded_cache.get(adapter)
        if hit is not None and hit[0] == key:
            return hit[1]
        pair = monarch_factors_to_dense_pair(b1, b2, self.in_features, self.out_features)
        self._folded_cache[adapter] = (key, pair)
        return pair


class Linear(nn.Module, MoReLayer):
    """MoRe on an nn.Linear, a Conv1D or a quantized linear layer (the base stays frozen and quantized)."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: MoReConfig, **kwargs: Any) -> None:
        super().__init__()
        MoReLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def _warn_if_quantized(self, action: str) -> None:
        if self.quantization_backend is not None:
            warnings.warn(
                f"{action} a MoRe adapter {'into' if action == 'Merging' else 'from'} a "
                f"{self.quantization_backend.backend_name} layer dequantizes the weight, adds the delta and "
                "quantizes again: outputs change by the quantization rounding, and unmerge does not restore "
                "the original bits exactly.",
                UserWarning,
                stacklevel=3,
            )

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Add ``scale * M`` of the active (or given) adapters into the base weight.

        Quantized bases are dequantized, merged and re-quantized (with a warning); bases whose quantization
        cannot be undone raise a ``TypeError``.
        """
        adapter_names = check_adapters_to_merge(self, adapter_names)
        if not adapter_names:
            return
        backend = self.quantization_backend
        if backend is not None and not backend.supports_merge:
            raise TypeError(
                f"Cannot merge MoRe into a {backend.backend_name} layer: it cannot be dequantized. "
                "Use the adapter unmerged, or load the base model unquantized to merge."
            )
        for active_adapter in adapter_names:
            if active_adapter not in self.more_blkdiag1:
                continue
            self._warn_if_quantized("Merging")
            weight = self.get_base_weight()
            delta = self.get_delta_weight(active_adapter)
            merged = weight + delta.to(device=weight.device, dtype=weight.dtype)
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(
                    f"NaNs detected in the merged weights. The adapter {active_adapter} seems to be broken"
                )
            self.set_base_weight(merged.contiguous())
            self.merged_adapters.append(active_adapter)

    def unmerge(self) -> None:
        """Subtract every merged adapter again (last merged first)."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        while self.merged_adapters:
            active_adapter = self.merged_adapters.pop()
            if active_adapter not in self.more_blkdiag1:
                continue
            self._warn_if_quantized("Unmerging")
            weight = self.get_base_weight()
            delta = self.get_delta_weight(active_adapter)
            self.set_base_weight((weight - delta.to(device=weight.device, dtype=weight.dtype)).contiguous())

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter_names = kwargs.pop("adapter_names", None)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if adapter_names is not None:
            return self._mixed_batch_forward(x, *args, adapter_names=adapter_names, **kwargs)
        result = self.base_layer(x, *args, **kwargs)  # (..., m)
        if self.merged:
            return result
        if self.quantization_backend is not None:
            result = self.quantization_backend.maybe_clone_base_result(result)
        out_dtype = result.dtype
        for active_adapter in self.active_adapters:
            if active_adapter not in self.more_blkdiag1:
                continue
            b1, b2 = self.more_blkdiag1[active_adapter], self.more_blkdiag2[active_adapter]
            dropout = self.more_dropout[active_adapter]
            # the reference's placement, dropout(M x): only unfused while dropout is active
            drop_output = (
                self.dropout_position.get(active_adapter) == "output"
                and isinstance(dropout, nn.Dropout)
                and dropout.training
            )
            xa = self._cast_input_dtype(x if drop_output else dropout(x), b1.dtype)  # (..., n)
            if drop_output:
                delta = dropout(
                    monarch_linear(xa, b1, b2, self.out_features, alpha=self.scale[active_adapter])
                )
                result = result + delta.to(result.dtype)
            elif result.dtype == b1.dtype:
                # fused: result + scale * (x @ M.T) in one addmm
                result = monarch_linear(
                    xa,
                    b1,
                    b2,
                    self.out_features,
                    residual=result,
                    alpha=self.scale[active_adapter],
                    folded=self.folded_factors(active_adapter),
                )
            else:
                delta = monarch_linear(
                    xa,
                    b1,
                    b2,
                    self.out_features,
                    alpha=self.scale[active_adapter],
                    folded=self.folded_factors(active_adapter),
                )
                result = result + delta.to(result.dtype)
        return result.to(out_dtype)

    def _mixed_batch_forward(
        self, x: torch.Tensor, *args: Any, adapter_names: list[str], **kwargs: Any
    ) -> torch.Tensor:
        """Row ``i`` of the batch gets adapter ``adapter_names[i]`` ("__base__": none), as LoRA's
        ``_mixed_batch_forward``; names this layer does not hold (another tuner's) add nothing here."""
        if len(x) != len(adapter_names):
            raise ValueError(
                f"Length of `adapter_names` should be the same as the number of inputs, but got "
                f"{len(adapter_names)} and {len(x)} respectively."
            )
        if self.merged:
            raise ValueError(
                "Cannot pass `adapter_names` when there are merged adapters, please call `unmerge_adapter` "
                "first."
            )
        result = self.base_layer(x, *args, **kwargs)  # (B, ..., m)
        if self.quantization_backend is not None:
            result = self.quantization_backend.maybe_clone_base_result(result)
        out_dtype = result.dtype
        for adapter in dict.fromkeys(adapter_names):  # unique, in first-seen order
            if adapter == "__base__" or adapter not in self.more_blkdiag1:
                continue
            rows: list[int] | slice = [i for i, name in enumerate(adapter_names) if name == adapter]
            if rows == list(
                range(rows[0], rows[-1] + 1)
            ):  # one run of rows (the app's case): views, no gather
                rows = slice(rows[0], rows[-1] + 1)
            b1, b2 = self.more_blkdiag1[adapter], self.more_blkdiag2[adapter]
            xa = self._cast_input_dtype(self.more_dropout[adapter](x[rows]), b1.dtype)  # (b, ..., n)
            folded = self.folded_factors(adapter)
            if out_dtype == b1.dtype:  # the same fused addmm the single-adapter path takes
                result[rows] = monarch_linear(
                    xa,
                    b1,
                    b2,
                    self.out_features,
                    residual=result[rows],
                    alpha=self.scale[adapter],
                    folded=folded,
                )
            else:
                delta = monarch_linear(
                    xa, b1, b2, self.out_features, alpha=self.scale[adapter], folded=folded
                )
                result[rows] = result[rows] + delta.to(out_dtype)
        return result

    def supports_lora_conversion(self, adapter_name: str = "default") -> bool:
        return True  # additive: W' = W + delta

    def extra_repr(self) -> str:
        return quantization_extra_repr(self)

    def __repr__(self) -> str:
        return "more." + super().__repr__()
