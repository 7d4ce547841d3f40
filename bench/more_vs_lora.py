"""MoRe vs LoRA: forward+backward time of one adapted layer on CPU, measured in one run.

For each layer shape (in x out) and a batch of 8 x 512 tokens it times, in fp32:

- adapter only: the update path ``x -> scale * M x`` (MoRe) or ``x -> B A x`` (LoRA; its scaling is 1
  here, alpha = r, and is not paid as an extra full-size multiply, as MoRe's scale 1 is not), forward and
  backward with gradients for the factors and for ``x``;
- full layer: the PEFT layer (frozen ``nn.Linear`` + adapter) as ``get_peft_model`` builds it. PEFT's LoRA
  layer as shipped ("LoRA =") is the headline comparison: it computes ``base(x) + B(A(x)) * scaling`` (an
  extra (T, m) multiply and add). "LoRA = fused" is LoRA hand-fused as MoRe's layer is: one
  ``addmm(base(x), A x, B^T, alpha=scaling)``.

The FLOPs column is the adapter's forward work per token: LoRA rank r costs 2r(n+m); MoRe's folded path
(``monarch_linear``, k*k*r <= its fold limit) a rank-k*k*r product, 2k^2 r(n+m), k times LoRA at the same
parameter count; the two-bmm path 2kr(n+m) plus permutation copies.

MoRe uses k=4 blocks, block rank 1 (the paper's default); "LoRA =" is LoRA at the same parameter count
(rank k*r = 4); LoRA r=8 has twice the parameters. The MoRe rows also show the plain two-``bmm`` product
(``monarch_multiply``) and an einsum variant, to show what the folded layout (``monarch_linear``, the one
MoRe layers run) buys. Timings interleave the methods (ABC ABC ...) and report medians, so background load
hits them alike.

Usage:
    python bench/more_vs_lora.py            # all five shapes
    python bench/more_vs_lora.py --quick    # two shapes, fewer repeats
    python bench/more_vs_lora.py --compile  # also try torch.compile on the MoRe adapter path
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import peft  # noqa: E402

import mad_models  # noqa: E402, F401
from mad_models.monarch import monarch_linear, monarch_multiply, monarch_param_count, monarch_shapes  # noqa: E402
from mad_models.more import MoReConfig, MoReLayer  # noqa: E402

SHAPES = [(768, 768), (1024, 1024), (2048, 2048), (768, 3072), (3072, 768)]
K, R = 4, 1


class OneLayer(nn.Module):
    def __init__(self, n: int, m: int):
        super().__init__()
        self.lin = nn.Linear(n, m)

    def forward(self, x):
        return self.lin(x)


def einsum_monarch(x, b1, b2, m):
    """The same product as monarch_multiply with einsum doing the block layout."""
    k, q, p = b1.shape
    t = x.reshape(-1, x.shape[-1])
    t = nn.functional.pad(t, (0, k * p - t.shape[-1])) if k * p != t.shape[-1] else t
    h = torch.einsum("tkp,kqp->tkq", t.view(-1, k, p), b1)  # (T, k, q)
    h = h.reshape(-1, q, k)  # flat (k, q) read as (q, k): column j feeds block j
    y = torch.einsum("tqj,jsq->tsj", h, b2)  # (T, s, k): output t*k + j
    return y.reshape(t.shape[0], -1)[:, :m]


def peft_layer(n: int, m: int, config) -> nn.Module:
    torch.manual_seed(0)
    model = peft.get_peft_model(OneLayer(n, m), config)
    layer = model.base_model.model.lin
    with torch.no_grad():  # non-zero second factors, like a trained adapter
        for p in layer.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    return layer


def time_interleaved(fns: dict[str, Callable[[], None]], reps: int, warmup: int = 2) -> dict[str, float]:
    """Median milliseconds of each fn, run round-robin so slow patches of the machine hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(reps):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def fwd_bwd(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor, params):
    def run():
        x.grad = None
        for p in params:
            p.grad = None
        fn(x).backward(grad)

    return run


