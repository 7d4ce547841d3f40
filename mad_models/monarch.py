"""Rectangular Monarch matrices as plain tensor functions (the maths under MoRe).

A Monarch matrix ``M`` (``out_features x in_features``) is two block-diagonal factors with a fixed
"transpose" permutation between them and after them. With ``k = nblocks`` and ``r = block_rank``:

- the input (``n`` features) is zero-padded to ``k * p`` with ``p = ceil(n / k)``;
- ``blkdiag1`` ``(k, k*r, p)``: block ``i`` maps its ``p`` inputs to ``k*r`` intermediate values;
- permutation: the ``(k, k*r)`` intermediates, flattened row-major, are reshaped to ``(k*r, k)`` and read
  column by column, so second-stage block ``j`` gets every value whose flat index is ``j mod k``
  (``r`` values from each first-stage block);
- ``blkdiag2`` ``(k, s, k*r)``: block ``j`` maps its ``k*r`` inputs to ``s = ceil(m / k)`` outputs;
- output permutation: output ``t`` of block ``j`` lands at index ``t*k + j``; the result is cropped to ``m``.

Every output depends on every input, yet the factors hold only ``k*r*(n + m)`` numbers (plus padding when
``k`` does not divide ``n`` or ``m``), the same as LoRA at rank ``k*r``.

Example:
    >>> import torch
    >>> sh = monarch_shapes(768, 3072, nblocks=4, block_rank=1)
    >>> b1, b2 = torch.randn(sh.blkdiag1), torch.randn(sh.blkdiag2)
    >>> y = monarch_multiply(torch.randn(2, 5, 768), b1, b2, out_features=3072)  # (2, 5, 3072)
    >>> dense = monarch_to_dense(b1, b2, 768, 3072)  # (3072, 768), for merging and tests only
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "MonarchShapes",
    "monarch_factors_to_dense_pair",
    "monarch_linear",
    "monarch_multiply",
    "monarch_param_count",
    "monarch_shapes",
    "monarch_to_dense",
]


# widest folded intermediate (k*k*r) for which monarch_linear folds the permutations into the factors;
# measured on CPU (bench/more_vs_lora.py): folding wins clearly at 16-32, loses from about 64 on
FOLD_MAX_WIDTH = 32


@dataclass(frozen=True)
class MonarchShapes:
    """Shapes of the two factors for one ``(in_features, out_features, nblocks, block_rank)``."""

    in_features: int  # n
    out_features: int  # m
    nblocks: int  # k
    block_rank: int  # r
    in_block: int  # p = ceil(n / k)
    out_block: int  # s = ceil(m / k)

    @property
    def width(self) -> int:
        """Intermediate width of every block, ``k * r``."""
        return self.nblocks * self.block_rank

    @property
    def blkdiag1(self) -> tuple[int, int, int]:
        return (self.nblocks, self.width, self.in_block)

    @property
    def blkdiag2(self) -> tuple[int, int, int]:
        return (self.nblocks, self.out_block, self.width)

    @property
    def padded_in(self) -> int:
        return self.nblocks * self.in_block

    @property
    def padded_out(self) -> int:
        return self.nblocks * self.out_block


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def monarch_shapes(in_features: int, out_features: int, nblocks: int, block_rank: int) -> MonarchShapes:
    """Validate a Monarch configuration for an ``out_features x in_features`` layer and return its shapes.

    A block cannot usefully produce more intermediate values than it has inputs or outputs: the width
    ``k*r`` must not exceed the input block ``p`` nor the output block ``s`` (more would only add
    parameters, never rank). That is the "block rank larger than the block allows" error.

    Example:
        >>> monarch_shapes(768, 768, nblocks=4, block_rank=1).blkdiag1
        (4, 4, 192)
    """
    n = _check_positive_int("in_features", in_features)
    m = _check_positive_int("out_features", out_features)
    k = _check_positive_int("nblocks", nblocks)
    r = _check_positive_int("block_rank", block_rank)
    p, s = math.ceil(n / k), math.ceil(m / k)
    if k * r > min(p, s):
        max_r = min(p, s) // k
        hint = f"use block_rank <= {max_r}" if max_r >= 1 else "use fewer blocks"
        raise ValueError(
            f"block_rank={r} is larger than a block allows for a {m}x{n} layer with nblocks={k}: each block "
            f"would produce k*r={k * r} values from only {p} inputs (ceil({n}/{k})) into {s} outputs "
            f"(ceil({m}/{k})); {hint} (k*r must be <= min(ceil(n/k), ceil(m/k)))."
        )
    return MonarchShapes(n, m, k, r, p, s)


def monarch_param_count(
    in_features: int, out_features: int, nblocks: int, block_rank: int, *, padded: bool = True
) -> int:
    """Number of numbers in the two factors.

    ``padded=True`` counts what is stored, ``k*(k*r)*p + k*s*(k*r)``; ``padded=False`` counts only the
    entries that touch real inputs and outputs, ``k*r*(n+m)``. They agree when ``k`` divides ``n`` and ``m``.

    Example:
        >>> monarch_param_count(768, 768, 4, 1)
        6144
    """
    sh = monarch_shapes(in_features, out_features, nblocks, block_rank)
    if padded:
        return sh.width * (sh.padded_in + sh.padded_out)
    return sh.width * (sh.in_features + sh.out_features)


def _check_factors(blkdiag1: torch.Tensor, blkdiag2: torch.Tensor, in_features: int, out_features: int):
    if blkdiag1.dim() != 3 or blkdiag2.dim() != 3:
        raise ValueError(
            f"blkdiag1 and blkdiag2 must be 3-D (nblocks, rows, cols), got {tuple(blkdiag1.shape)} and "
            f"{tuple(blkdiag2.shape)}"
        )
    k, q, p = blkdiag1.shape
    k2, s, q2 = blkdiag2.shape
    if k2 != k or q2 != q or q % k:
        raise ValueError(
            f"factor shapes do not fit together: blkdiag1 {tuple(blkdiag1.shape)} must be (k, k*r, p) and "
            f"blkdiag2 {tuple(blkdiag2.shape)} must be (k, s, k*r)"
        )
    if math.ceil(in_features / k) != p:
        raise ValueError(
            f"in_features={in_features} does not fit blkdiag1 {tuple(blkdiag1.shape)}: expected p=ceil(n/k)"
        )
    if math.ceil(out_features / k) != s:
        raise ValueError(
            f"out_features={out_features} does not fit blkdiag2 {tuple(blkdiag2.shape)}: expected s=ceil(m/k)"
        )
    return k, q, p, s


def monarch_multiply(
    x: torch.Tensor, blkdiag1: torch.Tensor, blkdiag2: torch.Tensor, out_features: int
) -> torch.Tensor:
    """Compute ``x @ M.T`` for the Monarch matrix ``M`` given by its two factors, as two batched matmuls.

    Args:
        x: ``(..., n)`` input; any leading dims.
        blkdiag1: ``(k, k*r, p)`` first factor, ``p = ceil(n / k)``.
        blkdiag2: ``(k, s, k*r)`` second factor, ``s = ceil(out_features / k)``.
        out_features: ``m``; the ``k*s`` outputs are cropped to it.

    Returns:
        ``(..., m)`` tensor.

    Example:
        >>> b1, b2 = torch.randn(4, 4, 16), torch.randn(4, 8, 4)  # n=64, m=32, k=4, r=1
        >>> monarch_multiply(torch.randn(2, 3, 64), b1, b2, out_features=32).shape
        torch.Size([2, 3, 32])
    """
    n = x.shape[-1]
    k, q, p, s = _check_factors(blkdiag1, blkdiag2, n, out_features)
    lead = x.shape[:-1]
    x = x.reshape(-1, n)
    if k * p != n:
        x = F.pad(x, (0, k * p - n))  # zeros in
    t = x.shape[0]
    h = torch.bmm(x.view(t, k, p).transpose(0, 1), blkdiag1.transpose(1, 2))  # (k, T, q)
    # the transpose permutation: flat (k, q) -> (q, k), block j takes column j
    h = h.transpose(0, 1).reshape(t, q, k).permute(2, 0, 1)  # (k, T, q)
    y = torch.bmm(h, blkdiag2.transpose(1, 2))  # (k, T, s)
    y = y.permute(1, 2, 0).reshape(t, s * k)  # output t of block j -> index t*k + j
    return y[:, :out_features].reshape(*lead, out_features)


def monarch_factors_to_dense_pair(
    blkdiag1: torch.Tensor, blkdiag2: torch.Tensor, in_features: int, out_features: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold both permutations into two block-sparse matrices ``A (k*k*r, n)`` and ``B (m, k*k*r)`` with
    ``M = B @ A``.

    ``A`` and ``B`` hold ``k`` times the factors' numbers (the zeros between blocks); the ``m x n`` matrix
    is never formed. The fast layer forward uses them as ``(x @ A.T) @ B.T``, two plain matmuls that need
    no activation-sized permutation copies.
    """
    k, q, p, s = _check_factors(blkdiag1, blkdiag2, in_features, out_features)
    a = torch.block_diag(*blkdiag1.unbind(0))  # (k*q, k*p), row i*q + c
    a = a.view(q, k, k * p).transpose(0, 1).reshape(k * q, k * p)  # row j*q + a' <- flat a'*k + j
    b = torch.block_diag(*blkdiag2.unbind(0))  # (k*s, k*q), row j*s + t
    b = b.view(k, s, k * q).transpose(0, 1).reshape(s * k, k * q)  # row t*k + j
    return a[:, :in_features], b[:out_features]


