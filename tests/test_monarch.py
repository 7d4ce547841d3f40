"""The Monarch maths: products, dense form, shapes, counts and the spec's permutation."""

import math

import pytest
import torch

from mad_models.monarch import (
    monarch_factors_to_dense_pair,
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
    torch.testing.assert_close(monarch_linear(x, b1, b2, m), y, rtol=1e-10, atol=1e-10)
    res = torch.randn(3, 5, m, dtype=torch.float64)
    torch.testing.assert_close(monarch_linear(x, b1, b2, m, residual=res, alpha=0.5), res + 0.5 * y)
    # both code paths of the layer's fast function (folded when k*k*r is small, bmm otherwise)
    assert {k * k * r <= 32 for n, m, k, r in SHAPES} == {True, False}
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
    for fn in (monarch_multiply, monarch_linear):
        b1.grad = b2.grad = None
        (fn(x, b1, b2, 40) * g).sum().backward()
        grads.append((b1.grad.clone(), b2.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert grads[0][0].abs().sum() > 0 and grads[0][1].abs().sum() > 0
