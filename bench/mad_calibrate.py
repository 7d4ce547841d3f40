"""Calibrate MAD budgets: when does a component, trained alone on one task, beat the no-learning heuristic?

Trains attention (GPT-NeoX) and Mamba from scratch on one MAD task each (``train_mad``; models and data
exactly as ``bench/reproduce_mad.py`` builds its component rows, from its ``FULL`` or ``QUICK`` setting)
and prints, every ``--every`` steps, the accuracy on the validation split (seed 0, scored like the test
set) next to the no-learning heuristic and chance on the same split, plus the measured seconds per
training step (evaluation excluded). The budget is chosen on the validation split; the final test
accuracy is printed for reference, never used for a choice. One run keeps its cosine schedule over all
its steps, so an early checkpoint is not what a run that short would reach (its lr had not decayed).

    # seconds per step of every row kind (attention, Mamba, their hybrid), per task, at widths 32 and 64
    PYTHONPATH=$PWD nice -n 10 python bench/mad_calibrate.py --threads 1 --speed --widths 32,64
    # runs: arch:task:steps:lr[:width]; resumable (finished runs are kept in --work)
    PYTHONPATH=$PWD nice -n 10 python bench/mad_calibrate.py --threads 1 \\
        --runs mamba:in_context_recall:600:3e-3,attention:in_context_recall:1500:1e-3

The table is printed and written to ``--out`` (default ``bench/results/mad-calibration.md``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `bench` from the checkout

import torch  # noqa: E402

from bench.reproduce_mad import FULL, QUICK, Bench, Setting, _key, _Wrapped  # noqa: E402

ARCH = {"attention": "gpt_neox", "mamba": "mamba"}


def xy(ds) -> tuple[torch.Tensor, torch.Tensor]:
    return ds.inputs, ds.targets


def parse_run(spec: str, default_width: int) -> dict:
    """``arch:task:steps:lr[:width]`` -> dict (clear errors for anything else)."""
    from mad_models.mad import TASKS

    parts = spec.split(":")
    if len(parts) not in (4, 5):
        raise ValueError(f"run {spec!r}: expected arch:task:steps:lr[:width]")
    arch, task, steps, lr = parts[:4]
    if arch not in ARCH:
        raise ValueError(f"run {spec!r}: arch must be one of {', '.join(ARCH)}")
    if task not in TASKS:
        raise ValueError(f"run {spec!r}: task must be one of {', '.join(TASKS)}")
    width = int(parts[4]) if len(parts) == 5 else default_width
    if int(steps) < 1 or float(lr) <= 0 or width < 4 or width % 4:
        raise ValueError(f"run {spec!r}: steps >= 1, lr > 0, width a positive multiple of 4 (4 heads)")
    return {"arch": arch, "task": task, "steps": int(steps), "lr": float(lr), "width": width}


def bench_for(s: Setting, width: int, work: Path) -> Bench:
    """reproduce_mad's Bench (data, components, hybrids) for setting ``s`` at another width."""
    s = copy.deepcopy(s)
    s.width = width
    return Bench(s, work, work / "unused.md", progress=False)


def train_logged(
    b: Bench, arch: str, task: str, steps: int, lr: float, every: int, seed: int = 0, log_every: int = 10
):
    """Train one component with ``train_mad`` (eval on the valid split every ``every`` steps);
    returns (log lines, the trained model)."""
    from mad_models.mad.compression import for_task
    from mad_models.training import TrainArgs, read_log, train_mad

    s = b.s
    model = b.component(ARCH[arch], task, seed)
    model = for_task(model, task, b.vocab(task), b.data(task, "valid", 0).inputs.shape[1])
    out = tempfile.mkdtemp(dir=b.work, prefix="cal-")
    args = TrainArgs(
        out, max_steps=steps, batch_size=s.batch_size, lr=lr, seed=seed, log_every=min(every, log_every),
        eval_every=every, save_every=10**9, save_final=False, resume=False, progress=False,
    )  # fmt: skip
    train_mad(model, task, args, num_train=s.num_train, num_test=s.num_valid, data_seed=seed,
              eval_split="valid", **s.tasks[task])  # fmt: skip
    log = read_log(out)
    shutil.rmtree(out, ignore_errors=True)
    return log, model


