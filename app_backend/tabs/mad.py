"""The MAD skills tab: each model's accuracy on a fresh MAD test batch (:func:`mad_skills`), what each task
asks, chance and no-learning baselines, token-id presets, side-by-side views.

Example:
    >>> x, y = make_task("in_context_recall", split="test", num_examples=64)  # doctest: +SKIP
    >>> mad_baselines("in_context_recall", x, y)["chance"]  # doctest: +SKIP
    0.125
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app_backend.cache import ProgressFn
from app_backend.registry import AppInputError, IncompatibleModelError

if TYPE_CHECKING:
    from app_backend.service import AppService

IGNORE = -100
MAX_MAD_EXAMPLES = 512  # sequences per request
# the MAD benchmark's report (bench/reproduce_mad.py writes it beside bench/results/mad.md)
BENCH_JSON = Path(__file__).resolve().parents[2] / "bench" / "results" / "mad.json"
SHORT_TASKS = {
    "in_context_recall": "recall",
    "fuzzy_recall": "fuzzy",
    "noisy_recall": "noisy",
    "selective_copying": "copying",
    "compression": "compression",
    "memorization": "memorization",
}
PRESET_SEED = 12345 + 999  # the MAD test seed plus a fixed offset: presets never come from training data

TASK_DESCRIPTIONS = {
    "in_context_recall": "Key-value pairs appear in the sequence; when a key comes back, predict the value "
    "it was paired with (associative recall, a fresh key→value map in every sequence).",
    "fuzzy_recall": "Recall with motifs: keys and values are runs of several tokens; after a key motif, "
    "predict its value motif.",
    "noisy_recall": "In-context recall with noise tokens scattered between the pairs; the model must "
    "ignore the noise and still recall the value of a repeated key.",
    "selective_copying": "Content tokens scattered among blanks; after the copy token, reproduce the "
    "content tokens in order and skip the blanks.",
    "compression": "Read a sequence, then after the compress token reproduce it in order at the blank "
    "positions: the sequence must fit in the model's state.",
    "memorization": "A fixed key→value map, the same in every sequence and never shown in the input: "
    "the values must be stored in the weights (facts).",
}


def task_description(task: str) -> str:
    """One paragraph: what ``task`` asks of a model, and what is scored."""
    text = TASK_DESCRIPTIONS.get(task, "")
    return f"**{task.replace('_', ' ')}**: {text} Scored only at the marked positions."


def mad_baselines(
    task: str, inputs: Any, targets: Any, settings: dict[str, Any] | None = None
) -> dict[str, float]:
    """Chance and the no-learning heuristic's accuracy on one batch, scored as the models are (micro).

    Both come from ``mad_models.mad.baselines``: chance = 1 / (tokens that can be a target), the
    heuristic predicts the candidate seen most often so far in the sequence. Neither learns anything,
    so a model at or below the heuristic has learned nothing about the task.
    """
    from mad_models.mad import chance_accuracy, heuristic_accuracy

    settings = settings or {}
    return {
        "chance": chance_accuracy(task, **settings),
        "heuristic": heuristic_accuracy(task, inputs, targets, **settings)["micro"],
    }


def preset(task: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """A token-id prompt for ``task``: one test sequence cut right after its first scored position.

    ``{"prompt": "3 9 4 ...", "next": the target there}``, drawn by ``mad_models.mad.make_task``.
    """
    from mad_models.mad import make_task

    x, y = make_task(task, split="test", seed=PRESET_SEED, num_examples=1, **(settings or {}))
    scored = (y[0] != IGNORE).nonzero().flatten().tolist()
    cut = scored[0] + 1 if scored else x.shape[1]
    return {
        "prompt": " ".join(str(i) for i in x[0, :cut].tolist()),
        "next": int(y[0, cut - 1]) if scored else None,
    }


def presets(task_settings: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``preset`` for each task in ``{task: settings}`` (the settings a model was trained with)."""
    return {task: preset(task, settings) for task, settings in task_settings.items()}


