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
import re
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
    """Ranked results: one row per candidate (best first), plus the budget and how lrs were chosen."""

    rows: list[dict] = field(default_factory=list)
    metric: str = "eval_loss"
    higher_is_better: bool = False
    budget: str = ""
    how: str = ""

    def best(self) -> dict:
        if not self.rows:
            raise ValueError("the search produced no results")
        return next((r for r in self.rows if r["method"] == "more" and not r["pruned_at"]), self.rows[0])

    def why(self) -> str:
        """One sentence on why the winner won, against the runner-up and the seed spread."""
        done = [r for r in self.rows if not r["pruned_at"]]
        if not done:
            return "Every candidate was pruned before the last step: no winner."
        win = done[0]
        runner = next((r for r in done[1:]), None)
        text = (
            f"{win['label']} on {', '.join(win['target_modules'])} won with {self.metric} {win['mean']:.4f}"
        )
        text += f" at its own lr {win['lr']:g}"
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
        lines = [
            f"Budget: {self.budget}. {self.how} Metric: {self.metric} ({better} is better), mean over seeds.",
            "",
            f"| rank | adapter | targets | params | lr | {self.metric} | seed range | note |",
            "|---:|---|---|---:|---:|---:|---:|---|",
        ]
        for i, r in enumerate(self.rows, 1):
            rng = f"{r['min']:.4f}-{r['max']:.4f}" if r["n_seeds"] > 1 else "1 seed"
            note = f"pruned at step {r['pruned_at']}" if r["pruned_at"] else r.get("note", "")
            lines.append(
                f"| {i} | {r['label']} | {', '.join(r['target_modules'])} | {r['params']:,} | {r['lr']:g} | "
                f"{r['mean']:.4f} | {rng} | {note} |"
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
    nblocks: Sequence[int] = (1, 2, 4, 8, 16),
    block_ranks: Sequence[int] = (1, 2, 4, 8),
    target_sets: Sequence[Sequence[str]] | None = None,
    max_per_target_set: int | None = None,
) -> list[Candidate]:
    """Every (target set, nblocks, block_rank) valid for all targeted layers and within the one budget.

    ``max_per_target_set`` keeps the largest few of *each* target set (a cap never drops a whole target
    set). Sorted by params, largest first.
    """
    if not isinstance(budget, Budget):
        budget = resolve_budget(
            model, budget, lora_rank=lora_rank, lora_targets=lora_targets, target_sets=target_sets
        )
    shapes = linear_modules(model)
    sets = [tuple(s) for s in target_sets] if target_sets is not None else default_target_sets(model)
    found = []
    for targets in sets:
        layers = _targeted(shapes, targets)
        here = []
        for k, r in itertools.product(nblocks, block_ranks):
            try:
                for i, o in layers:
                    monarch_shapes(i, o, k, r)
            except ValueError:
                continue  # the block rank is too large for some layer at this k
            params = sum(monarch_param_count(i, o, k, r) for i, o in layers)
            if params <= budget.params:
                here.append(Candidate(k, r, targets, params))
        here.sort(key=lambda c: (-c.params, c.nblocks, c.block_rank))
        found += here[:max_per_target_set] if max_per_target_set else here
    return sorted(found, key=lambda c: (-c.params, c.nblocks, c.block_rank))


def _fingerprint(model: nn.Module, *datasets) -> str:
    """Digest of the base model's shape and the datasets' items, so stored rows are reused only for them."""
    h = hashlib.sha256(f"{type(model).__name__}:{sum(p.numel() for p in model.parameters())}".encode())
    for ds in datasets:
        h.update(f"|{len(ds)}".encode())
        for i in range(len(ds)):
            item = ds[i]
            for k in sorted(item) if isinstance(item, dict) else [None]:
                v = item[k] if k is not None else item
                h.update(str(k).encode())
                h.update(torch.as_tensor(v).numpy().tobytes() if not isinstance(v, str) else v.encode())
    return h.hexdigest()[:16]


