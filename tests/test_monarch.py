"""The Monarch maths: products, dense form, shapes, counts and the spec's permutation."""

import math
from functools import partial

import pytest
import torch

from mad_models import monarch
from mad_models.monarch import (
    CACHED_FOLD_LIMIT,
    FOLD_LIMITS,
    MonarchProduct,
    monarch_factors_to_dense_pair,
    monarch_fold_limit,
    monarch_linear,
    monarch_multiply,
    monarch_param_count,
    monarch_shapes,
    monarch_to_dense,
)

# (n, m, k, r): square, rectangular both ways, sizes k does not divide, block ranks 1..4
SHAPES = [
    (16, 16, 4, 1),
    (64, 64, 4, 4),
    (48, 96, 4, 2),
    (96, 48, 4, 3),
    (30, 50, 3, 1),
    (37, 23, 2, 4),
    (10, 7, 3, 1),
    (100, 61, 5, 2),
    (64, 64, 8, 1),
    (21, 40, 4, 1),  # p=6: 3 zeros pad the last input block, 4 outputs are cropped
]


def random_factors(n, m, k, r, dtype=torch.float64):
    sh = monarch_shapes(n, m, k, r)
    return torch.randn(sh.blkdiag1, dtype=dtype), torch.randn(sh.blkdiag2, dtype=dtype)


def spec_dense(b1, b2, n, m):
    """M built entry by entry from the words of shared/specs/more.md, with plain loops."""
    k, q, p = b1.shape
    s = b2.shape[1]
    dense = torch.zeros(m, n, dtype=b1.dtype)
    for col in range(n):
        x = torch.zeros(k * p, dtype=b1.dtype)
        x[col] = 1.0  # zero padding beyond n
        # factor 1: block i maps its p inputs to q = k*r values; flatten (k, q) row-major
        flat = torch.cat([b1[i] @ x[i * p : (i + 1) * p] for i in range(k)])
        # permutation: reshape to (q, k) and read column j for second-stage block j
        as_qk = flat.reshape(q, k)
        y = torch.zeros(s * k, dtype=b1.dtype)
        for j in range(k):
            out_j = b2[j] @ as_qk[:, j]  # s outputs of block j
            for t in range(s):
                y[t * k + j] = out_j[t]  # output index t*k + j
        dense[:, col] = y[:m]  # cropped to m
    return dense


