"""Do the bundled language adapters' val exact match figures hold up on fresh questions from the generator?

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/fresh_math.py --threads 1            # ~4 passes of 360
    PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/fresh_math.py --threads 1 --also-val # + val re-measured

The fresh questions (``bench/data/fresh_math.jsonl``: 9 modules x 40, none of whose prompts is in
data/mathematics/train.jsonl or val.jsonl) come from ``bench/fresh_math_generate.py`` (DeepMind's
``mathematics_dataset`` 1.0.1 in its own venv, fixed seed 20261203); they are committed, so this script needs
only the project's venv.

For the untuned base (``smollm2``) and every bundled language adapter in assets/registry.json, it runs
``mad-models more eval`` (one process at a time, ``OMP_NUM_THREADS=--threads``) with the settings the asset
build scored val with: batch :data:`mad_models.training.mathematics.EVAL_BATCH` and
``answer_token_budget`` new tokens. It also checks that the fresh file is distributed like val (prompt and
answer lengths, answer kinds, the no-learning heuristic per module), and writes
``bench/results/fresh-math.md``: per model, the registry's val exact match, the fresh one, the difference
and its standard error, and per module.

Resumable: each finished pass is kept under ``--work`` (keyed by the bytes of the data file and of the
adapter's folder, the base by its name ``smollm2``, and by the batch and token budget; the prompt format
is not in the key: clear ``--work`` after changing it); a re-run reuses it. Text below the
``<!-- notes -->`` line of an existing results file is kept.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `bench` from the checkout
from bench.paired_tests import mcnemar_p  # noqa: E402,F401  (shared with bench/reproduce_listops.py)

ROOT = Path(__file__).resolve().parent.parent
FRESH = ROOT / "bench" / "data" / "fresh_math.jsonl"
VAL = ROOT / "data" / "mathematics" / "val.jsonl"
REGISTRY = ROOT / "assets" / "registry.json"
NOTES_MARK = "<!-- notes -->"
YES_NO = ("True", "False")


def answer_kind(answer: str) -> str:
    """A coarse type of an answer string (for the distribution check)."""
    if answer in ("True", "False"):
        return "bool"
    if re.fullmatch(r"[a-z]", answer):
        return "letter"
    if re.fullmatch(r"-?\d+", answer):
        return "int"
    if re.fullmatch(r"-?\d*\.\d+", answer):
        return "decimal"
    if re.fullmatch(r"-?\d+/\d+", answer):
        return "fraction"
    return "other"


def describe(rows: list[dict]) -> dict[str, dict]:
    """Per module: rows, mean prompt chars, mean digits in the prompt, mean answer chars, answer kinds."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["module"]].append(r)
    out = {}
    for m, rs in sorted(by.items()):
        kinds: dict[str, int] = defaultdict(int)
        for r in rs:
            kinds[answer_kind(r["answer"])] += 1
        out[m] = {
            "n": len(rs),
            "prompt_chars": statistics.mean(len(r["prompt"]) for r in rs),
            "prompt_digits": statistics.mean(len(re.findall(r"\d", r["prompt"])) for r in rs),
            "answer_chars": statistics.mean(len(r["answer"]) for r in rs),
            "kinds": dict(sorted(kinds.items())),
        }
    return out