def bench_shape(n: int, m: int, tokens: int, reps: int, use_compile: bool) -> list[dict]:
    x = torch.randn(tokens, n, requires_grad=True)
    grad = torch.randn(tokens, m)
    more = peft_layer(n, m, MoReConfig(nblocks=K, block_rank=R, target_modules=["lin"]))
    lora_eq = peft_layer(n, m, peft.LoraConfig(r=K * R, lora_alpha=K * R, target_modules=["lin"]))
    lora8 = peft_layer(n, m, peft.LoraConfig(r=8, lora_alpha=8, target_modules=["lin"]))
    assert isinstance(more, MoReLayer)
    b1, b2 = more.more_blkdiag1["default"], more.more_blkdiag2["default"]
    scale = more.scale["default"]

    def lora_path(layer):
        a, b, drop, s = (
            layer.lora_A["default"],
            layer.lora_B["default"],
            layer.lora_dropout["default"],
            layer.scaling["default"],
        )
        # the adapter's own work, B A x: PEFT multiplies the (T, m) output by `scaling` even when it is 1;
        # MoRe folds its scale into the matmul, so neither path pays a full-size multiply here
        return (lambda t: b(a(drop(t)))) if s == 1.0 else (lambda t: b(a(drop(t)) * s))

    def lora_fused(layer):
        """Hand-fused LoRA layer: base output, then addmm(base, A x, B^T, alpha=scaling) in one call."""
        base, a, b, s = (
            layer.get_base_layer(),
            layer.lora_A["default"],
            layer.lora_B["default"],
            layer.scaling,
        )
        return lambda t: torch.addmm(base(t), a(t), b.weight.T, alpha=s["default"])

    adapters = {
        "MoRe": (lambda t: monarch_linear(t, b1, b2, m, alpha=scale), [b1, b2]),
        "MoRe bmm": (lambda t: monarch_multiply(t, b1, b2, m) * scale, [b1, b2]),
        "MoRe einsum": (lambda t: einsum_monarch(t, b1, b2, m) * scale, [b1, b2]),
        "LoRA =": (lora_path(lora_eq), [p for p in lora_eq.parameters() if p.requires_grad]),
        "LoRA r=8": (lora_path(lora8), [p for p in lora8.parameters() if p.requires_grad]),
    }
    if use_compile:
        compiled = torch.compile(lambda t: monarch_linear(t, b1, b2, m, alpha=scale), dynamic=False)
        adapters["MoRe compiled"] = (compiled, [b1, b2])
    eq_params = [p for p in lora_eq.parameters() if p.requires_grad]
    full = {
        "MoRe": (more, [b1, b2]),
        "LoRA =": (lora_eq, eq_params),  # PEFT's LoRA layer as shipped: the headline comparison
        "LoRA = fused": (lora_fused(lora_eq), eq_params),
        "LoRA r=8": (lora8, [p for p in lora8.parameters() if p.requires_grad]),
    }
    t_adapter = time_interleaved({k: fwd_bwd(f, x, grad, p) for k, (f, p) in adapters.items()}, reps)
    t_full = time_interleaved({k: fwd_bwd(f, x, grad, p) for k, (f, p) in full.items()}, reps)

    count = {"LoRA =": K * R * (n + m), "LoRA = fused": K * R * (n + m), "LoRA r=8": 8 * (n + m)}
    rows = []
    for name in [*adapters, *(k for k in full if k not in adapters)]:
        params = monarch_param_count(n, m, K, R) if name.startswith("MoRe") else count[name]
        ms = t_adapter.get(name)
        rows.append(
            dict(
                shape=f"{n}x{m}",
                method=name,
                params=params,
                flops=forward_flops(name, n, m),
                adapter_ms=ms,
                ratio=ms / t_adapter["LoRA ="] if ms is not None else None,
                full_ms=t_full.get(name),
                full_ratio=t_full[name] / t_full["LoRA ="] if name in t_full else None,
            )
        )
    return rows


def forward_flops(method: str, n: int, m: int) -> str:
    """Forward multiply-adds x2 per token of the adapter path (the frozen layer's 2nm not included), and
    what the full layer adds on top (PEFT's LoRA: a (T, m) multiply by its scaling and a (T, m) add)."""
    if method in ("MoRe", "MoRe compiled"):
        w = K * K * R  # folded factors: a rank-k*k*r product, k times LoRA at the same count
        return f"2*{w}*(n+m) = {2 * w * (n + m) / 1e3:.0f}k"
    if method.startswith("MoRe"):
        w = K * R  # two block-diagonal bmms: LoRA rank k*r's FLOPs, plus the permutation copies
        return f"2*{w}*(n+m) = {2 * w * (n + m) / 1e3:.0f}k"
    r = K * R if method.startswith("LoRA =") else 8
    extra = "" if method.endswith("fused") else " (+2m in the PEFT layer)"
    return f"2*{r}*(n+m) = {2 * r * (n + m) / 1e3:.0f}k{extra}"


def print_table(rows: list[dict]) -> None:
    cols = [
        "layer (in x out)",
        "method",
        "params",
        "adapter fwd FLOPs/token",
        "adapter fwd+bwd ms",
        "vs LoRA =",
        "full layer fwd+bwd ms",
        "vs PEFT LoRA =",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        ad = f"{r['adapter_ms']:.1f}" if r["adapter_ms"] is not None else ""
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else ""
        full = f"{r['full_ms']:.1f}" if r["full_ms"] is not None else ""
        full_ratio = f"{r['full_ratio']:.2f}x" if r["full_ratio"] is not None else ""
        print(
            f"| {r['shape']} | {r['method']} | {r['params']:,} | {r['flops']} | {ad} | {ratio} | "
            f"{full} | {full_ratio} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="two shapes, batch 2 x 512, fewer repeats")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the MoRe path")
    parser.add_argument(
        "--reps", type=int, default=None, help="timed repeats per method (default 15, quick 5)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = SHAPES[:1] + SHAPES[3:4] if args.quick else SHAPES
    tokens = 2 * 512 if args.quick else 8 * 512
    reps = args.reps or (5 if args.quick else 15)
    for n, m in shapes:
        monarch_shapes(n, m, K, R)  # validates before timing
    print(
        f"# MoRe (k={K}, r={R}) vs LoRA, fp32, {tokens} tokens, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {reps}"
    )
    rows = []
    for n, m in shapes:
        rows += bench_shape(n, m, tokens, reps, args.compile)
        print(f"  measured {n}x{m}", file=sys.stderr, flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
