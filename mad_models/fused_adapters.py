"""A fused mixed-adapter forward for PEFT's LoRA and MoRe layers (mixed batches: row ``i`` runs adapter
``names[i]``), as used by the demo app's adapter host (``app_backend.shared.AdapterHost``).

Public entry points: :func:`install` (on a tuner layer instance), :func:`reset` (after its adapters or
factors change), :func:`fused_calls` (how often the fused path ran), and the context managers
:func:`peft_mixed_forward` / :func:`peft_mixed_forward_in_all_threads` (run PEFT's own forward instead,
for comparisons).

Example:
    >>> from mad_models import fused_adapters
    >>> # for layer in tuner_layers: fused_adapters.install(layer)
    >>> # model(input_ids=ids, adapter_names=["a", "__base__", "b"])  # one fused product per layer

PEFT's LoRA ``_mixed_batch_forward`` (and MoRe's, built the same way) runs, per wrapped module and per
decoding step, a Python loop over the adapters named in the batch: it regroups the row indices, gathers
each adapter's rows, runs that adapter's modules on them and scatters the result back. Each nested tuner
layer (MoRe wrapped by LoRA) repeats it. With 4 one-token rows over base + 3 adapters that is hundreds of
tiny products and gathers per step: on CPU a one-token step of such a batch cost a quarter to a third
more than the same rows all on the base (``bench/app_compare.py``).

Here a stack of tuner layers over one ``nn.Linear`` runs, for a batch whose row ``i`` uses adapter
``names[i]``, as four tensor ops whatever the number of adapters:

    y = x @ W.T + bias                   # the frozen base: ONE product over all rows
    h = (x @ A.T) * mask                 # A: every named adapter's down factor stacked, (R, n)
    y = y + h @ B.T                      # B: the up factors side by side, (m, R)

LoRA's factors are ``lora_A``/``lora_B``; MoRe's are its folded Monarch pair (the ``a``, ``b`` that
:func:`mad_models.monarch.monarch_linear` multiplies by). ``mask[i]`` holds an adapter's scaling on its
own columns of ``h`` and 0 elsewhere, so row ``i`` gets ``scaling * B_j A_j x_i`` of its own adapter and
nothing of the others ("__base__" rows: the base alone). The stacked factors are built once per set of
adapters and the mask once per names list, and kept (rebuilt when a factor or a scaling changes), so a
decoding step does no per-row Python.

Only this exact case takes the fused path; anything else runs the layer's own forward unchanged: no
``adapter_names``, gradients enabled, an active dropout, merged or disabled adapters, LoRA variants
(DoRA, ...) or LoRA bias, unfolded (wide) MoRe, a layer type other than PEFT's LoRA ``Linear`` and MoRe's
``Linear``, or a base that is not exactly ``nn.Linear`` (bitsandbytes 4/8-bit layers, Conv1D, ...). The
forward is installed on the given layer instances only (:func:`install`): PEFT's classes and every
other model are untouched.
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

# kept per layer: stacked factors for this many sets of adapters (each costs at most those adapters' own
# weights again), row masks for this many names lists (a few hundred bytes each)
MAX_STACKS, MAX_MASKS = 4, 32


class _State(threading.local):
    off = False  # True: the layers' own mixed forward (peft_mixed_forward)


_STATE = _State()


@contextmanager
def peft_mixed_forward() -> Iterator[None]:
    """In this thread, the host's layers run PEFT's (and MoRe's) own mixed-batch forward: the reference
    the fused path is tested and benchmarked against."""
    previous = _STATE.off
    _STATE.off = True
    try:
        yield
    finally:
        _STATE.off = previous


@contextmanager
def peft_mixed_forward_in_all_threads() -> Iterator[None]:
    """:func:`peft_mixed_forward` for every thread that has not chosen for itself (the benchmark's switch:
    the app generates in worker threads)."""
    previous = _State.off
    _State.off = True  # the class default, which a thread's own setting shadows
    try:
        yield
    finally:
        _State.off = previous


class _Plans:
    """Per layer: the stacked factors per set of adapters used, and the row mask per names list. A copy of
    the module tree starts with none (they hold this tree's factors)."""

    __slots__ = ("stacks", "masks", "fused_calls")

    def __init__(self) -> None:
        self.stacks: dict[tuple[str, ...], _Stack] = {}  # sorted adapter names -> their stacked factors
        self.masks: dict[tuple[str, ...], tuple[_Stack, torch.Tensor | None]] = {}  # names -> stack, mask
        self.fused_calls = 0  # how often the fused path ran (tests check which path was taken)

    def __deepcopy__(self, memo: dict) -> _Plans:
        return _Plans()

    def clear(self) -> None:
        self.stacks.clear()
        self.masks.clear()


class _Stack:
    """One stack of tuner layers over its ``nn.Linear``, with the factors of a set of its adapters stacked:
    ``a`` (R, n) the down factors, ``b_t`` (R, m) the up factors, and per block ``(adapter, width,
    scaling)`` in ``columns``. ``a`` is None when none of the set is held here (base only)."""

    __slots__ = ("base", "layers", "a", "b_t", "columns", "checks", "scalings", "dropouts")

    def __init__(self, base: nn.Linear, layers: list[BaseTunerLayer]) -> None:
        self.base = base
        self.layers = layers
        self.a: torch.Tensor | None = None
        self.b_t: torch.Tensor | None = None
        self.columns: list[tuple[str, int, float]] = []
        # (container, name, factor, storage pointer, version) of every factor copied into a / b_t
        self.checks: list[tuple[Any, str, torch.Tensor, int, int]] = []
        self.scalings: list[tuple[dict, str, float]] = []  # (the layer's scaling dict, name, value used)
        self.dropouts: list[nn.Module] = []  # dropouts that act in training mode

    def current(self) -> bool:
        """Every copied factor is still the one (same storage, unmodified) held under its name, and every
        scaling the one in the mask (PEFT's ``set_scale`` changes it in place)."""
        for container, name, factor, ptr, version in self.checks:
            if factor._version != version or factor.data_ptr() != ptr or name not in container:
                return False
        for scalings, name, value in self.scalings:
            if scalings.get(name) != value:
                return False
        return True

    def applies(self) -> bool:
        """No layer merged or disabled, no dropout active (states that change between calls)."""
        for layer in self.layers:
            if layer.merged_adapters or layer.disable_adapters:
                return False
        return not any(d.training for d in self.dropouts)


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
        plans.clear()


def _forward(self: BaseTunerLayer, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    names = kwargs.get("adapter_names")
    if (
        names is None
        or args
        or len(kwargs) != 1
        or torch.is_grad_enabled()
        or _STATE.off
        or x.dim() < 2
        or len(names) != x.shape[0]
    ):
        return type(self).forward(self, x, *args, **kwargs)
    plans: _Plans = self._fused_plans
    key = tuple(names)
    hit = plans.masks.get(key)
    if hit is None or not hit[0].current():
        hit = _plan(self, plans, key)
    if hit is None or not hit[0].applies():  # not a case for the fused path
        return type(self).forward(self, x, *args, **kwargs)
    stack, mask = hit
    plans.fused_calls += 1
    base = stack.base
    y = F.linear(x, base.weight, base.bias)  # (rows, ..., m): one product for every row
    if stack.a is None:
        return y
    xa = x if x.dtype == stack.a.dtype else x.to(stack.a.dtype)
    h = F.linear(xa, stack.a)  # (rows, ..., R)
    if x.dim() > 2:
        mask = mask.view(len(key), *([1] * (x.dim() - 2)), -1)
    h = (h * mask).reshape(-1, stack.a.shape[0])
    m = y.shape[-1]
    if y.dtype == h.dtype:  # y + h @ B.T in one addmm
        return torch.addmm(y.reshape(-1, m), h, stack.b_t).view(y.shape)
    return y + torch.mm(h, stack.b_t).view(y.shape).to(y.dtype)


def _plan(
    top: BaseTunerLayer, plans: _Plans, names: tuple[str, ...]
) -> tuple[_Stack, torch.Tensor | None] | None:
    """The stack under ``top`` for the adapters in ``names`` and the row mask for ``names`` (kept in
    ``plans``); None: a case the fused path leaves to the layers' own forward."""
    used = tuple(sorted({n for n in names if n != "__base__"}))
    stack = plans.stacks.get(used)
    if stack is None or not stack.current():
        stack = _build_stack(top, used)
        if stack is None:  # kept unstored: it is cheap to find out again
            return None
        if len(plans.stacks) >= MAX_STACKS:
            plans.clear()
        plans.stacks[used] = stack
    mask = None
    if stack.a is not None:
        with torch.inference_mode(False):
            mask = torch.zeros(len(names), stack.a.shape[0], dtype=stack.a.dtype, device=stack.a.device)
            start = 0
            for name, width, scaling in stack.columns:
                rows = [i for i, n in enumerate(names) if n == name]
                mask[rows, start : start + width] = scaling
                start += width
    if len(plans.masks) >= MAX_MASKS:
        plans.masks.clear()
    plans.masks[names] = (stack, mask)
    return stack, mask


def _build_stack(top: BaseTunerLayer, used: tuple[str, ...]) -> _Stack | None:
    """The layers under ``top`` with the factors of the adapters ``used`` stacked; None: not a case the
    fused path handles."""
    layers = []
    layer: Any = top
    while isinstance(layer, BaseTunerLayer):
        if type(layer) not in (LoraLinear, MoReLinear):
            return None
        layers.append(layer)
        layer = layer.base_layer
    if type(layer) is not nn.Linear:  # bitsandbytes, Conv1D, ...: their own forward
        return None
    stack = _Stack(layer, layers)
    downs, ups, checks = [], [], []
    for layer in layers:
        for name in used:
            if isinstance(layer, LoraLinear):
                if name not in layer.lora_A:
                    continue
                if name in layer.lora_variant or layer.lora_bias.get(name, False):
                    return None  # DoRA and other variants, LoRA bias: PEFT's path
                down, up = layer.lora_A[name].weight, layer.lora_B[name].weight  # (r, n), (m, r)
                checks += [(layer.lora_A, name, down), (layer.lora_B, name, up)]
                scalings, dropout = layer.scaling, layer.lora_dropout[name]
            else:
                if name not in layer.more_blkdiag1:
                    continue
                folded = layer.folded_factors(name)
                if folded is None:  # wide configurations multiply unfolded: the layer's own path
                    return None
                down, up = folded  # (k*k*r, n), (m, k*k*r)
                b1, b2 = layer.more_blkdiag1[name], layer.more_blkdiag2[name]
                checks += [(layer.more_blkdiag1, name, b1), (layer.more_blkdiag2, name, b2)]
                scalings, dropout = layer.scale, layer.more_dropout[name]
            if isinstance(dropout, nn.Dropout) and dropout.p > 0:
                stack.dropouts.append(dropout)
            downs.append(down)
            ups.append(up)
            stack.scalings.append((scalings, name, scalings[name]))
            stack.columns.append((name, down.shape[0], float(scalings[name])))
    try:
        stack.checks = [(c, n, t, t.data_ptr(), t._version) for c, n, t in checks]
    except RuntimeError:  # inference tensors keep no version counter: nothing to check a copy against
        return None
    if not downs:
        return stack
    if len({t.dtype for t in downs + ups}) != 1:
        return None
    with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable in and out of inference mode
        stack.a = torch.cat(downs).contiguous()
        stack.b_t = torch.cat(ups, dim=1).t().contiguous()
    return stack