def search_more(
    model: nn.Module,
    train,
    val,
    budget: int | float,
    *,
    lora_rank: int = 8,
    lora_targets: Sequence[str] | None = None,
    nblocks: Sequence[int] = (1, 2, 4, 8, 16),
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
    metric_fn: Callable[[nn.Module], float] | None = None,
    metric_name: str | None = None,
    higher_is_better: bool | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SearchTable:
    """Search MoRe configurations (target set, nblocks, block_rank) under one parameter budget, each with
    its own lr, against a LoRA baseline; rank them on ``val``.

    - ``budget``: an int is a parameter count; a float a fraction of LoRA r=``lora_rank`` on ``lora_targets``
      (:func:`resolve_budget`). ``max_candidates`` caps the candidates *per target set*.
    - One Optuna study over (candidate, lr) pairs, ``lr`` from the grid ``lrs``: a GridSampler with
      ``optuna.pruners.SuccessiveHalvingPruner`` (rungs every ``min_resource`` steps, default ``steps // 9``),
      so weak (candidate, lr) pairs stop early. The LoRA baseline (rank ``lora_rank`` on ``lora_targets``)
      is in the same study.
    - Each candidate keeps its best lr; those that reached the last step are trained again at it with
      ``seeds - 1`` more seeds (mean and range reported).
    - The metric is the validation loss (lower is better) unless ``metric_fn(peft_model) -> float`` is given
      (higher is better by default, e.g. exact match).

    Everything lives in ``output_dir`` (an Optuna SQLite study named by the run's settings and data, and
    ``results.jsonl`` for the seed runs), so a re-run resumes, and other settings start a separate study.
    ``model`` is left as it was (adapters are injected, trained and unloaded).
    """
    import optuna

    from mad_models.training.finetune import dataset_metrics, finetune_adapter
    from mad_models.training.loop import TrainArgs

    if steps < 1 or seeds < 1:
        raise ValueError(f"steps and seeds must be >= 1, got {steps}, {seeds}")
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ValueError(f"lrs must be a non-empty list of positive numbers, got {list(lrs)}")
    rung = min_resource or max(1, steps // reduction_factor**2)
    budget_obj = resolve_budget(
        model, budget, lora_rank=lora_rank, lora_targets=lora_targets, target_sets=target_sets
    )
    cands = enumerate_candidates(
        model,
        budget_obj,
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
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = {
        "steps": steps,
        "lrs": [float(x) for x in lrs],
        "rung": rung,
        "reduction_factor": reduction_factor,
        "batch_size": batch_size,
        "seed": seed,
        "metric_name": metric_name,
        "candidates": sorted(by_key),
        "data": _fingerprint(model, train, val),  # the same model and data, too
    }
    run_id = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:12]
    flags = {n: p.requires_grad for n, p in model.named_parameters()}

    def evaluate(pm) -> float:
        if metric_fn is not None:
            return float(metric_fn(pm))
        return dataset_metrics(pm, val, batch_size)["loss"]

    def train_once(cand: Candidate, lr: float, run_seed: int, trial=None) -> float:
        where = out / run_id / f"{cand.key()}-lr{lr:g}-s{run_seed}"
        torch.manual_seed(run_seed)
        pm = peft.get_peft_model(model, cand.peft_config())
        reported = {"step": 0}

        def eval_fn(m):
            value = evaluate(m)
            reported["step"] += rung
            if trial is not None and reported["step"] < steps:
                trial.report(value, reported["step"])
                if trial.should_prune():
                    raise optuna.TrialPruned()
            return {"metric": value}

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
                    eval_every=rung if trial is not None else None,
                    keep_checkpoints=1,
                    resume=False,  # a pruned or interrupted trial starts over: its rungs must be re-reported
                    progress=progress,
                    save_final=False,
                ),
                eval_fn=eval_fn if trial is not None else lambda m: {"metric": evaluate(m)},
            )
            return float(res["eval_metric"])
        finally:
            pm.unload()  # removes the adapter layers, leaving the base model's own modules
            for n, p in model.named_parameters():
                p.requires_grad_(flags[n])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=run_id,
        storage=f"sqlite:///{out / 'search.db'}",
        load_if_exists=True,
        direction="maximize" if higher_is_better else "minimize",
        sampler=optuna.samplers.GridSampler(
            {"candidate": sorted(by_key), "lr": [float(x) for x in lrs]}, seed=seed
        ),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=rung, reduction_factor=reduction_factor),
    )
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # cut short by an interruption: again
        study.enqueue_trial(dict(t.params))

    def objective(trial: optuna.Trial) -> float:
        key = trial.suggest_categorical("candidate", sorted(by_key))
        lr = trial.suggest_categorical("lr", [float(x) for x in lrs])
        t0 = time.perf_counter()
        value = train_once(by_key[key], lr, seed, trial)
        trial.set_user_attr("time", time.perf_counter() - t0)
        return value

    grid = {(k, float(lr)) for k in by_key for lr in lrs}
    while True:
        finished = {
            (t.params["candidate"], t.params["lr"])
            for t in study.trials
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        }
        if grid <= finished:
            break
        study.optimize(objective, n_trials=1)

    # the seed runs: stored per (run, candidate, lr, seed)
    results_path = out / "results.jsonl"
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            done[(row["run_id"], row["key"], row["lr"], row["seed"])] = row["metric"]
    sign = -1.0 if higher_is_better else 1.0
    rows = []
    for key, cand in by_key.items():
        trials = [t for t in study.trials if t.params.get("candidate") == key]
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        if complete:
            best = min(complete, key=lambda t: sign * t.value)
            values, pruned_at = [best.value], None
            for s in range(seed + 1, seed + seeds):
                k = (run_id, key, best.params["lr"], s)
                if k not in done:
                    done[k] = train_once(cand, best.params["lr"], s)
                    with results_path.open("a") as f:
                        f.write(
                            json.dumps(
                                dict(zip(("run_id", "key", "lr", "seed"), k, strict=True))
                                | {"metric": done[k]}
                            )
                            + "\n"
                        )
                values.append(done[k])
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
            values = [best.intermediate_values[pruned_at]]
        rows.append(
            {
                "key": key,
                "method": cand.method,
                "label": cand.label(),
                "nblocks": cand.nblocks,
                "block_rank": cand.block_rank,
                "target_modules": list(cand.target_modules),
                "params": cand.params,
                "lr": best.params["lr"],
                "mean": sum(values) / len(values),
                "min": min(values),
                "max": max(values),
                "spread": max(values) - min(values),
                "n_seeds": len(values),
                "pruned_at": pruned_at,
                "note": "outside the budget"
                if cand.method == "lora" and cand.params > budget_obj.params
                else "",
            }
        )
    rows.sort(key=lambda r: (r["pruned_at"] is not None, -(r["pruned_at"] or 0), sign * r["mean"]))
    how = (
        f"Each candidate's lr from {[float(x) for x in lrs]} by Optuna (GridSampler over candidate x lr, "
        f"SuccessiveHalvingPruner: rungs every {rung} of {steps} steps, reduction factor "
        f"{reduction_factor}); "
        f"{seeds} seed(s) at the chosen lr."
    )
    return SearchTable(
        rows=rows,
        metric=metric_name,
        higher_is_better=higher_is_better,
        budget=budget_obj.description,
        how=how,
    )