def side_by_side_html(examples: dict[str, dict[str, Any]]) -> str:
    """One sequence, every model's prediction at each scored position: position, input, target, models."""
    if not examples:
        return ""
    names = list(examples)
    first = examples[names[0]]
    head = "".join(f"<th style='padding:3px 8px'>{html.escape(n)}</th>" for n in names)
    rows = []
    for pos, (tok, tgt) in enumerate(zip(first["input_ids"], first["targets"], strict=True)):
        if tgt == IGNORE:
            continue
        cells = []
        for n in names:
            p = examples[n]["predictions"][pos]
            ok = p == tgt
            cells.append(
                f"<td class='{'mad-right' if ok else 'mad-wrong'}' style='padding:3px 8px;text-align:center;"
                f"background:{'#bbf7d0' if ok else '#fecaca'}'>{'✓' if ok else '✗'} {p}</td>"
            )
        rows.append(
            f"<tr><td style='padding:3px 8px'>{pos}</td><td style='padding:3px 8px'>{tok}</td>"
            f"<td style='padding:3px 8px'><b>{tgt}</b></td>{''.join(cells)}</tr>"
        )
    right = {
        n: sum(1 for t, p in zip(e["targets"], e["predictions"], strict=True) if t != IGNORE and t == p)
        for n, e in examples.items()
    }
    total = sum(1 for t in first["targets"] if t != IGNORE)
    foot = "".join(
        f"<td style='padding:3px 8px;text-align:center'><b>{right[n]}/{total}</b></td>" for n in names
    )
    return (
        "<table class='mad-side-by-side' style='border-collapse:collapse;font-family:monospace'>"
        "<tr><th style='padding:3px 8px'>position</th><th style='padding:3px 8px'>input</th>"
        f"<th style='padding:3px 8px'>target</th>{head}</tr>{''.join(rows)}"
        f"<tr><td colspan='3' style='padding:3px 8px'>right</td>{foot}</tr></table>"
    )


def mad_names(svc: AppService) -> list[str]:
    return svc.registry.names(group="mad")


def mad_tasks(svc: AppService) -> list[str]:
    """The MAD tasks the registered MAD models were trained on (``meta.mad_tasks``), in MAD's order;
    every task when no entry says."""
    from mad_models.mad import TASKS

    listed = [svc.registry[n].meta.get("mad_tasks") for n in mad_names(svc)]
    if not listed or any(t is None for t in listed):
        return list(TASKS)
    return [t for t in TASKS if any(t in tasks for tasks in listed)]


