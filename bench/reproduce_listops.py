"""ListOps (Long Range Arena) at our scale: attention, Mamba, their Manticore hybrids (searched, uniform,
pruned, hand-designed) and a parameter-matched component, against chance and the majority class.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/reproduce_listops.py --quick --threads 1
    PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/reproduce_listops.py --threads 1          # full
    PYTHONPATH=$PWD .venv/bin/python bench/reproduce_listops.py --dry-run [--quick]   # runs and time estimate
    PYTHONPATH=$PWD .venv/bin/python bench/reproduce_listops.py --report-only [--quick]  # from records

Data (``mad_models.listops``): depth <= 4, 2-5 arguments per operator, 16-128 tokens (END included), disjoint
train / arch / val / test splits from fixed seeds. Every model is a ``SequenceClassifier`` (a linear head on
the END token's final hidden state) over a causal LM: attention is Llama (rotary on every head dimension,
heads of 8 dimensions), Mamba is transformers' Mamba with mambapy's parallel scan.

Rows (test accuracy, mean and [min, max] over the seeds; params and FLOPs/token columns):
- chance (0.1) and the majority class of the train split (the no-learning rows);
- attention and Mamba alone (``blocks`` layers each): the gate, each must beat the majority class clearly;
- matched component: the component with the better val accuracy, widened to the full hybrid's parameters;
- hybrid, uniform: both components in every block, mixture fixed at 1/2;
- hybrid, searched: alternating DARTS (weights on train, mixture on the held-out ``arch`` split; arch lr
  from its grid by the search's val accuracy, at the uniform hybrid's lr), then fresh weights retrained with
  the searched mixture fixed (each seed its own search);
- hybrid, searched + pruned: the searched mixture's argmax per block (``discretize``), fresh weights, trained;
- hand-designed hybrids (issue 25), one-hot mixtures pruned to their kept blocks: striped both ways, Mamba-
  heavy (one attention block in the middle, Jamba's ~1 in 8 scaled to the blocks we have), attention first,
  Mamba first.

Fairness: the same steps, batch, data and seeds for every row; every row's lr (and the search's arch lr)
from the same grid through Optuna on the val split with seed 0; test is read only for the table. Paired
McNemar tests on the per-example test predictions (kept in the records) for the key pairs.

Records: ``bench/results/listops[-quick]-runs/`` (``settings.json`` + ``results.jsonl``, one line per
finished run, predictions included) live in the repository; a re-run resumes after the last finished run
(a run in progress resumes from its checkpoint under ``--scratch`` if that is still there) and a re-run
with other settings is refused. Several processes may share the records (``--rows`` subsets).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import platform
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file: `bench` and `mad_models` from the checkout

import torch  # noqa: E402

import mad_models  # noqa: E402,F401
from bench.optuna_grid import best_on_grid  # noqa: E402
from bench.paired_tests import mcnemar_p  # noqa: E402
from bench.run_records import RunRecords  # noqa: E402
from mad_models.listops import NUM_CLASSES, PAD, VOCAB_SIZE, listops_splits, majority_class  # noqa: E402
from mad_models.sequence_classifier import SequenceClassifier  # noqa: E402
from mad_models.training.mixture_search import search_mixtures  # noqa: E402

# name -> block pattern (A = attention, M = Mamba) for hand designs; built for the setting's block count
HAND = ("striped-am", "striped-ma", "hand-mamba-heavy", "hand-attention-first", "hand-mamba-first")
ROWS = (
    "attention",
    "mamba",
    "hybrid-uniform",
    "hybrid-searched",
    "hybrid-searched-pruned",
    *HAND,
    "matched-component",
)
LABELS = {
    "chance": "chance",
    "majority": "majority class (train)",
    "attention": "attention (Llama)",
    "mamba": "Mamba",
    "matched-component": "matched component (widened to the hybrid's params)",
    "hybrid-uniform": "hybrid, uniform mixture",
    "hybrid-searched": "hybrid, searched (DARTS) + retrained",
    "hybrid-searched-pruned": "hybrid, searched + pruned (argmax)",
    "striped-am": "hand: striped, attention first",
    "striped-ma": "hand: striped, Mamba first",
    "hand-mamba-heavy": "hand: Mamba-heavy (one attention block in the middle)",
    "hand-attention-first": "hand: attention blocks, then Mamba",
    "hand-mamba-first": "hand: Mamba blocks, then attention",
}


def pattern(row: str, n: int) -> str:
    """The block pattern of a hand design for ``n`` blocks: ``pattern("hand-mamba-heavy", 4) == "MMAM"``."""
    if n < 4:
        raise ValueError(f"the hand-designed hybrids need >= 4 blocks, got {n}")
    half = n // 2
    if row == "striped-am":
        return "".join("AM"[i % 2] for i in range(n))
    if row == "striped-ma":
        return "".join("MA"[i % 2] for i in range(n))
    if row == "hand-mamba-heavy":  # Jamba: 1 attention layer in 8; at least one, in the middle
        k = max(1, round(n / 8))
        first = (n - k + 1) // 2
        return "".join("A" if first <= i < first + k else "M" for i in range(n))
    if row == "hand-attention-first":
        return "A" * half + "M" * (n - half)
    if row == "hand-mamba-first":
        return "M" * half + "A" * (n - half)
    raise ValueError(f"{row!r} is not a hand design ({', '.join(HAND)})")


@dataclass
class Setting:
    name: str
    steps: int
    batch_size: int
    width: int
    blocks: int  # layers per component = hybrid blocks
    num_train: int
    num_arch: int
    num_val: int
    num_test: int
    lr_grid: tuple[float, ...]
    arch_lr_grid: tuple[float, ...]
    seeds: tuple[int, ...]
    warmup_steps: int
    data: dict = field(default_factory=dict)  # ListOps settings over mad_models.listops.DEFAULTS

    def check(self) -> None:
        if self.blocks < 4:
            raise ValueError(f"blocks must be >= 4 for the hand designs, got {self.blocks}")
        if self.width % 8:
            raise ValueError(f"width must be a multiple of 8 (heads of 8 dims), got {self.width}")
        if len(self.seeds) < 2:
            raise ValueError("give >= 2 seeds")


# FULL: width 64 and 500 steps (~0.8 epoch of 20,000 trees) is what ~3 hours of two quiet cores pay for all 36
# runs (see --dry-run). Calibration (1 thread, Llama width 64, lr 3e-3, cosine over 800 steps; a run stopped
# early): val accuracy 0.188 / 0.230 / 0.273 after 100 / 200 / 300 steps against the majority class's ~0.11,
# so attention learns within this budget; Mamba's calibration did not reach step 100 on the loaded machine.
# QUICK is a smoke run of every row (30 steps at width 32): it is not expected to learn.
FULL = Setting(
    name="full", steps=500, batch_size=32, width=64, blocks=4, num_train=20000, num_arch=1000, num_val=1000,
    num_test=2000, lr_grid=(1e-3, 3e-3), arch_lr_grid=(0.01, 0.05), seeds=(0, 1), warmup_steps=50,
)  # fmt: skip
QUICK = replace(
    FULL,
    name="quick",
    steps=30,
    width=32,
    num_train=2048,
    num_arch=200,
    num_val=200,
    num_test=400,
    warmup_steps=4,
)
SETTINGS = {"quick": QUICK, "full": FULL}

# CPU seconds per training step (fwd + bwd + AdamW, batch 32, ListOps up to 128 tokens: batches pad to
# ~90-120), measured with time.process_time at 1 thread on the shared machine (load ~9 on 2 cores), which is
# what a quiet machine's wall clock gives; the shared machine's wall clock was ~4.5x that. Measured by
# `--speed` (keys: width). A one-hot hand design costs its blocks' share of each component.
SECONDS_PER_STEP = {
    32: {"attention": 0.097, "mamba": 0.424, "hybrid": 0.626},
    64: {"attention": 0.207, "mamba": 0.973, "hybrid": 1.111},
}
SEARCH_COST = 2.1  # an alternating search step is two forward/backward passes


def settings_record(s: Setting) -> dict:
    from mad_models.listops import DEFAULTS

    return {**asdict(s), "data": {**DEFAULTS, **s.data}, "torch": torch.__version__, "vocab": VOCAB_SIZE}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Missing(Exception):
    """A run that is not in the records (``--report-only``)."""


class HybridClassifier(SequenceClassifier):
    """A SequenceClassifier over a Manticore hybrid, seen as a hybrid by the search / retrain jobs."""

    def mixture_parameters(self):
        return self.model.mixture_parameters()

    def projector_parameters(self):
        return self.model.projector_parameters()

    def freeze_components(self, frozen: bool = True) -> None:
        self.model.freeze_components(frozen)

    def set_mixture(self, weights=None, mode: str = "fixed") -> None:
        self.model.set_mixture(weights, mode)

    def mixture_weights(self):
        return self.model.mixture_weights()

    @property
    def mixture(self):
        return self.model.mixture


class Bench:
    def __init__(
        self, s: Setting, records: Path, scratch: Path, progress: bool = False, report_only: bool = False
    ):
        s.check()
        self.s, self.scratch, self.progress, self.report_only = s, scratch, progress, report_only
        self.records = RunRecords(records, settings_record(s), read_only=report_only)
        sizes = {"test": s.num_test, "val": s.num_val, "arch": s.num_arch, "train": s.num_train}
        self.data = listops_splits(sizes, **s.data)
        from mad_models.training.text import pad_collate

        self.collate = pad_collate(PAD)
        lengths = self.data["test"].lengths.float()
        self.context = int(round(float(lengths.mean())))
        self.log = print

    # ---- models ----------------------------------------------------------------------------------------
    def component(self, kind: str, seed: int, width: int | None = None):
        from mad_models.training import build_model

        w = width or self.s.width
        arch = "llama" if kind == "attention" else "mamba"
        model = build_model(
            arch,
            VOCAB_SIZE,
            width=w,
            layers=self.s.blocks,
            heads=max(1, w // 8),
            max_len=self.s.data.get("max_length", 128),
            seed=seed,
        )
        model.config._name_or_path = kind
        return model

    def hybrid(self, seed: int):
        from mad_models.hybrid import ManticoreForCausalLM

        parts = [self.component("attention", seed), self.component("mamba", seed)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            return ManticoreForCausalLM.from_components(parts, n_blocks=self.s.blocks)

    def fixed_hybrid(self, seed: int, weights: list, prune: bool):
        h = self.hybrid(seed)
        h.set_mixture(weights, mode="fixed")
        return h.discretize() if prune else h

    def matched_width(self, kind: str) -> int:
        """The width (a multiple of 8) whose ``kind`` component has the full hybrid's parameters."""
        target = count_params(HybridClassifier(self.hybrid(0), NUM_CLASSES))
        best = min(
            range(8, 8 * 64, 8),
            key=lambda w: abs(
                count_params(SequenceClassifier(self.component(kind, 0, w), NUM_CLASSES)) - target
            ),
        )
        return best

    # ---- one training run -----------------------------------------------------------------------------
    def run(self, row: str, lr: float, seed: int, **extra) -> dict:
        """Train ``row`` at ``lr`` and ``seed`` (``extra``: arch_lr, mixture, width, kind), or read its
        record."""
        key = "|".join(
            [row, f"lr={lr:g}", f"seed={seed}"] + [f"{k}={json.dumps(v)}" for k, v in sorted(extra.items())]
        )
        rec = self.records.get(key)
        if rec is not None:
            return rec
        if self.report_only:
            raise Missing(key)
        from mad_models.training import TrainArgs
        from mad_models.training.loop import adamw, train_with
        from mad_models.training.retrain import retrain

        s = self.s
        torch.manual_seed(seed)
        out = self.scratch / _hash(json.dumps(settings_record(s), sort_keys=True) + key)
        args = TrainArgs(
            str(out),
            max_steps=s.steps,
            batch_size=s.batch_size,
            lr=lr,
            seed=seed,
            warmup_steps=s.warmup_steps,
            log_every=max(1, s.steps // 10),
            save_every=max(1, s.steps // 4),
            keep_checkpoints=1,
            progress=self.progress,
            save_final=False,
            resume=True,
        )

        def eval_val(m):
            return {"accuracy": accuracy(predict(m, self.data["val"], self.collate), self.data["val"].labels)}

        train = self.data["train"]
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        mixture = None
        if row in ("attention", "mamba") or row == "matched-component":
            kind = extra.get("kind", row)
            clf = SequenceClassifier(self.component(kind, seed, extra.get("width")), NUM_CLASSES)
            res = train_with(
                clf,
                train,
                args,
                adamw(clf.parameters(), lr, 0.0),
                job="listops",
                eval_fn=eval_val,
                collate_fn=self.collate,
            )
        elif row == "search":
            clf = HybridClassifier(self.hybrid(seed), NUM_CLASSES)
            res = search_mixtures(
                clf,
                train,
                args,
                arch_data=self.data["arch"],
                arch_lr=extra["arch_lr"],
                mode="alternating",
                method="darts",
                eval_fn=eval_val,
                collate_fn=self.collate,
            )
            mixture = res["mixture"]
        else:  # a fixed mixture: uniform, searched, or one-hot (pruned to its blocks)
            prune = row != "hybrid-uniform" and row != "hybrid-searched"
            clf = HybridClassifier(self.fixed_hybrid(seed, extra["mixture"], prune), NUM_CLASSES)
            res = retrain(clf, train, args, eval_fn=eval_val, collate_fn=self.collate)
            mixture = extra["mixture"]
        cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
        rec = {
            "key": key,
            "row": row,
            "lr": lr,
            "seed": seed,
            **extra,
            "valid": res["eval_accuracy"],
            "mixture": mixture,
            "cpu_s": round(cpu, 1),
            "wall_s": round(wall, 1),
            "steps": s.steps,
            **self.costs(clf),
        }
        if row != "search":
            preds = predict(clf, self.data["test"], self.collate)
            rec["test"] = accuracy(preds, self.data["test"].labels)
            rec["test_predictions"] = "".join(str(int(p)) for p in preds)
        self.records.add(rec)
        shutil.rmtree(out, ignore_errors=True)
        self.log(
            f"[listops] {key}: val {rec['valid']:.3f}"
            + (f", test {rec['test']:.3f}" if "test" in rec else "")
            + f" ({cpu:.0f} s cpu, {wall:.0f} s wall)",
            flush=True,
        )
        return rec

    def costs(self, clf: SequenceClassifier) -> dict:
        """Parameters the classifier uses (all but the LM heads, classification head included) and FLOPs per
        token at the test split's mean length (``mad_models.hybrid.cost``; LM heads excluded)."""
        from mad_models.hybrid.cost import matmul_flops, standalone_cost

        model = clf.model
        if getattr(model.config, "model_type", None) == "manticore":
            rep = model.cost_report(context=self.context)
            flops = rep["flops_per_token"]["total"] - rep["flops_per_token"]["heads"]
            heads = [model.component_wrappers[m].lm_head for m in model.config.kept()[-1]]
        else:
            heads = [model.get_output_embeddings()]
            flops = standalone_cost(model.config, self.context)["flops_per_token"] - matmul_flops(heads[0])
        head_params = sum(p.numel() for h in heads for p in h.parameters())
        return {"params": count_params(clf) - head_params, "flops_per_token": int(flops)}

    # ---- rows: lr from the grid on val (seed 0), then every seed -------------------------------------------
    def tuned(self, row: str, **extra_of_seed) -> list[dict]:
        """Every seed of ``row`` at its lr chosen on val with seed 0 (``per_seed(seed)``: per-seed extras)."""
        s = self.s
        per_seed = extra_of_seed.get("per_seed", lambda seed: {})
        lr = best_on_grid(
            s.lr_grid, lambda lr: self.run(row, lr, s.seeds[0], **per_seed(s.seeds[0]))["valid"]
        )
        return [self.run(row, lr, seed, **per_seed(seed)) for seed in s.seeds]

    def searches(self) -> list[dict]:
        """One search per seed: lr = the uniform hybrid's, arch lr from its grid on val with seed 0."""
        s = self.s
        lr = self.results_of("hybrid-uniform")[0]["lr"]
        arch_lr = best_on_grid(
            s.arch_lr_grid, lambda a: self.run("search", lr, s.seeds[0], arch_lr=a)["valid"]
        )
        return [self.run("search", lr, seed, arch_lr=arch_lr) for seed in s.seeds]

    def results_of(self, row: str) -> list[dict]:
        s = self.s
        if row in ("attention", "mamba"):
            return self.tuned(row)
        if row == "hybrid-uniform":
            uniform = [[0.5, 0.5]] * s.blocks
            return self.tuned(row, per_seed=lambda seed: {"mixture": uniform})
        if row in ("hybrid-searched", "hybrid-searched-pruned"):
            found = {r["seed"]: r["mixture"] for r in self.searches()}
            if row == "hybrid-searched":
                return self.tuned(row, per_seed=lambda seed: {"mixture": found[seed]})
            onehot = {seed: one_hot_argmax(m) for seed, m in found.items()}
            return self.tuned(row, per_seed=lambda seed: {"mixture": onehot[seed]})
        if row in HAND:
            w = [[1.0, 0.0] if c == "A" else [0.0, 1.0] for c in pattern(row, s.blocks)]
            return self.tuned(row, per_seed=lambda seed: {"mixture": w})
        if row == "matched-component":
            kind = self.best_component()
            width = self.matched_width(kind)
            return self.tuned(row, per_seed=lambda seed: {"kind": kind, "width": width})
        raise ValueError(f"unknown row {row!r}")

    def best_component(self) -> str:
        """The component with the better mean val accuracy (a choice made on val, never on test)."""
        means = {k: statistics.mean(r["valid"] for r in self.results_of(k)) for k in ("attention", "mamba")}
        return max(means, key=means.get)

    def collect(self, rows: tuple[str, ...]) -> dict[str, list[dict]]:
        out = {}
        for row in rows:
            try:
                out[row] = self.results_of(row)
            except Missing:
                continue
        return out


# ---- evaluation helpers ----------------------------------------------------------------------------------
@torch.no_grad()
def predict(clf, data, collate, batch_size: int = 128) -> list[int]:
    was = clf.training
    clf.eval()
    preds: list[int] = []
    try:
        for i in range(0, len(data), batch_size):
            batch = collate([data[j] for j in range(i, min(i + batch_size, len(data)))])
            batch.pop("labels")
            preds += clf(**batch).logits.argmax(-1).tolist()
    finally:
        clf.train(was)
    return preds


def accuracy(preds, labels: torch.Tensor) -> float:
    return float((torch.as_tensor(preds) == labels).float().mean())


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def one_hot_argmax(mixture: list) -> list:
    return [
        [1.0 if j == max(range(len(r)), key=r.__getitem__) else 0.0 for j in range(len(r))] for r in mixture
    ]


# ---- the report ------------------------------------------------------------------------------------------
def summary(rows: list[dict]) -> dict:
    tests = [r["test"] for r in rows]
    return {
        "test_mean": statistics.mean(tests),
        "test_min": min(tests),
        "test_max": max(tests),
        "test_per_seed": tests,
        "val_per_seed": [r["valid"] for r in rows],
        "seeds": [r["seed"] for r in rows],
        "lr": rows[0]["lr"],
        "params": rows[0]["params"],
        "flops_per_token": rows[0]["flops_per_token"],
        "mixture_per_seed": [r.get("mixture") for r in rows],
        **{k: rows[0][k] for k in ("kind", "width") if k in rows[0]},
        "cpu_s": sum(r["cpu_s"] for r in rows),
    }


def paired(name_a: str, a: list[dict], name_b: str, b: list[dict], truth: str) -> dict:
    """Exact McNemar per seed on the test predictions of two rows (seed i of a against seed i of b)."""
    per_seed = []
    for ra, rb in zip(a, b, strict=False):
        pa, pb = ra["test_predictions"], rb["test_predictions"]
        only_a = sum(x == t != y for x, y, t in zip(pa, pb, truth, strict=True))
        only_b = sum(y == t != x for x, y, t in zip(pa, pb, truth, strict=True))
        per_seed.append(
            {"seed": ra["seed"], "only_a": only_a, "only_b": only_b, "p": mcnemar_p(only_a, only_b)}
        )
    return {"a": name_a, "b": name_b, "per_seed": per_seed}


def report(bench: Bench, rows: tuple[str, ...], out: Path, command: str) -> dict:
    s = bench.s
    was, bench.report_only = bench.report_only, True  # tabulate what is recorded; train nothing here
    try:
        results = bench.collect(rows)
    finally:
        bench.report_only = was
    truth = "".join(str(int(y)) for y in bench.data["test"].labels)
    train_labels, test_labels = bench.data["train"].labels, bench.data["test"].labels
    major = majority_class(train_labels)
    table: dict[str, dict] = {
        "chance": {"test_mean": 1 / NUM_CLASSES, "params": 0, "flops_per_token": 0},
        "majority": {
            "test_mean": float((test_labels == major).float().mean()),
            "class": major,
            "params": 0,
            "flops_per_token": 0,
        },
    }
    for row, recs in results.items():
        table[row] = summary(recs)
    best_comp = max(
        ("attention", "mamba"), key=lambda k: statistics.mean(table[k]["val_per_seed"]) if k in table else -1
    )
    hands = [h for h in HAND if h in table]
    best_hand = max(hands, key=lambda h: statistics.mean(table[h]["val_per_seed"])) if hands else None
    tests = []
    for a, b in (
        ("hybrid-searched", best_comp),
        ("hybrid-searched-pruned", best_hand),
        ("hybrid-searched", "hybrid-uniform"),
        ("hybrid-searched-pruned", best_comp),
    ):
        if a in results and b in results:
            tests.append(paired(a, results[a], b, results[b], truth))
    gate = {}
    for k in ("attention", "mamba"):
        if k in table:
            margin = table[k]["test_min"] - table["majority"]["test_mean"]
            gate[k] = {"margin_min_seed": margin, "learns": margin >= 0.05}
    data_stats = {
        split: {
            "n": len(ds),
            "mean_length": float(ds.lengths.float().mean()),
            "max_length": int(ds.lengths.max()),
        }
        for split, ds in bench.data.items()
    }
    doc = {
        "benchmark": "ListOps (Long Range Arena), shorter setting",
        "command": command,
        "setting": settings_record(s),
        "context_for_flops": bench.context,
        "data": data_stats,
        "label_distribution_test": torch.bincount(test_labels, minlength=NUM_CLASSES).tolist(),
        "rows": table,
        "best_component_on_val": best_comp,
        "best_hand_design_on_val": best_hand,
        "gate": gate,
        "paired_tests": tests,
        "unfinished": [r for r in rows if r not in results],
        "cpu_s_total": sum(r["cpu_s"] for r in bench.records.all().values()),
        "wall_s_total": sum(r["wall_s"] for r in bench.records.all().values()),
        "searches": [
            {k: r[k] for k in ("seed", "lr", "arch_lr", "valid", "mixture")}
            for r in bench.records.all().values()
            if r["row"] == "search"
        ],
        "platform": f"torch {torch.__version__}, {platform.machine()}",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(doc, s))
    try:
        plot(doc, out.with_suffix(".png"))
    except ImportError:
        pass
    return doc


def _fmt(row: dict) -> str:
    if "test_per_seed" not in row:
        return f"{row['test_mean']:.3f}"
    return f"{row['test_mean']:.3f} [{row['test_min']:.3f}, {row['test_max']:.3f}]"


def _which(diff: float, doc: dict, a: str, b: str) -> str:
    """Whether the search's design is better, worse, or not told apart (p < 0.05 on every seed needed)."""
    pair = next((p for p in doc["paired_tests"] if (p["a"], p["b"]) == (a, b)), None)
    clear = pair is not None and all(x["p"] < 0.05 for x in pair["per_seed"])
    if not clear:
        return "the test does not tell the two apart on every seed."
    return "the search found the better design." if diff > 0 else "the hand design is better."


def verdict(doc: dict) -> str:
    """The paragraph, computed from the table: the gate, the searched hybrid against the better component,
    the pruned searched hybrid against the best hand design at about equal cost, with the paired tests."""
    t, out = doc["rows"], []
    major = t["majority"]["test_mean"]

    def mean(row: str) -> str:
        return f"{t[row]['test_mean']:.3f}"

    def ps(a: str, b: str) -> str:
        for p in doc["paired_tests"]:
            if (p["a"], p["b"]) == (a, b):
                return ", ".join(f"{x['p']:.2g}" for x in p["per_seed"])
        return "-"

    failed = [k for k, g in doc["gate"].items() if not g["learns"]]
    if doc["gate"] and not failed:
        out.append(f"Gate: both components learn (every seed >= 0.05 above the majority class, {major:.3f}).")
    elif doc["gate"]:
        out.append(
            f"Gate: {' and '.join(failed)} did NOT beat the majority class ({major:.3f}) by 0.05 at this "
            "budget, so the rows built on it measure the budget more than the architecture."
        )
    best = doc["best_component_on_val"]
    if "hybrid-searched" in t and best in t:
        diff = t["hybrid-searched"]["test_mean"] - t[best]["test_mean"]
        ratio = t["hybrid-searched"]["flops_per_token"] / t[best]["flops_per_token"]
        out.append(
            f"The searched hybrid scores {mean('hybrid-searched')} against {mean(best)} for the better "
            f"component on val ({best}), {diff:+.3f}, at {ratio:.1f}x its FLOPs/token (McNemar p per seed: "
            f"{ps('hybrid-searched', best)})."
        )
    hand = doc["best_hand_design_on_val"]
    if "hybrid-searched-pruned" in t and hand in t:
        diff = t["hybrid-searched-pruned"]["test_mean"] - t[hand]["test_mean"]
        out.append(
            f"At about equal cost, the argmax-pruned searched hybrid scores {mean('hybrid-searched-pruned')} "
            f"against {mean(hand)} for the best hand design on val ({hand}), {diff:+.3f} (McNemar p per "
            f"seed: {ps('hybrid-searched-pruned', hand)}): "
            + _which(diff, doc, "hybrid-searched-pruned", hand)
        )
    if "hybrid-uniform" in t and "hybrid-searched" in t:
        out.append(
            f"Uniform mixture: {mean('hybrid-uniform')} (searched vs uniform, McNemar p per seed: "
            f"{ps('hybrid-searched', 'hybrid-uniform')})."
        )
    if "matched-component" in t:
        kind = t["matched-component"].get("kind", "")
        out.append(
            f"The {kind} component widened to the hybrid's parameters scores {mean('matched-component')}."
        )
    return " ".join(out)


def markdown(doc: dict, s: Setting) -> str:
    t = doc["rows"]
    lines = [
        "| model | blocks | test accuracy, mean [min, max] | params | FLOPs/token | lr (val) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in ("chance", "majority", *ROWS):
        if row not in t:
            if row in ROWS:
                lines.append(f"| {LABELS[row]} | | - (not run yet) | | | |")
            continue
        r = t[row]
        blocks = ""
        if row in HAND:
            blocks = pattern(row, s.blocks)
        elif row == "hybrid-searched-pruned":
            blocks = " / ".join("".join("AM"[w.index(max(w))] for w in m) for m in r["mixture_per_seed"])
        elif row in ("attention", "mamba", "matched-component"):
            kind = r.get("kind", row)
            blocks = ("A" if kind == "attention" else "M") * s.blocks + (
                f", width {r['width']}" if "width" in r else ""
            )
        elif row.startswith("hybrid"):
            blocks = "all, mixed"
        label = LABELS[row] + (f" ({doc['rows']['majority']['class']})" if row == "majority" else "")
        lr = f"{r['lr']:g}" if "lr" in r else "-"
        lines.append(
            f"| {label} | {blocks} | {_fmt(r)} | {r['params']:,} | {r['flops_per_token']:,} | {lr} |"
        )
    mix = [
        f"- seed {x['seed']} (arch lr {x['arch_lr']:g}, lr {x['lr']:g}, supernet val {x['valid']:.3f}): "
        + "; ".join(f"[{a:.2f}, {m:.2f}]" for a, m in x["mixture"])
        for x in doc["searches"]
    ]
    tests = []
    for p in doc["paired_tests"]:
        cells = ", ".join(
            f"seed {x['seed']}: {x['only_a']} vs {x['only_b']}, p = {x['p']:.3g}" for x in p["per_seed"]
        )
        tests.append(f"- {LABELS[p['a']]} vs {LABELS[p['b']]} (examples only A / only B got right): {cells}")
    gate = "; ".join(
        f"{k}: worst seed {g['margin_min_seed']:+.3f} against the majority class "
        + ("(learns)" if g["learns"] else "(does NOT learn)")
        for k, g in doc["gate"].items()
    )
    d, dd = doc["data"], doc["setting"]["data"]
    flag = " --quick" if s.name == "quick" else ""
    return "\n".join(
        [
            f"# ListOps (Long Range Arena), shorter setting: components and hybrids ({s.name})",
            "",
            "Generated by `PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/reproduce_listops.py"
            f"{flag} --threads 1` (resumes from `bench/results/listops{'-quick' if flag else ''}-runs/`; "
            f"`--report-only` rewrites this from the records). {doc['platform']}. CPU time summed over all "
            f"finished runs: {doc['cpu_s_total']:.0f} s (wall {doc['wall_s_total']:.0f} s on a machine "
            "shared by the team).",
            "",
            f"Data: ListOps with depth <= {dd['max_depth']}, 2-{dd['max_args']} arguments, "
            f"{dd['min_length']}-{dd['max_length']} tokens (END included); disjoint splits train "
            f"{d['train']['n']:,} / arch {d['arch']['n']:,} (DARTS mixture steps) / val {d['val']['n']:,} "
            f"(every choice) / test {d['test']['n']:,} (mean length {d['test']['mean_length']:.1f}). "
            "Every row: "
            f"{s.steps} steps of batch {s.batch_size} (warmup {s.warmup_steps}, cosine), width {s.width}, "
            f"{s.blocks} layers per component = {s.blocks} hybrid blocks, lr from {list(s.lr_grid)} by "
            f"Optuna on val (seed {s.seeds[0]}), seeds {list(s.seeds)}; the search's arch lr from "
            f"{list(s.arch_lr_grid)}. Params: everything the classifier uses (the LM heads excluded, the "
            f"10-class head included); FLOPs/token at context {doc['context_for_flops']} "
            "(mad_models.hybrid.cost, LM heads excluded). "
            "Blocks: A = attention, M = Mamba.",
            "",
            *lines,
            "",
            "Gate (each component's worst seed; 'learns' = >= 0.05 above the majority class): "
            f"{gate or '-'}.",
            "",
            "Searched mixtures ([attention, Mamba] per block):",
            *(mix or ["- none yet"]),
            "",
            "Paired tests on the test split (exact McNemar, per seed):",
            *(tests or ["- none yet"]),
            "",
            "Computed summary: " + (verdict(doc) or "nothing measured yet."),
            "",
            *(
                ["**Unfinished rows: " + ", ".join(doc["unfinished"]) + ".**", ""]
                if doc["unfinished"]
                else []
            ),
            "![test accuracy against FLOPs per token]("
            + ("listops-quick.png" if flag else "listops.png")
            + ")",
            "",
        ]
    )


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for row, r in doc["rows"].items():
        if "test_per_seed" not in r:
            continue
        color = "tab:green" if row in HAND else "tab:red" if row.startswith("hybrid") else "tab:blue"
        ax.errorbar(
            [r["flops_per_token"]],
            [r["test_mean"]],
            yerr=[[r["test_mean"] - r["test_min"]], [r["test_max"] - r["test_mean"]]],
            marker="o",
            color=color,
            capsize=3,
        )
        ax.annotate(
            row, (r["flops_per_token"], r["test_mean"]), textcoords="offset points", xytext=(4, 3), fontsize=7
        )
    for row, style in (("chance", ":"), ("majority", "--")):
        ax.axhline(doc["rows"][row]["test_mean"], color="gray", linestyle=style, label=LABELS[row])
    ax.set_xlabel("FLOPs per token (LM heads excluded)")
    ax.set_ylabel("ListOps test accuracy (mean, min-max over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---- time estimate --------------------------------------------------------------------------------------
def estimate(s: Setting, rows: tuple[str, ...] = ROWS) -> tuple[int, float]:
    """(training runs, CPU seconds on one thread) from the measured SECONDS_PER_STEP (the matched component is
    costed as the dearer component scaled by the hybrid's parameter ratio, 3x, an upper bound)."""
    sps = SECONDS_PER_STEP[s.width]
    per_row = len(s.lr_grid) + len(s.seeds) - 1
    evals = (s.num_val + s.num_test) / s.batch_size / 3  # forward-only batches, in training-step units
    cost = {
        "attention": sps["attention"],
        "mamba": sps["mamba"],
        "hybrid-uniform": sps["hybrid"],
        "hybrid-searched": sps["hybrid"],
        "matched-component": 3 * sps["mamba"],
    }
    for row in HAND + ("hybrid-searched-pruned",):
        p = pattern(row, s.blocks) if row in HAND else "AM" * (s.blocks // 2)
        cost[row] = (p.count("A") * sps["attention"] + p.count("M") * sps["mamba"]) / s.blocks
    runs = seconds = 0.0
    for row in rows:
        runs += per_row
        seconds += per_row * (s.steps + evals) * cost[row]
    if "hybrid-searched" in rows or "hybrid-searched-pruned" in rows:
        n = len(s.arch_lr_grid) + len(s.seeds) - 1
        runs += n
        seconds += n * (s.steps * SEARCH_COST + s.num_val / s.batch_size / 3) * sps["hybrid"]
    return int(runs), seconds


def speed(s: Setting, steps: int = 6) -> dict:
    """CPU seconds per training step of attention, Mamba and the full hybrid at setting ``s``."""
    data = listops_splits({"train": s.batch_size * steps}, **s.data)["train"]
    from mad_models.training.text import pad_collate

    col = pad_collate(PAD)
    bench = Bench.__new__(Bench)
    bench.s = s
    out = {}
    for kind in ("attention", "mamba", "hybrid"):
        model = bench.hybrid(0) if kind == "hybrid" else bench.component(kind, 0)
        clf = SequenceClassifier(model, NUM_CLASSES)
        opt = torch.optim.AdamW(clf.parameters(), 1e-3)
        times = []
        for i in range(steps):
            batch = col([data[j] for j in range(i * s.batch_size, (i + 1) * s.batch_size)])
            t = time.process_time()
            clf(**batch).loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.process_time() - t)
        out[kind] = round(statistics.mean(times[1:]), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick setting (bench/results/listops-quick.*)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--records", help="records folder (default bench/results/listops[-quick]-runs)")
    ap.add_argument(
        "--scratch", help="checkpoints of runs in progress (default bench/.work-listops-<setting>)"
    )
    ap.add_argument(
        "--out",
        help="report stem: writes STEM.json, STEM.md, STEM.png (default bench/results/listops[-quick])",
    )
    ap.add_argument(
        "--rows", help=f"comma-separated subset of {','.join(ROWS)} (processes may share records)"
    )
    ap.add_argument("--progress", action="store_true", help="a tqdm bar per run")
    ap.add_argument(
        "--report-only", action="store_true", help="write the report from the records, train nothing"
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="print the runs and the time estimate, run nothing"
    )
    ap.add_argument(
        "--speed", action="store_true", help="measure CPU seconds per step of each kind, run nothing"
    )
    a = ap.parse_args(argv)
    if a.threads < 1:
        ap.error("--threads must be >= 1")
    torch.set_num_threads(a.threads)
    logging.disable(logging.WARNING)
    s = copy.deepcopy(QUICK if a.quick else FULL)
    rows = tuple(a.rows.split(",")) if a.rows else ROWS
    bad = [r for r in rows if r not in ROWS]
    if bad:
        ap.error(f"unknown row(s) {bad}; choose from {','.join(ROWS)}")
    if a.dry_run:
        runs, seconds = estimate(s, rows)
        print(
            f"[listops] {s.name}: {len(rows)} rows, {runs} training runs of {s.steps} steps; about "
            f"{seconds / 60:.0f} CPU-minutes on 1 thread, {seconds / 120:.0f} min wall with 2 processes on 2 "
            "quiet cores (from the CPU s/step in SECONDS_PER_STEP; a shared machine's wall clock is slower)"
        )
        return 0
    if a.speed:
        print(json.dumps({"width": s.width, "cpu_s_per_step": speed(s)}))
        return 0
    stem = "listops-quick" if a.quick else "listops"
    records = Path(a.records) if a.records else ROOT / "bench" / "results" / f"{stem}-runs"
    scratch = Path(a.scratch) if a.scratch else ROOT / "bench" / f".work-listops-{s.name}"
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / stem
    bench = Bench(s, records, scratch, a.progress, a.report_only)
    if not a.report_only:
        for row in rows:
            bench.results_of(row)
    command = f"bench/reproduce_listops.py{' --quick' if a.quick else ''} --threads {a.threads}"
    doc = report(bench, ROWS, out, command)
    print(f"[listops] wrote {out.with_suffix('.md')} ({len(doc['rows']) - 2} rows measured)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
