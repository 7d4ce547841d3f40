"""The report of ``bench/reproduce_pretrained_hybrids.py``: Markdown, JSON and a plot from its records.

Everything here is computed from ``results.jsonl`` (one record per finished unit), so ``--report-only``
rewrites the report on any machine from ``bench/results/pretrained-hybrids[-quick]-runs/``. Run as a
script, it is that command: ``python bench/pretrained_hybrids_report.py --quick``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np


def stats(results: dict, row: str, seeds: list[int]) -> dict | None:
    runs = [r for s in seeds if (r := results.get(f"{row}|seed{s}"))]
    if not runs:
        return None
    vals = [r["val_bits"] for r in runs]
    return {
        "row": row,
        "n": len(runs),
        "mean": sum(vals) / len(vals),
        "lo": min(vals),
        "hi": max(vals),
        "dev_bits": sum(r["dev_bits"] for r in runs) / len(runs),
        "lr": runs[0]["lr"],
        "params": sorted({r["params"] for r in runs}),
        "flops_per_token": sorted({r["flops_per_token"] for r in runs}),
        "layouts": [r.get("layout") for r in runs],
        "per_seed": [{k: v for k, v in r.items() if k != "chunks"} for r in runs],
        "trials": results.get(f"{row}|lr", {}).get("trials"),
    }


def chunk_bits(results: dict, row: str, seeds: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per val chunk: bits summed, averaged over the row's seeds; and the chunk's characters."""
    runs = [r for s in seeds if (r := results.get(f"{row}|seed{s}"))]
    if not runs:
        return None
    chars = np.array([c for _, c in runs[0]["chunks"]], dtype=float)
    bits = np.mean([[b for b, _ in r["chunks"]] for r in runs], axis=0)
    return bits, chars


def paired(results: dict, a: str, b: str, seeds: list[int], n_boot: int) -> dict | None:
    """Bootstrap over val chunks of (bits/char of a) - (bits/char of b): negative = a is better."""
    ca, cb = chunk_bits(results, a, seeds), chunk_bits(results, b, seeds)
    if ca is None or cb is None:
        return None
    if len(ca[1]) != len(cb[1]) or not np.array_equal(ca[1], cb[1]):
        raise ValueError(f"rows {a} and {b} were scored on different val chunks")
    diff, chars = ca[0] - cb[0], ca[1]
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(chars), size=(n_boot, len(chars)))
    boot = diff[idx].sum(1) / chars[idx].sum(1)
    return {
        "a": a,
        "b": b,
        "diff": float(diff.sum() / chars.sum()),
        "ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
        "se": float(boot.std(ddof=1)),
        "p_a_better": float((boot < 0).mean()),
        "chunks": len(chars),
    }


def _fmt_range(st: dict) -> str:
    if st["n"] == 1:
        return f"{st['mean']:.3f} (1 seed)"
    return f"{st['mean']:.3f} [{st['lo']:.3f}, {st['hi']:.3f}]"


def _fmt_int(values: list) -> str:
    return " / ".join(f"{v:,.0f}" for v in values)