def mad_skills(
    svc: AppService,
    task: str,
    names: list[str],
    num_examples: int = 64,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Accuracy of each model on a fresh test batch of one MAD task, chance and the no-learning
    heuristic next to them, and sequence 0 with every model's predictions (``examples``).

    The batch is the test split drawn with seed ``12345 + seed`` (seed 0: the standard test set)."""
    import torch

    from mad_models.mad import TASKS, make_task, scored_counts, task_settings
    from mad_models.mad.tasks import TEST_SEED

    if task not in TASKS:
        raise AppInputError(f"Unknown MAD task {task!r}; choose one of {', '.join(TASKS)}.")
    names = [n for n in (names or []) if n]
    if not names:
        raise AppInputError("Pick at least one model.")
    try:
        num_examples, seed = int(num_examples), int(seed)
    except (TypeError, ValueError):
        raise AppInputError("The number of sequences and the seed must be whole numbers.") from None
    if not 1 <= num_examples <= MAX_MAD_EXAMPLES:
        raise AppInputError(f"The number of sequences must be in 1..{MAX_MAD_EXAMPLES}, got {num_examples}.")
    if seed < 0:
        raise AppInputError(f"The seed must be >= 0, got {seed}.")
    rows, example, examples = [], None, {}
    data_by_settings: dict[str, tuple] = {}
    settings_by_key: dict[str, dict] = {}
    for n in names:
        entry = svc.registry[n]
        trained_on = entry.meta.get("mad_tasks")
        if trained_on is not None and task not in trained_on:
            # e.g. compression: MAD scores it through an auto-encoder's decoder, which a model not
            # trained on it lacks; a plain LM's next-token score there would mean nothing
            raise IncompatibleModelError(
                f"{n} was not trained on {task}; its MAD tasks are {', '.join(trained_on) or 'none'}."
            )
        settings = (trained_on or {}).get(task, {})
        key = repr(sorted(settings.items()))
        settings_by_key[key] = settings
        if key not in data_by_settings:
            # the test split at the MAD test seed + the UI seed: seed 0 is the standard test set, and
            # every split has its own random stream, so no seed repeats training data
            data_by_settings[key] = make_task(
                task, split="test", seed=TEST_SEED + seed, num_examples=num_examples, **settings
            )
        x, y = data_by_settings[key]
        model = svc.get(n, progress).model
        vocab = model.config.get_text_config().vocab_size
        need = task_settings(task, **settings)["vocab_size"]
        if need > vocab:
            raise IncompatibleModelError(
                f"{n} has a vocabulary of {vocab} tokens; task {task} with these settings needs {need}."
            )
        with torch.inference_mode():
            logits = torch.cat([model(input_ids=x[i : i + 64]).logits.float() for i in range(0, len(x), 64)])
        correct, total = scored_counts(logits, y)
        rows.append(
            {
                "model": n,
                "accuracy": correct / total,
                "correct": correct,
                "scored": total,
                "seq_len": x.shape[1],
            }
        )
        examples[n] = {
            "model": n,
            "input_ids": x[0].tolist(),
            "targets": y[0].tolist(),
            "predictions": logits[0].argmax(-1).tolist(),
            "batch": key,
        }
        if example is None:  # the first model picked is the one rendered by default
            example = examples[n]
    # chance and the no-learning heuristic on the batch the first model saw, scored the same way
    x, y = data_by_settings[example["batch"]]
    base = mad_baselines(task, x, y, settings_by_key[example["batch"]])
    scored = int((y != -100).sum())
    rows.append(
        {
            "model": "no-learning heuristic (most frequent candidate so far)",
            "accuracy": base["heuristic"],
            "correct": round(base["heuristic"] * scored),
            "scored": scored,
            "seq_len": x.shape[1],
        }
    )
    rows.append(
        {
            "model": "chance (1 / possible targets)",
            "accuracy": base["chance"],
            "correct": None,
            "scored": scored,
            "seq_len": x.shape[1],
        }
    )
    return {
        "task": task,
        "seed": seed,
        "rows": rows,
        "example": example,
        "examples": examples,
        "baselines": base,
    }


def mad_example_html(example: dict[str, Any]) -> str:
    """One sequence: inputs in grey; at scored positions the prediction, green if right, red if wrong."""
    spans = []
    for tok, tgt, pred in zip(example["input_ids"], example["targets"], example["predictions"], strict=True):
        spans.append(f"<span style='color:#888'>{tok}</span>")
        if tgt == IGNORE:
            continue
        if pred == tgt:
            spans.append(
                f"<span class='mad-right' style='background:#bbf7d0;padding:0 3px' title='target {tgt}'>"
                f"✓{pred}</span>"
            )
        else:
            spans.append(
                f"<span class='mad-wrong' style='background:#fecaca;padding:0 3px' "
                f"title='predicted {pred}, target {tgt}'>✗{pred}→{tgt}</span>"
            )
    right = sum(
        1 for t, p in zip(example["targets"], example["predictions"], strict=True) if t != IGNORE and t == p
    )
    scored = sum(1 for t in example["targets"] if t != IGNORE)
    return (
        f"<p><b>{html.escape(example['model'])}</b> on sequence 0: {right}/{scored} scored positions right "
        "(✓ prediction right, ✗ prediction→target wrong; grey = input tokens).</p>"
        f"<div style='font-family:monospace;line-height:1.9;word-wrap:break-word'>{' '.join(spans)}</div>"
    )


def bench_table_md(path: Path = BENCH_JSON) -> str:
    """The MAD benchmark's rows as Markdown: test accuracy per task (mean over seeds), the mean over tasks,
    parameters and FLOPs per token, and the settings and command that made them (``bench/results/mad.json``).

    Example:
        >>> print(bench_table_md())  # doctest: +SKIP
    """
    if not path.is_file():
        return f"No MAD benchmark report ({path.name}) in this copy of the app: run `bench/reproduce_mad.py`."
    d = json.loads(path.read_text())
    s, tasks = d["setting"], list(d["setting"]["tasks"])
    first = tasks[0]

    def mean(vals):
        return "-" if not vals else f"{sum(vals) / len(vals):.3f}"

    head = ["model", *(SHORT_TASKS.get(t, t) + ("*" if t not in d["mean_over"] else "") for t in tasks)]
    lines = [
        "| " + " | ".join([*head, "mean", "params", "FLOPs/token"]) + " |",
        "|---|" + "---:|" * (len(tasks) + 3),
    ]
    for name in ("chance", "heuristic"):
        vals = [d["baselines"][t][name] for t in tasks]
        avg = mean([d["baselines"][t][name] for t in d["mean_over"]])
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {avg} | 0 | 0 |")
    for row in d["rows"].values():
        cells = [mean(row["tasks"].get(t, {}).get("test")) for t in tasks]
        c = row["tasks"].get(first)
        cost = f"{c['params']:,} | {c['flops_per_token'] / 1e3:,.0f}k" if c else "- | -"
        lines.append(
            f"| {row['label']} | " + " | ".join(cells) + f" | {mean(row['mean_over_tasks'])} | {cost} |"
        )
    steps = ", ".join(f"{SHORT_TASKS.get(t, t)} {s['steps'][t]}" for t in tasks)
    settings = (
        f"Setting `{s['name']}`: width {s['width']}, {s['blocks']} blocks (1 layer per component per block), "
        f"{s['batch_tokens']} tokens per batch, steps {steps}; seeds {s['seeds']}; lr from {s['lr_grid']}, "
        f"the search's arch lr from {s['arch_lr_grid']} (both chosen on the validation split); "
        f"task settings `{json.dumps(s['tasks'])}`. "
        f"Params and FLOPs/token at {SHORT_TASKS.get(first, first)}."
    )
    left = [f"{SHORT_TASKS.get(t, t)}*: {why}" for t, why in s.get("mean_leaves_out", {}).items()]
    return "\n\n".join(
        [
            f"Test accuracy, mean over seeds, from `{d.get('command', 'bench/reproduce_mad.py')}` "
            f"({d['runs']} runs recorded).",
            "\n".join(lines),
            settings,
            *(["Not in the mean: " + "; ".join(left)] if left else []),
            d.get("paragraph", ""),
        ]
    )
