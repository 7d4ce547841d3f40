"""MAD skills: what each task asks, chance and no-learning baselines, token-id presets, side-by-side views.

Example:
    >>> x, y = make_task("in_context_recall", split="test", num_examples=64)  # doctest: +SKIP
    >>> mad_baselines("in_context_recall", x, y)["chance"]  # doctest: +SKIP
    0.125
"""

from __future__ import annotations

import html
from typing import Any

IGNORE = -100
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
