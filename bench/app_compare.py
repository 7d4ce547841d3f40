"""The app's two Compare goals, measured in one run on the bundled assets; prints one table.

    python bench/app_compare.py                    # SmolLM2 base + its 3 adapters, 64 new tokens, 3 runs
    python bench/app_compare.py --tokens 32 --runs 2 --threads 1

Memory: process RSS (psutil) before any model, with the base alone, and with base + 3 adapters loaded
into the app's cache (adapters share the base's weights). Goal: base + 3 adapters <= 1.3x the base
alone. Both the whole-process ratio and the ratio of what the models added (RSS minus the RSS before
any model) are printed; the goal is read on the second, the stricter one.

Throughput: greedy Compare of one model alone, against the 4 columns (base + 3 adapters) that the app
runs as one batched mixed-adapter ``generate``. Aggregate tokens/s is summed over the 4 columns (each
column's new tokens / its seconds). Goal: >= 2.5x one model's. Median of ``--runs`` runs.

The forward rows time one forward of 4 one-token rows without a KV cache, round-robin: the plain base,
the shared tree with every row on the base, the rows split over base + 3 adapters through the host's
fused mixed-adapter layers (mad_models/fused_adapters.py), and the same split through PEFT's and MoRe's own
mixed-batch forward (``peft_mixed_forward``); the surcharge rows divide each mixed time by the base-rows
time of the same round.

The ceiling row runs the plain base model (no adapter layers) on 4 copies of the prompt in one batch:
what batching 4 rows buys on this hardware at all. On CPU a 4-row matmul costs about 2.5x a 1-row one
(BLAS packs the weight for a matrix product; one row takes the matrix-vector path), so 4 columns can
never be 4x one column there; on a GPU a decoding step costs about the same for 1 or 4 rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assets", default=str(ROOT / "assets"))
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", default="Write a short story about a robot who learns to paint.")
    a = p.parse_args(argv)
    os.environ.setdefault("MAD_MODELS_DEVICE", "cpu")
    os.environ["MAD_MODELS_THREADS"] = str(a.threads)
    import torch

    import mad_models  # noqa: F401
    from app_backend.registry import Registry
    from app_backend.service import AppService

    svc = AppService(Registry.from_dir(a.assets))
    reg = svc.registry
    base = next(n for n in reg.names(group="language") if reg.entries[n].kind != "adapter")
    adapters = [e.name for e in reg.adapters() if e.base == base][:3]
    if len(adapters) < 3:
        raise SystemExit(f"need 3 adapters on {base}, the registry has {adapters}")

    rss0 = rss_mib()
    svc.get(base)
    rss_base = rss_mib()
    for name in adapters:
        svc.get(name)
    rss_all = rss_mib()
    cache_mib = svc.cache.total_bytes / 2**20

    def run(names: list[str]) -> tuple[float, float, int]:
        """(summed tokens/s over columns, wall seconds, total new tokens) of one greedy Compare."""
        t0 = time.perf_counter()
        # every column makes exactly a.tokens tokens: an adapter trained to answer briefly would stop at
        # its EOS after a few, and its row would idle in the batch (equal work per column is the measure)
        *_, cols = svc.compare(a.prompt, names, a.tokens, chat=True, stop_at_eos=False)
        wall = time.perf_counter() - t0
        bad = [c["error"] for c in cols if c["error"]]
        if bad:
            raise SystemExit(f"compare failed: {bad}")
        if any(c["new_tokens"] != a.tokens for c in cols):
            raise SystemExit(f"a column made {[c['new_tokens'] for c in cols]} tokens, not {a.tokens} each")
        return sum(c["tokens_per_s"] for c in cols), wall, sum(c["new_tokens"] for c in cols)

    from app_backend.generation import GenStats, encode_prompt, stream_generate_steps

    plain = svc.get(base)
    ids = encode_prompt(a.prompt, plain.tokenizer, plain.model.config.vocab_size, chat=True)

    def run_plain_batch() -> float:
        """Summed tokens/s of 4 copies of the prompt through the plain base in one batch."""
        stats = [GenStats() for _ in range(4)]
        for _ in stream_generate_steps(plain.model, [ids] * 4, a.tokens, stats=stats, stop_at_eos=False):
            pass
        return sum(st.tokens_per_s for st in stats)

    from contextlib import nullcontext

    from app_backend.shared import adapter_rows
    from mad_models.fused_adapters import peft_mixed_forward, peft_mixed_forward_in_all_threads

    host = svc.get(adapters[0]).host
    one_step = torch.tensor([ids[:1]] * 4)  # 4 rows of 1 token, no KV cache: the per-step layer work
    mixed_rows = ["__base__", *(svc.get(n).adapter for n in adapters)]
    # name -> (model, rows, whose layers run mixed rows)
    ways = {
        "plain": (plain.model, None, nullcontext),
        "base rows": (host.model, ["__base__"] * 4, nullcontext),
        "mixed": (
            host.model,
            mixed_rows,
            nullcontext,
        ),  # the host's fused layers (mad_models/fused_adapters.py)
        "mixed, PEFT layers": (host.model, mixed_rows, peft_mixed_forward),  # PEFT's and MoRe's own
    }

    def forward_ms(model, rows: list[str] | None, layers) -> float:
        with torch.inference_mode():
            t0 = time.perf_counter()
            if rows is None:
                model(input_ids=one_step)
            else:
                with adapter_rows(rows), layers():
                    model(input_ids=one_step)
        return (time.perf_counter() - t0) * 1000

    forward_times: dict[str, list[float]] = {k: [] for k in ways}
    for i in range(33):  # round-robin, so drift in machine speed hits the four alike; 3 warm-up rounds
        for k, way in ways.items():
            t = forward_ms(*way)
            if i >= 3:
                forward_times[k].append(t)
    fwd = {k: statistics.median(v) for k, v in forward_times.items()}
    # the surcharge per round (mixed / base rows in the same round), median and range over the rounds
    surcharge, surcharge_peft = (
        sorted(m / b - 1 for m, b in zip(forward_times[k], forward_times["base rows"], strict=True))
        for k in ("mixed", "mixed, PEFT layers")
    )

    run([base])  # warm-up (first-call allocations, thread pools)
    single, four, four_peft, ceiling = [], [], [], []
    for _ in range(a.runs):  # interleaved, so a change in machine load hits all four alike
        single.append(run([base]))
        four.append(run([base, *adapters]))
        with peft_mixed_forward_in_all_threads():  # the same Compare through PEFT's own mixed layers
            four_peft.append(run([base, *adapters]))
        ceiling.append(run_plain_batch())
    rss_peak = rss_mib()
    one_tps = statistics.median(r[0] for r in single)
    agg_tps = statistics.median(r[0] for r in four)
    mem_models = (rss_all - rss0) / (rss_base - rss0)

    rows = [
        ("process RSS before any model", f"{rss0:,.0f} MiB"),
        (f"process RSS, {base} alone", f"{rss_base:,.0f} MiB"),
        ("process RSS, base + 3 adapters loaded", f"{rss_all:,.0f} MiB"),
        ("process RSS after the Compare runs", f"{rss_peak:,.0f} MiB"),
        ("cache's own count (base once + adapters)", f"{cache_mib:,.0f} MiB"),
        ("memory ratio, whole process (base+3 / base)", f"{rss_all / rss_base:.3f}x"),
        ("memory ratio, models only (goal <= 1.3x)", f"{mem_models:.3f}x"),
        (f"one model alone: tokens/s ({a.tokens} new, greedy)", f"{one_tps:.1f}"),
        ("4 columns batched: tokens/s summed over columns", f"{agg_tps:.1f}"),
        ("4 columns: total new tokens / wall s", f"{statistics.median(r[2] / r[1] for r in four):.1f}"),
        ("throughput ratio (goal >= 2.5x)", f"{agg_tps / one_tps:.2f}x"),
        (
            "the same 4 columns through PEFT's and MoRe's own mixed forward: tokens/s, ratio",
            f"{(peft_tps := statistics.median(r[0] for r in four_peft)):.1f}, {peft_tps / one_tps:.2f}x",
        ),
        ("ceiling: plain base, 4 copies in one batch, tokens/s", f"{statistics.median(ceiling):.1f}"),
        ("ceiling ratio (what 4 rows buy on this hardware)", f"{statistics.median(ceiling) / one_tps:.2f}x"),
        ("one-token forward of 4 rows (no cache), plain base: ms", f"{fwd['plain']:.1f}"),
        ("the same through the shared tree, all rows on the base: ms", f"{fwd['base rows']:.1f}"),
        ("the same, rows on base + 3 adapters (fused layers): ms", f"{fwd['mixed']:.1f}"),
        ("the same through PEFT's and MoRe's own mixed forward: ms", f"{fwd['mixed, PEFT layers']:.1f}"),
        (
            "mixed-adapter surcharge, fused (mixed / base rows, per round: median [min, max])",
            f"{statistics.median(surcharge):+.0%} [{surcharge[0]:+.0%}, {surcharge[-1]:+.0%}]",
        ),
        (
            "mixed-adapter surcharge, PEFT's layers (the same)",
            f"{statistics.median(surcharge_peft):+.0%} [{surcharge_peft[0]:+.0%}, {surcharge_peft[-1]:+.0%}]",
        ),
    ]
    print(
        f"\napp Compare on {base} + {', '.join(adapters)}; CPU, {a.threads} torch threads, "
        f"median of {a.runs} runs"
    )
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(w)} | value |\n|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")


if __name__ == "__main__":
    main()
