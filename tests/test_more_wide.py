"""MoRe layers on wide configurations: the layer's MonarchProduct path, its fold choice, torch.compile."""

from collections import OrderedDict

import peft
import pytest
import torch
from torch import nn

import mad_models  # noqa: F401  (registers MORE)
from mad_models.monarch import FOLD_LIMITS, monarch_fold_limit, monarch_multiply, monarch_to_dense
from mad_models.more import MoReConfig, MoReLayer


def more_layer(n: int, m: int, k: int, r: int, scale: float = 1.0, seed: int = 0) -> MoReLayer:
    torch.manual_seed(seed)
    cfg = MoReConfig(nblocks=k, block_rank=r, scale=scale, target_modules=["lin"], init_weights=False)
    layer = peft.get_peft_model(nn.Sequential(OrderedDict(lin=nn.Linear(n, m))), cfg).base_model.model.lin
    assert isinstance(layer, MoReLayer)
    return layer


def grads_of(layer: MoReLayer, x: torch.Tensor, g: torch.Tensor):
    x = x.clone().requires_grad_(True)
    b1, b2 = layer.more_blkdiag1["default"], layer.more_blkdiag2["default"]
    b1.grad = b2.grad = None
    y = layer(x)
    y.backward(g)
    return y.detach(), x.grad, b1.grad.clone(), b2.grad.clone()


def graph_ops(y: torch.Tensor) -> set[str]:
    """Names of every autograd node behind ``y``."""
    seen, todo = set(), [y.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or type(node).__name__ in seen:
            continue
        seen.add(type(node).__name__)
        todo += [f for f, _ in node.next_functions]
    return seen


@pytest.mark.parametrize("n,m,k,r", [(96, 80, 8, 1), (64, 64, 4, 2), (70, 45, 3, 3), (256, 272, 16, 1)])
def test_wide_layer_equals_the_dense_reference(n, m, k, r):
    assert k * k * r > FOLD_LIMITS["cpu"]  # these take MonarchProduct when training on CPU
    layer = more_layer(n, m, k, r, scale=0.5)
    b1, b2 = layer.more_blkdiag1["default"], layer.more_blkdiag2["default"]
    x, g = torch.randn(3, 7, n), torch.randn(3, 7, m)
    y, dx, db1, db2 = grads_of(layer, x, g)
    assert "MonarchProductBackward" in graph_ops(layer(x))
    # forward: base + scale * M x, with M built densely
    base = layer.get_base_layer()
    dense = monarch_to_dense(b1.detach().double(), b2.detach().double(), n, m)
    want = base(x).double() + 0.5 * x.double() @ dense.T
    torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5)
    # backward: the gradients autograd gives the reference formula
    xr = x.clone().requires_grad_(True)
    b1r, b2r = b1.detach().clone().requires_grad_(True), b2.detach().clone().requires_grad_(True)
    (base(xr) + 0.5 * monarch_multiply(xr, b1r, b2r, m)).backward(g)
    for got, ref in zip((dx, db1, db2), (xr.grad, b1r.grad, b2r.grad), strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_layer_folds_by_width_when_training():
    limit = monarch_fold_limit("cpu")
    x = torch.randn(2, 5, 64)
    for k, r in [(2, 1), (2, 4), (4, 1), (4, 2), (8, 1)]:
        ops = graph_ops(more_layer(64, 64, k, r)(x))
        folded = k * k * r <= limit
        assert ("MonarchProductBackward" in ops) is not folded, (k, r, ops)
        assert ("AddmmBackward0" in ops) is folded, (k, r, ops)


def test_inference_keeps_the_folded_pair_up_to_the_cached_limit():
    cached = monarch_fold_limit("cpu", cached=True)
    x = torch.randn(1, 1, 64)
    for k, r in [(4, 1), (4, 2), (8, 1)]:
        layer = more_layer(64, 64, k, r)
        with torch.no_grad():
            pair = layer.folded_factors("default")
            assert (pair is not None) is (k * k * r <= cached)
            y = layer(x)
        # whichever path, the same numbers as training's
        torch.testing.assert_close(y, layer(x).detach(), rtol=1e-5, atol=1e-6)
        assert layer.folded_factors("default") is None  # gradients on: nothing kept


def test_wide_layer_merges_and_trains():
    layer = more_layer(128, 144, 8, 2)
    x = torch.randn(4, 128)
    with torch.no_grad():
        unmerged = layer(x)
        layer.merge()
        torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)
        layer.unmerge()
    params = [p for p in layer.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(5):
        loss = layer(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_compiled_wide_layer_equals_eager():
    """torch.compile (Inductor, one graph) traces the layer and gives eager's outputs and gradients."""
    torch._dynamo.reset()
    layer = more_layer(48, 40, 4, 2, scale=0.5)  # k^2 r = 32: MonarchProduct when eager on CPU
    assert 4 * 4 * 2 > monarch_fold_limit("cpu")
    x, g = torch.randn(2, 3, 48), torch.randn(2, 3, 40)
    eager = grads_of(layer, x, g)
    compiled = torch.compile(layer, fullgraph=True)
    b1, b2 = layer.more_blkdiag1["default"], layer.more_blkdiag2["default"]
    xc = x.clone().requires_grad_(True)
    b1.grad = b2.grad = None
    y = compiled(xc)
    y.backward(g)
    for got, want in zip((y.detach(), xc.grad, b1.grad, b2.grad), eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
