"""MAD at our scale: attention, Mamba, their searched and hand-designed hybrids, with honest baselines.

Rows (every MAD task a column; mean over tasks; params and FLOPs per token):
- chance, and the no-learning heuristic (``mad_models.mad.baselines``);
- attention (Llama layers: heads of 8 dims, rotary on every head dim, SwiGLU MLP: MAD-lab's shape) and
  Mamba (MAD-lab's d_state 4), each alone; and each widened to the unpruned hybrid's parameter count;
- the hybrid of the two (4 blocks of 1 layer per component, fresh weights) with a uniform fixed mixture;
  with the mixture searched by alternating DARTS (weight-only warm-up, then arch steps on held-out
  batches; arch lr chosen on dev from ``arch_lr_grid``); the searched mixture pruned to its argmax per
  block and trained from fresh weights (the equal-cost searched row); the searched mixture kept whole,
  fixed, trained from fresh weights; and "MAD-programmed" as Manticore means it: the mixture searched on
  the *other* tasks (their mean, the target left out), fixed, trained on the target;
- hand-designed hybrids (``mad_models.hybrid.designs``): striped both ways, Mamba-heavy (one attention
  block in the middle), attention first / Mamba first; one-hot, pruned, so each costs what it keeps.

Fairness: per task every row trains the same number of steps on the same data, batch and seeds; each
row's lr (and the search's arch lr) is chosen from the same grid with Optuna on the validation split
(seed 0); the test split is read only for the tables. Steps per task are to come from the calibration
curves of ``bench/mad_calibrate.py`` (bench/results/mad-calibration.md); today's are provisional.

    PYTHONPATH=$PWD python bench/reproduce_mad.py --quick --workers 2   # bench/results/mad-quick.{md,json}
    PYTHONPATH=$PWD python bench/reproduce_mad.py --workers 2           # full: bench/results/mad.{md,json}
    PYTHONPATH=$PWD python bench/reproduce_mad.py --dry-run [--quick]   # runs and time estimate only
    PYTHONPATH=$PWD python bench/reproduce_mad.py --report-only         # tables from the kept records

Records: every finished run is one line of ``results.jsonl`` in ``--records`` (default
``bench/results/mad-{setting}-runs/``, kept in the repository), beside ``settings.json``; a re-run resumes
after the finished runs (a run in progress resumes from its last checkpoint in ``--work``), and a re-run
with other settings against the same records is refused. Several processes may share the records
(``--workers N`` starts N): each claims a run before training it.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `bench` from the checkout

import torch  # noqa: E402

import mad_models  # noqa: E402,F401
from bench.run_records import RunRecords  # noqa: E402
from mad_models.hybrid.designs import hand_designs, pattern  # noqa: E402
from mad_models.mad import (  # noqa: E402
    IGNORE,
    Accuracy,
    MADDataset,
    chance_accuracy,
    heuristic_accuracy,
    logits_of,
    task_settings,
)
from mad_models.mad.compression import for_task  # noqa: E402

ROOT = Path(__file__).resolve().parent
ARCH = {"attention": "llama", "mamba": "mamba"}  # component index 0 and 1 of every hybrid
HAND = {  # row -> design of mad_models.hybrid.designs (component 0 attention, 1 Mamba)
    "hand-striped-am": "striped",
    "hand-striped-ma": "striped-reversed",
    "hand-mamba-heavy": "second-heavy",
    "hand-attention-first": "first-then-second",
    "hand-mamba-first": "second-then-first",
}
ROWS = (
    "attention",
    "mamba",
    "attention-matched",
    "mamba-matched",
    "hybrid-uniform",
    "hybrid-searched",
    "hybrid-searched-pruned",
    "hybrid-searched-fixed",
    "hybrid-transfer",
    *HAND,
)
LABELS = {
    "attention": "attention (Llama layers)",
    "mamba": "Mamba",
    "attention-matched": "attention, widened to the hybrid's params",
    "mamba-matched": "Mamba, widened to the hybrid's params",
    "hybrid-uniform": "hybrid, uniform fixed mixture",
    "hybrid-searched": "hybrid, searched on the task (alternating DARTS; soft mixture, as searched)",
    "hybrid-searched-pruned": "hybrid, searched on the task, pruned to argmax + trained",
    "hybrid-searched-fixed": "hybrid, searched on the task, weights fixed + trained",
    "hybrid-transfer": "hybrid, MAD-programmed: searched on the other tasks, fixed + trained",
    "hand-striped-am": "hand: striped A/M",
    "hand-striped-ma": "hand: striped M/A",
    "hand-mamba-heavy": "hand: Mamba-heavy (1 attention block, in the middle)",
    "hand-attention-first": "hand: attention first, then Mamba",
    "hand-mamba-first": "hand: Mamba first, then attention",
}
SEARCHED_FROM = ("hybrid-searched-pruned", "hybrid-searched-fixed")  # need the task's own search
COMPONENT_ROWS = ("attention", "mamba", "attention-matched", "mamba-matched")


@dataclass
class Setting:
    """Everything a run depends on (the records' settings guard holds all of it)."""

    name: str
    width: int
    blocks: int  # hybrid blocks; each component has one layer per block
    batch_tokens: int  # tokens per batch: batch size = batch_tokens // the task's sequence length
    steps: dict[str, int]  # per task (to come from the calibration curves: see FULL)
    num_train: dict[str, int]  # per task (memorization: MAD's 256)
    num_valid: int
    num_test: int
    lr_grid: tuple[float, ...]
    arch_lr_grid: tuple[float, ...]
    arch_warmup: float  # fraction of the search's steps that train weights only
    seeds: tuple[int, ...]
    tasks: dict[str, dict] = field(default_factory=dict)  # task -> settings over the easy defaults
    lr_task: str = "in_context_recall"  # each row's lr (and the search's arch lr) is chosen on this task
    components_only: tuple[str, ...] = ()  # tasks run by attention and Mamba alone (see mean_leaves_out)
    mean_leaves_out: dict[str, str] = field(default_factory=dict)  # task -> why it is not in the mean
    lr_warmup: int = 100  # linear lr warm-up steps (then cosine to 1e-6)
    mamba_state: int = 4
    ckpt_every: int = 250


# Settings: MAD-lab's task defaults (spec mad.md) except where named here; the report's header lists them.
# Steps per task are PROVISIONAL: not yet calibrated for this attention shape, Mamba state and these lengths.
# bench/results/mad-calibration.md holds what is measured (attention, new shape, in-context recall at 64,
# lr 3e-3: 0.376 after 2,000 steps of batch 32 against a heuristic of 0.332, far from the +0.3 gate);
# choose them from its curves before the full run.
TASKS_FULL = {
    "in_context_recall": dict(seq_len=64),
    "fuzzy_recall": dict(seq_len=128),  # MAD's length: 4.5 scored positions per test sequence (64: 2.5)
    "noisy_recall": dict(seq_len=64),
    "selective_copying": dict(seq_len=64, num_tokens_to_copy=8),
    "compression": dict(seq_len=16),
    "memorization": dict(seq_len=32),  # vocab 256 (MAD's), 256 training sequences
}
FULL = Setting(
    name="full",
    width=64,
    blocks=4,
    batch_tokens=2048,
    steps={
        "in_context_recall": 2000,
        "fuzzy_recall": 2000,
        "noisy_recall": 2000,
        "selective_copying": 1500,
        "compression": 1500,
        "memorization": 800,
    },
    num_train={t: 256 if t == "memorization" else 12_800 for t in TASKS_FULL},
    num_valid=256,
    num_test=512,
    lr_grid=(1e-3, 3e-3),
    arch_lr_grid=(0.003, 0.01, 0.05),
    arch_warmup=0.25,
    seeds=(0, 1),
    tasks=TASKS_FULL,
)
QUICK = dataclasses.replace(
    FULL,
    name="quick",
    steps={t: max(100, s // 5) for t, s in FULL.steps.items()},
    num_valid=128,
    num_test=256,
)


def _key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def entropy_bits(row) -> float:
    """Entropy (bits) of one block's mixture weights: 0 for one-hot, 1 for a uniform pair."""
    return -sum(p * math.log2(p) for p in row if p > 0)


# ------------------------------------------------------------------------------------------- models
class Models:
    """Data, components and hybrids of one setting (seeded; nothing downloaded)."""

    def __init__(self, s: Setting):
        self.s = s
        self._data: dict = {}

    def cfg(self, task: str) -> dict:
        return task_settings(task, **self.s.tasks[task])

    def vocab(self, task: str) -> int:
        return self.cfg(task)["vocab_size"]

    def seq_len(self, task: str) -> int:
        return self.cfg(task)["seq_len"]

    def batch(self, task: str) -> int:
        """Sequences per batch: the same tokens per step on every task."""
        return max(1, self.s.batch_tokens // self.seq_len(task))

    def data(self, task: str, split: str, seed: int) -> MADDataset:
        key = (task, split, seed)
        if key not in self._data:
            n = {"train": self.s.num_train[task], "valid": self.s.num_valid, "test": self.s.num_test}[split]
            if split != "train" and len(self._data) > 32:
                self._data.clear()
            self._data[key] = MADDataset(task, split=split, seed=seed, num_examples=n, **self.s.tasks[task])
        return self._data[key]

    def component(self, kind: str, task: str, seed: int, width: int | None = None, layers: int | None = None):
        from mad_models.training import build_model

        return build_model(
            ARCH[kind], self.vocab(task), width=width or self.s.width, layers=layers or self.s.blocks,
            max_len=max(64, self.seq_len(task)), state_size=self.s.mamba_state, seed=seed,
        )  # fmt: skip

    def hybrid(self, task: str, seed: int):
        """The two components (fresh, seeded) as one hybrid of ``blocks`` blocks, uniform softmax mixture."""
        from mad_models.hybrid import ManticoreForCausalLM

        parts = [self.component("attention", task, seed), self.component("mamba", task, seed)]
        for part, name in zip(parts, ARCH, strict=True):
            part.config._name_or_path = name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            return ManticoreForCausalLM.from_components(parts, n_blocks=self.s.blocks)

    def one_hot(self, task: str, seed: int, weights) -> torch.nn.Module:
        """A fresh hybrid with one component per block (argmax of ``weights``), pruned to what it keeps."""
        hybrid = self.hybrid(task, seed)
        hybrid.set_mixture(weights, mode="fixed")
        return hybrid.discretize()

    def matched_width(self, kind: str, task: str) -> int:
        """The width (a multiple of 8) at which component ``kind`` has the unpruned hybrid's parameters."""
        target = sum(p.numel() for p in self.hybrid(task, 0).parameters())
        best = None
        for w in range(self.s.width, 8 * self.s.width + 1, 8):
            with torch.device("meta"):
                n = sum(p.numel() for p in self.component(kind, task, 0, width=w).parameters())
            if best is None or abs(n - target) < best[1]:
                best = (w, abs(n - target))
        return best[0]


def lm_cost(model, task_len: int) -> tuple[int, float]:
    """(parameters, FLOPs per token at context ``task_len``) of a component or hybrid (its LM only: the
    compression decoder, the same for every row of that task, is not counted)."""
    from mad_models.hybrid.cost import standalone_cost

    if hasattr(model, "cost_report"):
        rep = model.cost_report(context=task_len)
        return rep["params"]["total"], rep["flops_per_token"]["total"]
    cost = standalone_cost(model.config, context=task_len)
    return sum(p.numel() for p in model.parameters()), cost["flops_per_token"]


@torch.no_grad()
def score(model, data: MADDataset, batch_size: int = 64) -> dict:
    """Micro and macro accuracy over scored positions, and the correct count of every sequence."""
    was = model.training
    model.eval()
    acc, per_seq = None, []
    try:
        for i in range(0, len(data), batch_size):
            x, y = data.inputs[i : i + batch_size], data.targets[i : i + batch_size]
            logits = logits_of(model, x).float()
            acc = acc or Accuracy(max(logits.shape[-1], int(data.targets.max()) + 1))
            acc.update(logits, y)
            per_seq += ((logits.argmax(-1) == y) & (y != IGNORE)).sum(1).tolist()
    finally:
        model.train(was)
    return {**acc.compute(), "per_seq": per_seq}


def pack(counts: list[int]) -> str:
    """Per-sequence correct counts (each < 256) as base64 bytes, to keep records small."""
    return base64.b64encode(bytes(counts)).decode()


def unpack(text: str) -> list[int]:
    return list(base64.b64decode(text))


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


# --------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Job:
    row: str
    task: str
    seed: int
    lr: float
    arch_lr: float | None = None

    @property
    def key(self) -> str:
        return f"{self.row}|{self.task}|{self.seed}|{self.lr:g}|{self.arch_lr if self.arch_lr else '-'}"


def guard_of(s: Setting, models: Models) -> dict:
    """What the records depend on: the setting, the data (test splits' digests) and the model configs."""
    task = next(iter(s.tasks))
    d = asdict(s)
    d.pop("name")
    d.pop("ckpt_every")

    def digest(ds: MADDataset) -> str:
        return hashlib.sha256(ds.inputs.numpy().tobytes() + ds.targets.numpy().tobytes()).hexdigest()[:16]

    def config(kind: str) -> dict:
        c = models.component(kind, task, 0).config.to_dict()
        return {k: v for k, v in c.items() if k not in ("transformers_version", "_name_or_path")}

    return {
        "setting": d,
        "data": {t: digest(models.data(t, "test", 0)) for t in s.tasks},
        "models": {k: config(k) for k in ARCH},
    }


class Bench:
    def __init__(self, s: Setting, records: RunRecords, work: Path, progress: bool = False, models=None):
        self.s, self.records, self.work, self.progress = s, records, work, progress
        self.m = models or Models(s)
        self.done = records.all()
        self._chosen: dict = {}
        self.t0 = time.perf_counter()

    # ---- plan: which runs, in which order, and what each waits for
    def allowed(self, row: str, task: str) -> bool:
        return task not in self.s.components_only or row in ("attention", "mamba")

    def hybrid_tasks(self) -> list[str]:
        return [t for t in self.s.tasks if t not in self.s.components_only]

    def grid(self, row: str) -> list[Job]:
        """The seed-0 runs on ``lr_task`` that choose a row's lr (the search: every arch lr at the uniform
        hybrid's chosen lr)."""
        task, seed = self.s.lr_task, self.s.seeds[0]
        if row == "hybrid-searched":
            base = self.chosen("hybrid-uniform")
            return [] if base is None else [Job(row, task, seed, base[0], a) for a in self.s.arch_lr_grid]
        return [Job(row, task, seed, lr) for lr in self.s.lr_grid]

    def needs(self, row: str, task: str, seed: int) -> list[tuple[str, str, int]]:
        """The cells (row, task, seed) whose searched mixture this row's run trains with."""
        if row in SEARCHED_FROM:
            return [("hybrid-searched", task, seed)]
        if row == "hybrid-transfer":
            return [("hybrid-searched", t, seed) for t in self.hybrid_tasks() if t != task]
        return []

    def chosen(self, row: str) -> tuple[float, float | None] | None:
        """(lr, arch lr) chosen by Optuna from the row's grid runs (``lr_task``, seed 0) on the validation
        split; None until they are all done."""
        import optuna

        key = (row, len(self.done))
        if key in self._chosen:
            return self._chosen[key]
        grid = self.grid(row)
        recs = [self.done.get(j.key) for j in grid]
        if not grid or any(r is None for r in recs):
            return self._chosen.setdefault(key, None)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = {"lr": [j.lr for j in grid], "arch_lr": [j.arch_lr or 0.0 for j in grid]}
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler(space))
        dist = {k: optuna.distributions.CategoricalDistribution(sorted(set(v))) for k, v in space.items()}
        for j, r in zip(grid, recs, strict=True):  # the grid's finished trials, in grid order
            params = {"lr": j.lr, "arch_lr": j.arch_lr or 0.0}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dist, value=r["valid"]))
        best = study.best_trial.params  # ties: the first in grid order
        return self._chosen.setdefault(key, (float(best["lr"]), float(best["arch_lr"]) or None))

    def run_of(self, row: str, task: str, seed: int) -> Job | None:
        """The run that gives (row, task, seed) its table cell: at the chosen lr (None: not decided yet)."""
        c = self.chosen(row)
        return None if c is None else Job(row, task, seed, c[0], c[1])

    def record(self, row: str, task: str, seed: int) -> dict | None:
        job = self.run_of(row, task, seed)
        return None if job is None else self.done.get(job.key)

    def pending(self, rows, tasks) -> tuple[list[Job], int]:
        """Runs that can start now (their inputs are done), and how many cells are still open."""
        s = self.s
        wanted = {(r, t) for r in rows for t in tasks if self.allowed(r, t)}
        changed = True
        while changed:  # the cells the wanted ones need: lr choices, searches (of every task, for transfer)
            more = set()
            for r, t in wanted:
                more.add((r, s.lr_task))
                if r == "hybrid-searched":
                    more.add(("hybrid-uniform", s.lr_task))
                more |= {(nr, nt) for nr, nt, _ in self.needs(r, t, s.seeds[0])}
            changed = not more <= wanted
            wanted |= more
        order = {t: i for i, t in enumerate([s.lr_task, *[t for t in s.tasks if t != s.lr_task]])}
        ready, open_cells = [], 0
        for row, task in sorted(wanted, key=lambda rt: (order[rt[1]], ROWS.index(rt[0]))):
            for seed in s.seeds:
                if self.record(row, task, seed) is not None:
                    continue
                open_cells += 1
                if self.chosen(row) is None:  # the lr choice first: the grid on lr_task, seed 0
                    if all(self.record(*d) is not None for d in self.needs(row, s.lr_task, s.seeds[0])):
                        ready += [j for j in self.grid(row) if j.key not in self.done]
                elif all(self.record(*d) is not None for d in self.needs(row, task, seed)):
                    ready.append(self.run_of(row, task, seed))
        seen, out = set(), []
        for j in ready:
            if j.key not in seen:
                seen.add(j.key)
                out.append(j)
        return out, open_cells

    # ---- one run
    def mixture_for(self, job: Job) -> list | None:
        """The fixed mixture (blocks x [attention, Mamba]) a hybrid row trains with."""
        if job.row in HAND:
            return hand_designs(self.s.blocks)[HAND[job.row]]
        if job.row == "hybrid-uniform":
            return [[0.5, 0.5] for _ in range(self.s.blocks)]
        if job.row in SEARCHED_FROM:
            mixes = [self.record("hybrid-searched", job.task, job.seed)["mixture"]]
        elif job.row == "hybrid-transfer":  # the target task's own search is left out
            mixes = [
                self.record("hybrid-searched", t, job.seed)["mixture"] for t in self.s.tasks if t != job.task
            ]
        else:
            return None
        mean = [[sum(m[i][k] for m in mixes) / len(mixes) for k in range(2)] for i in range(self.s.blocks)]
        return [[w / sum(row) for w in row] for row in mean]  # records round to 4 decimals

    def build(self, job: Job):
        """(the language model of the run, kind of run: "component", "search" or "fixed")."""
        m, task, seed = self.m, job.task, job.seed
        if job.row in COMPONENT_ROWS:
            kind = job.row.split("-")[0]
            width = m.matched_width(kind, task) if job.row.endswith("-matched") else self.s.width
            return m.component(kind, task, seed, width=width), "component"
        mixture = self.mixture_for(job)
        if job.row == "hybrid-searched":
            return m.hybrid(task, seed), "search"
        if job.row in HAND or job.row == "hybrid-searched-pruned":
            return m.one_hot(task, seed, mixture), "fixed"
        hybrid = m.hybrid(task, seed)
        hybrid.set_mixture(mixture, mode="fixed")
        return hybrid, "fixed"

    def train(self, job: Job) -> dict:
        from mad_models.training import TrainArgs
        from mad_models.training.loop import Trainer, adamw, cosine_scheduler, default_step
        from mad_models.training.mixture_search import search_mixtures
        from mad_models.training.retrain import retrain

        s, task = self.s, job.task
        steps = s.steps[task]
        torch.manual_seed(job.seed)
        train = self.m.data(task, "train", job.seed)
        valid = self.m.data(task, "valid", 0)
        lm, kind = self.build(job)
        T = self.m.seq_len(task)
        model = for_task(lm, task, self.m.vocab(task), T)
        out = self.work / "runs" / _key(job=job.key, steps=steps)
        args = TrainArgs(
            str(out), max_steps=steps, batch_size=self.m.batch(task), lr=job.lr, seed=job.seed,
            warmup_steps=s.lr_warmup, save_every=s.ckpt_every, log_every=max(1, steps // 10), eval_every=None,
            progress=self.progress, save_final=False, resume=True,
        )  # fmt: skip

        def eval_valid(mod):
            return {"accuracy": score(mod, valid)["micro"]}

        wall0, cpu0 = time.perf_counter(), time.thread_time()
        hybrid_view = lm if model is lm else _Wrapped(model)
        if kind == "component":
            opt = adamw(model.parameters(), job.lr, 0.0)
            Trainer(
                model, train, args, optimizers={"m": opt}, step_fn=default_step, eval_fn=eval_valid,
                make_schedulers=lambda o, total: {"m": cosine_scheduler(o["m"], args, total)}, job="bench",
                config={"run": job.key},
            ).train()  # fmt: skip
        elif kind == "search":
            search_mixtures(
                hybrid_view, train, args, arch_data=self.m.data(task, "valid", 1000 + job.seed),
                arch_lr=job.arch_lr, arch_warmup_steps=int(s.arch_warmup * steps), mode="alternating",
                method="darts", eval_fn=eval_valid, run_key={"run": job.key},
            )  # fmt: skip
        else:
            retrain(hybrid_view, train, args, eval_fn=eval_valid, run_key={"run": job.key})
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x]
        test = score(model, self.m.data(task, "test", 0))
        params, flops = lm_cost(lm, T)
        mixture = None
        if hasattr(lm, "mixture_weights"):
            mixture = [[round(float(x), 4) for x in r] for r in lm.mixture.expected_weights().tolist()]
            if getattr(lm.config, "pruning", None):  # a pruned hybrid: weights over what it was pruned from
                mixture = [[1.0, 0.0] if c == "A" else [0.0, 1.0] for c in self.pattern_of(lm)]
        rec = {
            "key": job.key, "row": job.row, "task": task, "seed": job.seed, "lr": job.lr,
            "arch_lr": job.arch_lr, "steps": steps, "valid": log[-1].get("eval_accuracy", 0.0),
            "train_loss": [(r["step"], round(r["loss"], 4)) for r in log],
            "test": test["micro"], "test_macro": test["macro"], "test_per_seq": pack(test["per_seq"]),
            "params": params, "flops_per_token": flops, "mixture": mixture,
            "width": lm.config.hidden_size, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
            "cpu_s_per_step": round(cpu / steps, 4), "host": platform.node(),
        }  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
        return rec

    @staticmethod
    def pattern_of(hybrid) -> str:
        """'A'/'M' per block of a (pruned) hybrid, from its config: what runs in each block."""
        cfg = hybrid.config
        names = cfg.component_names
        return "".join("A" if names[b[0]] == "attention" else "M" for b in cfg.kept())

    # ---- the loop, shared by processes through claims
    def claim(self, job: Job) -> bool:
        claims = self.work / "claims"
        claims.mkdir(parents=True, exist_ok=True)
        path = claims / hashlib.sha256(job.key.encode()).hexdigest()[:20]
        me = {"pid": os.getpid(), "host": socket.gethostname(), "job": job.key}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(path.read_text() or "{}")
                except (OSError, json.JSONDecodeError):
                    return False
                alive = other.get("host") == me["host"] and _pid_alive(other.get("pid", -1))
                if alive or other.get("host") != me["host"]:
                    return False
                path.unlink(missing_ok=True)  # its process died: take the run over (it resumes)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return True
        return False

    def release(self, job: Job) -> None:
        (self.work / "claims" / hashlib.sha256(job.key.encode()).hexdigest()[:20]).unlink(missing_ok=True)

    def loop(self, rows, tasks, on_record=None, poll: float = 20.0) -> None:
        while True:
            self.done = self.records.all()
            ready, open_cells = self.pending(rows, tasks)
            if open_cells == 0:
                return
            started = False
            for job in ready:
                self.done = self.records.all()
                if job.key in self.done or not self.claim(job):
                    continue
                if job.key in self.records.all():  # finished by another process since we last read
                    self.release(job)
                    continue
                try:
                    rec = self.train(job)
                    self.records.add(rec)
                finally:
                    self.release(job)
                started = True
                self.done = self.records.all()
                print(
                    f"[mad] {job.key}: valid {rec['valid']:.3f} test {rec['test']:.3f} "
                    f"({rec['cpu_s']:.0f} cpu-s, {rec['wall_s']:.0f} s; {len(self.done)} runs recorded, "
                    f"{time.perf_counter() - self.t0:.0f} s)",
                    flush=True,
                )
                if on_record:
                    on_record()
                break  # re-plan: a finished run may unlock others (an lr choice, a search)
            if not started:
                if not ready and not self._live_claims():
                    raise RuntimeError(f"{open_cells} cells are open but no run can start or is running")
                time.sleep(poll)  # others hold the ready runs, or the inputs are in progress elsewhere

    def _live_claims(self) -> int:
        """Claims held by processes still running (or on another host)."""
        claims = self.work / "claims"
        n = 0
        for path in claims.glob("*") if claims.exists() else ():
            try:
                other = json.loads(path.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                n += 1
                continue
            n += other.get("host") != socket.gethostname() or _pid_alive(other.get("pid", -1))
        return n


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


# ------------------------------------------------------------------------------------------- report
def bootstrap_diff(a: list[list[int]], b: list[list[int]], scored: list[list[int]], n: int = 2000) -> tuple:
    """Paired bootstrap over test sequences of (mean over tasks of micro accuracy) a - b.

    ``a``, ``b``: per task, per sequence, correct counts (averaged over seeds); ``scored``: per task, per
    sequence, scored positions. Returns (difference, 2.5% and 97.5% quantiles).
    """
    g = torch.Generator().manual_seed(0)
    diffs = torch.zeros(n)
    point = 0.0
    for at, bt, st in zip(a, b, scored, strict=True):
        at, bt, st = (
            torch.tensor(at, dtype=torch.float64),
            torch.tensor(bt, dtype=torch.float64),
            torch.tensor(st),
        )
        point += float((at.sum() - bt.sum()) / st.sum())
        idx = torch.randint(len(st), (n, len(st)), generator=g)
        diffs += ((at[idx].sum(1) - bt[idx].sum(1)) / st[idx].sum(1)).float()
    k = len(a)
    q = torch.quantile(diffs / k, torch.tensor([0.025, 0.975]))
    return point / k, float(q[0]), float(q[1])


class Report:
    """Tables, the JSON and the paragraph, from the records alone."""

    def __init__(self, bench: Bench):
        self.b, self.s, self.m = bench, bench.s, bench.m
        self.tasks = list(self.s.tasks)
        self.mean_tasks = [t for t in self.tasks if t not in self.s.mean_leaves_out]

    def cell(self, row: str, task: str) -> list[dict]:
        return [r for seed in self.s.seeds if (r := self.b.record(row, task, seed)) is not None]

    def baselines(self) -> dict:
        out = {}
        for t in self.tasks:
            test = self.m.data(t, "test", 0)
            h = heuristic_accuracy(t, test.inputs, test.targets, **self.s.tasks[t])
            scored = (test.targets != IGNORE).sum(1)
            out[t] = {
                "chance": chance_accuracy(t, **self.s.tasks[t]),
                "heuristic": h["micro"],
                "scored_per_sequence": float(scored.float().mean()),
                "scored": scored.tolist(),
            }
        return out

    def data(self) -> dict:
        base = self.baselines()
        rows = {}
        for row in ROWS:
            per = {}
            for t in self.tasks:
                rs = self.cell(row, t)
                if not rs:
                    continue
                c = self.b.chosen(row)
                per[t] = {
                    "test": [r["test"] for r in rs],
                    "test_macro": [r["test_macro"] for r in rs],
                    "seeds": [r["seed"] for r in rs],
                    "valid": [r["valid"] for r in rs],
                    "lr": c[0],
                    "arch_lr": c[1],
                    "params": rs[0]["params"],
                    "flops_per_token": rs[0]["flops_per_token"],
                    "width": rs[0]["width"],
                    "mixture": [r["mixture"] for r in rs] if rs[0]["mixture"] is not None else None,
                    "chance": base[t]["chance"],
                    "heuristic": base[t]["heuristic"],
                }
            means = self.seed_means(row)
            rows[row] = {"label": LABELS[row], "tasks": per, "mean_over_tasks": means}
        return {
            "setting": asdict(self.s),
            "mean_over": self.mean_tasks,
            "baselines": {t: {k: v for k, v in b.items() if k != "scored"} for t, b in base.items()},
            "rows": rows,
            "search": self.search_table(),
            "selection": self.selection(),
            "transfer": self.transfer(rows),
            "hand_vs_searched": self.hand_vs_searched(rows, base),
            "learned": self.learned(rows, base),
            "runs": len(self.b.done),
            "cpu_s": round(sum(r["cpu_s"] for r in self.b.done.values()), 1),
        }

    def seed_means(self, row: str) -> list[float] | None:
        """Per seed, the mean over the mean's tasks (None until every task has that seed)."""
        out = []
        for seed in self.s.seeds:
            rs = [self.b.record(row, t, seed) for t in self.mean_tasks]
            if all(r is not None for r in rs):
                out.append(sum(r["test"] for r in rs) / len(rs))
        return out or None

    def search_table(self) -> list[dict]:
        out = []
        for t in self.tasks:
            for r in self.cell("hybrid-searched", t):
                out.append({
                    "task": t, "seed": r["seed"], "arch_lr": r["arch_lr"], "lr": r["lr"],
                    "mixture": r["mixture"],
                    "entropy_bits": [round(entropy_bits(b), 3) for b in r["mixture"]],
                    "pattern": pattern(r["mixture"]),
                })  # fmt: skip
        return out

    def selection(self) -> dict:
        """Per task and seed: the component the searched weights favour against the one that wins alone."""
        items = []
        for t in self.tasks:
            for seed in self.s.seeds:
                srch, att, mam = (
                    self.b.record(r, t, seed) for r in ("hybrid-searched", "attention", "mamba")
                )
                if srch is None or att is None or mam is None:
                    continue
                w_att = sum(b[0] for b in srch["mixture"]) / len(srch["mixture"])
                favoured = "attention" if w_att > 0.5 else "mamba"
                diff = att["test"] - mam["test"]
                winner = "tie" if abs(diff) < 0.005 else ("attention" if diff > 0 else "mamba")
                items.append({
                    "task": t, "seed": seed, "attention_weight": round(w_att, 4), "favoured": favoured,
                    "attention_alone": att["test"], "mamba_alone": mam["test"], "winner_alone": winner,
                    "agree": None if winner == "tie" else favoured == winner,
                })  # fmt: skip
        decided = [i for i in items if i["agree"] is not None]
        return {
            "items": items,
            "agree": sum(i["agree"] for i in decided),
            "decided": len(decided),
            "ties": len(items) - len(decided),
        }

    def transfer(self, rows: dict) -> dict:
        names = ("hybrid-transfer", "hybrid-searched-fixed", "hybrid-uniform", "attention", "mamba")
        table = {}
        for t in self.tasks:
            table[t] = {n: rows[n]["tasks"].get(t, {}).get("test") for n in names}
            mix = rows["hybrid-transfer"]["tasks"].get(t, {}).get("mixture")
            table[t]["transfer_mixture"] = mix
        return {"rows": list(names), "tasks": table}

    def per_seq(self, row: str, task: str) -> list[float] | None:
        rs = self.cell(row, task)
        if len(rs) < len(self.s.seeds):
            return None
        counts = [unpack(r["test_per_seq"]) for r in rs]
        return [sum(c) / len(c) for c in zip(*counts, strict=True)]

    def paired(self, a: str, b: str, base: dict, tasks=None) -> tuple | None:
        tasks = tasks or self.mean_tasks
        pa = [self.per_seq(a, t) for t in tasks]
        pb = [self.per_seq(b, t) for t in tasks]
        if any(x is None for x in pa + pb):
            return None
        return bootstrap_diff(pa, pb, [base[t]["scored"] for t in tasks])

    def hand_vs_searched(self, rows: dict, base: dict) -> dict:
        hands = [h for h in HAND if rows[h]["mean_over_tasks"]]
        out = {"rows": {}}
        for name in (*HAND, "hybrid-searched-pruned"):
            ms = rows[name]["mean_over_tasks"]
            icr = rows[name]["tasks"].get(self.tasks[0], {})
            out["rows"][name] = {
                "mean": sum(ms) / len(ms) if ms else None,
                "params": icr.get("params"),
                "flops_per_token": icr.get("flops_per_token"),
            }
        if hands and rows["hybrid-searched-pruned"]["mean_over_tasks"]:
            best = max(hands, key=lambda h: out["rows"][h]["mean"])
            out["best_hand"] = best
            out["pruned_minus_best_hand"] = self.paired("hybrid-searched-pruned", best, base)
            # per task: the best hand design for that task, chosen after the fact (an upper bound)
            per_task = {}
            for t in self.mean_tasks:
                vals = {h: sum(rows[h]["tasks"][t]["test"]) / len(rows[h]["tasks"][t]["test"]) for h in hands}
                pr = rows["hybrid-searched-pruned"]["tasks"][t]["test"]
                per_task[t] = {"best_hand": max(vals, key=vals.get), "best_hand_acc": max(vals.values()),
                               "pruned": sum(pr) / len(pr)}  # fmt: skip
            out["per_task"] = per_task
        return out

    def learned(self, rows: dict, base: dict) -> dict:
        """Does each component clear the heuristic by 0.3 (the gate) on each task?"""
        out = {}
        for comp in ("attention", "mamba"):
            out[comp] = {}
            for t in self.tasks:
                cell = rows[comp]["tasks"].get(t)
                if cell:
                    lo = min(cell["test"])
                    out[comp][t] = {"min_over_seeds": lo, "margin": lo - base[t]["heuristic"],
                                    "clears_0.3": lo - base[t]["heuristic"] >= 0.3}  # fmt: skip
        return out

    # ---- markdown
    def markdown(self, d: dict, command: str, note: str = "") -> str:
        s, tasks = self.s, self.tasks

        def fmt(vals):
            if not vals:
                return "-"
            m = sum(vals) / len(vals)
            return f"{m:.3f} [{min(vals):.3f}, {max(vals):.3f}]" if len(vals) > 1 else f"{m:.3f}"

        short = {
            "in_context_recall": "in-context recall",
            "fuzzy_recall": "fuzzy recall",
            "noisy_recall": "noisy recall",
            "selective_copying": "selective copying",
            "compression": "compression",
            "memorization": "memorization",
        }
        t0 = tasks[0]
        head = (
            "| model | "
            + " | ".join(short.get(t, t) + (" *" if t in s.mean_leaves_out else "") for t in tasks)
            + f" | mean ({len(self.mean_tasks)} tasks) | params | FLOPs/token |"
        )  # fmt: skip
        lines = [head, "|---|" + "---:|" * (len(tasks) + 3)]
        for name in ("chance", "heuristic"):
            vals = [d["baselines"][t][name] for t in tasks]
            mean = sum(d["baselines"][t][name] for t in self.mean_tasks) / len(self.mean_tasks)
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {mean:.3f} | 0 | 0 |")
        for row in ROWS:
            r = d["rows"][row]
            cells = [fmt(r["tasks"].get(t, {}).get("test")) for t in tasks]
            c0 = r["tasks"].get(t0)
            cost = f"{c0['params']:,} | {c0['flops_per_token'] / 1e3:,.0f}k" if c0 else "- | -"
            lines.append(
                f"| {r['label']} | " + " | ".join(cells) + f" | {fmt(r['mean_over_tasks'])} | {cost} |"
            )

        gate = []
        for comp in ("attention", "mamba"):
            for t in tasks:
                g = d["learned"][comp].get(t)
                if g:
                    gate.append(
                        f"{comp} {short[t]} {g['margin']:+.3f}{'' if g['clears_0.3'] else ' (< 0.3)'}"
                    )
        lr_lines = []
        for row in ROWS:
            parts = []
            for t in tasks:
                c = d["rows"][row]["tasks"].get(t)
                if c:
                    parts.append(
                        f"{short[t]} {c['lr']:g}" + (f" / arch {c['arch_lr']:g}" if c["arch_lr"] else "")
                    )
            if parts:
                lr_lines.append(f"- {LABELS[row]}: " + ", ".join(parts))
        mix_lines = [
            f"- {short[x['task']]}, seed {x['seed']} (arch lr {x['arch_lr']:g}): "
            + ", ".join(f"[{b[0]:.3f}, {b[1]:.3f}]" for b in x["mixture"])
            + f"; entropy (bits) {x['entropy_bits']}; argmax {x['pattern']}"
            for x in d["search"]
        ]
        sel = d["selection"]
        sel_lines = ["| task | seed | attention weight (mean over blocks) | favoured | attention alone "
                     "| Mamba alone "
                     "| wins alone | agree |", "|---|---:|---:|---|---:|---:|---|---|"]  # fmt: skip
        for i in sel["items"]:
            agree = "-" if i["agree"] is None else ("yes" if i["agree"] else "no")
            sel_lines.append(
                f"| {short[i['task']]} | {i['seed']} | {i['attention_weight']:.3f} | {i['favoured']} "
                f"| {i['attention_alone']:.3f} | {i['mamba_alone']:.3f} | {i['winner_alone']} | {agree} |"
            )
        tr = d["transfer"]
        tr_lines = ["| task | " + " | ".join(LABELS[n] for n in tr["rows"])
                    + " | transferred mixture (mean of seeds' blocks) |",
                    "|---|" + "---:|" * len(tr["rows"]) + "---|"]  # fmt: skip
        for t in self.mean_tasks:
            x = tr["tasks"][t]
            mix = x.get("transfer_mixture")
            mix_text = (
                ", ".join(f"{sum(m[i][0] for m in mix) / len(mix):.2f}" for i in range(s.blocks))
                + " (attention)"
                if mix else "-"
            )  # fmt: skip
            tr_lines.append(
                f"| {short[t]} | " + " | ".join(fmt(x[n]) for n in tr["rows"]) + f" | {mix_text} |"
            )
        hv = d["hand_vs_searched"]
        hv_lines = ["| row | blocks | mean | params | FLOPs/token |", "|---|---|---:|---:|---:|"]
        patterns = {h: pattern(hand_designs(s.blocks)[HAND[h]]) for h in HAND}
        for name, v in hv["rows"].items():
            if v["mean"] is None:
                continue
            pat = patterns.get(name) or "argmax per task and seed"
            hv_lines.append(
                f"| {LABELS[name]} | {pat} | {v['mean']:.3f} | {v['params']:,} "
                f"| {v['flops_per_token'] / 1e3:,.0f}k |"
            )
        differs = [f"{short[t]} {json.dumps(s.tasks[t])}" for t in tasks if s.tasks[t]]
        left_out = [f"{short[t]} (*): {why}" for t, why in s.mean_leaves_out.items()]
        return "\n".join([
            f"# MAD at our scale ({s.name} setting)",
            "",
            f"torch {torch.__version__}, {platform.machine()}. Generated by `{command}`; "
            f"{d['runs']} runs recorded in `bench/results/mad-{s.name}-runs/` "
            f"({d['cpu_s'] / 3600:.1f} CPU-hours in total, lr and arch-lr trials included).",
            "",
            "Test accuracy over scored positions (micro), mean over seeds "
            f"{list(s.seeds)} with [min, max]; mean over tasks per seed. Every row of a task trains the same "
            f"steps ({', '.join(f'{short[t]} {s.steps[t]}' for t in tasks)}) of {s.batch_tokens} tokens "
            f"(batch {', '.join(str(self.m.batch(t)) for t in tasks)}); "
            f"width {s.width}; components of {s.blocks} layers, hybrids of {s.blocks} blocks (1 layer per "
            f"component per block); each row's lr chosen by Optuna over {list(s.lr_grid)} on {s.num_valid} "
            f"validation sequences of {short[s.lr_task]} (seed 0) and used on every task; the search's arch "
            f"lr over {list(s.arch_lr_grid)} the same way, at the uniform hybrid's lr, after "
            f"{s.arch_warmup:.0%} weight-only warm-up steps; lr warm-up {s.lr_warmup} steps, then cosine; "
            f"test: {s.num_test} sequences. Params and FLOPs/token are the language model's at "
            f"{short[t0]}'s vocabulary and length (every task's in the JSON). '-' = not measured yet.",
            "",
            "Settings that differ from MAD-lab's defaults: " + "; ".join(differs) + ". "
            f"Train sequences: {json.dumps(s.num_train)}. MAD-lab trains width 128 for 200 epochs of "
            "batch 128.",
            "",
            *lines,
            "",
            *(["Left out of the mean: " + "; ".join(left_out), ""] if left_out else []),
            "Components against the heuristic (worst seed minus heuristic; the gate is +0.3): "
            + ", ".join(gate) + ".",
            "",
            "## Searched hybrid against hand-designed ones at equal cost",
            "",
            "Each hand design and the argmax-pruned searched hybrid run one component per block (no "
            "projectors), so they cost what they keep; the unpruned hybrids above run both components in "
            "every "
            "block.",
            "",
            *hv_lines,
            "",
            *(
                [f"Pruned searched minus the best hand design on the mean ({LABELS[hv['best_hand']]}): "
                 f"{hv['pruned_minus_best_hand'][0]:+.3f} (paired bootstrap over test sequences, 95% "
                 f"[{hv['pruned_minus_best_hand'][1]:+.3f}, {hv['pruned_minus_best_hand'][2]:+.3f}]).", ""]
                if hv.get("pruned_minus_best_hand") else []
            ),  # fmt: skip
            "## LM selection: does the search pick the component that wins alone?",
            "",
            *sel_lines,
            "",
            f"Agree in {sel['agree']} of {sel['decided']} (task, seed) pairs with a winner; "
            f"{sel['ties']} ties "
            "(alone within 0.005).",
            "",
            "## Programming that transfers",
            "",
            "The MAD-programmed hybrid's mixture is the mean of the mixtures searched on the other tasks "
            "(same "
            "seed), frozen; its weights start fresh and train on the target task, as every row beside it.",
            "",
            *tr_lines,
            "",
            "## Searched mixtures (block: [attention, Mamba])",
            "",
            *mix_lines,
            "",
            "## Chosen lr (and arch lr)",
            "",
            *lr_lines,
            "",
            *([note.strip(), ""] if note.strip() else []),
        ])  # fmt: skip


def paragraph(d: dict) -> str:
    """What the table shows, from the numbers (regenerated with them)."""
    rows = d["rows"]

    def mean(row):
        ms = rows[row]["mean_over_tasks"]
        return None if not ms else sum(ms) / len(ms)

    need = (
        "attention",
        "mamba",
        "attention-matched",
        "mamba-matched",
        "hybrid-searched",
        "hybrid-searched-pruned",
    )
    if any(mean(r) is None for r in need):
        return "(The paragraph is written when every row of the mean has all its seeds.)"
    best_comp = max(("attention", "mamba"), key=mean)
    best_matched = max(("attention-matched", "mamba-matched"), key=mean)
    hybrids = ("hybrid-searched", "hybrid-searched-fixed", "hybrid-uniform", "hybrid-transfer")
    parts = [
        f"On the mean over {len(d['mean_over'])} tasks the searched hybrid scores "
        f"{mean('hybrid-searched'):.3f} "
        f"against its best component alone ({rows[best_comp]['label']}, {mean(best_comp):.3f}) and the best "
        f"component widened to the hybrid's parameters ({rows[best_matched]['label']}, "
        f"{mean(best_matched):.3f}).",
        "Other unpruned hybrids: " + ", ".join(
            f"{rows[h]['label']} {mean(h):.3f}" for h in hybrids[1:] if mean(h) is not None) + ".",
    ]  # fmt: skip
    hv = d["hand_vs_searched"]
    if hv.get("pruned_minus_best_hand"):
        diff, lo, hi = hv["pruned_minus_best_hand"]
        verdict = "better than" if lo > 0 else ("worse than" if hi < 0 else "not distinguishable from")
        parts.append(
            f"At equal cost, the argmax-pruned searched hybrid ({mean('hybrid-searched-pruned'):.3f}) is "
            f"{verdict} the best hand design ({rows[hv['best_hand']]['label']}, "
            f"{hv['rows'][hv['best_hand']]['mean']:.3f}; "
            f"difference {diff:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}])."
        )
    sel = d["selection"]
    parts.append(
        f"The searched weights favour the component that wins alone in {sel['agree']} of {sel['decided']} "
        f"(task, seed) pairs with a winner ({sel['ties']} ties)."
    )
    fails = [f"{c} on {t}" for c, ts in d["learned"].items() for t, g in ts.items()
             if not g["clears_0.3"] and t in ("in_context_recall", "noisy_recall")]  # fmt: skip
    if fails:
        parts.append("Gate not met (heuristic + 0.3): " + ", ".join(fails) + ".")
    return " ".join(parts)


def write_report(bench: Bench, md: Path, js: Path, command: str, note: str = "") -> dict:
    rep = Report(bench)
    d = rep.data()
    d["command"] = command
    d["paragraph"] = paragraph(d)
    text = rep.markdown(d, command, note)
    text = text.replace("## Searched hybrid against", d["paragraph"] + "\n\n## Searched hybrid against", 1)
    for path, body in ((md, text), (js, json.dumps(d, indent=1) + "\n")):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(body)
        tmp.replace(path)  # never a half-written report
    return d


# ----------------------------------------------------------------------------------------- estimate
SPEED_FILE = ROOT / "results" / "mad-speed.json"


def estimate(s: Setting, rows=ROWS, tasks=None, speed: dict | None = None) -> tuple[int, float]:
    """(runs, CPU seconds on one quiet core) from the CPU s/step measured by ``mad_calibrate.py --speed``
    (``bench/results/mad-speed.json``): a search step after the warm-up costs two forward/backwards."""
    speed = speed if speed is not None else json.loads(SPEED_FILE.read_text())["cpu_s_per_step"]
    tasks = tasks or list(s.tasks)
    runs = seconds = 0
    for row in rows:
        # a pruned hybrid is timed as a striped one (2 attention + 2 Mamba layers)
        kind = (
            row
            if row in COMPONENT_ROWS
            else ("hand" if row in (*HAND, "hybrid-searched-pruned") else "hybrid")
        )
        for t in tasks:
            # the grid runs once, on lr_task and the first seed; every other cell is one run per seed
            grid = len(s.arch_lr_grid) if row == "hybrid-searched" else len(s.lr_grid)
            n = grid + len(s.seeds) - 1 if t == s.lr_task else len(s.seeds)
            factor = 1.0 + (1 - s.arch_warmup) if row == "hybrid-searched" else 1.0
            runs += n
            seconds += n * s.steps[t] * speed[kind][t] * factor
    return runs, seconds


# ---------------------------------------------------------------------------------------------- cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick setting (bench/results/mad-quick.*)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the records (each 1 thread)")
    ap.add_argument(
        "--records", default=None, help="finished runs (default bench/results/mad-<setting>-runs)"
    )
    ap.add_argument(
        "--work", default=None, help="checkpoints of runs in progress (default bench/.work-mad-*)"
    )
    ap.add_argument("--out", default=None, help="the markdown report (default bench/results/mad[-quick].md)")
    ap.add_argument("--tasks", default=None, help="comma-separated subset of the tasks to run")
    ap.add_argument("--rows", default=None, help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--note", default="", help="a paragraph (or a file holding one) appended to the report")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="write the report from the records only")
    ap.add_argument("--dry-run", action="store_true", help="print the runs and the time estimate only")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    logging.disable(logging.WARNING)
    s = QUICK if a.quick else FULL
    tasks = list(s.tasks)
    if a.tasks:
        tasks = a.tasks.split(",")
        bad = [t for t in tasks if t not in s.tasks]
        if bad:
            ap.error(f"unknown task(s) {bad}; choose from {', '.join(s.tasks)}")
    rows = tuple(a.rows.split(",")) if a.rows else ROWS
    if any(r not in ROWS for r in rows):
        ap.error(f"--rows must be a subset of {','.join(ROWS)}")
    if a.dry_run:
        if not SPEED_FILE.is_file():
            ap.error(f"no {SPEED_FILE.name}: measure it first with bench/mad_calibrate.py --speed")
        runs, sec = estimate(s, rows, tasks)
        print(
            f"[mad] {s.name}: {len(rows)} rows x {len(tasks)} tasks = {runs} runs; "
            f"about {sec / 3600:.1f} CPU-hours "
            f"on quiet cores: {sec / 3600 / max(1, a.workers):.1f} h with --workers {max(1, a.workers)} "
            f"(CPU s/step from {SPEED_FILE.name})"
        )
        return 0
    records_dir = Path(a.records) if a.records else ROOT / "results" / f"mad-{s.name}-runs"
    work = Path(a.work) if a.work else ROOT / f".work-mad-{s.name}"
    out = Path(a.out) if a.out else ROOT / "results" / ("mad-quick.md" if a.quick else "mad.md")
    js = out.with_suffix(".json")
    note = Path(a.note).read_text() if a.note and Path(a.note).is_file() else a.note
    models = Models(s)
    records = RunRecords(records_dir, guard_of(s, models), read_only=a.report_only)
    bench = Bench(s, records, work, a.progress, models)
    command = (
        "PYTHONPATH=$PWD python bench/reproduce_mad.py" + (" --quick" if a.quick else "") + " --workers 2"
    )

    def report():
        bench.done = records.all()
        write_report(bench, out, js, command, note)

    if a.report_only:
        report()
        print(f"[mad] wrote {out} and {js.name} from {len(bench.done)} records")
        return 0
    if a.workers > 1 and not a.worker:
        base = [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", "1",
                "--records", str(records_dir), "--work", str(work), "--out", str(out)]  # fmt: skip
        base += (["--quick"] if a.quick else []) + (["--tasks", a.tasks] if a.tasks else [])
        base += (["--rows", a.rows] if a.rows else []) + (["--note", a.note] if a.note else [])
        procs = [subprocess.Popen(base) for _ in range(a.workers)]
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"[mad] a worker failed (exit codes {codes})", file=sys.stderr)
            return 1
    else:
        bench.loop(rows, tasks, on_record=report)
    report()
    print(f"[mad] wrote {out} and {js.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