def monarch_to_dense(
    blkdiag1: torch.Tensor, blkdiag2: torch.Tensor, in_features: int, out_features: int
) -> torch.Tensor:
    """The dense ``(out_features, in_features)`` matrix ``M`` (for merging into a weight and for tests).

    Example:
        >>> b1, b2 = torch.randn(2, 2, 3), torch.randn(2, 4, 2)
        >>> monarch_to_dense(b1, b2, 5, 7).shape
        torch.Size([7, 5])
    """
    _check_factors(blkdiag1, blkdiag2, in_features, out_features)
    eye = torch.eye(in_features, dtype=blkdiag1.dtype, device=blkdiag1.device)
    # row i of the result is M e_i, i.e. column i of M
    return monarch_multiply(eye, blkdiag1, blkdiag2, out_features).T.contiguous()


def monarch_linear(
    x: torch.Tensor,
    blkdiag1: torch.Tensor,
    blkdiag2: torch.Tensor,
    out_features: int,
    *,
    residual: torch.Tensor | None = None,
    alpha: float = 1.0,
    folded: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``residual + alpha * x @ M.T``, the fast path MoRe layers train with (same values as
    :func:`monarch_multiply` up to float rounding).

    For narrow configurations (``k*k*r <= FOLD_MAX_WIDTH``, which includes the paper's default k=4, r=1)
    the permutations are folded into the two factors (:func:`monarch_factors_to_dense_pair`), so both
    stages are plain matmuls on contiguous activations: no padding, no activation-sized permutation copy,
    and the scaled add into ``residual`` is fused into the second matmul (``addmm``). The folded factors
    hold ``k`` times the parameter count (tiny next to the activations) and cost ``k`` times LoRA's FLOPs,
    which on CPU is cheaper than the copies they save. Wider configurations pay too many FLOPs that way
    and use the two batched matmuls of :func:`monarch_multiply` (see ``bench/more_vs_lora.py``).

    Args:
        x: ``(..., n)``.
        residual: optional ``(..., m)`` tensor to add to (e.g. the frozen layer's output), dtype of ``x``.
        folded: the pair :func:`monarch_factors_to_dense_pair` returns for these factors, when the caller
            keeps it (inference: the factors do not change between decoding steps).

    Example:
        >>> b1, b2 = torch.randn(4, 4, 16), torch.randn(4, 8, 4)
        >>> x, base = torch.randn(5, 64), torch.randn(5, 32)
        >>> y = monarch_linear(x, b1, b2, 32, residual=base, alpha=2.0)  # base + 2 * M x
        >>> torch.allclose(y, base + 2 * monarch_multiply(x, b1, b2, 32), atol=1e-5)
        True
    """
    n = x.shape[-1]
    lead = x.shape[:-1]
    k, q = blkdiag1.shape[:2]
    if k * q > FOLD_MAX_WIDTH:
        y = monarch_multiply(x, blkdiag1, blkdiag2, out_features)
        y = y * alpha if alpha != 1.0 else y
        return y if residual is None else residual + y
    a, b = (
        folded if folded is not None else monarch_factors_to_dense_pair(blkdiag1, blkdiag2, n, out_features)
    )
    h = x.reshape(-1, n) @ a.T  # (T, k*k*r)
    if residual is None:
        y = h @ b.T if alpha == 1.0 else torch.mm(h, b.T) * alpha
    else:
        y = torch.addmm(residual.reshape(-1, out_features), h, b.T, alpha=alpha)
    return y.view(*lead, out_features)
