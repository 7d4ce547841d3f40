"""Search MoRe configurations under a parameter budget: enumerate, train each briefly, rank.

Example:
    >>> from mad_models.more.search import search_more
    >>> table = search_more(base, train, val, budget=0.5, lora_rank=8, steps=50)  # doctest: +SKIP
    >>> print(table.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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
class Candidate:
    nblocks: int
    block_rank: int
    target_modules: tuple[str, ...]
    params: int
    lora_params: int

    @property
    def pct_of_lora(self) -> float:
        return 100.0 * self.params / self.lora_params

    def key(self) -> str:
        return f"k{self.nblocks}-r{self.block_rank}-{'+'.join(self.target_modules)}"


@dataclass
class SearchTable:
    """Ranked results: one row per candidate, best first (``higher_is_better`` says how)."""

    rows: list[dict] = field(default_factory=list)
    metric: str = "eval_loss"
    higher_is_better: bool = False
    lora_rank: int = 8

    def best(self) -> dict:
        if not self.rows:
            raise ValueError("the search produced no results")
        return self.rows[0]

    def to_markdown(self) -> str:
        head = (
            f"| rank | nblocks | block_rank | targets | params | % of LoRA r={self.lora_rank} | "
            f"{self.metric} | time (s) |"
        )
        lines = [head, "|---:|---:|---:|---|---:|---:|---:|---:|"]
        for i, r in enumerate(self.rows, 1):
            lines.append(
                f"| {i} | {r['nblocks']} | {r['block_rank']} | {', '.join(r['target_modules'])} | "
                f"{r['params']:,} | {r['pct_of_lora']:.1f}% | {r['metric']:.4f} | {r['time']:.1f} |"
            )
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


def enumerate_candidates(
    model: nn.Module,
    budget: int | float,
    *,
    lora_rank: int = 8,
    nblocks: Sequence[int] = (1, 2, 4, 8, 16),
    block_ranks: Sequence[int] = (1, 2, 4, 8),
    target_sets: Sequence[Sequence[str]] | None = None,
) -> list[Candidate]:
    """Every (nblocks, block_rank, target set) that is valid for all targeted layers and fits the budget.

    ``budget``: an int is an absolute number of trainable parameters; a float is a fraction of LoRA at
    rank ``lora_rank`` on the same targets (``0.5`` = half of LoRA r=8's count). Sorted by params,
    largest first.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"budget must be an int (parameters) or a float (fraction of LoRA), got {budget!r}")
    if budget <= 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    if lora_rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {lora_rank}")
    shapes = linear_modules(model)
    sets = [tuple(s) for s in target_sets] if target_sets is not None else default_target_sets(model)
    found = []
    for targets, k, r in itertools.product(sets, nblocks, block_ranks):
        layers = _targeted(shapes, targets)
        try:
            for i, o in layers:
                monarch_shapes(i, o, k, r)
        except ValueError:
            continue  # the block rank is too large for some layer at this k
        params = sum(monarch_param_count(i, o, k, r) for i, o in layers)
        lora = sum(lora_rank * (i + o) for i, o in layers)
        limit = budget if isinstance(budget, int) else budget * lora
        if params <= limit:
            found.append(Candidate(k, r, targets, params, lora))
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
    nblocks: Sequence[int] = (1, 2, 4, 8, 16),
    block_ranks: Sequence[int] = (1, 2, 4, 8),
    target_sets: Sequence[Sequence[str]] | None = None,
    max_candidates: int | None = 8,
    steps: int = 50,
    lr: float = 1e-3,
    batch_size: int = 8,
    output_dir: str | Path = "more-search",
    metric_fn: Callable[[nn.Module], float] | None = None,
    metric_name: str | None = None,
    higher_is_better: bool | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SearchTable:
    """Train each feasible MoRe configuration briefly on ``train`` and rank them on ``val``.

    ``model`` is the base model (adapters are injected, trained and removed again, so it is left as
    it was). ``train`` / ``val`` are datasets as ``finetune_adapter`` takes them. The metric is the
    validation loss (lower is better) unless ``metric_fn(peft_model) -> float`` is given (higher is
    better by default, e.g. exact match). Results are appended to ``output_dir/results.jsonl``, so a
    re-run skips candidates that are already done.
    """
    from mad_models.training.finetune import dataset_metrics, finetune_adapter
    from mad_models.training.loop import TrainArgs

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    cands = enumerate_candidates(
        model, budget, lora_rank=lora_rank, nblocks=nblocks, block_ranks=block_ranks, target_sets=target_sets
    )
    if not cands:
        raise ValueError(
            f"no MoRe configuration fits the budget {budget!r} (smallest possible needs nblocks/block_rank "
            "combinations that divide the layers; raise the budget or add nblocks / block_ranks values)"
        )
    if max_candidates is not None:
        cands = cands[:max_candidates]
    if higher_is_better is None:
        higher_is_better = metric_fn is not None
    metric_name = metric_name or ("metric" if metric_fn is not None else "eval_loss")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    # rows are reused only for the same candidate trained the same way
    run = {"steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed, "metric_name": metric_name}
    run["data"] = _fingerprint(model, train, val)  # the same model and data, too
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            if row.get("run") == run:
                done[row["key"]] = row
    rows = []
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for cand in cands:
        if cand.key() in done:
            rows.append(done[cand.key()])
            continue
        torch.manual_seed(seed)
        cfg = MoReConfig(
            nblocks=cand.nblocks, block_rank=cand.block_rank, target_modules=list(cand.target_modules)
        )
        pm = peft.get_peft_model(model, cfg)
        trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
        t0 = time.perf_counter()
        try:
            finetune_adapter(
                pm,
                train,
                TrainArgs(
                    str(out / cand.key()),
                    max_steps=steps,
                    lr=lr,
                    batch_size=batch_size,
                    seed=seed,
                    save_every=steps,
                    log_every=max(1, steps // 5),
                    keep_checkpoints=1,
                    resume=False,
                    progress=progress,
                    save_final=False,
                ),
            )
            elapsed = time.perf_counter() - t0
            if metric_fn is not None:
                value = float(metric_fn(pm))
            else:
                value = dataset_metrics(pm, val, batch_size)["loss"]
        finally:
            pm.unload()  # removes the adapter layers, leaving the base model's own modules
            for n, p in model.named_parameters():
                p.requires_grad_(flags[n])
        row = {
            "key": cand.key(),
            **{k: v for k, v in asdict(cand).items() if k != "lora_params"},
            "target_modules": list(cand.target_modules),
            "trainable_params": trainable,
            "pct_of_lora": cand.pct_of_lora,
            "metric": value,
            "time": elapsed,
            "run": run,
        }
        with results_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
    rows.sort(key=lambda r: -r["metric"] if higher_is_better else r["metric"])
    return SearchTable(rows=rows, metric=metric_name, higher_is_better=higher_is_better, lora_rank=lora_rank)
