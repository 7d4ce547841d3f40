"""MoRe configuration search (``search_more``): enumerate MoRe shapes under a parameter budget, train each
briefly at its own lr, rank them against a LoRA baseline.

Example:
    >>> from mad_models.more_search import search_more
    >>> table = search_more(base, train, val, budget=1.0, lora_rank=8, lora_targets=["q_proj", "v_proj"],
    ...                     steps=50, lrs=[1e-4, 1e-3, 1e-2])  # doctest: +SKIP
    >>> print(table.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import peft
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from mad_models.monarch import monarch_param_count, monarch_shapes
from mad_models.more.config import MoReConfig

# Leaf names that are output heads, never adapted by default.
_HEADS = {"lm_head", "embed_out", "classifier", "score", "qa_outputs"}
_QV = ("q_proj", "v_proj", "query", "value")
_ATTN = re.compile(r"(q_proj|k_proj|v_proj|o_proj|query|key|value|c_attn|query_key_value|attn|attention)")


@dataclass
class Budget:
    """One parameter budget for every candidate: ``params`` is the limit, ``description`` says where it
    comes from (an absolute count, or a fraction of LoRA at a named rank on named targets)."""

    params: int
    description: str


@dataclass
class Candidate:
    nblocks: int
    block_rank: int
    target_modules: tuple[str, ...]
    params: int
    method: str = "more"  # "more", or "lora" for the baseline row

    def key(self) -> str:
        if self.method == "lora":
            return f"lora-r{self.block_rank}-{'+'.join(self.target_modules)}"
        return f"k{self.nblocks}-r{self.block_rank}-{'+'.join(self.target_modules)}"

    def label(self) -> str:
        if self.method == "lora":
            return f"LoRA r={self.block_rank} (baseline)"
        if self.nblocks == 1:
            return f"MoRe k=1 r={self.block_rank} (= LoRA r={self.block_rank})"
        return f"MoRe k={self.nblocks} r={self.block_rank}"

    def peft_config(self):
        if self.method == "lora":
            from peft import LoraConfig

            r = self.block_rank
            return LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(self.target_modules))
        return MoReConfig(
            nblocks=self.nblocks, block_rank=self.block_rank, target_modules=list(self.target_modules)
        )


@dataclass
class SearchTable:
    """Ranked results: one row per candidate (best dev score first), plus the budget and how lrs were chosen.

    Rows are chosen and ranked on dev (``val``); ``test`` is each row's score on the test data (``None``
    without test data), measured after every choice and used for none.
    """

    rows: list[dict] = field(default_factory=list)
    metric: str = "eval_loss"
    higher_is_better: bool = False
    budget: str = ""
    how: str = ""
    has_test: bool = False

    def best(self) -> dict:
        if not self.rows:
            raise ValueError("the search produced no results")
        return next((r for r in self.rows if r["method"] == "more" and not r["pruned_at"]), self.rows[0])

    def why(self) -> str:
        """One sentence on why the winner won (on dev), against the runner-up and the seed spread."""
        done = [r for r in self.rows if not r["pruned_at"]]
        if not done:
            return "Every candidate was pruned before the last step: no winner."
        win = done[0]
        runner = next((r for r in done[1:]), None)
        text = (
            f"{win['label']} on {', '.join(win['target_modules'])} won on dev with {self.metric} "
            f"{win['mean']:.4f} at its own lr {win['lr']:g}"
        )
        if self.has_test and win["test"] is not None:
            text += f" ({win['test']:.4f} on test)"
        if runner is None:
            return text + " (the only candidate that reached the last step)."
        gap = abs(win["mean"] - runner["mean"])
        spread = max(win["spread"], runner["spread"])
        text += f", {gap:.4f} ahead of {runner['label']} on {', '.join(runner['target_modules'])}"
        if spread and gap <= spread:
            return text + f", a gap within the seed spread ({spread:.4f}): the two are not told apart."
        return text + (f", a gap larger than the seed spread ({spread:.4f})." if spread else ".")

    def to_markdown(self) -> str:
        better = "higher" if self.higher_is_better else "lower"
        test = " test |" if self.has_test else ""
        lines = [
            f"Budget: {self.budget}. {self.how} Metric: {self.metric} ({better} is better), mean over seeds; "
            + (
                "chosen and ranked on dev (the eval data), reported on the test data, which chose nothing."
                if self.has_test
                else "chosen and ranked on dev (the eval data); no test data, so no unbiased score."
            ),
            "",
            f"| rank | adapter | targets | params | lr | dev {self.metric} | seed range |{test} note |",
            "|---:|---|---|---:|---:|---:|---:|" + ("---:|" if self.has_test else "") + "---|",
        ]
        for i, r in enumerate(self.rows, 1):
            rng = f"{r['min']:.4f}-{r['max']:.4f}" if r["n_seeds"] > 1 else "1 seed"
            notes = [f"pruned at step {r['pruned_at']}"] if r["pruned_at"] else []
            notes += [r["note"]] if r.get("note") else []
            if r.get("lr_edge"):
                notes.append(f"lr at the grid's {r['lr_edge']} edge: widen the grid")
            score = "" if not self.has_test else (" - |" if r["test"] is None else f" {r['test']:.4f} |")
            lines.append(
                f"| {i} | {r['label']} | {', '.join(r['target_modules'])} | {r['params']:,} | {r['lr']:g} | "
                f"{r['mean']:.4f} | {rng} |{score} {'; '.join(notes)} |"
            )
        lines += ["", self.why()]
        return "\n".join(lines)


def linear_modules(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Adaptable layers of ``model``: full name -> (in_features, out_features), heads excluded."""
    out = {}
    for name, mod in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in _HEADS:
            continue
        if isinstance(mod, nn.Linear):
            out[name] = (mod.in_features, mod.out_features)
        elif isinstance(mod, Conv1D):
            out[name] = (mod.weight.shape[0], mod.weight.shape[1])
    return out


