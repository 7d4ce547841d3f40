"""HTML and table renderings for the app (no plotting library needed)."""

from __future__ import annotations

import html
from typing import Any

from mad_models.hybrid.cost import flatten_report

IGNORE = -100


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


def cost_rows(cost: Any) -> list[dict[str, Any]]:
    """A hybrid cost report (dict, or object with to_dict) as table rows."""
    d = cost.to_dict() if hasattr(cost, "to_dict") else dict(cost)
    return [{"item": k, "value": _fmt(v)} for k, v in flatten_report(d).items()]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
