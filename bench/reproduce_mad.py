"""MAD at our scale: components, searched hybrids and the MAD-programmed hybrid, with honest baselines.

Rows (every task a column, plus the mean, micro and macro accuracy over scored test positions):
- chance, and the no-learning heuristic (``mad_models.mad.baselines``);
- attention (GPT-NeoX) and Mamba, each alone, trained from scratch;
- the hybrid of the two (2 blocks, fresh components) with the mixture searched by alternating DARTS
  (arch steps on held-out batches) and by simultaneous DARTS, on the task (Manticore's comparison);
- the MAD-programmed hybrid: fresh components, the alternating search's weights frozen, trained;
- pruned + retrained: the searched mixture discretised (argmax per block), fresh weights, trained.

Fairness: every row trains the same number of steps on the same training data (batch, sequences);
each row's lr is chosen from the same grid by Optuna (GridSampler, best validation accuracy at the
end of training) on the validation split, with seed 0; the test split is
only read for the table. Every row runs >= 2 seeds (mean and range). Compression is MAD's
auto-encoder (``CompressionAutoEncoder``) for every row, hybrids included.

    PYTHONPATH=$PWD python bench/reproduce_mad.py --quick --threads 1   # writes bench/results/mad-quick.md
    PYTHONPATH=$PWD python bench/reproduce_mad.py                       # full: bench/results/mad.md
    PYTHONPATH=$PWD python bench/reproduce_mad.py --dry-run [--quick]   # runs and time estimate only

Budgets (steps, width, sequence lengths) come from ``bench/mad_calibrate.py``; see the comment above
``TASKS_32``.

Resumable: every finished run is a JSON file in ``--work`` (keyed by all its settings), so a re-run
skips what is done; the table is rewritten after every run (cells not yet measured say "-").
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import mad_models  # noqa: E402,F401
from mad_models.mad import (  # noqa: E402
    TASKS,
    MADDataset,
    chance_accuracy,
    evaluate_metrics,
    heuristic_accuracy,
    task_settings,
)
from mad_models.mad.compression import for_task  # noqa: E402

ROWS = (
    "attention",
    "mamba",
    "hybrid-alternating",
    "hybrid-simultaneous",
    "mad-programmed",
    "pruned-retrained",
)
LABELS = {
    "attention": "attention (GPT-NeoX)",
    "mamba": "Mamba",
    "hybrid-alternating": "hybrid, searched (alternating DARTS)",
    "hybrid-simultaneous": "hybrid, searched (simultaneous DARTS)",
    "mad-programmed": "hybrid, MAD-programmed (searched weights fixed)",
    "pruned-retrained": "hybrid, pruned (argmax) + retrained",
}


@dataclass
class Setting:
    name: str
    steps: int
    batch_size: int
    width: int
    layers: int
    num_train: int
    num_valid: int
    num_test: int
    lr_grid: tuple[float, ...]
    arch_lr: float
    seeds: tuple[int, ...]
    tasks: dict[str, dict] = field(default_factory=dict)  # task -> settings over the easy defaults


# Calibration (`bench/mad_calibrate.py`, 1 thread; full table in bench/results/mad-calibration.md):
# at width 64 and sequences of 32, Mamba alone beats the no-learning heuristic clearly within 600 steps
# (validation accuracy at steps 200 / 400 / 600: in-context recall 0.770 / 0.947 / 0.964 against 0.368,
# noisy recall 0.612 / 0.933 / 0.964 against 0.388, selective copying 0.471 / 0.753 / 0.798 against
# 0.304; fuzzy recall needs 1,200: 0.412 after 600, 0.620 after 1,200 against 0.213), attention
# (GPT-NeoX) only on memorization (1.000 against 0.036, as Mamba) and a little on selective copying
# (0.421 after 1,500 steps); attention stays at the heuristic on in-context recall after 3,000 steps at
# lr 1e-3 and 3e-3 (0.365 / 0.376 against 0.368). No component passes the heuristic (0.200) by 0.3 on
# compression: attention 0.298 after 3,000 steps at 3e-3 (still rising), Mamba 0.241 after 600.
# At width 32 Mamba does not learn in 300 steps (in-context recall 0.450 against 0.392), and a 200-step
# run at width 64 is only on its way (0.589 against 0.392). Sequences of 64 cost Mamba's reference scan
# 0.49-0.62 s/step at width 64 (0.13-0.17 at 32), which the full setting's 2-hour budget cannot pay.
# FULL (600 steps) gives every component the budget in which Mamba learned all but fuzzy recall (1,200);
# QUICK (180 steps) is what fits its 30-minute budget and is not expected to show clear learning (see
# --dry-run for both estimates).
# Regenerate: PYTHONPATH=$PWD python bench/mad_calibrate.py --threads 1 --setting quick --num-train 8192 \
#   --num-valid 256 --runs <the runs listed in bench/results/mad-calibration.md>
TASKS_32 = {
    "in_context_recall": dict(seq_len=32),
    "fuzzy_recall": dict(seq_len=32),
    "noisy_recall": dict(seq_len=32),
    "selective_copying": dict(seq_len=32, num_tokens_to_copy=6),
    "compression": dict(seq_len=16),
    "memorization": dict(vocab_size=64, seq_len=16),
}
QUICK = Setting(
    name="quick",
    steps=180,
    batch_size=32,
    width=64,
    layers=2,
    num_train=4096,
    num_valid=128,
    num_test=256,
    lr_grid=(1e-3, 3e-3),
    arch_lr=0.05,
    seeds=(0, 1),
    tasks=dict(TASKS_32),
)
FULL = Setting(
    name="full",
    steps=600,
    batch_size=32,
    width=64,
    layers=2,
    num_train=8192,
    num_valid=256,
    num_test=512,
    lr_grid=(1e-3, 3e-3),
    arch_lr=0.05,
    seeds=(0, 1),
    tasks=dict(TASKS_32),
)
# Seconds per training step at width 64 on TASKS_32, 1 thread, measured by
# `PYTHONPATH=$PWD python bench/mad_calibrate.py --threads 1 --setting quick --speed --widths 64`
# (hybrid: the two-component hybrid's step; search and retrain steps are one forward/backward each).
SECONDS_PER_STEP = {
    "attention": {"in_context_recall": 0.0198, "fuzzy_recall": 0.0201, "noisy_recall": 0.0210,
                  "selective_copying": 0.0195, "compression": 0.0181, "memorization": 0.0130},
    "mamba": {"in_context_recall": 0.1508, "fuzzy_recall": 0.1413, "noisy_recall": 0.1686,
              "selective_copying": 0.1271, "compression": 0.0622, "memorization": 0.0532},
    "hybrid": {"in_context_recall": 0.1968, "fuzzy_recall": 0.1649, "noisy_recall": 0.1477,
               "selective_copying": 0.1886, "compression": 0.0710, "memorization": 0.0665},
}  # fmt: skip
# A search run (alternating / simultaneous DARTS, arch batches and the mid-run evaluation included) took
# 1.7-2.2x the hybrid's s/step above: 67.4 s for 200 steps on in-context recall, 29.1 s on memorization
# (`--quick --tasks memorization,in_context_recall --rows attention,hybrid-alternating`); a component
# run took its s/step x steps (3.8 s for 200 attention steps on in-context recall), evaluation included.
SEARCH_COST = 2.0


def runs_per_cell(s: Setting) -> int:
    """Training runs per (row, task): one per lr of the grid (seed 0), then one per further seed."""
    return len(s.lr_grid) + len(s.seeds) - 1


def estimate(s: Setting, rows: tuple[str, ...] = ROWS) -> tuple[int, float]:
    """(runs, seconds on one thread) of setting ``s`` from the measured ``SECONDS_PER_STEP`` and
    ``SEARCH_COST`` (retrained hybrid rows at the two-component hybrid's cost; a pruned one costs less)."""
    sps = SECONDS_PER_STEP
    runs = seconds = 0
    for row in rows:
        kind = row if row in ("attention", "mamba") else "hybrid"
        for task in s.tasks:
            n = runs_per_cell(s)
            runs += n
            factor = SEARCH_COST if row.startswith("hybrid-") else 1.0
            seconds += n * s.steps * sps[kind][task] * factor
    return runs, seconds


def _key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Bench:
    def __init__(self, s: Setting, work: Path, out: Path, progress: bool, report_only: bool = False):
        self.s, self.work, self.out, self.progress = s, work, out, progress
        self.report_only = report_only  # only tabulate finished runs (several processes can share --work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.searched: dict[tuple[str, int, str], list] = {}

    # ---- data and models
    def data(self, task: str, split: str, seed: int):
        n = {"train": self.s.num_train, "valid": self.s.num_valid, "test": self.s.num_test}[split]
        return MADDataset(task, split=split, seed=seed, num_examples=n, **self.s.tasks[task])

    def vocab(self, task: str) -> int:
        return task_settings(task, **self.s.tasks[task])["vocab_size"]

    def component(self, arch: str, task: str, seed: int):
        from mad_models.training import build_model

        T = task_settings(task, **self.s.tasks[task])["seq_len"]
        return build_model(arch, self.vocab(task), width=self.s.width, layers=self.s.layers,
                           heads=4, max_len=max(64, T), seed=seed)  # fmt: skip

    def hybrid(self, task: str, seed: int):
        from mad_models.hybrid import ManticoreForCausalLM

        parts = [self.component("gpt_neox", task, seed), self.component("mamba", task, seed)]
        for part, name in zip(parts, ("attention", "mamba"), strict=True):
            part.config._name_or_path = name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ManticoreForCausalLM.from_components(parts, n_blocks=self.s.layers)

    # ---- one training run -> valid (half, full) and test metrics
    def run(self, row: str, task: str, lr: float, seed: int) -> dict:
        s = self.s
        # keyed on the whole setting's task table, so processes running --tasks subsets share --work
        every = (QUICK if s.name == "quick" else FULL).tasks
        setting = {**asdict(s), "seeds": None, "name": None, "tasks": every}
        key = _key(row=row, task=task, lr=lr, seed=seed, setting=setting)
        path = self.work / f"{row}-{task}-{lr:g}-{seed}-{key}.json"
        if path.is_file():
            return json.loads(path.read_text())
        if self.report_only:
            raise _Missing(path.name)
        from mad_models.training import TrainArgs
        from mad_models.training.loop import Trainer, adamw, cosine_scheduler, default_step
        from mad_models.training.mixture_search import search_mixtures
        from mad_models.training.retrain import retrain

        torch.manual_seed(seed)
        train, valid, test = (
            self.data(task, "train", seed),
            self.data(task, "valid", 0),
            self.data(task, "test", 0),
        )
        vocab, T = self.vocab(task), train.inputs.shape[1]
        t0 = time.perf_counter()
        half: dict = {}

        def eval_valid(m):
            acc = evaluate_metrics(m, data=(valid.inputs, valid.targets), batch_size=64)
            return {"accuracy": acc["micro"]}

        args = TrainArgs(
            tempfile.mkdtemp(dir=self.work, prefix="run-"), max_steps=s.steps, batch_size=s.batch_size,
            lr=lr, seed=seed, save_every=10**9, log_every=max(1, s.steps // 2), eval_every=s.steps // 2,
            progress=self.progress, save_final=False, resume=False,
        )  # fmt: skip
        mixture = None
        if row in ("attention", "mamba"):
            model = for_task(
                self.component("gpt_neox" if row == "attention" else "mamba", task, seed), task, vocab, T
            )
            opt = adamw(model.parameters(), lr, 0.0)
            trainer = Trainer(
                model, train, args, optimizers={"m": opt}, step_fn=default_step, eval_fn=eval_valid,
                make_schedulers=lambda o, total: {"m": cosine_scheduler(o["m"], args, total)}, job="bench",
            )  # fmt: skip
            trainer.train()
        elif row.startswith("hybrid-"):
            hybrid = self.hybrid(task, seed)
            model = for_task(hybrid, task, vocab, T)
            arch = self.data(task, "valid", 1000 + seed)  # held out for arch steps, not the lr choice
            search_mixtures(
                hybrid if model is hybrid else _Wrapped(model), train, args, arch_data=arch,
                arch_lr=s.arch_lr, mode=row.split("-")[1], method="darts", eval_fn=eval_valid,
            )  # fmt: skip
            mixture = [[round(float(x), 4) for x in r] for r in hybrid.mixture.expected_weights().tolist()]
        else:  # fixed searched weights on fresh components (optionally pruned to the argmax)
            searched = self.searched_mixture(task, seed)
            hybrid = self.hybrid(task, seed)
            hybrid.set_mixture(searched, mode="fixed")
            if row == "pruned-retrained":
                hybrid = hybrid.discretize()
            model = for_task(hybrid, task, vocab, T)
            retrain(hybrid if model is hybrid else _Wrapped(model), train, args, eval_fn=eval_valid)
            mixture = [[round(float(x), 4) for x in r] for r in hybrid.mixture_weights().tolist()]
        log = [json.loads(ln) for ln in (Path(args.output_dir) / "log.jsonl").read_text().splitlines() if ln]
        half = next((r for r in log if r["step"] == s.steps // 2 and "eval_accuracy" in r), {})
        model.eval()
        test_acc = evaluate_metrics(model, data=(test.inputs, test.targets), batch_size=64)
        res = {
            "row": row, "task": task, "lr": lr, "seed": seed,
            "valid_half": half.get("eval_accuracy", 0.0), "valid": log[-1].get("eval_accuracy", 0.0),
            "test": test_acc["micro"], "test_macro": test_acc["macro"], "mixture": mixture,
            "params": sum(p.numel() for p in model.parameters()), "time": round(time.perf_counter() - t0, 1),
        }  # fmt: skip
        path.write_text(json.dumps(res))
        import shutil

        shutil.rmtree(args.output_dir, ignore_errors=True)
        return res

    def searched_mixture(self, task: str, seed: int) -> list:
        lr = self.best_lr("hybrid-alternating", task)
        return self.run("hybrid-alternating", task, lr, seed)["mixture"]

    # ---- lr choice: Optuna over the grid, on the validation split, seed 0
    def best_lr(self, row: str, task: str) -> float:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        grid = list(self.s.lr_grid)
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.GridSampler({"lr": grid}, seed=0)
        )

        def objective(trial):
            lr = trial.suggest_categorical("lr", grid)
            return self.run(row, task, lr, self.s.seeds[0])["valid"]

        study.optimize(objective, n_trials=len(grid))
        return float(study.best_params["lr"])

    # ---- the table
    def table(self, results: dict, lrs: dict) -> str:
        s = self.s
        tasks = list(s.tasks)

        def fmt(vals):
            if not vals:
                return "-"
            m = sum(vals) / len(vals)
            return f"{m:.3f} [{min(vals):.3f}, {max(vals):.3f}]" if len(vals) > 1 else f"{m:.3f}"

        head = "| model | " + " | ".join(tasks) + " | mean (micro) | mean (macro) |"
        lines = [head, "|---|" + "---:|" * (len(tasks) + 2)]
        base = {}
        for name in ("chance", "heuristic"):
            cells, macro = [], []
            for t in tasks:
                x, y = self.data(t, "test", 0).inputs, self.data(t, "test", 0).targets
                if name == "chance":
                    v = mv = chance_accuracy(t, **s.tasks[t])
                else:
                    h = heuristic_accuracy(t, x, y, **s.tasks[t])
                    v, mv = h["micro"], h["macro"]
                cells.append(v)
                macro.append(mv)
            base[name] = cells
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in cells)
                         + f" | {sum(cells) / len(cells):.3f} | {sum(macro) / len(macro):.3f} |")  # fmt: skip
        for row in ROWS:
            cells, means, macros = [], [], []
            per_seed: dict[int, list] = {}
            for t in tasks:
                rs = results.get((row, t), [])
                cells.append(fmt([r["test"] for r in rs]))
                for r in rs:
                    per_seed.setdefault(r["seed"], []).append(r)
            for rs in per_seed.values():
                if len(rs) == len(tasks):
                    means.append(sum(r["test"] for r in rs) / len(tasks))
                    macros.append(sum(r["test_macro"] for r in rs) / len(tasks))
            lines.append(f"| {LABELS[row]} | " + " | ".join(cells) + f" | {fmt(means)} | {fmt(macros)} |")
        lr_lines = [
            f"- {LABELS[row]}: " + ", ".join(f"{t} {lrs[(row, t)]:g}" for t in tasks if (row, t) in lrs)
            for row in ROWS
        ]
        mix_lines = []
        for t in tasks:
            for row in ("hybrid-alternating", "hybrid-simultaneous"):
                ms = [r["mixture"] for r in results.get((row, t), [])]
                if ms:
                    mix_lines.append(f"- {t}, {row.split('-')[1]}: " + "; ".join(json.dumps(m) for m in ms))
        cfg = asdict(s)
        runs = [json.loads(f.read_text()) for f in self.work.glob("*.json")]
        flag = " --quick" if s.name == "quick" else ""
        return "\n".join([
            f"# MAD at our scale ({s.name} setting)",
            "",
            f"torch {torch.__version__}, {platform.machine()}; generated by "
            f"`PYTHONPATH=$PWD python bench/reproduce_mad.py{flag} --threads 1` (then `--report-only`). "
            f"Training time summed over all {len(runs)} finished runs (lr trials included): "
            f"{sum(r['time'] for r in runs):.0f} s.",
            "",
            "Test accuracy over scored positions (micro per task; mean over tasks micro and macro), "
            f"mean over seeds {list(s.seeds)} with [min, max]. Every row: {s.steps} steps of batch "
            f"{s.batch_size} on {s.num_train} training sequences per task; width {s.width}, {s.layers} "
            f"layers / blocks; lr per row and task chosen by Optuna (GridSampler over {list(s.lr_grid)}) "
            f"on {s.num_valid} validation sequences (seed 0); test: {s.num_test} sequences; "
            f"arch lr {s.arch_lr}. "
            "Compression is MAD's auto-encoder for every row. '-' = not measured yet.",
            "",
            *lines,
            "",
            "Chosen lr:",
            *lr_lines,
            "",
            "Searched mixtures (block x [attention, mamba]) per seed:",
            *mix_lines,
            "",
            f"Settings: `{json.dumps(cfg['tasks'])}`",
            "",
        ])  # fmt: skip

    def write(self, results, lrs, note: str = "") -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        text = self.table(results, lrs)
        if note:
            text += "\n" + note.strip() + "\n"
        self.out.write_text(text)

    def main(self, rows: tuple[str, ...], note: str) -> None:
        results: dict = {}
        lrs: dict = {}
        self.collected = (results, lrs)
        for task in self.s.tasks:
            for row in rows:
                try:
                    lr = self.best_lr(row, task)
                    lrs[(row, task)] = lr
                    results[(row, task)] = [self.run(row, task, lr, seed) for seed in self.s.seeds]
                except _Missing:
                    continue
                self.write(results, lrs, note)
                print(f"[mad] {row} {task}: lr {lr:g}, test {[r['test'] for r in results[(row, task)]]}",
                      f"({time.perf_counter() - self.t0:.0f} s)", flush=True)  # fmt: skip


class _Missing(Exception):
    """A run not finished yet (``--report-only``)."""


class _Wrapped(torch.nn.Module):
    """A compression auto-encoder seen as a hybrid by the search / retrain jobs (same parameters)."""

    def __init__(self, ae):
        super().__init__()
        self.ae = ae

    @property
    def mixture(self):
        return self.ae.model.mixture

    def forward(self, **kw):
        return self.ae(**kw)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.ae.model, name)