def _sha(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def run_eval(model: str, data: Path, *, work: Path, threads: int, batch: int, max_new: int) -> dict:
    """``mad-models more eval`` of ``model`` on ``data`` (cached in ``work``): its printed JSON, plus
    ``"rows"``: its ``--out`` rows (question, answer, prediction, correct)."""
    model_key = "smollm2" if model == "smollm2" else _sha(ROOT / model)
    key = (
        f"{re.sub(r'[^A-Za-z0-9]+', '-', model)}__{data.stem}__{_sha(data)}__{model_key}__b{batch}_t{max_new}"
    )
    done, preds = work / f"{key}.json", work / f"{key}.preds.jsonl"
    if done.is_file() and preds.is_file():
        print(f"[fresh-math] {model} on {data.name}: done before ({done.name})", flush=True)
        return {**json.loads(done.read_text()), "rows": _read_jsonl(preds)}
    cmd = [
        sys.executable,
        "-m",
        "mad_models",
        "more",
        "eval",
        "--model",
        model,
        "--data",
        str(data),
        "--batch-size",
        str(batch),
        "--max-new-tokens",
        str(max_new),
        "--out",
        str(preds),
        "--no-progress",
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    print(f"[fresh-math] {model} on {data.name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"more eval of {model} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[fresh-math]   exact match {res['exact_match']:.4f} ({res['seconds']:.0f} s)", flush=True)
    tmp = done.with_name(done.name + ".part")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.replace(done)
    return {**res, "rows": _read_jsonl(preds)}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rel(path: Path) -> str:
    """``path`` relative to the repo root when inside it (the results file names no local paths)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(FRESH), help="fresh JSONL (default: bench/data/fresh_math.jsonl)")
    p.add_argument("--work", default=str(ROOT / "runs" / "fresh-math"), help="finished passes (resumable)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "fresh-math.md"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--also-val", action="store_true", help="re-measure val.jsonl too, with the same command")
    p.add_argument("--stats-only", action="store_true", help="only the distribution check (no model runs)")
    a = p.parse_args(argv)
    if a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")

    from build_assets.builder import PROFILES, language_rows
    from mad_models.training.exact_match import heuristic_exact_match, load_qa_rows
    from mad_models.training.mathematics import EVAL_BATCH, answer_token_budget

    data = Path(a.data).resolve()
    fresh = load_qa_rows(data)
    train_rows, _dev, val = language_rows(PROFILES["full"])  # as the asset build: train minus the dev carve
    overlap = {r["prompt"] for r in fresh} & {r["prompt"] for r in load_qa_rows(VAL) + train_rows + _dev}
    if overlap:
        raise SystemExit(f"{data}: {len(overlap)} prompts also in train/val, e.g. {sorted(overlap)[0]!r}")
    meta_path = Path(str(data) + ".meta.json")
    gen_meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}

    heur = {
        "val": heuristic_exact_match(train_rows, val),
        "fresh": heuristic_exact_match(train_rows, fresh),
    }
    dist = {"val": describe(val), "fresh": describe(fresh)}
    hv, hf = heur["val"]["exact_match"], heur["fresh"]["exact_match"]
    print(f"[fresh-math] heuristic: val {hv:.4f}, fresh {hf:.4f}")

    registry = json.loads(REGISTRY.read_text())
    entries = [m for m in registry["models"] if m.get("group") == "language"]
    models = [("smollm2" if m["kind"] == "smollm2" else f"assets/{m['path']}", m) for m in entries]
    results: dict[str, dict] = {}
    if not a.stats_only:
        from mad_models.loading import load_smollm2

        _, tok = load_smollm2()
        max_new = answer_token_budget(tok, train_rows)
        del _
        work = Path(a.work)
        work.mkdir(parents=True, exist_ok=True)
        for model, _entry in models:
            kw = {"work": work, "threads": a.threads, "batch": EVAL_BATCH, "max_new": max_new}
            results[model] = {"fresh": run_eval(model, data, **kw)}
            if a.also_val:
                results[model]["val"] = run_eval(model, VAL, **kw)

    modules = sorted(dist["fresh"])
    dropped_by_module = ", ".join(f"{m}: {c}" for m, c in gen_meta.get("duplicates_dropped", {}).items() if c)
    lines = [
        "# Bundled language adapters on fresh questions from the same generator",
        "",
        f"Fresh file: `{rel(data)}` — n = {len(fresh)} "
        f"({len(modules)} modules x {len(fresh) // max(1, len(modules))}), generated by "
        "`bench/fresh_math_generate.py` (DeepMind `mathematics_dataset` 1.0.1, train modules, easier half "
        f"of the train entropy range) with seed {gen_meta.get('seed', '?')}; "
        f"{gen_meta.get('duplicates_dropped_total', '?')} drawn questions were dropped (and re-drawn) "
        f"because their prompt is in {' or '.join(gen_meta.get('excluded_files', ['?']))} "
        "or was drawn before "
        f"({dropped_by_module or 'none'}). "
        "No fresh prompt is in train or val (checked again by this script and by "
        "tests/test_fresh_math.py). Nobody has tuned or chosen anything on these questions.",
        "",
        "Scored with `mad-models more eval` (`evaluate_exact_match`, the function behind the registry's "
        f"val figures), with the asset build's settings: batch {EVAL_BATCH}, "
        + (f"{max_new} new tokens, " if results else "")
        + f"{a.threads} thread{'s' if a.threads > 1 else ''}. The val column is the registry's "
        "(assets/registry.json, measured at build "
        "time on data/mathematics/val.jsonl, 360 rows).",
        "",
    ]
    if results:
        n_f = len(fresh)
        lines += [
            "## Overall exact match",
            "",
            "| model | val EM (registry) | "
            + ("val EM (re-measured) | " if a.also_val else "")
            + "fresh EM | fresh − val | SE of the difference | z |",
            "|---|---:|" + ("---:|" if a.also_val else "") + "---:|---:|---:|---:|",
        ]
        for model, entry in models:
            rv = entry.get("meta", {}).get("exact_match")
            nv = entry.get("meta", {}).get("n", 360)
            rf = results[model]["fresh"]["exact_match"]
            diff = rf - rv if rv is not None else None
            # two independent samples of the same generator: SE of a difference of two proportions
            se = math.sqrt(rv * (1 - rv) / nv + rf * (1 - rf) / n_f) if rv is not None else None
            z = diff / se if diff is not None and se else None
            row = f"| {entry['name']} (`{model}`) | {_fmt(rv)} | "
            if a.also_val:
                row += f"{_fmt(results[model]['val']['exact_match'])} | "
            row += f"{_fmt(rf)} | {'—' if diff is None else f'{diff:+.3f}'} | {_fmt(se)} | "
            row += f"{'—' if z is None else f'{z:+.2f}'} |"
            lines.append(row)
        lines += [
            f"| no-learning heuristic (module's most frequent train answer) | {hv:.3f} | "
            + (f"{hv:.3f} | " if a.also_val else "")
            + f"{hf:.3f} | {hf - hv:+.3f} | — | — |",
            "| chance | — | " + ("— | " if a.also_val else "") + "— | — | — | — |",
            "",
            "Chance has no single value for free-form answers; per module it is 1/2 for the True/False "
            "modules (is_prime, comparison pair's yes/no questions) and about 1/3–1/5 for comparison "
            "closest's lettered options.",
            "",
            "## Per module (val from the registry → fresh), 40 questions each",
            "",
            "| module | heuristic | " + " | ".join(e["name"] for _, e in models) + " |",
            "|---|---:|" + "---:|" * len(models),
        ]
        for mod in modules:
            cells = [f"{heur['val']['per_module'][mod]:.3f} → {heur['fresh']['per_module'][mod]:.3f}"]
            for model, entry in models:
                v = entry.get("meta", {}).get("per_module", {}).get(mod)
                cells.append(f"{_fmt(v)} → {results[model]['fresh']['per_module'][mod]:.3f}")
            lines.append(f"| {mod} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            "Per module n = 40, so a module's standard error is up to 0.08: per-module moves under ~0.15 "
            "are noise."
        )
        lines += [
            "",
            "## The adapters against each other on the same fresh questions (paired)",
            "",
            "| A | B | fresh EM A | fresh EM B | only A right | only B right | exact McNemar p |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        adapters = [(m, e) for m, e in models if m != "smollm2"]
        for i, (ma, ea) in enumerate(adapters):
            for mb, eb in adapters[i + 1 :]:
                ra, rb = results[ma]["fresh"]["rows"], results[mb]["fresh"]["rows"]
                only_a = sum(x["correct"] and not y["correct"] for x, y in zip(ra, rb, strict=True))
                only_b = sum(y["correct"] and not x["correct"] for x, y in zip(ra, rb, strict=True))
                lines.append(
                    f"| {ea['name']} | {eb['name']} | {results[ma]['fresh']['exact_match']:.3f} | "
                    f"{results[mb]['fresh']['exact_match']:.3f} | {only_a} | {only_b} | "
                    f"{mcnemar_p(only_a, only_b):.2f} |"
                )
        lines += [
            "",
            "## One answer for (nearly) every question of a module",
            "",
            "Modules where an adapter gives the same reply to at least 3/4 of the fresh questions (a "
            "constant guess scores the share of that answer, whatever the model knows):",
            "",
        ]
        constant = []
        for model, entry in adapters:
            by: dict[str, list[str]] = defaultdict(list)
            for r in results[model]["fresh"]["rows"]:
                by[r["module"]].append(r["prediction"].strip())
            for mod, preds in sorted(by.items()):
                top, count = max(((p_, preds.count(p_)) for p_ in set(preds)), key=lambda t: (t[1], t[0]))
                if 4 * count >= 3 * len(preds):
                    em = results[model]["fresh"]["per_module"][mod]
                    constant.append(
                        f"- {entry['name']}, {mod}: `{top}` to {count}/{len(preds)} (module EM {em:.3f})"
                    )
        lines += (constant or ["- none"]) + [""]
        # yes/no questions (is_prime, comparison pair's "Is ... ?") are where a constant "True" scores the
        # sample's share of True; the rest is where a reply has to be worked out
        open_rows = {
            name: [r for r in rows if r["answer"] not in YES_NO]
            for name, rows in (("val", val), ("fresh", fresh))
        }
        h_open = {k: heuristic_exact_match(train_rows, v)["exact_match"] for k, v in open_rows.items()}
        yes_share = {
            k: sum(r["answer"] == "True" for r in rows) / max(1, sum(r["answer"] in YES_NO for r in rows))
            for k, rows in (("val", val), ("fresh", fresh))
        }
        n_yn = {k: len(rows) - len(open_rows[k]) for k, rows in (("val", val), ("fresh", fresh))}
        lines += [
            "## Without the yes/no questions",
            "",
            f"The True/False questions (val {n_yn['val']}, fresh {n_yn['fresh']}: is_prime and comparison "
            f"pair's 'Is ...?' questions) have True as the answer in {yes_share['val']:.0%} of val and "
            f"{yes_share['fresh']:.0%} of fresh. Exact match on the other questions (val "
            f"{len(open_rows['val'])}, fresh {len(open_rows['fresh'])}):",
            "",
            "| model | val | fresh |",
            "|---|---:|---:|",
        ]
        for model, entry in models:
            cells = []
            for split in ("val", "fresh"):
                if split not in results[model]:
                    cells.append("— (run with --also-val)")
                    continue
                hits = [r["correct"] for r in results[model][split]["rows"] if r["answer"] not in YES_NO]
                cells.append(f"{sum(hits) / len(hits):.3f}")
            lines.append(f"| {entry['name']} | " + " | ".join(cells) + " |")
        lines += [f"| no-learning heuristic | {h_open['val']:.3f} | {h_open['fresh']:.3f} |", ""]
    lines += [
        "## Is the fresh file distributed like val?",
        "",
        "Per module: mean prompt characters, mean digits in the prompt, mean answer characters, answer kinds "
        "(val → fresh).",
        "",
        "| module | prompt chars | prompt digits | answer chars | answer kinds val | answer kinds fresh |",
        "|---|---:|---:|---:|---|---|",
    ]
    for mod in modules:
        v, f = dist["val"][mod], dist["fresh"][mod]
        kinds = [", ".join(f"{k} {c}" for k, c in d["kinds"].items()) for d in (v, f)]
        lines.append(
            f"| {mod} | {v['prompt_chars']:.1f} → {f['prompt_chars']:.1f} | "
            f"{v['prompt_digits']:.1f} → {f['prompt_digits']:.1f} | "
            f"{v['answer_chars']:.1f} → {f['answer_chars']:.1f} | {kinds[0]} | {kinds[1]} |"
        )
    lines += [
        "",
        f"No-learning heuristic exact match: val {heur['val']['exact_match']:.3f}, "
        f"fresh {heur['fresh']['exact_match']:.3f} (train rows: train.jsonl minus the dev carve, as the "
        "asset build).",
        "",
        "## Regenerate",
        "",
        "```",
        "# the fresh questions (own venv: mathematics_dataset needs sympy 1.5.1; deterministic)",
        "python3.11 -m venv /tmp/mathgen && /tmp/mathgen/bin/pip install -q mathematics-dataset==1.0.1 "
        "sympy==1.5.1",
        f"/tmp/mathgen/bin/python bench/fresh_math_generate.py --seed {gen_meta.get('seed', '?')} "
        f"--out {rel(data)} --exclude {' '.join(gen_meta.get('excluded_files', ['?']))}",
        "# this file (one more-eval pass per model; add --also-val to re-measure val with the same command)",
        f"PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/fresh_math.py --threads 1 --data {rel(data)} "
        f"--out {rel(Path(a.out).resolve())}" + (" --also-val" if a.also_val else ""),
        "# one pass by hand, e.g.",
        f"OMP_NUM_THREADS=1 .venv/bin/mad-models more eval --model assets/language/more "
        f"--data {rel(data)} --batch-size {EVAL_BATCH}" + (f" --max-new-tokens {max_new}" if results else ""),
        "```",
        "",
    ]
    out = Path(a.out)
    notes = ""
    if out.is_file() and NOTES_MARK in out.read_text():
        notes = out.read_text().split(NOTES_MARK, 1)[1]
    text = "\n".join(lines) + NOTES_MARK + (notes or "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(text)
    tmp.replace(out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
