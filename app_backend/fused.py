"""A fused mixed-adapter forward for the adapter layers of an :class:`~app_backend.shared.AdapterHost`.

PEFT's LoRA ``_mixed_batch_forward`` (and MoRe's, built the same way) runs, per wrapped module and per
decoding step, a Python loop over the adapters named in the batch: it regroups the row indices, gathers
each adapter's rows, runs that adapter's modules on them and scatters the result back. Each nested tuner
layer (MoRe wrapped by LoRA) repeats it. With 4 one-token rows over base + 3 adapters that is hundreds of
tiny products and gathers per step, which cost a third more than the base itself on CPU.

Here a stack of tuner layers over one ``nn.Linear`` runs, for a batch whose row ``i`` uses adapter
``names[i]``, as four tensor ops whatever the number of adapters:

    y = x @ W.T + bias                   # the frozen base: ONE product over all rows
    h = (x @ A.T) * mask                 # A: every named adapter's down factor stacked, (R, n)
    y = y + h @ B.T                      # B: the up factors side by side, (m, R)

LoRA's factors are ``lora_A``/``lora_B``; MoRe's are its folded Monarch pair (the ``a``, ``b`` that
:func:`mad_models.monarch.monarch_linear` multiplies by). ``mask[i]`` holds an adapter's scaling on its
own columns of ``h`` and 0 elsewhere, so row ``i`` gets ``scaling * B_j A_j x_i`` of its own adapter and
nothing of the others ("__base__" rows: the base alone). The stacked factors and the mask are built once
per names list and kept (rebuilt when a factor changes), so a decoding step does no per-row Python.

Only this exact case takes the fused path; anything else runs the layer's own forward unchanged: no
``adapter_names``, gradients enabled, an active dropout, merged or disabled adapters, LoRA variants
(DoRA, ...) or LoRA bias, unfolded (wide) MoRe, a layer type other than PEFT's LoRA ``Linear`` and MoRe's
``Linear``, or a base that is not exactly ``nn.Linear`` (bitsandbytes 4/8-bit layers, Conv1D, ...). The
forward is installed on the host's layer instances only (:func:`install`): PEFT's classes and every
model outside the host are untouched.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from mad_models.more.layer import Linear as MoReLinear

MAX_PLANS = 8  # names lists kept per layer (the app's Compare uses one per run)

_STATE = threading.local()


@contextmanager
def peft_mixed_forward() -> Iterator[None]:
    """In this thread, the host's layers run PEFT's (and MoRe's) own mixed-batch forward: the reference
    the fused path is tested and benchmarked against."""
    previous = getattr(_STATE, "off", False)
    _STATE.off = True
    try:
        yield
    finally:
        _STATE.off = previous


class _Plans:
    """Per layer: names tuple -> :class:`_Plan`. A copy of the module tree starts with none (a plan holds
    references to this tree's factors)."""

    __slots__ = ("by_names", "fused_calls")

    def __init__(self) -> None:
        self.by_names: dict[tuple[str, ...], _Plan] = {}
        self.fused_calls = 0  # how often the fused path ran (tests check which path was taken)

    def __deepcopy__(self, memo: dict) -> _Plans:
        return _Plans()


class _Plan:
    """What one stack of tuner layers does to a batch with one names list."""

    __slots__ = ("base", "a", "b_t", "mask", "checks", "dropouts")

    def __init__(self, base: nn.Linear) -> None:
        self.base = base
        self.a: torch.Tensor | None = None  # (R, n) stacked down factors; None: no row has an adapter here
        self.b_t: torch.Tensor | None = None  # (R, m), the up factors stacked, transposed for addmm
        self.mask: torch.Tensor | None = None  # (rows, R) scaling on a row's own adapter's columns
        # (container, name, factor, storage pointer, version) of every factor the plan copied
        self.checks: list[tuple[Any, str, torch.Tensor, int, int]] = []
        self.dropouts: list[nn.Module] = []  # dropouts that would act in training mode

    def valid(self) -> bool:
        """Every factor is still the one (same storage, unmodified) held under the same name."""
        for container, name, factor, ptr, version in self.checks:
            if name not in container or factor.data_ptr() != ptr or factor._version != version:
                return False
        return True


def install(layer: BaseTunerLayer) -> None:
    """Give this layer instance (of a host's tree) the fused mixed-adapter forward; idempotent."""
    if "forward" in vars(layer):
        return
    layer._fused_plans = _Plans()
    layer.forward = types.MethodType(_forward, layer)


def fused_calls(layer: BaseTunerLayer) -> int:
    """How often ``layer`` took the fused path (0 for a layer without it)."""
    plans = vars(layer).get("_fused_plans")
    return 0 if plans is None else plans.fused_calls


def reset(layer: BaseTunerLayer) -> None:
    """Forget the plans (adapters were added or removed); they are rebuilt on the next call."""
    plans = vars(layer).get("_fused_plans")
    if plans is not None:
        plans.by_names.clear()


def _forward(self: BaseTunerLayer, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    names = kwargs.get("adapter_names")
    if (
        names is None
        or args
        or len(kwargs) != 1
        or torch.is_grad_enabled()
        or getattr(_STATE, "off", False)
        or x.dim() < 2
        or len(names) != x.shape[0]
    ):
        return type(self).forward(self, x, *args, **kwargs)
    plans: _Plans = self._fused_plans
    key = tuple(names)
    plan = plans.by_names.get(key)
    if plan is None or not plan.valid():
        plan = _build_plan(self, key)
        if plan is None:  # not a case for the fused path (kept unstored: it is cheap to find out again)
            return type(self).forward(self, x, *args, **kwargs)
        if len(plans.by_names) >= MAX_PLANS:
            plans.by_names.clear()
        plans.by_names[key] = plan
    if any(d.training for d in plan.dropouts) or not _still_plain(self):
        return type(self).forward(self, x, *args, **kwargs)
    plans.fused_calls += 1
    base = plan.base
    y = F.linear(x, base.weight, base.bias)  # (rows, ..., m): one product for every row
    if plan.a is None:
        return y
    xa = x if x.dtype == plan.a.dtype else x.to(plan.a.dtype)
    h = F.linear(xa, plan.a)  # (rows, ..., R)
    mask = plan.mask if x.dim() == 2 else plan.mask.view(len(key), *([1] * (x.dim() - 2)), -1)
    h = (h * mask).reshape(-1, plan.a.shape[0])
    m = y.shape[-1]
    if y.dtype == h.dtype:
        return torch.addmm(y.reshape(-1, m), h, plan.b_t).view(y.shape)
    return y + torch.mm(h, plan.b_t).view(y.shape).to(y.dtype)


def _still_plain(layer: BaseTunerLayer) -> bool:
    """No layer of the stack merged or disabled since the plan was made (both are per-call state)."""
    while isinstance(layer, BaseTunerLayer):
        if layer.merged_adapters or layer.disable_adapters:
            return False
        layer = layer.base_layer
    return True


def _build_plan(top: BaseTunerLayer, names: tuple[str, ...]) -> _Plan | None:
    """The stacked factors and mask of the stack under ``top`` for ``names``; None: not a case the fused
    path handles (the layer's own forward runs)."""
    stack = []
    layer: Any = top
    while isinstance(layer, BaseTunerLayer):
        if type(layer) not in (LoraLinear, MoReLinear) or layer.merged_adapters or layer.disable_adapters:
            return None
        stack.append(layer)
        layer = layer.base_layer
    if type(layer) is not nn.Linear:  # bitsandbytes, Conv1D, ...: their own forward
        return None
    plan = _Plan(layer)
    used = [n for n in dict.fromkeys(names) if n != "__base__"]
    downs, ups, columns = [], [], []  # per (layer, adapter) block: factors and (adapter, width, scaling)
    for layer in stack:
        for name in used:
            if isinstance(layer, LoraLinear):
                if name not in layer.lora_A:
                    continue
                if name in layer.lora_variant or layer.lora_bias.get(name, False):
                    return None  # DoRA and other variants, LoRA bias: PEFT's path
                down, up = layer.lora_A[name].weight, layer.lora_B[name].weight  # (r, n), (m, r)
                plan.checks += [(layer.lora_A, name, down, 0, 0), (layer.lora_B, name, up, 0, 0)]
                scaling, dropout = layer.scaling[name], layer.lora_dropout[name]
            else:
                if name not in layer.more_blkdiag1:
                    continue
                folded = layer.folded_factors(name)
                if folded is None:  # wide configurations multiply unfolded: the layer's own path
                    return None
                down, up = folded  # (k*k*r, n), (m, k*k*r)
                b1, b2 = layer.more_blkdiag1[name], layer.more_blkdiag2[name]
                plan.checks += [(layer.more_blkdiag1, name, b1, 0, 0), (layer.more_blkdiag2, name, b2, 0, 0)]
                scaling, dropout = layer.scale[name], layer.more_dropout[name]
            if isinstance(dropout, nn.Dropout) and dropout.p > 0:
                plan.dropouts.append(dropout)
            downs.append(down)
            ups.append(up)
            columns.append((name, down.shape[0], float(scaling)))
    try:
        plan.checks = [(c, n, t, t.data_ptr(), t._version) for c, n, t, _, _ in plan.checks]
    except RuntimeError:  # inference tensors keep no version counter: nothing to check a plan against
        return None
    if not downs:
        return plan
    if len({t.dtype for t in downs + ups}) != 1:
        return None
    with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable in and out of inference mode
        plan.a = torch.cat(downs).contiguous()
        plan.b_t = torch.cat(ups, dim=1).t().contiguous()
        mask = torch.zeros(len(names), plan.a.shape[0], dtype=plan.a.dtype, device=plan.a.device)
        start = 0
        for name, width, scaling in columns:
            rows = [i for i, n in enumerate(names) if n == name]
            mask[rows, start : start + width] = scaling
            start += width
        plan.mask = mask
    return plan
