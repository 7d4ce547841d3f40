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

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = [
    "CACHED_FOLD_LIMIT",
    "CHUNK_BYTES",
    "FOLD_LIMITS",
    "TOKEN_MAJOR_MIN_K",
    "MonarchProduct",
    "MonarchShapes",
    "monarch_factors_to_dense_pair",
    "monarch_fold_limit",
    "monarch_linear",
    "monarch_multiply",
    "monarch_param_count",
    "monarch_shapes",
    "monarch_to_dense",
]


# widest folded intermediate (k*k*r) for which monarch_linear folds the permutations into the factors, per
# device type (others use the CPU's); see monarch_fold_limit. CPU: measured (bench/results/more-speed.md);
# CUDA: reasoned, not measured (no GPU here).
FOLD_LIMITS: dict[str, int] = {"cpu": 16, "cuda": 128}
# at inference a layer keeps its folded pair between calls (MoReLayer.folded_factors): with the fold paid
# once, decoding a token through it beats MonarchProduct's two dozen small ops up to this width at least
# (CPU, 576x576, k=4 r=2, one token: 12 us against 42 us); it is the limit layers folded at before
CACHED_FOLD_LIMIT = 32


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


def monarch_fold_limit(device: torch.device | str, *, cached: bool = False) -> int:
    """Widest folded intermediate ``k*k*r`` for which MoRe folds on ``device`` (:data:`FOLD_LIMITS`).

    The folded path (:func:`monarch_factors_to_dense_pair`) is one rank-``k*k*r`` product: ``k`` times
    the FLOPs of the two block-diagonal products of :class:`MonarchProduct`, but no permutation of
    activations and two large ops instead of a few dozen.

    - CPU (one core, ``bench/results/more-speed.md``: forward + backward of 4,096 tokens on 1024x1024 to
      3072x768 layers, folded time over the product's): 1.08-1.41x at ``k*k*r = 32``, 1.1-4.4x at 64-256;
      at 16 (the paper's default k=4, r=1) 0.96x on 768x3072 but 1.18-1.25x on the other three shapes,
      so a lower CPU limit may pay: it is not set lower until a run of the bench with it shows so.
    - CUDA (reasoned, not measured: no GPU here): a thin product reads its input at memory speed until its
      rank is in the hundreds (tensor cores do 100+ multiply-adds per byte loaded), while every
      permutation is an extra pass over memory and a kernel launch, so a GPU folds up to 128.
    - ``cached=True``: the limit for a folded pair that is kept between calls (inference), at least
      :data:`CACHED_FOLD_LIMIT`.

    Example:
        >>> monarch_fold_limit("cpu"), monarch_fold_limit(torch.device("cuda", 1))
        (16, 128)
        >>> monarch_fold_limit("cpu", cached=True)
        32
    """
    limit = FOLD_LIMITS.get(torch.device(device).type, FOLD_LIMITS["cpu"])
    return max(limit, CACHED_FOLD_LIMIT) if cached else limit


def _autocast_off(device_type: str):
    """A context that turns autocast off on ``device_type`` if it is on (inside the custom product, whose
    inputs :func:`monarch_linear` has already cast)."""
    try:
        on = torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know
        on = False
    return torch.autocast(device_type, enabled=False) if on else contextlib.nullcontext()


# bytes of one token chunk of the output-side temporaries in MonarchProduct: they stay in a core's L2 cache
CHUNK_BYTES = 1 << 20


# from this many blocks on, MonarchProduct keeps a chunk of its output (and of the output's gradient) token
# by token, (chunk, k, s), rather than block by block, (k, chunk, s): each token's permutation is then a
# transpose of a small (k, s) matrix in cache, cheaper than walking k blocks once there are many
TOKEN_MAJOR_MIN_K = 16


