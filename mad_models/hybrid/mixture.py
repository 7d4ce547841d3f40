"""Mixture weights per block: softmax (learnable), Gumbel-softmax (DASH), simplex (GAEA) or fixed.

`BlockMixture.alphas` has shape (n_blocks, K). In "softmax" and "gumbel" modes it holds logits
(initialised to 0: a uniform start); in "simplex" and "fixed" modes it holds the weights themselves.
Components pruned from a block are masked out: their weight is exactly 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mad_models.hybrid.configuration import MIXTURE_MODES


class BlockMixture(nn.Module):
    """Weights `alpha[i][m]` of component m in block i.

    Example:
    ```python
    >>> mix = BlockMixture(n_blocks=2, n_components=2)
    >>> mix.weights()
    tensor([[0.5000, 0.5000],
            [0.5000, 0.5000]], grad_fn=<SoftmaxBackward0>)
    ```
    """

    def __init__(
        self,
        n_blocks: int,
        n_components: int,
        mode: str = "softmax",
        mask: torch.Tensor | None = None,
        tau: float = 1.0,
    ):
        super().__init__()
        if mode not in MIXTURE_MODES:
            raise ValueError(f"mixture mode must be one of {MIXTURE_MODES}, got {mode!r}")
        cpu = torch.device("cpu")  # explicit: the model may be built under a meta-device context
        mask = (
            torch.ones(n_blocks, n_components, dtype=torch.bool, device=cpu) if mask is None else mask.bool()
        )
        if mask.shape != (n_blocks, n_components) or not mask.to(cpu).any(-1).all():
            raise ValueError("the block mask must be (n_blocks, K) with at least one component per block")
        # derived from the config (pruning), so kept out of the state dict; copied per device on demand
        self._mask_cpu = mask.to(cpu)
        self._mask_cache: dict[torch.device, torch.Tensor] = {}
        self.tau = tau
        self.mode = mode
        self.alphas = nn.Parameter(torch.zeros(n_blocks, n_components))
        self._reset_for_mode()

    @property
    def mask(self) -> torch.Tensor:
        device = self.alphas.device
        if device not in self._mask_cache:
            self._mask_cache[device] = self._mask_cpu.to(device)
        return self._mask_cache[device]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.alphas.shape)

    def _uniform(self) -> torch.Tensor:
        m = self._mask_cpu.float()
        return m / m.sum(-1, keepdim=True)

    def _reset_for_mode(self) -> None:
        with torch.no_grad():
            value = torch.zeros(self.alphas.shape) if self.mode in ("softmax", "gumbel") else self._uniform()
            self.alphas.copy_(value.to(self.alphas))
        self.alphas.requires_grad_(self.mode != "fixed")

    def weights(self) -> torch.Tensor:
        """(n_blocks, K) weights; rows sum to 1. Gumbel mode samples (soft, tau) while training."""
        if self.mode in ("softmax", "gumbel"):
            logits = self.alphas.masked_fill(~self.mask, float("-inf"))
            if self.mode == "gumbel" and self.training:
                return F.gumbel_softmax(logits, tau=self.tau, hard=False, dim=-1)
            return torch.softmax(logits, dim=-1)
        return self.alphas * self.mask

    def expected_weights(self) -> torch.Tensor:
        """Deterministic weights (no Gumbel noise), e.g. for pruning."""
        with torch.no_grad():
            if self.mode in ("softmax", "gumbel"):
                return torch.softmax(self.alphas.masked_fill(~self.mask, float("-inf")), dim=-1)
            return (self.alphas * self.mask).clone()

    def set_weights(self, weights: torch.Tensor | Sequence, mode: str = "fixed") -> None:
        """Set the weights (probabilities, rows summing to one) and the mode.

        In "softmax"/"gumbel" mode the logits become log(weights), so weights must be > 0 where allowed.
        """
        if mode not in MIXTURE_MODES:
            raise ValueError(f"mixture mode must be one of {MIXTURE_MODES}, got {mode!r}")
        w = torch.as_tensor(weights, dtype=torch.float32)
        if tuple(w.shape) != self.shape:
            raise ValueError(
                f"mixture weights must have shape (n_blocks, K) = {self.shape}, got {tuple(w.shape)}"
            )
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError("mixture weights must be finite and non-negative")
        if not torch.allclose(w.sum(-1), torch.ones(w.shape[0]), atol=1e-4):
            raise ValueError(
                f"mixture weights of each block must sum to one in {mode!r} mode, "
                f"got row sums {w.sum(-1).tolist()}"
            )
        if (w[~self._mask_cpu] != 0).any():
            raise ValueError("components pruned from a block must have weight 0 in that block")
        if mode in ("softmax", "gumbel") and (w[self._mask_cpu] <= 0).any():
            raise ValueError(
                f"{mode!r} mode stores log-weights: weights must be > 0 (use mode='fixed' for zeros)"
            )
        self.mode = mode
        with torch.no_grad():
            value = w.log().masked_fill(~self._mask_cpu, 0.0) if mode in ("softmax", "gumbel") else w
            self.alphas.copy_(value.to(self.alphas))
        self.alphas.requires_grad_(mode != "fixed")

    def set_mode(self, mode: str) -> None:
        """Switch mode keeping the current (expected) weights."""
        w = self.expected_weights().cpu()
        if mode in ("softmax", "gumbel"):
            w = w.clamp_min(1e-6) * self._mask_cpu
            w = w / w.sum(-1, keepdim=True)
        self.set_weights(w, mode)


class ExponentiatedGradient(torch.optim.Optimizer):
    """Exponentiated-gradient descent on the simplex (GAEA): w <- w * exp(clip(-lr * grad)), renormalised.

    As the reference: the exponent is clipped to [-``clip``, ``clip``] (9) and every weight that is
    not pruned is kept >= ``floor`` (1e-5), so one large gradient cannot zero a component for good.
    Each row (last dim) of every parameter stays on the probability simplex (floor, then renormalise);
    entries that are exactly zero (pruned components) stay zero.

    Example:
    ```python
    >>> hybrid.set_mixture(hybrid.mixture_weights().detach(), mode="simplex")  # doctest: +SKIP
    >>> arch_opt = ExponentiatedGradient(hybrid.mixture_parameters(), lr=0.1)  # doctest: +SKIP
    ```
    """

    def __init__(
        self, params: Iterable[torch.Tensor], lr: float = 0.1, floor: float = 1e-5, clip: float = 9.0
    ):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 <= floor < 1:
            raise ValueError(f"floor must be in [0, 1), got {floor}")
        if clip <= 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        super().__init__(params, {"lr": lr, "floor": floor, "clip": clip})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                alive = p > 0
                grad = torch.nan_to_num(p.grad, nan=0.0)
                expo = (-group["lr"] * grad).clamp(-group["clip"], group["clip"])
                # subtract the row max of the exponent for stability; it cancels in the renormalisation
                expo = expo - expo.max(dim=-1, keepdim=True).values
                p.mul_(expo.exp())
                p.div_(p.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny))
                p.copy_(torch.where(alive, p.clamp_min(group["floor"]), torch.zeros_like(p)))
                p.div_(p.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny))
        return loss