def write_report(bench, plot: bool = True) -> dict:
    """``<stem>.md`` and ``<stem>.json`` from the records, ``<stem>.png`` with ``plot``; returns the JSON."""
    from bench.reproduce_pretrained_hybrids import LABELS, hand_designs, label, row_names

    s, results, mode = bench.s, bench.results(), bench.mode
    seeds = s["seeds"]
    rows = row_names(s)
    hands = list(hand_designs(s["n_blocks"]))
    table = {row: st for row in rows if (st := stats(results, row, seeds))}
    uni = results.get("unigram")
    missing = [f"{r} seed {sd}" for r in rows for sd in seeds if f"{r}|seed{sd}" not in results]
    flag = " --quick" if mode == "quick" else ""
    stem = "pretrained-hybrids" + ("-quick" if mode == "quick" else "")

    # ---- pretraining
    pre = {
        n: results[f"pretrain|{n}"]
        for n in ("gpt-neox", "mamba", "gpt-neox-wide")
        if f"pretrain|{n}" in results
    }
    pre_lines = [
        "| model | params | FLOPs/token | steps | pretrain-dev bits/char: half-way | end | train time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in pre.items():
        evals = [(st, d) for st, _, d in r["curve"] if not math.isnan(d)]
        half = min(evals, key=lambda e: abs(e[0] - s["pretrain"]["steps"] / 2))
        pre_lines.append(
            f"| {name} | {r['params']:,} | {r['flops_per_token']:,.0f} | {s['pretrain']['steps']} | "
            f"{half[1]:.3f} (step {half[0]}) | {r['dev_bits']:.3f} | {r['train_time']:.0f} |"
        )
    if "projectors" in results:
        p = results["projectors"]
        pre_lines.append(
            f"| projectors of the hybrid (components frozen, uniform mixture) | {p['params']:,} | - | "
            f"{s['projectors']['steps']} | {p.get('dev_bits_before', float('nan')):.3f} (before) | "
            f"{p['dev_bits']:.3f} | {p['seconds']:.0f} |"
        )

    # ---- the main table
    lines = [
        "| row | blocks | params | FLOPs/token | lr (dev) | dev bits/char | val bits/char, mean [min, max] |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    if uni:
        lines.append(
            f"| {LABELS['unigram']} | - | 0 | 0 | - | {uni['dev_bits']:.3f} | {uni['bits_per_char']:.3f} |"
        )
    for row, st in table.items():
        layouts = sorted({x for x in st["layouts"] if x})
        lines.append(
            f"| {label(row)} | {' / '.join(layouts) or '-'} | {_fmt_int(st['params'])} | "
            f"{_fmt_int(st['flops_per_token'])} | {st['lr']:g} | {st['dev_bits']:.3f} | {_fmt_range(st)} |"
        )

    # ---- mixtures and LM selection
    mixes = {sd: results[f"search|seed{sd}"]["mixture"] for sd in seeds if f"search|seed{sd}" in results}
    mix_lines = [f"- seed {sd}: " + ", ".join(f"[{a:.3f}, {m:.3f}]" for a, m in w) for sd, w in mixes.items()]
    lm_sel = None
    if mixes and "attention" in table and "mamba" in table:
        w_att = float(np.mean([[a for a, _ in w] for w in mixes.values()]))
        better = "attention" if table["attention"]["mean"] < table["mamba"]["mean"] else "mamba"
        favoured = "attention" if w_att > 0.5 else "mamba"
        lm_sel = {
            "mean_attention_weight": w_att,
            "favoured": favoured,
            "better_alone": better,
            "agrees": favoured == better,
            "per_block_attention_weight": [
                float(np.mean([w[i][0] for w in mixes.values()])) for i in range(s["n_blocks"])
            ],
        }

    # ---- paired comparisons
    comps = [r for r in ("attention", "mamba") if r in table]
    best_comp = min(comps, key=lambda r: table[r]["mean"]) if comps else None
    other = [r for r in comps if r != best_comp]
    pairs_wanted = []
    if best_comp:
        pairs_wanted += [("hybrid-searched", best_comp), *[("hybrid-searched", o) for o in other]]
        pairs_wanted += [("hybrid-uniform", best_comp), ("hybrid-searched-argmax", best_comp)]
    pairs_wanted += [
        ("hybrid-searched", "hybrid-uniform"),
        ("hybrid-searched", "hybrid-random-init"),
        ("hybrid-searched", "attention-wide"),
        ("attention-wide", "attention"),
        *[("hybrid-searched-argmax", h) for h in hands],
    ]
    pairs = [p for a, b in pairs_wanted if (p := paired(results, a, b, seeds, s["bootstrap"]))]
    pair_lines = [
        "| A | B | A - B bits/char | 95% CI (bootstrap over val chunks) | P(A better) |",
        "|---|---|---:|---|---:|",
    ]
    for p in pairs:
        ci = f"[{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}]"
        pair_lines.append(
            f"| {label(p['a'])} | {label(p['b'])} | {p['diff']:+.4f} | {ci} | {p['p_a_better']:.3f} |"
        )

    # ---- gates (GUIDE: small vs large baseline apart by >= 3 SE; everything learns >= 0.3 below unigram)
    gate = {}
    wide = next((p for p in pairs if (p["a"], p["b"]) == ("attention-wide", "attention")), None)
    if wide:
        gate["wide_vs_narrow_in_se"] = abs(wide["diff"]) / wide["se"] if wide["se"] > 0 else None
    if uni:
        gate["learned_over_unigram"] = {row: uni["bits_per_char"] - st["mean"] for row, st in table.items()}

    paragraph = verdict(table, uni, pairs, lm_sel, best_comp, hands)
    total_seconds = sum(r.get("seconds", 0) for r in results.values())
    data_sizes = {
        split: sum(len(t) for t in bench.texts(split))
        for split in ("pretrain", "pretrain_dev", "finetune", "arch", "dev", "val")
    }
    threads = getattr(bench, "threads", 1)
    command = f".venv/bin/python bench/reproduce_pretrained_hybrids.py{flag} --threads {threads}"
    unfinished = []
    if missing:
        more = " ..." if len(missing) > 6 else ""
        unfinished = [
            f"**Unfinished: {len(missing)} runs still to do ({', '.join(missing[:6])}{more}).**",
            "",
        ]
    md = "\n".join(
        [
            f"# Pretrained hybrids on Shakespeare ({mode} setting)",
            "",
            f"Regenerate: `{command}` (resumes; `--report-only` rewrites this file from the records in "
            f"`bench/results/{stem}-runs/`, and a fresh work dir resumes from them). Training time summed "
            "over the "
            f"finished units: {total_seconds / 60:.0f} min (on a machine shared by 8 engineers, 2 cores).",
            "",
            *unfinished,
            "## Setup",
            "",
            *setup_lines(s, data_sizes, len(bench.tokenizer)),
            "",
            "## Pretraining",
            "",
            *pre_lines,
            "",
            f"![curves and results]({stem}.png)",
            "",
            "## Fine-tuned on comedies, romances and poems; scored on the val plays",
            "",
            *lines,
            "",
            "Blocks: A = attention (GPT-NeoX), M = Mamba, A+M = both mixed. Params / FLOPs differ by seed "
            "where "
            "the searched layout does.",
            "",
            "Searched mixtures (block: [attention, Mamba]):",
            "",
            *(mix_lines or ["- not searched yet"]),
            "",
            lm_selection_line(lm_sel, table),
            "",
            "## Paired comparisons",
            "",
            *pair_lines,
            "",
            f"Per val chunk of about {s['chunk_chars']:,} characters, bits averaged over seeds; "
            f"{s['bootstrap']} bootstrap resamples of the chunks.",
            "",
            gate_line(gate),
            "",
            "## What it shows",
            "",
            paragraph,
            "",
        ]
    )
    out = Path(bench.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(md)
    doc = {
        "mode": mode,
        "settings": s,
        "command": command,
        "data_characters": data_sizes,
        "tokenizer_size": len(bench.tokenizer),
        "unigram": uni,
        "pretraining": pre,
        "projectors": results.get("projectors"),
        "rows": table,
        "searched_mixtures": mixes,
        "search": results.get("search|lr"),
        "lm_selection": lm_sel,
        "pairs": pairs,
        "gate": gate,
        "paragraph": paragraph,
        "unfinished": missing,
        "training_seconds": total_seconds,
    }
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    if plot:
        draw(pre, table, uni, out / f"{stem}.png")
    return doc


def setup_lines(s: dict, sizes: dict, vocab: int) -> list[str]:
    g, m, p, ft = s["gpt"], s["mamba"], s["pretrain"], s["finetune"]
    val_part = f", the first {s['val_chars']:,} of each" if s["val_chars"] else ""
    n = s["n_blocks"]
    return [
        f"- Data (`data/shakespeare`, `mad_models.training.shakespeare`): one character tokenizer ({vocab} "
        "tokens: the train texts' characters, `<|endoftext|>`, `<unk>`) trained on the train texts only. "
        f"Pretraining: tragedies and histories ({sizes['pretrain']:,} characters; the last 2% of each, "
        f"{sizes['pretrain_dev']:,}, for the curve). Fine-tuning: comedies, romances and poems "
        f"({sizes['finetune']:,}; then {sizes['arch']:,} for DARTS's architecture steps and the last 10% of "
        "each, "
        f"{sizes['dev']:,}, as dev for every choice). Val: julius_caesar, twelfth_night, winters_tale "
        f"({sizes['val']:,} characters{val_part}), never used for a choice.",
        f"- Models: GPT-NeoX (width {g['width']}, {g['layers']} layers, {g['heads']} heads, rotary on every "
        "head "
        f"dimension); Mamba (width {m['width']}, {m['layers']} layers, state size {m['state_size']}; "
        "transformers' model with mambapy's parallel scan on CPU); their hybrid in "
        f"{n} blocks ({g['layers'] // n} GPT and {m['layers'] // n} Mamba layers per block); context "
        f"{s['context']} characters, batch {s['batch_size']}.",
        f"- Pretraining: {p['steps']} steps at lr {p['lr']:g} (AdamW, warmup {p['warmup']}, cosine to "
        "lr/100, "
        f"weight decay {s['weight_decay']}), one seed; then the hybrid's projectors, "
        f"{s['projectors']['steps']} steps at lr {s['projectors']['lr']:g}, components frozen.",
        f"- Fine-tuning: every row {ft['steps']} steps, the same batches per seed; lr per row from "
        f"{ft['lrs']} "
        f"by Optuna (GridSampler, successive halving on dev bits/char at rungs of {ft['min_resource']} x "
        f"{ft['reduction_factor']}^k steps); seeds {s['seeds']} (seed 0 is the surviving trial). Search: "
        f"alternating DARTS for {ft['steps']} steps at the uniform row's lr, arch lr from {s['arch_lrs']} by "
        "Optuna on dev; then the searched mixture is fixed and the projector-pretrained hybrid fine-tuned. "
        "Hand-designed and argmax rows are one-hot and pruned (no projectors).",
        f"- FLOPs/token at context {s['context']} (`cost_report`: 2 per matmul weight, attention scores, SSM "
        "scan).",
    ]


def lm_selection_line(lm_sel: dict | None, table: dict) -> str:
    if not lm_sel:
        return "LM selection: not answered yet."
    blocks = ", ".join(f"{x:.2f}" for x in lm_sel["per_block_attention_weight"])
    answer = (
        "the search picked the better component"
        if lm_sel["agrees"]
        else "the search did not favour the better component"
    )
    return (
        f"LM selection: the searched weights give attention {lm_sel['mean_attention_weight']:.3f} on average "
        f"(per block {blocks}), so they favour {lm_sel['favoured']}; fine-tuned alone, "
        f"{lm_sel['better_alone']} is better ({table['attention']['mean']:.3f} vs "
        f"{table['mamba']['mean']:.3f} "
        f"bits/char for attention vs Mamba): {answer}."
    )


def gate_line(gate: dict) -> str:
    parts = []
    if gate.get("wide_vs_narrow_in_se") is not None:
        parts.append(f"GPT-NeoX widened vs alone differ by {gate['wide_vs_narrow_in_se']:.1f} bootstrap SEs")
    learned = gate.get("learned_over_unigram")
    if learned:
        worst = min(learned.values())
        ok = "every row is" if worst >= 0.3 else "not every row is"
        parts.append(f"{ok} at least 0.3 bits/char below unigram (the least: {worst:.2f})")
    return "Gates: " + ("; ".join(parts) if parts else "no rows yet") + "."


def verdict(
    table: dict,
    uni: dict | None,
    pairs: list[dict],
    lm_sel: dict | None,
    best_comp: str | None,
    hands: list[str],
) -> str:
    """The paragraph, computed from the figures whatever they show."""
    from bench.reproduce_pretrained_hybrids import label

    if not table:
        return "Nothing finished yet."
    pair = {(p["a"], p["b"]): p for p in pairs}

    def sig(p: dict) -> str:
        lo, hi = p["ci95"]
        if hi < 0:
            return "better (95% CI below 0)"
        if lo > 0:
            return "worse (95% CI above 0)"
        return "not distinguishable (95% CI spans 0)"

    parts = []
    best = min(table, key=lambda r: table[r]["mean"])
    parts.append(f"The lowest val bits/char is {label(best)} at {table[best]['mean']:.3f}.")
    if uni:
        gaps = {r: uni["bits_per_char"] - st["mean"] for r, st in table.items()}
        weakest = min(gaps, key=gaps.get)
        if gaps[weakest] >= 0.3:
            parts.append(
                f"Every finished row learns: the weakest ({label(weakest)}) is {gaps[weakest]:.2f} bits/char "
                f"below the unigram row ({uni['bits_per_char']:.3f})."
            )
        else:
            parts.append(
                f"{label(weakest)} scores {uni['bits_per_char'] - gaps[weakest]:.3f} bits/char against "
                "unigram's "
                f"{uni['bits_per_char']:.3f}: it learned {'little' if gaps[weakest] > 0 else 'nothing'}."
            )
    if best_comp and (p := pair.get(("hybrid-searched", best_comp))):
        parts.append(
            f"Against the better component alone ({label(best_comp)}), the searched hybrid is "
            f"{p['diff']:+.3f} "
            f"bits/char: {sig(p)}, at "
            f"{table['hybrid-searched']['params'][0] / table[best_comp]['params'][0]:.1f}x its "
            "parameters and "
            f"{table['hybrid-searched']['flops_per_token'][0] / table[best_comp]['flops_per_token'][0]:.1f}x "
            "its FLOPs/token."
        )
    if p := pair.get(("hybrid-searched", "hybrid-uniform")):
        parts.append(f"The searched mixture against the uniform one: {p['diff']:+.3f}, {sig(p)}.")
    if p := pair.get(("hybrid-searched", "hybrid-random-init")):
        parts.append(
            f"Pretraining matters if the same hybrid from random weights is worse: {p['diff']:+.3f}, "
            f"{sig(p)}."
        )
    if p := pair.get(("hybrid-searched", "attention-wide")):
        parts.append(f"Against one GPT widened to the hybrid's parameters: {p['diff']:+.3f}, {sig(p)}.")
    hp = [pair[("hybrid-searched-argmax", h)] for h in hands if ("hybrid-searched-argmax", h) in pair]
    if hp:
        wins = sum(p["ci95"][1] < 0 for p in hp)
        losses = sum(p["ci95"][0] > 0 for p in hp)
        parts.append(
            f"At one component per block, the argmax of the search beats {wins} of {len(hp)} hand-designed "
            "layouts "
            f"and loses to {losses} (95% CIs), the rest within noise: "
            + (
                "the search found a better layout than the hand designs."
                if wins == len(hp)
                else "the search does not find a better mixture than the designs people pick by hand."
                if losses
                else "the search is as good as the hand designs, not better."
            )
        )
    if lm_sel:
        parts.append(
            f"LM selection: the searched weights lean to {lm_sel['favoured']} "
            f"(mean attention weight {lm_sel['mean_attention_weight']:.2f}); alone, {lm_sel['better_alone']} "
            f"fine-tunes better, so the claim {'holds' if lm_sel['agrees'] else 'does not hold'} here."
        )
    return " ".join(parts)


def draw(pre: dict, table: dict, uni: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.reproduce_pretrained_hybrids import label

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100)
    for name, r in pre.items():
        steps = [c[0] for c in r["curve"]]
        ax1.plot(steps, [c[1] for c in r["curve"]], alpha=0.35, label=f"{name} train")
        ev = [(c[0], c[2]) for c in r["curve"] if not math.isnan(c[2])]
        ax1.plot([e[0] for e in ev], [e[1] for e in ev], marker="o", ms=3, label=f"{name} pretrain-dev")
    ax1.set_xlabel("pretraining step")
    ax1.set_ylabel("bits per character")
    ax1.set_title("Pretraining (tragedies + histories)")
    ax1.legend(fontsize=7)
    for row, st in table.items():
        x = st["flops_per_token"][0]
        ax2.errorbar(
            x,
            st["mean"],
            yerr=[[st["mean"] - st["lo"]], [st["hi"] - st["mean"]]],
            marker="o",
            capsize=3,
            color="tab:red"
            if row.startswith("hybrid")
            else "tab:green"
            if row.startswith("hand")
            else "tab:blue",
        )
        ax2.annotate(
            label(row).split(",")[0].split(" (")[0][:28],
            (x, st["mean"]),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax2.set_xscale("log")
    ax2.set_xlabel("FLOPs per token")
    ax2.set_ylabel("val bits per character (mean, min-max over seeds)")
    title = "Fine-tuned (comedies + romances + poems), scored on val"
    if uni:
        title += f"\nunigram: {uni['bits_per_char']:.2f} bits/char"
    ax2.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":  # the same as `reproduce_pretrained_hybrids.py --report-only`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `bench` from the checkout
    from bench.reproduce_pretrained_hybrids import main

    sys.exit(main([*sys.argv[1:], "--report-only"]))