def _token_chunk(tokens: int, width: int, itemsize: int) -> int:
    """Tokens per chunk so that a ``(chunk, width)`` temporary holds about :data:`CHUNK_BYTES`."""
    return max(1, min(tokens, CHUNK_BYTES // max(1, width * itemsize)))


def _blocks(k: int, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised ``(k, rows, cols)`` buffer whose blocks start 64 bytes past a multiple of their size.

    Blocks of a power-of-two byte size map to the same cache sets, so a pass that reads one value from
    each of ``k`` blocks in turn (the output permutation) evicts its own lines; the padding spreads them.
    """
    pad = 64 // like.element_size()
    return torch.empty(k, rows * cols + pad, dtype=like.dtype, device=like.device)[:, : rows * cols].view(
        k, rows, cols
    )


def _token_rows(k: int, rows: int, tokens: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised ``(k, rows, tokens)`` intermediate whose rows are padded by 64 bytes (see
    :func:`_blocks`): ``tokens`` is often a power of two."""
    pad = 64 // like.element_size()
    return torch.empty(k, rows, tokens + pad, dtype=like.dtype, device=like.device)[:, :, :tokens]


def _to_blocks(g: torch.Tensor, k: int, out: torch.Tensor) -> None:
    """``out[j, t, i] = g[t, i*k + j]`` for ``g (T, s*k)``, ``out (k, T, s)``: the output permutation undone.

    A transpose of ``g`` seen as ``(T*s, k)``. On CPU, ATen's strided copy walks ``g`` with a ``k``-long
    inner loop; BLAS packs a transposed operand in tiles, so there the copy is a product with the
    identity, several times faster (exact: every output is one input times 1; a non-finite input also
    turns the other ``k - 1`` outputs of its row into NaN, which only matters for an unusable gradient).
    """
    t, w = g.shape
    if g.device.type == "cpu":
        eye = torch.eye(k, dtype=g.dtype, device=g.device)
        torch.mm(eye, g.view(t * (w // k), k).t(), out=out.view(k, t * (w // k)))
    else:
        out.copy_(g.view(t, w // k, k).permute(2, 0, 1))


class MonarchProduct(torch.autograd.Function):
    """``residual + alpha * x @ M.T`` for a 2-D ``x``, as two batched products with a hand-written backward.

    The path :func:`monarch_linear` takes for wide configurations (LoRA's FLOPs at equal parameters).
    Autograd through :func:`monarch_multiply` costs several activation-sized copies (the output
    permutation both ways, the input gradient transposed back, each a fresh allocation); here:

    - stage 1 runs per block as ``(k*r, p) @ (p, T)``, reading ``x`` in place and writing the intermediate
      ``(k, k*r, T)`` with tokens innermost (BLAS's fast layout for these thin products);
    - the transpose permutation and ``alpha`` touch only that small intermediate, which is the one tensor
      saved for backward (besides ``x`` and the factors, which autograd holds anyway);
    - everything ``(T, m)``- or ``(T, n)``-sized runs in token chunks of about :data:`CHUNK_BYTES`
      through preallocated buffers (``out=``): stage 2 and its permutation fused with the residual add,
      the gradient's permutation and both stage-2 gradients, the input gradient and its block layout.
      Activations are read and written once, the temporaries never leave the cache, and the only
      activation-sized allocations are the output and the input gradient. A chunk is kept block by
      block, ``(k, chunk, s)``, or from :data:`TOKEN_MAJOR_MIN_K` blocks on token by token.

    Call it through :func:`monarch_linear`, which flattens leading dims and checks shapes.
    """

    @staticmethod
    def forward(ctx, x, blkdiag1, blkdiag2, residual, alpha: float, out_features: int):
        k, q, p = blkdiag1.shape
        s, r, m = blkdiag2.shape[1], q // k, out_features
        t, n = x.shape
        like = dict(dtype=x.dtype, device=x.device)
        with _autocast_off(x.device.type):
            xp = x if k * p == n else F.pad(x, (0, k * p - n))  # zeros in
            h1 = torch.bmm(blkdiag1, xp.view(t, k, p).permute(1, 2, 0), out=_token_rows(k, q, t, x))
            # the transpose permutation: row u*k + j of block i -> row i*r + u of block j; scaled here
            h2 = _token_rows(k, q, t, x)
            torch.mul(h1.view(k, r, k, t).permute(2, 0, 1, 3), alpha, out=h2.view(k, k, r, t))
            if residual is not None and k * s != m:
                residual = F.pad(residual, (0, k * s - m))
            out = torch.empty(t, k * s, **like)
            c = _token_chunk(t, k * s, x.element_size())
            token_major = k >= TOKEN_MAJOR_MIN_K
            y = torch.empty(c, k, s, **like) if token_major else _blocks(k, c, s, x)
            for a in range(0, t, c):
                e = min(t, a + c)
                yv = y[: e - a].transpose(0, 1) if token_major else y[:, : e - a]  # (k, chunk, s)
                yc = torch.bmm(h2[:, :, a:e].transpose(1, 2), blkdiag2.transpose(1, 2), out=yv)
                # output i of block j -> column i*k + j, in the same pass as the residual add
                dst = out[a:e].view(e - a, s, k)
                if residual is None:
                    dst.copy_(yc.permute(1, 2, 0))
                else:
                    torch.add(residual[a:e].view(e - a, s, k), yc.permute(1, 2, 0), out=dst)
            out = out if k * s == m else out[:, :m].contiguous()  # cropped to m
        ctx.save_for_backward(x, blkdiag1, blkdiag2, h2)
        ctx.alpha = alpha
        return out

    @staticmethod
    @once_differentiable  # out= products into views: no graph of the backward itself
    def backward(ctx, grad):
        x, blkdiag1, blkdiag2, h2 = ctx.saved_tensors
        need_x, need_b1, need_b2, need_res = ctx.needs_input_grad[:4]
        dx = db1 = db2 = None
        k, q, p = blkdiag1.shape
        s, r = blkdiag2.shape[1], q // k
        t, n = x.shape
        like = dict(dtype=x.dtype, device=x.device)
        with _autocast_off(x.device.type):
            g = grad.contiguous()
            if k * s != g.shape[1]:  # cropped outputs get no gradient
                g = F.pad(g, (0, k * s - g.shape[1]))
            c = _token_chunk(t, k * s, x.element_size())
            token_major = k >= TOKEN_MAJOR_MIN_K
            gb = torch.empty(c, k, s, **like) if token_major else _blocks(k, c, s, x)  # a chunk, by block
            db2t = torch.zeros(k, q, s, **like) if need_b2 else None  # db2, transposed
            dh2 = _token_rows(k, q, t, x) if need_x or need_b1 else None
            for a in range(0, t, c):
                e = min(t, a + c)
                if token_major:
                    gb[: e - a].copy_(g[a:e].view(e - a, s, k).transpose(1, 2))
                    gbc = gb[: e - a].transpose(0, 1)  # (k, chunk, s)
                else:
                    gbc = gb[:, : e - a]
                    _to_blocks(g[a:e], k, gbc)
                if need_b2:
                    db2t.baddbmm_(h2[:, :, a:e], gbc)  # h2 carries alpha
                if dh2 is not None:
                    torch.bmm(blkdiag2.transpose(1, 2), gbc.transpose(1, 2), out=dh2[:, :, a:e])
            if need_b2:
                db2 = db2t.transpose(1, 2).contiguous()  # (k, s, k*r)
            if dh2 is not None:
                dh1 = _token_rows(k, q, t, x)  # the permutation undone, and alpha
                torch.mul(dh2.view(k, k, r, t).permute(1, 2, 0, 3), ctx.alpha, out=dh1.view(k, r, k, t))
                xp = x if k * p == n else F.pad(x, (0, k * p - n))
                if need_b1:
                    db1 = torch.bmm(dh1, xp.view(t, k, p).transpose(0, 1))  # (k, k*r, p)
                if need_x:
                    dx = torch.empty(t, k * p, **like)
                    c = _token_chunk(t, k * p, x.element_size())
                    dxb = _blocks(k, c, p, x)  # one chunk in block layout
                    for a in range(0, t, c):
                        e = min(t, a + c)
                        dxc = torch.bmm(dh1[:, :, a:e].transpose(1, 2), blkdiag1, out=dxb[:, : e - a])
                        dx[a:e].view(e - a, k, p).copy_(dxc.transpose(0, 1))
                    dx = dx if k * p == n else dx[:, :n]
        return dx, db1, db2, grad if need_res else None, None, None


def monarch_linear(
    x: torch.Tensor,
    blkdiag1: torch.Tensor,
    blkdiag2: torch.Tensor,
    out_features: int,
    *,
    residual: torch.Tensor | None = None,
    alpha: float = 1.0,
    folded: tuple[torch.Tensor, torch.Tensor] | None = None,
    fold: bool | None = None,
) -> torch.Tensor:
    """``residual + alpha * x @ M.T``, the fast path MoRe layers train with (same values as
    :func:`monarch_multiply` up to float rounding).

    Narrow configurations (``k*k*r <= monarch_fold_limit(x.device)``; on CPU that includes the paper's
    default k=4, r=1) fold the permutations into the two factors (:func:`monarch_factors_to_dense_pair`),
    so both stages are plain matmuls on contiguous activations and the scaled add into ``residual`` is
    fused into the second one (``addmm``). The folded factors hold ``k`` times the parameter count (tiny
    next to the activations) and cost ``k`` times LoRA's FLOPs. Wider configurations take
    :class:`MonarchProduct`, two batched products with LoRA's FLOPs at equal parameters and a
    hand-written backward (see ``bench/more_vs_lora.py``).

    Args:
        x: ``(..., n)``.
        residual: optional ``(..., m)`` tensor to add to (e.g. the frozen layer's output), dtype of ``x``.
        folded: the pair :func:`monarch_factors_to_dense_pair` returns for these factors, when the caller
            keeps it (inference: the factors do not change between decoding steps).
        fold: force the folded (True) or the two-product (False) path; None (the default) chooses by
            :func:`monarch_fold_limit`. Both give the same values up to float rounding.

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
    if folded is None and (k * q > monarch_fold_limit(x.device) if fold is None else not fold):
        if torch.compiler.is_compiling():
            # Dynamo cannot trace MonarchProduct's products into preallocated views (out=): under
            # torch.compile the plain formula is traced, and Inductor fuses its permutations itself
            y = monarch_multiply(x, blkdiag1, blkdiag2, out_features)
            y = y * alpha if alpha != 1.0 else y
            return y if residual is None else residual + y
        _check_factors(blkdiag1, blkdiag2, n, out_features)
        dev = x.device.type
        try:  # bmm's autocast policy, applied before the product (which runs with autocast off)
            cast = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        except RuntimeError:
            cast = None
        if cast is not None:
            x, blkdiag1, blkdiag2 = x.to(cast), blkdiag1.to(cast), blkdiag2.to(cast)
        res = None
        if residual is not None and residual.dtype == x.dtype:
            res = residual.reshape(-1, out_features).contiguous()
        y = MonarchProduct.apply(x.reshape(-1, n).contiguous(), blkdiag1, blkdiag2, res, alpha, out_features)
        if residual is not None and res is None:
            y = residual.reshape(-1, out_features) + y
        return y.view(*lead, out_features)
    a, b = (
        folded if folded is not None else monarch_factors_to_dense_pair(blkdiag1, blkdiag2, n, out_features)
    )
    h = x.reshape(-1, n) @ a.T  # (T, k*k*r)
    if residual is None:
        y = h @ b.T if alpha == 1.0 else torch.mm(h, b.T) * alpha
    else:
        y = torch.addmm(residual.reshape(-1, out_features), h, b.T, alpha=alpha)
    return y.view(*lead, out_features)