def main(argv: list[str] | None = None) -> int:
    est = {s.name: estimate(s) for s in (FULL, QUICK)}
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="estimates from the measured s/step (1 thread; halve for 2 processes sharing --work): "
        + "; ".join(f"{n}: {r} runs, about {sec / 60:.0f} min" for n, (r, sec) in est.items()),
    )
    ap.add_argument("--quick", action="store_true", help="the quick setting (bench/results/mad-quick.md)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument(
        "--work", default=None, help="where finished runs are kept (resume); default bench/.work-mad"
    )
    ap.add_argument("--out", default=None, help="the markdown table (default bench/results/mad[-quick].md)")
    ap.add_argument("--tasks", default=None, help="comma-separated subset of the tasks")
    ap.add_argument("--rows", default=None, help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--note", default="", help="a paragraph appended under the table")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="tabulate the finished runs in --work only")
    ap.add_argument(
        "--dry-run", action="store_true", help="print the runs and the time estimate, run nothing"
    )
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    logging.disable(logging.WARNING)  # transformers' "falling back to the reference scan" lines
    s = copy.deepcopy(QUICK if a.quick else FULL)
    if a.tasks:
        wanted = a.tasks.split(",")
        bad = [t for t in wanted if t not in TASKS]
        if bad:
            ap.error(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
        s.tasks = {t: v for t, v in s.tasks.items() if t in wanted}
    rows = tuple(a.rows.split(",")) if a.rows else ROWS
    if any(r not in ROWS for r in rows):
        ap.error(f"--rows must be a subset of {','.join(ROWS)}")
    if a.dry_run:
        runs, seconds = estimate(s, rows)
        print(
            f"[mad] {s.name}: {len(rows)} rows x {len(s.tasks)} tasks x {runs_per_cell(s)} runs "
            f"({len(s.lr_grid)} lrs + {len(s.seeds) - 1} more seed(s)) = {runs} runs of {s.steps} steps; "
            f"about {seconds / 60:.0f} min on 1 thread, {seconds / 120:.0f} min with 2 processes sharing "
            "--work (from the s/step measured by bench/mad_calibrate.py --speed on a quiet machine)"
        )
        return 0
    root = Path(__file__).resolve().parent
    work = Path(a.work) if a.work else root / f".work-mad-{s.name}"
    out = Path(a.out) if a.out else root / "results" / ("mad-quick.md" if a.quick else "mad.md")
    note = Path(a.note).read_text() if a.note and Path(a.note).is_file() else a.note
    bench = Bench(s, work, out, a.progress, a.report_only)
    bench.main(rows, note)
    if a.report_only:
        bench.write(*bench.collected, note)
    print(f"[mad] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
