"""The Hybrid mixtures tab: mixture weights and what pruning keeps (:func:`mixture`), cost before/after
pruning, accuracy against the prune threshold, pruned vs full outputs, and a text hybrid's continuation
next to its components' (:func:`text_next_to_components`).

Example:
    >>> cost_diff_rows({"params / total": 10}, {"params / total": 4})
    [{'item': 'params / total', 'before': 10, 'after': 4, 'Δ': -6, 'Δ %': -60.0}]
"""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any

from app_backend.cache import ProgressFn
from app_backend.registry import AppInputError, IncompatibleModelError
from app_backend.runtime import BUILD_LOCK, import_model_stack

if TYPE_CHECKING:
    from app_backend.service import AppService

THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CURVE_SEQUENCES = 16  # sequences per MAD task in the accuracy-vs-threshold batch
CURVE_SEED = 12345 + 777  # the MAD test seed plus a fixed offset: never a training seed, same every time


def _flat(report: Any) -> dict[str, Any]:
    import_model_stack()
    from mad_models.hybrid.cost import flatten_report

    return flatten_report(report.to_dict() if hasattr(report, "to_dict") else dict(report))


def cost_diff_rows(before: Any, after: Any) -> list[dict[str, Any]]:
    """The cost report of the full and the pruned hybrid side by side, with the change (None = absent)."""
    b, a = _flat(before), _flat(after)
    rows = []
    for item in list(b) + [k for k in a if k not in b]:
        vb, va = b.get(item), a.get(item)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (vb, va))
        delta = (va - vb) if numeric else None
        pct = (100.0 * delta / vb) if numeric and vb else None
        label = item + (" (already inside the components' figures)" if item.endswith("/ heads") else "")
        rows.append({"item": label, "before": vb, "after": va, "Δ": delta, "Δ %": pct})
    return rows


class HybridLab:
    """Per-app state of the Hybrid tab: accuracy curves computed once per hybrid (they never change)."""

    def __init__(self, svc: Any):
        self.svc = svc
        self._curves: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _hybrid(self, name: str, progress=None) -> Any:
        if not name:
            raise AppInputError(
                self.svc.registry.problem or "No hybrid is registered; build the assets or load one."
            )
        model = self.svc.get(name, progress).model
        if getattr(model.config, "model_type", None) != "manticore":
            raise IncompatibleModelError(f"{name!r} is not a Manticore hybrid.")
        return model

    def task_settings(self, name: str) -> dict[str, dict[str, Any]]:
        """The MAD tasks (and their settings) this hybrid was trained on, from its registry entry."""
        entry = self.svc.registry.entries.get(name)
        tasks = (entry.meta or {}).get("mad_tasks") if entry is not None else None
        if not tasks:
            raise AppInputError(
                f"{name!r} names no MAD tasks in its registry entry (meta.mad_tasks), so there is no "
                "test batch to score pruning on."
            )
        return tasks

    def accuracy_curve(
        self, name: str, at: float | None = None, progress=None, compute: bool = True
    ) -> dict[str, Any] | None:
        """Accuracy of the hybrid pruned at each of ``THRESHOLDS`` (and at ``at``, the slider's value) on
        a fixed seeded MAD test batch.

        Returns ``{"tasks", "rows": [{"threshold", "slider", "kept pairs", <task>: acc, ..., "mean"}],
        "sequences", "seed"}``. Thresholds that keep the same (block, component) pairs share one
        evaluation, kept for the life of the app. ``compute=False``: None unless this hybrid was scored.
        """
        import torch

        import_model_stack()
        from mad_models.hybrid.prune import choose_blocks
        from mad_models.mad import scored_counts

        with self._lock:
            state = self._curves.get(name)
            if state is None:
                if not compute:
                    return None
                state = self._curves[name] = self._curve_state(name, progress)
            grid = set(THRESHOLDS) | ({round(float(at), 6)} if at is not None else set())
            rows, model = [], None
            for t in sorted(grid):
                kept = choose_blocks(state["weights"], state["allowed"], t)
                key = repr(kept)
                if key not in state["by_structure"]:
                    model = model or self._hybrid(name, progress)
                    with BUILD_LOCK:  # prune builds a model
                        pruned = model.prune(threshold=t).eval()
                    accs = {}
                    with torch.inference_mode():
                        for task, (x, y) in state["batches"].items():
                            correct, total = scored_counts(pruned(input_ids=x).logits.float(), y)
                            accs[task] = correct / total
                    state["by_structure"][key] = accs
                accs = state["by_structure"][key]
                rows.append(
                    {
                        "threshold": t,
                        "slider": at is not None and abs(t - float(at)) < 1e-6,
                        "kept pairs": sum(map(len, kept)),
                        **accs,
                        "mean": sum(accs.values()) / len(accs),
                    }
                )
        return {
            "tasks": list(state["batches"]),
            "rows": rows,
            "sequences": CURVE_SEQUENCES,
            "seed": CURVE_SEED,
        }

    def _curve_state(self, name: str, progress=None) -> dict[str, Any]:
        from mad_models.mad import make_task

        model = self._hybrid(name, progress)
        tasks = self.task_settings(name)
        vocab = model.config.get_text_config().vocab_size
        batches = {}
        for task, settings in tasks.items():
            x, y = make_task(task, split="test", seed=CURVE_SEED, num_examples=CURVE_SEQUENCES, **settings)
            if int(x.max()) < vocab and int(y.max()) < vocab:
                batches[task] = (x, y)
        if not batches:
            raise IncompatibleModelError(f"{name!r}: none of its MAD tasks fits its vocabulary of {vocab}.")
        return {
            "batches": batches,
            "weights": model.mixture_weights().detach().float().cpu(),
            "allowed": model.config.kept(),
            "by_structure": {},
        }

    def pruned_vs_full(
        self, name: str, threshold: float, prompt: str, max_new_tokens: int = 16, progress=None
    ) -> dict[str, Any]:
        """Greedy outputs of the full hybrid and of it pruned at ``threshold`` on one token-id prompt."""
        from app_backend.generation import check_max_new_tokens, encode_prompt

        max_new_tokens = check_max_new_tokens(max_new_tokens)
        threshold = float(threshold)
        if not 0.0 <= threshold < 1.0:
            raise AppInputError(f"The pruning threshold must be in [0, 1), got {threshold}.")
        model = self._hybrid(name, progress)
        vocab = model.config.get_text_config().vocab_size
        ids = encode_prompt(prompt, None, vocab, chat=False)
        with BUILD_LOCK:  # prune builds a model
            pruned = model.prune(threshold=threshold).eval()
        out = {
            "full": greedy_ids(model, ids, max_new_tokens),
            "pruned": greedy_ids(pruned, ids, max_new_tokens),
        }
        same = sum(a == b for a, b in zip(out["full"], out["pruned"], strict=True))
        return {
            "prompt_ids": ids,
            "full": out["full"],
            "pruned": out["pruned"],
            "agree": same,
            "new_tokens": max_new_tokens,
            "threshold": threshold,
        }