def data_setting(s: Setting) -> dict:
    """What a calibration run depends on besides its own arch, task, steps, lr and width."""
    return {k: v for k, v in asdict(s).items() if k in ("batch_size", "layers", "num_train", "num_valid",
                                                       "num_test", "tasks")}  # fmt: skip


def calibrate(s: Setting, run: dict, every: int, work: Path) -> dict:
    """One calibration run (cached in ``work`` by every setting that makes it)."""
    from mad_models.mad import chance_accuracy, evaluate_metrics, heuristic_accuracy

    key = _key(calibrate=run, every=every, setting=data_setting(s))
    path = work / f"{run['arch']}-{run['task']}-{run['steps']}-{run['lr']:g}-w{run['width']}-{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    b = bench_for(s, run["width"], work)
    task = run["task"]
    t0 = time.perf_counter()
    log, model = train_logged(b, run["arch"], task, run["steps"], run["lr"], every)
    wall = time.perf_counter() - t0
    valid, test = b.data(task, "valid", 0), b.data(task, "test", 0)
    model.eval()
    res = {
        **run,
        "checkpoints": {r["step"]: round(r["eval_accuracy"], 4) for r in log if "eval_accuracy" in r},
        "s_per_step": round(log[-1]["train_time"] / log[-1]["step"], 4),
        "wall": round(wall, 1),
        "test": round(evaluate_metrics(model, data=(test.inputs, test.targets))["micro"], 4),
        "heuristic_valid": round(heuristic_accuracy(task, *xy(valid), **s.tasks[task])["micro"], 4),
        "heuristic_test": round(heuristic_accuracy(task, *xy(test), **s.tasks[task])["micro"], 4),
        "chance": round(chance_accuracy(task, **s.tasks[task]), 4),
        "params": sum(p.numel() for p in model.parameters()),
    }  # fmt: skip
    path.write_text(json.dumps(res))
    return res


def speed(s: Setting, widths: list[int], tasks: list[str], work: Path, steps: int = 12) -> list[dict]:
    """Seconds per training step (mean over steps 3..``steps``; the first two warm up) of attention,
    Mamba and their hybrid (the fixed-mixture retrain step; a search step does one forward/backward too)."""
    from mad_models.mad.compression import for_task
    from mad_models.training import TrainArgs, read_log
    from mad_models.training.retrain import retrain

    rows = []
    for width in widths:
        b = bench_for(s, width, work)
        for task in tasks:
            row = {"width": width, "task": task, "seq_len": b.data(task, "valid", 0).inputs.shape[1]}
            for arch in ("attention", "mamba", "hybrid"):
                if arch == "hybrid":
                    hybrid = b.hybrid(task, 0)
                    hybrid.set_mixture([[0.5, 0.5]] * s.layers, mode="fixed")
                    model = for_task(hybrid, task, b.vocab(task), row["seq_len"])
                    out = tempfile.mkdtemp(dir=work, prefix="speed-")
                    args = TrainArgs(
                        out, max_steps=steps, batch_size=s.batch_size, lr=1e-3, log_every=1,
                        save_every=10**9, save_final=False, resume=False, progress=False,
                    )  # fmt: skip

                    retrain(hybrid if model is hybrid else _Wrapped(model), b.data(task, "train", 0), args)
                    log = read_log(out)
                    shutil.rmtree(out, ignore_errors=True)
                else:
                    log, _ = train_logged(b, arch, task, steps, 1e-3, every=10**9, log_every=1)
                t = {r["step"]: r["train_time"] for r in log}
                row[arch] = round((t[steps] - t[2]) / (steps - 2), 4)
            rows.append(row)
            print(f"[speed] {row}", flush=True)
    return rows