@pytest.mark.parametrize("n,m,k,r", SHAPES)
def test_multiply_equals_dense_product(n, m, k, r):
    b1, b2 = random_factors(n, m, k, r)
    dense = monarch_to_dense(b1, b2, n, m)
    assert dense.shape == (m, n)
    x = torch.randn(3, 5, n, dtype=torch.float64)
    y = monarch_multiply(x, b1, b2, m)
    assert y.shape == (3, 5, m)
    torch.testing.assert_close(y, x @ dense.T, rtol=1e-10, atol=1e-10)
    # a 1-D input and the fast folded path give the same numbers
    torch.testing.assert_close(
        monarch_multiply(x[0, 0], b1, b2, m), x[0, 0] @ dense.T, rtol=1e-10, atol=1e-10
    )
    res = torch.randn(3, 5, m, dtype=torch.float64)
    # both code paths of the layer's fast function (folded when k*k*r is small, MonarchProduct otherwise)
    for fold in (None, True, False):
        torch.testing.assert_close(monarch_linear(x, b1, b2, m, fold=fold), y, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(
            monarch_linear(x, b1, b2, m, residual=res, alpha=0.5, fold=fold), res + 0.5 * y
        )
    a, b = monarch_factors_to_dense_pair(b1, b2, n, m)
    torch.testing.assert_close(b @ a, dense, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "n,m,k,r", [(8, 8, 2, 1), (12, 10, 3, 1), (10, 7, 3, 1), (16, 24, 2, 2), (13, 40, 3, 1)]
)
def test_permutation_is_exactly_the_specs(n, m, k, r):
    b1, b2 = random_factors(n, m, k, r)
    torch.testing.assert_close(
        monarch_to_dense(b1, b2, n, m), spec_dense(b1, b2, n, m), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("n,m,k,r", SHAPES)
def test_every_output_depends_on_every_input(n, m, k, r):
    b1, b2 = random_factors(n, m, k, r)
    dense = monarch_to_dense(b1, b2, n, m)
    # no zero block: each (output t, input i) pair is connected
    assert (dense.abs() > 1e-12).all()
    # and the Jacobian of the product says the same
    jac = torch.autograd.functional.jacobian(
        lambda v: monarch_multiply(v, b1, b2, m), torch.randn(n, dtype=b1.dtype)
    )
    assert (jac.abs() > 1e-12).all()
    # rank reaches min(m, n, k*k*r) (when padding leaves every block real), beyond LoRA's k*r
    p, s = math.ceil(n / k), math.ceil(m / k)
    if k * p == n and k * s == m:
        assert torch.linalg.matrix_rank(dense).item() == min(m, n, k * k * r)


@pytest.mark.parametrize("r", [1, 2, 3])
def test_one_block_is_lora(r):
    n, m = 20, 12
    b1, b2 = random_factors(n, m, 1, r)
    # k=1: blkdiag1 is LoRA's A (r, n), blkdiag2 is LoRA's B (m, r)
    torch.testing.assert_close(monarch_to_dense(b1, b2, n, m), b2[0] @ b1[0], rtol=1e-12, atol=1e-12)
    assert torch.linalg.matrix_rank(monarch_to_dense(b1, b2, n, m)).item() == r


@pytest.mark.parametrize("n,m,k,r", SHAPES)
def test_param_count(n, m, k, r):
    sh = monarch_shapes(n, m, k, r)
    stored = math.prod(sh.blkdiag1) + math.prod(sh.blkdiag2)
    assert monarch_param_count(n, m, k, r) == stored
    if n % k == 0 and m % k == 0:
        assert stored == k * r * (n + m)
    assert monarch_param_count(n, m, k, r, padded=False) == k * r * (n + m)


def test_shapes_of_the_papers_default():
    sh = monarch_shapes(4096, 4096, 4, 1)
    assert (sh.blkdiag1, sh.blkdiag2) == ((4, 4, 1024), (4, 1024, 4))
    assert monarch_param_count(4096, 4096, 4, 1) == 32768  # LoRA r=4 on the same layer


@pytest.mark.parametrize(
    "args,err,match",
    [
        ((64, 64, 0, 1), ValueError, "nblocks must be >= 1"),
        ((64, 64, 4, 0), ValueError, "block_rank must be >= 1"),
        ((64, 64, 4, -2), ValueError, "block_rank must be >= 1"),
        ((64, 64, 4, 5), ValueError, "larger than a block allows"),  # k*r=20 > p=16
        ((64, 12, 4, 1), ValueError, "larger than a block allows"),  # k*r=4 > s=3
        ((3, 64, 4, 1), ValueError, "use fewer blocks"),
        ((64, 64, 4.0, 1), TypeError, "nblocks must be an int"),
        ((64, 64, True, 1), TypeError, "nblocks must be an int"),
    ],
)
def test_bad_shapes_raise_clearly(args, err, match):
    with pytest.raises(err, match=match):
        monarch_shapes(*args)


def test_mismatched_factors_raise():
    b1, b2 = random_factors(16, 16, 4, 1)
    with pytest.raises(ValueError, match="does not fit blkdiag1"):
        monarch_multiply(torch.randn(2, 40), b1, b2, 16)
    with pytest.raises(ValueError, match="do not fit together"):
        monarch_multiply(torch.randn(2, 16), b1, b2[:, :, :3], 16)
    with pytest.raises(ValueError, match="3-D"):
        monarch_to_dense(b1[0], b2, 16, 16)


def test_gradients_flow_through_both_paths():
    b1, b2 = random_factors(24, 40, 4, 1)
    b1.requires_grad_(True)
    b2.requires_grad_(True)
    x = torch.randn(7, 24, dtype=torch.float64)
    g = torch.randn(7, 40, dtype=torch.float64)
    grads = []
    for fn in (monarch_multiply, partial(monarch_linear, fold=True), partial(monarch_linear, fold=False)):
        b1.grad = b2.grad = None
        (fn(x, b1, b2, 40) * g).sum().backward()
        grads.append((b1.grad.clone(), b2.grad.clone()))
    for other in grads[1:]:
        torch.testing.assert_close(grads[0][0], other[0])
        torch.testing.assert_close(grads[0][1], other[1])
    assert grads[0][0].abs().sum() > 0 and grads[0][1].abs().sum() > 0


# ---- MonarchProduct: the wide path's hand-written backward, judged by the oracle above ----


def product_and_reference(x, b1, b2, m, residual, alpha):
    """MonarchProduct's output and the reference formula's, both differentiable."""
    y = MonarchProduct.apply(x, b1, b2, residual, alpha, m)
    ref = alpha * monarch_multiply(x, b1, b2, m)
    return y, ref if residual is None else residual + ref


@pytest.mark.parametrize("layout", ["block-major", "token-major"])  # of the output-side chunks
@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20])  # one token per chunk, and one chunk for all
@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("n,m,k,r", [*SHAPES, (256, 272, 16, 1)])
def test_product_matches_autograd_of_the_reference(
    n, m, k, r, with_residual, chunk_bytes, layout, monkeypatch
):
    monkeypatch.setattr(monarch, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(monarch, "TOKEN_MAJOR_MIN_K", 1 if layout == "token-major" else 10**6)
    b1, b2 = (t.requires_grad_(True) for t in random_factors(n, m, k, r))
    x = torch.randn(11, n, dtype=torch.float64, requires_grad=True)
    res = torch.randn(11, m, dtype=torch.float64, requires_grad=True) if with_residual else None
    y, ref = product_and_reference(x, b1, b2, m, res, 0.7)
    assert y.shape == (11, m) and y.is_contiguous()
    # the oracle itself: the dense matrix built from the spec's words
    dense = spec_dense(b1.detach(), b2.detach(), n, m) if n * m <= 2500 else monarch_to_dense(b1, b2, n, m)
    torch.testing.assert_close(y.detach(), (0 if res is None else res.detach()) + 0.7 * x.detach() @ dense.T)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn(11, m, dtype=torch.float64)
    inputs = [x, b1, b2] + ([res] if with_residual else [])
    for got, want in zip(torch.autograd.grad(y, inputs, g), torch.autograd.grad(ref, inputs, g), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,m,k,r", [(16, 16, 4, 1), (21, 40, 4, 1), (10, 7, 3, 1), (24, 24, 2, 3)])
def test_product_gradcheck(n, m, k, r, dtype, monkeypatch):
    monkeypatch.setattr(monarch, "CHUNK_BYTES", 4 * 4 * m)  # 4 tokens per chunk: 5 tokens take 2 chunks
    b1, b2 = (t.to(dtype).requires_grad_(True) for t in random_factors(n, m, k, r))
    x = torch.randn(5, n, dtype=dtype, requires_grad=True)
    res = torch.randn(5, m, dtype=dtype, requires_grad=True)
    tol = {} if dtype == torch.float64 else dict(eps=1e-2, atol=2e-2, rtol=2e-2)
    assert torch.autograd.gradcheck(lambda *a: MonarchProduct.apply(*a, 0.5, m), (x, b1, b2, res), **tol)


def test_product_in_bf16_is_close_to_fp64():
    n, m, k, r = 96, 80, 8, 1
    b1, b2 = random_factors(n, m, k, r)
    x, res, g = (
        torch.randn(16, n, dtype=torch.float64),
        torch.randn(16, m, dtype=torch.float64),
        torch.randn(16, m),
    )
    leaves = [t.bfloat16().requires_grad_(True) for t in (x, b1, b2)]
    y = MonarchProduct.apply(*leaves, res.bfloat16(), 1.0, m)
    assert y.dtype == torch.bfloat16
    y.backward(g.bfloat16())
    exact = [t.clone().requires_grad_(True) for t in (x, b1, b2)]
    want = res + monarch_multiply(*exact, m)
    want.backward(g.double())
    # bf16 keeps 8 bits of mantissa: relative error ~ 2^-8 per rounding, a few roundings deep
    torch.testing.assert_close(y.double(), want.detach(), rtol=0.05, atol=0.05 * want.abs().max().item())
    for got, ref in zip(leaves, exact, strict=True):
        scale = ref.grad.abs().max().item()
        torch.testing.assert_close(got.grad.double(), ref.grad, rtol=0.05, atol=0.05 * scale)


def test_product_saves_only_the_small_intermediate():
    n, m, k, r, t = 64, 96, 4, 2, 50
    b1, b2 = (f.float().requires_grad_(True) for f in random_factors(n, m, k, r))
    x = torch.randn(t, n, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s) or s, lambda s: s):
        MonarchProduct.apply(x, b1, b2, torch.randn(t, m), 1.0, m)
    shapes = sorted(tuple(s.shape) for s in saved)
    # x and the factors (held by autograd anyway), and the (k, k*r, T) intermediate: no (T, m) tensor
    assert shapes == sorted([(t, n), tuple(b1.shape), tuple(b2.shape), (k, k * r, t)])


def test_product_edge_cases():
    b1, b2 = (f.float() for f in random_factors(48, 40, 4, 2))
    # no tokens
    assert monarch_linear(torch.randn(0, 48), b1, b2, 40, fold=False).shape == (0, 40)
    # a non-contiguous input and residual, leading dims
    x = torch.randn(3, 48, 5).transpose(1, 2)  # (3, 5, 48), not contiguous
    res = torch.randn(3, 40, 5).transpose(1, 2)
    want = res + monarch_multiply(x, b1, b2, 40)
    torch.testing.assert_close(monarch_linear(x, b1, b2, 40, residual=res, fold=False), want)
    # a residual of another dtype is added outside the product
    y = monarch_linear(x, b1, b2, 40, residual=res.double(), fold=False)
    assert y.dtype == torch.float64
    # double backward is refused clearly, not computed wrong
    x, w = torch.randn(4, 48, requires_grad=True), torch.randn(4, 40, requires_grad=True)
    y = monarch_linear(x, b1, b2, 40, fold=False)
    (gx,) = torch.autograd.grad((y * w).sum(), x, create_graph=True)  # the output grad w needs a graph
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()


def test_product_under_autocast_follows_bmm():
    b1, b2 = (f.float().requires_grad_(True) for f in random_factors(48, 40, 4, 2))
    x = torch.randn(6, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = monarch_linear(x, b1, b2, 40, fold=False)
        assert y.dtype == torch.bfloat16 == torch.bmm(x[None], x[None].mT).dtype  # as autocast runs bmm
    y.float().sum().backward()
    assert b1.grad.dtype == b2.grad.dtype == torch.float32  # the factors stay fp32
    torch.testing.assert_close(y.float(), monarch_multiply(x, b1, b2, 40).detach(), rtol=0.05, atol=0.1)


# ---- the fold limit: which path monarch_linear takes, per device ----


def path_taken(y: torch.Tensor) -> str:
    node = y.grad_fn
    while type(node).__name__.startswith(("View", "Reshape")):  # the reshape back to (..., m)
        node = node.next_functions[0][0]
    name = type(node).__name__
    return "folded" if name.startswith("Addmm") else "product" if "MonarchProduct" in name else name


def test_fold_limit_depends_on_the_device(monkeypatch):
    assert monarch_fold_limit("cpu") == FOLD_LIMITS["cpu"]
    assert monarch_fold_limit(torch.device("cuda", 0)) == FOLD_LIMITS["cuda"]
    assert monarch_fold_limit("xpu") == FOLD_LIMITS["cpu"]  # devices without their own limit: the CPU's
    assert FOLD_LIMITS["cuda"] > FOLD_LIMITS["cpu"]  # a GPU folds wider (see monarch_fold_limit)
    # a pair kept between calls (inference) folds at least up to CACHED_FOLD_LIMIT on every device
    assert monarch_fold_limit("cpu", cached=True) == max(FOLD_LIMITS["cpu"], CACHED_FOLD_LIMIT)
    assert monarch_fold_limit("cuda", cached=True) == max(FOLD_LIMITS["cuda"], CACHED_FOLD_LIMIT)
    x = torch.randn(4, 256)
    res = torch.randn(4, 256)
    widths = {}
    for k, r in [(2, 1), (4, 1), (4, 2), (8, 1), (4, 4), (8, 2), (16, 1)]:
        b1, b2 = (f.float().requires_grad_(True) for f in random_factors(256, 256, k, r))
        y = monarch_linear(x, b1, b2, 256, residual=res)
        widths[k * k * r] = path_taken(y)
        assert path_taken(monarch_linear(x, b1, b2, 256, residual=res, fold=True)) == "folded"
        assert path_taken(monarch_linear(x, b1, b2, 256, residual=res, fold=False)) == "product"
    limit = FOLD_LIMITS["cpu"]
    assert widths == {w: "folded" if w <= limit else "product" for w in widths}
    assert set(widths.values()) == {"folded", "product"}  # both sides of the limit were seen
    # the choice reads the table at call time: a wider CPU limit folds k=8, r=2 (width 128)
    b1, b2 = (f.float().requires_grad_(True) for f in random_factors(256, 256, 8, 2))
    monkeypatch.setitem(FOLD_LIMITS, "cpu", 128)
    assert path_taken(monarch_linear(x, b1, b2, 256, residual=res)) == "folded"
    monkeypatch.setitem(FOLD_LIMITS, "cpu", 127)
    assert path_taken(monarch_linear(x, b1, b2, 256, residual=res)) == "product"
