"""Calibrate MAD budgets: how many steps until each component, trained alone, reaches its plateau?

Trains attention and Mamba from scratch on one MAD task each, with the data, models, batch and lr warm-up
of ``bench/reproduce_mad.py``'s setting (``--setting full|quick``; ``--set k=v`` overrides a setting field
for a pilot, e.g. ``batch_tokens=4096``), and records the validation accuracy (seed-0 valid split, scored
like the test set) every ``--every`` steps next to the no-learning heuristic and chance, plus the CPU
seconds per training step. One run keeps its cosine schedule over all its steps, so an early point is
not what a run that short would reach. The test split is never read.

    # runs: kind:task:steps:lr (kind: attention or mamba); finished runs are kept in --work (resume)
    PYTHONPATH=$PWD nice -n 10 python bench/mad_calibrate.py \\
        --runs attention:in_context_recall:1000:1e-3,mamba:in_context_recall:1000:3e-3
    # CPU seconds per step of every row kind on every task: bench/results/mad-speed.json (--dry-run's input)
    PYTHONPATH=$PWD nice -n 10 python bench/mad_calibrate.py --speed

The table is written to ``--out`` (default ``bench/results/mad-calibration.md``), with every finished run
in ``--work`` (so runs of earlier invocations stay in the table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `bench` from the checkout

import torch  # noqa: E402

from bench.reproduce_mad import FULL, QUICK, ROOT, SPEED_FILE, Models, Setting, _key, lm_cost, score  # noqa: E402

KINDS = ("attention", "mamba")
HISTORY = (
    "Before build_model took MAD-lab's shapes, the attention rows were GPT-NeoX with 4 heads of 16 dims and "
    "rotary on 4 of them "
    "(`rotary_pct` 0.25: frequencies 1 and 0.01 only): at sequences of 32, 3,000 steps of batch 32 left "
    "in-context recall at the heuristic (0.365 and 0.376 at lr 1e-3 and 3e-3 against 0.368), while Mamba "
    "reached 0.964 in 600 steps. Those runs are in this file's git history (commit 4b5d110)."
)
SPEED_KINDS = ("attention", "mamba", "attention-matched", "mamba-matched", "hybrid", "hand")


def parse_run(spec: str) -> dict:
    """``kind:task:steps:lr`` -> dict (clear errors for anything else)."""
    from mad_models.mad import TASKS

    parts = spec.split(":")
    if len(parts) != 4:
        raise ValueError(f"run {spec!r}: expected kind:task:steps:lr")
    kind, task, steps, lr = parts
    if kind not in KINDS:
        raise ValueError(f"run {spec!r}: kind must be one of {', '.join(KINDS)}")
    if task not in TASKS:
        raise ValueError(f"run {spec!r}: task must be one of {', '.join(TASKS)}")
    try:
        steps_i, lr_f = int(steps), float(lr)
    except ValueError:
        raise ValueError(f"run {spec!r}: steps must be an int and lr a number") from None
    if steps_i < 1 or not lr_f > 0:
        raise ValueError(f"run {spec!r}: steps >= 1 and lr > 0")
    return {"kind": kind, "task": task, "steps": steps_i, "lr": lr_f}


def with_overrides(s: Setting, sets: list[str]) -> Setting:
    """``field=value`` overrides of a setting's scalar fields (a pilot's batch, width, ...)."""
    changes = {}
    fields = {f.name: f for f in dataclasses.fields(s)}
    for item in sets:
        name, _, value = item.partition("=")
        if name not in fields or not isinstance(getattr(s, name), (int, float)) or not value:
            scalars = [n for n in fields if isinstance(getattr(s, n), (int, float))]
            raise ValueError(f"--set {item!r}: give field=value for one of {', '.join(scalars)}")
        changes[name] = type(getattr(s, name))(float(value) if "." in value or "e" in value else int(value))
    return dataclasses.replace(s, **changes)


def calibrate(s: Setting, run: dict, every: int, work: Path) -> dict:
    """One calibration run, cached in ``work`` under a key of everything that makes it."""
    from mad_models.mad import chance_accuracy, heuristic_accuracy
    from mad_models.mad.compression import for_task
    from mad_models.training import TrainArgs, read_log
    from mad_models.training.checkpoint import latest_checkpoint
    from mad_models.training.loop import Trainer, adamw, cosine_scheduler, default_step

    task = run["task"]
    setting = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("name", "steps", "ckpt_every")}
    setting["tasks"] = s.tasks[task]
    key = _key(calibrate=run, every=every, setting=setting)
    path = work / f"{run['kind']}-{task}-{run['steps']}-{run['lr']:g}-{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    m = Models(s)
    train, valid = m.data(task, "train", 0), m.data(task, "valid", 0)
    lm = m.component(run["kind"], task, 0)
    model = for_task(lm, task, m.vocab(task), m.seq_len(task))
    out = work / f"run-{key}"  # a checkpoint every `every` steps: a stopped run resumes where it was
    ckpt = latest_checkpoint(out / "checkpoints")
    start = json.loads((ckpt / "state.json").read_text())["step"] if ckpt else 0
    args = TrainArgs(
        str(out), max_steps=run["steps"], batch_size=m.batch(task), lr=run["lr"], seed=0,
        warmup_steps=s.lr_warmup, log_every=every, eval_every=every, save_every=every,
        save_final=False, resume=True, progress=False,
    )  # fmt: skip
    opt = adamw(model.parameters(), run["lr"], 0.0)
    cpu0 = time.thread_time()
    Trainer(
        model, train, args, optimizers={"m": opt}, step_fn=default_step,
        eval_fn=lambda mod: {"accuracy": score(mod, valid)["micro"]},
        make_schedulers=lambda o, total: {"m": cosine_scheduler(o["m"], args, total)}, job="calibrate",
    ).train()  # fmt: skip
    cpu = time.thread_time() - cpu0
    log = read_log(out)
    shutil.rmtree(out, ignore_errors=True)
    heuristic = heuristic_accuracy(task, valid.inputs, valid.targets, **s.tasks[task])["micro"]
    res = {
        **run,
        "batch_size": m.batch(task), "width": s.width, "layers": s.blocks, "lr_warmup": s.lr_warmup,
        "num_train": s.num_train[task], "settings": s.tasks[task],
        "checkpoints": {r["step"]: round(r["eval_accuracy"], 4) for r in log if "eval_accuracy" in r},
        "cpu_s_per_step": round(cpu / max(1, run["steps"] - start), 4),  # of this process's steps
        "heuristic_valid": round(heuristic, 4),
        "chance": round(chance_accuracy(task, **s.tasks[task]), 4),
        "params": lm_cost(lm, m.seq_len(task))[0],
    }  # fmt: skip
    path.write_text(json.dumps(res))
    return json.loads(path.read_text())  # as a cached run reads it (step keys are strings)


def speed(s: Setting, tasks: list[str], steps: int = 8) -> dict[str, dict[str, float]]:
    """CPU seconds per training step (median of steps 3..``steps``) of every row kind, per task: forward,
    backward and an AdamW step on one batch of the task's training data."""
    from mad_models.hybrid.designs import hand_designs
    from mad_models.mad.compression import for_task
    from mad_models.mad.tasks import IGNORE

    m = Models(s)
    out: dict[str, dict[str, float]] = {k: {} for k in SPEED_KINDS}
    for task in tasks:
        data = m.data(task, "valid", 0)  # any batch of the task's shape
        x, y = data.inputs[: m.batch(task)], data.targets[: m.batch(task)]
        for kind in SPEED_KINDS:
            if kind == "hybrid":
                lm = m.hybrid(task, 0)
                lm.set_mixture([[0.5, 0.5]] * s.blocks, mode="fixed")
            elif kind == "hand":
                lm = m.one_hot(task, 0, hand_designs(s.blocks)["striped"])
            else:
                base = kind.split("-")[0]
                width = m.matched_width(base, task) if kind.endswith("-matched") else s.width
                lm = m.component(base, task, 0, width=width)
            model = for_task(lm, task, m.vocab(task), m.seq_len(task))
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-3)
            times = []
            for _ in range(steps):
                t0 = time.thread_time()
                logits = model(input_ids=x).logits
                loss = torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.thread_time() - t0)
            rest = sorted(times[2:])
            out[kind][task] = round(rest[len(rest) // 2], 4)
            print(f"[speed] {task} {kind}: {out[kind][task]} cpu-s/step", flush=True)
    return out


def table(results: list[dict]) -> str:
    steps = sorted({int(k) for r in results for k in r["checkpoints"]})
    head = (
        "| task | model | batch | lr warm-up | lr | steps | CPU s/step | "
        + " | ".join(f"@{k}" for k in steps)
        + " | heuristic (valid) | chance | best - heuristic |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|" + "---:|" * (len(steps) + 3)]
    for r in sorted(results, key=lambda r: (r["task"], r["kind"], r["batch_size"], r["lr"], r["steps"])):
        cp = {int(k): v for k, v in r["checkpoints"].items()}
        best = max(cp.values())
        cells = " | ".join(f"{cp[k]:.3f}" if k in cp else "" for k in steps)
        lines.append(
            f"| {r['task']} {json.dumps(r['settings'])} | {r['kind']} | {r['batch_size']} | {r['lr_warmup']} "
            f"| {r['lr']:g} | {r['steps']} | {r['cpu_s_per_step']:.3f} | {cells} "
            f"| {r['heuristic_valid']:.3f} "
            f"| {r['chance']:.3f} | {best - r['heuristic_valid']:+.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", choices=("full", "quick"), default="full", help="reproduce_mad's setting")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a scalar field (batch_tokens, width, blocks, lr_warmup, ...)")  # fmt: skip
    ap.add_argument("--runs", default="", help="comma-separated kind:task:steps:lr")
    ap.add_argument("--every", type=int, default=250, help="validation accuracy every N steps")
    ap.add_argument("--speed", action="store_true", help=f"CPU s/step of every row kind -> {SPEED_FILE.name}")
    ap.add_argument("--tasks", default=None, help="--speed: tasks to time (default: every task)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None, help="finished runs (resume); default bench/.work-mad-calibrate")
    ap.add_argument("--out", default=None, help="markdown table (default bench/results/mad-calibration.md)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    logging.disable(logging.WARNING)
    try:
        s = with_overrides(FULL if a.setting == "full" else QUICK, a.set)
    except ValueError as e:
        ap.error(str(e))
    if a.speed:
        tasks = a.tasks.split(",") if a.tasks else list(s.tasks)
        cps = speed(s, tasks)
        old = json.loads(SPEED_FILE.read_text())["cpu_s_per_step"] if SPEED_FILE.exists() else {}
        for kind, per in cps.items():
            old.setdefault(kind, {}).update(per)
        SPEED_FILE.write_text(json.dumps({
            "note": "CPU seconds (thread time, 1 thread) per training step, median of 6; measured by "
                    "`bench/mad_calibrate.py --speed` on a shared machine: CPU time, not wall time, so it "
                    "estimates a quiet core",
            "setting": s.name, "torch": torch.__version__, "machine": platform.machine(),
            "cpu_s_per_step": old,
        }, indent=1) + "\n")  # fmt: skip
        print(f"[speed] wrote {SPEED_FILE}")
        return 0
    try:
        runs = [parse_run(x) for x in a.runs.split(",") if x]
    except ValueError as e:
        ap.error(str(e))
    work = Path(a.work) if a.work else ROOT / ".work-mad-calibrate"
    work.mkdir(parents=True, exist_ok=True)
    for run in runs:
        r = calibrate(s, run, a.every, work)
        print(f"[calibrate] {run}: {r['checkpoints']} (heuristic {r['heuristic_valid']}, "
              f"{r['cpu_s_per_step']} CPU s/step)", flush=True)  # fmt: skip
    results = [json.loads(p.read_text()) for p in sorted(work.glob("*.json"))]
    if not results:
        ap.error("give --runs (or --speed)")
    text = "\n".join([
        "# MAD calibration: each component alone, per task",
        "",
        f"torch {torch.__version__}, {platform.machine()}, 1 thread; "
        "`PYTHONPATH=$PWD python bench/mad_calibrate.py "
        "--runs kind:task:steps:lr,...` (every run below; `--set` for the pilots' other batch sizes). Width, "
        "layers, data and models as bench/reproduce_mad.py builds its component rows.",
        "",
        f"Validation accuracy (seed-0 valid split, scored like the test set) every {a.every} steps of one "
        "run (cosine schedule over the run's steps, after the lr warm-up); heuristic and chance on the same "
        "split; "
        "CPU s/step: training only, thread CPU time on a shared machine (so about a quiet core's wall time).",
        "",
        table(results),
        "",
        HISTORY,
        "",
    ])  # fmt: skip
    out = Path(a.out) if a.out else ROOT / "results" / "mad-calibration.md"
    out.write_text(text)
    print(f"[calibrate] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