def table(results: list[dict], every: int) -> str:
    steps = sorted({int(k) for r in results for k in r["checkpoints"]})
    head = (
        "| task | model | width | lr | steps | s/step | "
        + " | ".join(f"@{k}" for k in steps)
        + " | heuristic (valid) | chance | best - heuristic | test (final) | heuristic (test) |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|" + "---:|" * (len(steps) + 5)]
    for r in sorted(results, key=lambda r: (r["task"], r["arch"], r["width"], r["lr"], r["steps"])):
        cp = {int(k): v for k, v in r["checkpoints"].items()}
        best = max(cp.values())
        cells = " | ".join(f"{cp[k]:.3f}" if k in cp else "" for k in steps)
        lines.append(
            f"| {r['task']} | {r['arch']} | {r['width']} | {r['lr']:g} | {r['steps']} "
            f"| {r['s_per_step']:.3f} | {cells} | {r['heuristic_valid']:.3f} | {r['chance']:.3f} "
            f"| {best - r['heuristic_valid']:+.3f} "
            f"| {r['test']:.3f} | {r['heuristic_test']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", choices=("full", "quick"), default="full",
                    help="reproduce_mad's setting: its task settings, data sizes, batch, layers")  # fmt: skip
    ap.add_argument("--num-train", type=int, default=None, help="training sequences (default: the setting's)")
    ap.add_argument(
        "--num-valid", type=int, default=None, help="validation sequences (default: the setting's)"
    )
    ap.add_argument("--runs", default="", help="comma-separated arch:task:steps:lr[:width]")
    ap.add_argument("--every", type=int, default=200, help="validation accuracy every N steps")
    ap.add_argument("--speed", action="store_true", help="measure seconds per step only")
    ap.add_argument("--widths", default="32,64", help="--speed: widths to time")
    ap.add_argument("--tasks", default=None, help="--speed: tasks to time (default: every task)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default=None, help="finished runs (resume); default bench/.work-mad-calibrate")
    ap.add_argument("--out", default=None, help="markdown table (default bench/results/mad-calibration.md)")
    a = ap.parse_args(argv)
    args_used = " ".join(argv if argv is not None else sys.argv[1:])
    command = f"`PYTHONPATH=$PWD python bench/mad_calibrate.py {args_used}`"
    if a.threads:
        torch.set_num_threads(a.threads)
    logging.disable(logging.WARNING)  # transformers' "falling back to the reference scan" lines
    s = copy.deepcopy(FULL if a.setting == "full" else QUICK)
    s.num_train = a.num_train or s.num_train
    s.num_valid = a.num_valid or s.num_valid
    root = Path(__file__).resolve().parent
    work = Path(a.work) if a.work else root / ".work-mad-calibrate"
    work.mkdir(parents=True, exist_ok=True)
    head = (
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s); "
        f"reproduce_mad setting {s.name!r}: batch {s.batch_size}, {s.layers} layers, {s.num_train} train / "
        f"{s.num_valid} valid / {s.num_test} test sequences, task settings `{json.dumps(s.tasks)}`"
    )
    if a.speed:
        tasks = a.tasks.split(",") if a.tasks else list(s.tasks)
        rows = speed(s, [int(w) for w in a.widths.split(",")], tasks, work)
        print(command)
        print(head)
        print("\nseconds per training step (evaluation excluded)\n")
        print("| width | task | seq_len | attention | Mamba | hybrid |\n|---:|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['width']} | {r['task']} | {r['seq_len']} | {r['attention']:.3f} | {r['mamba']:.3f} "
                  f"| {r['hybrid']:.3f} |")  # fmt: skip
        return 0
    try:
        runs = [parse_run(x, s.width) for x in a.runs.split(",") if x]
    except ValueError as e:
        ap.error(str(e))
    if not runs:
        ap.error("give --runs (or --speed)")
    results = []
    for run in runs:
        r = calibrate(s, run, a.every, work)
        results.append(r)
        print(f"[calibrate] {run}: {r['checkpoints']} (heuristic {r['heuristic_valid']}, "
              f"{r['s_per_step']} s/step, {r['wall']} s)", flush=True)  # fmt: skip
    text = "\n".join([
        "# MAD calibration: components alone, per task",
        "",
        command,
        "",
        head + ".",
        "",
        f"Validation accuracy (seed-0 valid split, scored like the test set) every {a.every} steps "
        "of one run (cosine schedule over the run's steps); heuristic and chance on the same split; "
        "s/step: training only.",
        "",
        table(results, a.every),
        "",
    ])  # fmt: skip
    out = Path(a.out) if a.out else root / "results" / "mad-calibration.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"[calibrate] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