def default_target_sets(model: nn.Module) -> list[tuple[str, ...]]:
    """Query/value projections, all attention projections, and all linear layers (when they differ)."""
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear_modules(model)})
    if not leaves:
        raise ValueError(f"{type(model).__name__} has no nn.Linear / Conv1D layers to adapt")
    sets = [
        tuple(x for x in leaves if x in _QV),
        tuple(x for x in leaves if _ATTN.fullmatch(x)),
        tuple(leaves),
    ]
    unique: list[tuple[str, ...]] = []
    for s in sets:
        if s and s not in unique:
            unique.append(s)
    return unique


def _targeted(shapes: dict[str, tuple[int, int]], targets: Sequence[str]) -> list[tuple[int, int]]:
    picked = [io for name, io in shapes.items() if name.rsplit(".", 1)[-1] in targets]
    if not picked:
        raise ValueError(f"target modules {list(targets)} match no linear layer of the model")
    return picked


def _lora_count(shapes: dict[str, tuple[int, int]], targets: Sequence[str], rank: int) -> int:
    return sum(rank * (i + o) for i, o in _targeted(shapes, targets))


def resolve_budget(
    model: nn.Module,
    budget: int | float,
    *,
    lora_rank: int = 8,
    lora_targets: Sequence[str] | None = None,
    target_sets: Sequence[Sequence[str]] | None = None,
) -> Budget:
    """One limit for all candidates. An int is an absolute parameter count; a float is a fraction of LoRA
    at rank ``lora_rank`` on ``lora_targets`` (default: the first default target set, e.g. q and v).

    A budget under one LoRA rank (rank 1 on the smallest target set, the smallest adapter there is) is an
    error that says so, so ``budget=1`` (one parameter) never passes silently for "100% of LoRA".
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"budget must be an int (parameters) or a float (fraction of LoRA), got {budget!r}")
    if not budget > 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    if isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank < 1:
        raise ValueError(f"lora_rank must be an int >= 1, got {lora_rank!r}")
    shapes = linear_modules(model)
    sets = [tuple(s) for s in target_sets] if target_sets is not None else default_target_sets(model)
    ref = tuple(lora_targets) if lora_targets else sets[0]
    if isinstance(budget, int):
        limit, text = budget, f"{budget:,} trainable parameters (absolute)"
    else:
        lora = _lora_count(shapes, ref, lora_rank)
        limit = int(budget * lora)
        text = (
            f"{budget:g} x LoRA r={lora_rank} on {', '.join(ref)} ({lora:,}) = {limit:,} trainable parameters"
        )
    smallest_set = min(sets, key=lambda s: _lora_count(shapes, s, 1))
    one_rank = _lora_count(shapes, smallest_set, 1)
    if limit < one_rank:
        hint = (
            f" An integer budget is a parameter count: for a share of LoRA r={lora_rank} write a fraction "
            f"such as 1.0 or 0.5."
            if isinstance(budget, int)
            else ""
        )
        raise ValueError(
            f"budget {text} is under one LoRA rank: the smallest adapter here, rank 1 on "
            f"{', '.join(smallest_set)}, has {one_rank:,} parameters.{hint}"
        )
    return Budget(limit, text)


def enumerate_candidates(
    model: nn.Module,
    budget: Budget | int | float,
    *,
    lora_rank: int = 8,
    lora_targets: Sequence[str] | None = None,
    nblocks: Sequence[int] = (2, 4, 8, 16),
    block_ranks: Sequence[int] = (1, 2, 4, 8),
    target_sets: Sequence[Sequence[str]] | None = None,
    max_per_target_set: int | None = None,
) -> list[Candidate]:
    """Every (target set, nblocks, block_rank) valid for all targeted layers and within the one budget,
    except k=1 at ``lora_rank`` on ``lora_targets``: that is the LoRA baseline, already in every search.

    ``max_per_target_set`` keeps, in *each* target set, one candidate per distinct ``nblocks`` (its largest
    block rank within the budget), the widest ``nblocks`` first: a cap never drops a whole target set nor
    the widest configuration that fits. Sorted by params, largest first.
    """
    if not isinstance(budget, Budget):
        budget = resolve_budget(
            model, budget, lora_rank=lora_rank, lora_targets=lora_targets, target_sets=target_sets
        )
    shapes = linear_modules(model)
    sets = [tuple(s) for s in target_sets] if target_sets is not None else default_target_sets(model)
    baseline = (1, lora_rank, tuple(lora_targets) if lora_targets else sets[0])
    found = []
    for targets in sets:
        layers = _targeted(shapes, targets)
        here = []
        for k, r in itertools.product(sorted(set(nblocks)), sorted(set(block_ranks))):
            if (k, r, targets) == baseline:
                continue
            try:
                for i, o in layers:
                    monarch_shapes(i, o, k, r)
            except ValueError:
                continue  # the block rank is too large for some layer at this k
            params = sum(monarch_param_count(i, o, k, r) for i, o in layers)
            if params <= budget.params:
                here.append(Candidate(k, r, targets, params))
        if max_per_target_set:
            widest: dict[int, Candidate] = {}
            for c in here:  # the largest block rank of every k
                if c.nblocks not in widest or c.params > widest[c.nblocks].params:
                    widest[c.nblocks] = c
            here = [widest[k] for k in sorted(widest, reverse=True)[:max_per_target_set]]
        found += here
    return sorted(found, key=lambda c: (-c.params, c.nblocks, c.block_rank))


def weights_digest(model: nn.Module) -> str:
    """sha256 of the model's config and every weight's name, shape, dtype and values: two models with the
    same architecture and different weights (another checkpoint, a GGUF instead of the Hub's) differ."""
    from mad_models.training._hybrid import model_fingerprint

    return model_fingerprint(model, values=True)


def _fingerprint(model: nn.Module, *datasets) -> str:
    """Digest of the base model's weights and the datasets' items: stored results are reused only for them."""
    h = hashlib.sha256(weights_digest(model).encode())
    for ds in datasets:
        if ds is None:
            h.update(b"|none")
            continue
        h.update(f"|{len(ds)}".encode())
        for i in range(len(ds)):
            item = ds[i]
            for k in sorted(item) if isinstance(item, dict) else [None]:
                v = item[k] if k is not None else item
                h.update(str(k).encode())
                h.update(torch.as_tensor(v).numpy().tobytes() if not isinstance(v, str) else v.encode())
    return h.hexdigest()[:16]


def open_storage(storage: str | None, output_dir: Path):
    """An Optuna storage: ``None`` -> SQLite in ``output_dir``; a URL (``sqlite:///...``,
    ``postgresql://...``, any SQLAlchemy URL) -> an RDB storage with heartbeats, so a worker that dies is
    noticed by the others; anything else is a journal file path (several processes on one machine, or on a
    shared file system)."""
    import optuna

    if storage is None:
        storage = f"sqlite:///{output_dir / 'search.db'}"
    if "://" in storage:
        return optuna.storages.RDBStorage(storage, heartbeat_interval=30, grace_period=120)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(storage)))


_WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _worker_dead(worker: str | None) -> bool:
    """Whether a trial's worker (``host:pid``) is a process of this machine that no longer runs."""
    if not worker or worker.rsplit(":", 1)[0] != socket.gethostname():
        return False  # another machine's: an RDB storage's heartbeat says when it died
    try:
        os.kill(int(worker.rsplit(":", 1)[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _run_grid(study, points: list[dict], objective, poll: float) -> None:
    """Run every parameter dict of ``points`` once in ``study``, with any number of workers on its storage.

    A point is done when a trial with its parameters completed or was pruned (a ``duplicate`` does not
    count). Points nobody runs are queued; a trial that finds an earlier live trial of its point stops as a
    duplicate before training, so no point is trained twice; trials of dead workers on this machine are
    failed and their points queued again; while other workers hold the last points, this one waits.
    """
    import optuna

    S = optuna.trial.TrialState
    key = lambda params: tuple(sorted(params.items()))  # noqa: E731
    want = {key(p): p for p in points}
    while True:
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state == S.RUNNING and _worker_dead(t.user_attrs.get("worker")):
                try:
                    study.tell(t.number, state=S.FAIL)
                except (RuntimeError, ValueError):
                    pass  # another worker got there first
        trials = study.get_trials(deepcopy=False)
        live = [t for t in trials if not t.user_attrs.get("duplicate")]
        done = {key(t.params) for t in live if t.state in (S.COMPLETE, S.PRUNED)}
        busy = {key(t.params) for t in live if t.state == S.RUNNING}
        queued = {key(t.system_attrs.get("fixed_params", {})) for t in trials if t.state == S.WAITING}
        todo = [k for k in want if k not in done]
        if not todo:
            return
        for k in todo:
            if k not in busy and k not in queued:
                study.enqueue_trial(want[k], skip_if_exists=False)
                queued.add(k)
        if any(k not in busy for k in todo):
            study.optimize(objective, n_trials=1, catch=())
        else:
            time.sleep(poll)  # the last points are running in other workers


def _duplicate(study, trial) -> bool:
    """Whether an earlier trial of the same parameters is running or finished (then this one must not
    train): ``trial.params`` are set before this is asked."""
    import optuna

    S = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(S.RUNNING, S.COMPLETE, S.PRUNED)):
        if t.number < trial.number and t.params == trial.params and not t.user_attrs.get("duplicate"):
            return True
    return False


def search_more(
    model: nn.Module,
    train,
    val,
    budget: int | float,
    *,
    test=None,
    lora_rank: int = 8,
    lora_targets: Sequence[str] | None = None,
    nblocks: Sequence[int] = (2, 4, 8, 16),
    block_ranks: Sequence[int] = (1, 2, 4, 8),
    target_sets: Sequence[Sequence[str]] | None = None,
    max_candidates: int | None = 3,
    steps: int = 50,
    lrs: Sequence[float] = (1e-4, 1e-3, 1e-2),
    min_resource: int | None = None,
    reduction_factor: int = 3,
    seeds: int = 2,
    batch_size: int = 8,
    output_dir: str | Path = "more-search",
    storage: str | None = None,
    metric_fn: Callable[[nn.Module, str], float] | None = None,
    metric_name: str | None = None,
    higher_is_better: bool | None = None,
    seed: int = 0,
    progress: bool = True,
    poll: float = 5.0,
) -> SearchTable:
    """Search MoRe configurations (target set, nblocks, block_rank) under one parameter budget, each with
    its own lr, against a LoRA baseline; choose and rank on ``val`` (dev), report on ``test``.

    - ``budget``: an int is a parameter count; a float a fraction of LoRA r=``lora_rank`` on ``lora_targets``
      (:func:`resolve_budget`). ``max_candidates``: per target set, one candidate per distinct ``nblocks``
      (its largest block rank), the widest first (:func:`enumerate_candidates`).
    - One Optuna study over (candidate, lr) pairs, ``lr`` from the grid ``lrs``, with
      ``optuna.pruners.SuccessiveHalvingPruner``: the first rung after ``min_resource`` steps (default a third
      of ``steps``), so no pair is judged before it has trained that long. The LoRA baseline (rank
      ``lora_rank`` on ``lora_targets``) is in the same study. A chosen lr at the grid's edge is flagged.
    - Each candidate keeps its best lr on dev; those that reached the last step are trained again at it with
      ``seeds - 1`` more seeds (a second study), and every finished run is scored on ``test`` too.
    - The metric is the loss (lower is better) on ``val`` / ``test``, unless ``metric_fn(peft_model, split)``
      is given, ``split`` being ``"dev"`` or ``"test"`` (higher is better by default, e.g. exact match).
    - ``storage``: any Optuna storage (:func:`open_storage`): a journal file or an RDB URL such as
      ``postgresql://...`` lets workers on many machines share the search: run the same call in each; every
      (candidate, lr) and (candidate, seed) runs once, and every worker returns the same table.

    The studies are named by the run's settings, the base model's weights and the data, so a re-run resumes
    and a run with other weights or data searches afresh (its table never mixes with the old one).
    ``model`` is left as it was (adapters are injected, trained and unloaded).

    Example:
        >>> table = search_more(base, train, dev, 0.5, test=test, storage="runs/s.journal")  # doctest: +SKIP
    """
    import optuna

    from mad_models.training.finetune import dataset_metrics, finetune_adapter
    from mad_models.training.loop import TrainArgs

    if steps < 1 or seeds < 1:
        raise ValueError(f"steps and seeds must be >= 1, got {steps}, {seeds}")
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ValueError(f"lrs must be a non-empty list of positive numbers, got {list(lrs)}")
    rung = min_resource or math.ceil(steps / 3)
    if not 1 <= rung <= steps:
        raise ValueError(f"min_resource (the first pruning rung) must be in 1..steps={steps}, got {rung}")
    budget_obj = resolve_budget(
        model, budget, lora_rank=lora_rank, lora_targets=lora_targets, target_sets=target_sets
    )
    cands = enumerate_candidates(
        model,
        budget_obj,
        lora_rank=lora_rank,
        lora_targets=lora_targets,
        nblocks=nblocks,
        block_ranks=block_ranks,
        target_sets=target_sets,
        max_per_target_set=max_candidates,
    )
    if not cands:
        raise ValueError(
            f"no MoRe configuration fits the budget ({budget_obj.description}): nblocks x block_rank must "
            "divide the layers; raise the budget or add nblocks / block_ranks values"
        )
    shapes = linear_modules(model)
    sets = [tuple(s) for s in target_sets] if target_sets is not None else default_target_sets(model)
    ref_targets = tuple(lora_targets) if lora_targets else sets[0]
    lora = Candidate(1, lora_rank, ref_targets, _lora_count(shapes, ref_targets, lora_rank), method="lora")
    by_key = {c.key(): c for c in [lora, *cands]}
    if higher_is_better is None:
        higher_is_better = metric_fn is not None
    metric_name = metric_name or ("metric" if metric_fn is not None else "eval_loss")
    lrs = [float(x) for x in lrs]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = {
        "steps": steps,
        "lrs": lrs,
        "rung": rung,
        "reduction_factor": reduction_factor,
        "batch_size": batch_size,
        "seed": seed,
        "seeds": seeds,
        "metric_name": metric_name,
        "candidates": sorted(by_key),
        "data": _fingerprint(model, train, val, test),  # the same weights and data, too
    }
    run_id = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:12]
    flags = {n: p.requires_grad for n, p in model.named_parameters()}

    def evaluate(pm, split: str) -> float:
        if metric_fn is not None:
            return float(metric_fn(pm, split))
        return dataset_metrics(pm, val if split == "dev" else test, batch_size)["loss"]

    def train_once(trial, cand: Candidate, lr: float, run_seed: int, prune: bool) -> float:
        trial.set_user_attr("worker", _WORKER)
        if _duplicate(study_of[trial.study.study_name], trial):
            trial.set_user_attr("duplicate", True)
            raise optuna.TrialPruned()  # another worker has this point: nothing trained here
        where = out / run_id / f"{cand.key()}-lr{lr:g}-s{run_seed}@{_WORKER.replace(':', '-')}"
        torch.manual_seed(run_seed)
        pm = peft.get_peft_model(model, cand.peft_config())
        reported = {"step": 0}

        def eval_fn(m):
            value = evaluate(m, "dev")
            reported["step"] += rung
            if prune and reported["step"] < steps:
                trial.report(value, reported["step"])
                if trial.should_prune():
                    raise optuna.TrialPruned()
            return {"metric": value}

        t0 = time.perf_counter()
        try:
            res = finetune_adapter(
                pm,
                train,
                TrainArgs(
                    str(where),
                    max_steps=steps,
                    lr=lr,
                    batch_size=batch_size,
                    seed=run_seed,
                    save_every=rung,
                    log_every=rung,
                    eval_every=rung if prune else None,
                    keep_checkpoints=1,
                    resume=False,  # a pruned or interrupted trial starts over: its rungs must be re-reported
                    progress=progress,
                    save_final=False,
                ),
                eval_fn=eval_fn,
            )
            if test is not None:
                trial.set_user_attr("test", evaluate(pm, "test"))
            trial.set_user_attr("time", time.perf_counter() - t0)
            return float(res["eval_metric"])
        finally:
            pm.unload()  # removes the adapter layers, leaving the base model's own modules
            for n, p in model.named_parameters():
                p.requires_grad_(flags[n])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage, out)
    direction = "maximize" if higher_is_better else "minimize"
    grid = optuna.create_study(
        study_name=run_id,
        storage=store,
        load_if_exists=True,
        direction=direction,
        sampler=optuna.samplers.GridSampler({"candidate": sorted(by_key), "lr": lrs}, seed=seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=rung, reduction_factor=reduction_factor),
    )
    study_of = {run_id: grid}

    def lr_objective(trial: optuna.Trial) -> float:
        key = trial.suggest_categorical("candidate", sorted(by_key))
        lr = trial.suggest_categorical("lr", lrs)
        return train_once(trial, by_key[key], lr, seed, prune=True)

    _run_grid(grid, [{"candidate": k, "lr": lr} for k in sorted(by_key) for lr in lrs], lr_objective, poll)

    S = optuna.trial.TrialState
    sign = -1.0 if higher_is_better else 1.0
    real = [t for t in grid.get_trials(deepcopy=False) if not t.user_attrs.get("duplicate")]
    chosen: dict[str, optuna.trial.FrozenTrial] = {}
    for key in by_key:
        complete = [t for t in real if t.params.get("candidate") == key and t.state == S.COMPLETE]
        if complete:  # the best dev score; ties: the smaller lr
            chosen[key] = min(complete, key=lambda t: (sign * t.value, t.params["lr"]))
    # further seeds at each finished candidate's lr: a second study, shared by the workers the same way
    more_seeds = list(range(seed + 1, seed + seeds))
    seed_runs = []
    if more_seeds and chosen:
        seed_study = optuna.create_study(
            study_name=f"{run_id}-seeds",
            storage=store,
            load_if_exists=True,
            direction=direction,
            sampler=optuna.samplers.GridSampler({"candidate": sorted(chosen), "seed": more_seeds}, seed=seed),
        )
        study_of[seed_study.study_name] = seed_study

        def seed_objective(trial: optuna.Trial) -> float:
            key = trial.suggest_categorical("candidate", sorted(chosen))
            run_seed = trial.suggest_categorical("seed", more_seeds)
            return train_once(trial, by_key[key], chosen[key].params["lr"], run_seed, prune=False)

        points = [{"candidate": k, "seed": x} for k in sorted(chosen) for x in more_seeds]
        _run_grid(seed_study, points, seed_objective, poll)
        seed_runs = [
            t
            for t in seed_study.get_trials(deepcopy=False, states=(S.COMPLETE,))
            if not t.user_attrs.get("duplicate")
        ]

    rows = []
    for key, cand in by_key.items():
        trials = [t for t in real if t.params.get("candidate") == key]
        if key in chosen:
            best = chosen[key]
            runs = [best] + [t for t in seed_runs if t.params["candidate"] == key]
            values, pruned_at = [t.value for t in runs], None
            tests = [t.user_attrs["test"] for t in runs if "test" in t.user_attrs]
        else:  # every lr pruned: show how far the best one got
            pruned = [t for t in trials if t.intermediate_values]
            best = max(
                pruned,
                key=lambda t: (
                    max(t.intermediate_values),
                    -sign * t.intermediate_values[max(t.intermediate_values)],
                ),
            )
            pruned_at = max(best.intermediate_values)
            values, tests = [best.intermediate_values[pruned_at]], []
        lr = best.params["lr"]
        edge = None
        if len(lrs) > 1 and pruned_at is None:
            edge = "lowest" if lr == min(lrs) else "highest" if lr == max(lrs) else None
        rows.append(
            {
                "key": key,
                "method": cand.method,
                "label": cand.label(),
                "nblocks": cand.nblocks,
                "block_rank": cand.block_rank,
                "target_modules": list(cand.target_modules),
                "params": cand.params,
                "lr": lr,
                "lr_edge": edge,
                "mean": sum(values) / len(values),
                "min": min(values),
                "max": max(values),
                "spread": max(values) - min(values),
                "n_seeds": len(values),
                "test": sum(tests) / len(tests) if tests else None,
                "pruned_at": pruned_at,
                "note": "outside the budget"
                if cand.method == "lora" and cand.params > budget_obj.params
                else "",
            }
        )
    rows.sort(key=lambda r: (r["pruned_at"] is not None, -(r["pruned_at"] or 0), sign * r["mean"]))
    how = (
        f"Each candidate's lr from {lrs} by Optuna (grid over candidate x lr, SuccessiveHalvingPruner: "
        f"first rung at step {rung} of {steps}, reduction factor {reduction_factor}); {seeds} seed(s) at the "
        "chosen lr."
    )
    return SearchTable(
        rows=rows,
        metric=metric_name,
        higher_is_better=higher_is_better,
        budget=budget_obj.description,
        how=how,
        has_test=test is not None,
    )