def greedy_ids(model: Any, ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation without EOS (token-id models: every id is a token), full forward each step."""
    import torch

    seq = torch.tensor([ids])
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            nxt = model(input_ids=seq).logits[0, -1].float().argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    return seq[0, len(ids) :].tolist()


def mixture(
    svc: AppService, name: str, threshold: float = 0.25, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Mixture weights (blocks x components), the cost report, and what pruning at ``threshold`` keeps."""
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise AppInputError(f"The pruning threshold must be a number, got {threshold!r}.") from None
    if not 0.0 <= threshold < 1.0:
        raise AppInputError(f"The pruning threshold must be in [0, 1), got {threshold}.")
    model = svc.get(name, progress).model
    if getattr(model.config, "model_type", None) != "manticore":
        raise IncompatibleModelError(
            f"{name!r} is not a Manticore hybrid (model type {model.config.model_type!r})."
        )
    from mad_models.hybrid.prune import choose_blocks

    weights = model.mixture_weights().detach().float().cpu()  # (n_blocks, K)
    # the rule prune() applies, in this model's component indices (a pruned model renumbers them)
    kept = choose_blocks(weights, model.config.kept(), threshold)
    with BUILD_LOCK:  # prune builds a model
        pruned = model.prune(threshold=threshold)
    return {
        "components": component_labels(model),
        "weights": weights.tolist(),
        "cost": model.cost_report(),
        "pruned_cost": pruned.cost_report(),
        "kept": [[k in kept[b] for k in range(weights.shape[1])] for b in range(weights.shape[0])],
        "pairs_before": sum(len(b) for b in model.config.kept()),
        "threshold": threshold,
    }


def _si(x: float) -> str:
    """A large figure in thousands / millions / billions: 1234567 -> '1.23 M'."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.3g}"


def cost_summary_rows(before: dict, after: dict, pairs_before: int, pairs_after: int) -> list[dict[str, str]]:
    """The cost of the full and the pruned hybrid in a few rows: parameters, FLOPs per token, those FLOPs
    as a multiple of each component run alone, and the (block, component) pairs that run.

    The components' figures include their LM heads: nothing comes on top of them but the projectors.

    Example:
        >>> rows = cost_summary_rows(report, pruned_report, 4, 3)  # doctest: +SKIP
        >>> [r["cost"] for r in rows][:3]  # doctest: +SKIP
        ['parameters', 'FLOPs per token', '× mad/attention alone']
    """

    def change(b: float, a: float) -> str:
        return "0 %" if b == a else (f"{100.0 * (a - b) / b:+.1f} %" if b else "—")

    pb, pa = before["params"]["total"], after["params"]["total"]
    fb, fa = before["flops_per_token"]["total"], after["flops_per_token"]["total"]
    rows = [
        {"cost": "parameters", "full": f"{pb:,}", "pruned": f"{pa:,}", "change": change(pb, pa)},
        {"cost": "FLOPs per token", "full": _si(fb), "pruned": _si(fa), "change": change(fb, fa)},
    ]
    for label, alone in before["standalone"].items():
        f = alone["flops_per_token"]
        rows.append(
            {"cost": f"× {label} alone", "full": f"{fb / f:.2f}×", "pruned": f"{fa / f:.2f}×", "change": ""}
        )
    rows.append(
        {
            "cost": "(block, component) pairs run",
            "full": str(pairs_before),
            "pruned": str(pairs_after),
            "change": change(pairs_before, pairs_after),
        }
    )
    return rows


def cost_summary_html(rows: list[dict[str, str]], threshold: float) -> str:
    """The summary rows as a small table (names escaped, figures never wrapped)."""
    head = (
        "<tr><th>cost</th><th class='num'>full hybrid</th>"
        f"<th class='num'>pruned at {threshold:.2f}</th><th class='num'>change</th></tr>"
    )
    body = "".join(
        f"<tr><th class='row'>{html.escape(r['cost'])}</th><td class='num'>{html.escape(r['full'])}</td>"
        f"<td class='num'>{html.escape(r['pruned'])}</td><td class='num'>{html.escape(r['change'])}</td></tr>"
        for r in rows
    )
    note = (
        "<p class='scores-title'>FLOPs per token at a 1,024-token context; each component's figures "
        "include its LM head, and the mixed hybrid adds only its projectors.</p>"
    )
    return f"{note}<div class='table-scroll'><table class='scores cost-summary'>{head}{body}</table></div>"


def text_next_to_components(
    svc: AppService, name: str, prompt: str, max_new_tokens: int = 64, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Greedy continuations of a text prompt by a hybrid with a tokenizer and by each of its components (the
    registry entries its ``meta.components`` names), with their val bits per character when recorded.

    Returns ``{"prompt", "new_tokens", "rows": [{"model", "role", "val bits/char", "continuation"}]}``,
    the hybrid first.
    """
    from app_backend.generation import check_max_new_tokens, decode, encode_prompt, stream_generate

    max_new_tokens = check_max_new_tokens(max_new_tokens)
    entry = svc.registry.entries.get(name)
    components = list((entry.meta or {}).get("components") or []) if entry is not None else []
    if not components:
        raise AppInputError(
            f"{name!r} names no components in its registry entry (meta.components): text generation next "
            "to the components is for the text hybrids (e.g. text/hybrid)."
        )
    rows = []
    for model_name, role in [(name, "hybrid"), *((c, "component") for c in components)]:
        loaded = svc.get(model_name, progress)
        if loaded.tokenizer is None:
            raise AppInputError(f"{model_name!r} has no tokenizer: it takes token ids, not text.")
        vocab = loaded.model.config.get_text_config().vocab_size
        ids = encode_prompt(prompt, loaded.tokenizer, vocab, chat=False)
        new = list(stream_generate(loaded.model, ids, max_new_tokens))  # greedy
        meta = svc.registry.entries[model_name].meta if model_name in svc.registry.entries else {}
        rows.append(
            {
                "model": model_name,
                "role": role,
                "val bits/char": (meta or {}).get("val_bits_per_char"),
                "continuation": decode(new, loaded.tokenizer),
            }
        )
    return {"prompt": prompt, "new_tokens": max_new_tokens, "rows": rows}


def component_labels(model: Any) -> list[str]:
    """Readable names of a hybrid's components, e.g. ['0: mad/attention', '1: mad/mamba']."""
    cfg = model.config
    names = cfg.component_names or [None] * cfg.num_components
    return [f"{i}: {n or cfg.component_config(i).model_type}" for i, n in enumerate(names)]


def heatmap_html(
    weights: list[list[float]], components: list[str], kept: list[list[bool]] | None = None
) -> str:
    """Blocks (rows) by components (columns), each cell shaded by its mixture weight.

    Cells a pruned hybrid would drop are struck through, so the threshold's effect is visible.
    """
    head = "".join(f"<th style='padding:4px 10px'>{html.escape(c)}</th>" for c in components)
    rows = []
    for b, row in enumerate(weights):
        cells = []
        for k, w in enumerate(row):
            dropped = kept is not None and not kept[b][k]
            style = f"background:rgba(234,88,12,{0.1 + 0.9 * w:.3f});padding:6px 14px;text-align:center"
            text = f"{w:.3f}"
            if dropped:
                style += ";text-decoration:line-through;opacity:0.45"
            cells.append(f"<td class='mix-cell' data-block='{b}' data-comp='{k}' style='{style}'>{text}</td>")
        rows.append(f"<tr><th style='padding:4px 10px'>block {b}</th>{''.join(cells)}</tr>")
    return (
        "<table class='mixture-heatmap' style='border-collapse:collapse'>"
        f"<tr><th></th>{head}</tr>{''.join(rows)}</table>"
        "<p style='font-size:0.85em'>Shading = mixture weight; "
        "struck-through cells are pruned at this threshold.</p>"
    )
