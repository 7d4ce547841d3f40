"""The Adapter sizes tab: each adapter's exact report (:func:`adapter_sizes`), a grouped bar chart (SVG, no
plotting library) and a per-layer breakdown.

Example:
    >>> svg = grouped_bars_html([{"module type": "q_proj", "A": 10, "B": 20}], ["A", "B"])
    >>> "module type" in svg and "trainable parameters" in svg
    True
"""

from __future__ import annotations

import copy
import html
import math
import re
from typing import TYPE_CHECKING, Any

from app_backend import formatting as fmt
from app_backend.cache import ProgressFn
from app_backend.registry import AppInputError, IncompatibleModelError
from app_backend.runtime import BUILD_LOCK, import_model_stack

if TYPE_CHECKING:
    from app_backend.service import AppService

PALETTE = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777"]
LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def layer_of(module_name: str) -> int | None:
    """The layer index in a module path ('model.layers.3.self_attn.q_proj' -> 3), None if it has none."""
    m = LAYER.search(module_name)
    return int(m.group(1)) if m else None


def per_layer_rows(modules_by_adapter: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per layer: its adapted module types and each adapter's trainable params in it."""
    names = list(modules_by_adapter)
    layers: dict[Any, dict[str, Any]] = {}
    for n, modules in modules_by_adapter.items():
        for m in modules:
            layer = layer_of(m["name"])
            key = layer if layer is not None else "other"
            row = layers.setdefault(key, {"layer": key, "module types": set(), **dict.fromkeys(names, 0)})
            row["module types"].add(m["type"])
            row[n] += int(m["params"])
    ordered = sorted(layers.values(), key=lambda r: (isinstance(r["layer"], str), r["layer"]))
    for r in ordered:
        r["module types"] = ", ".join(sorted(r["module types"]))
        r["layer"] = str(r["layer"])
    return ordered


def _nice_step(top: float, ticks: int = 5) -> float:
    raw = top / ticks
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def grouped_bars_html(
    by_type: list[dict[str, Any]],
    adapters: list[str],
    x_title: str = "module type",
    y_title: str = "trainable parameters",
) -> str:
    """Grouped bars: x = module type, one coloured bar per adapter, axis titles, a legend that wraps."""
    if not by_type or not adapters:
        return "<p>No adapters to draw.</p>"
    w, h, left, right, top, bottom = 900, 340, 90, 20, 20, 60
    plot_w, plot_h = w - left - right, h - top - bottom
    peak = max((int(r.get(a, 0)) for r in by_type for a in adapters), default=0) or 1
    step = _nice_step(peak)
    y_max = step * math.ceil(peak / step)
    parts = [
        # never narrower than 720 px (the text stays >= 11 px): a phone scrolls the chart sideways
        f"<svg class='sizes-chart' viewBox='0 0 {w} {h}' width='100%' role='img' "
        f"aria-label='{html.escape(y_title)} per {html.escape(x_title)}' "
        f"style='max-width:{w}px;min-width:720px;font-size:14px'>"
    ]
    for i in range(int(round(y_max / step)) + 1):  # y grid and tick labels
        v = i * step
        y = top + plot_h - plot_h * v / y_max
        parts.append(f"<line x1='{left}' x2='{w - right}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e5e7eb'/>")
        parts.append(
            f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end' fill='currentColor'>"
            f"{fmt.count(v)}</text>"
        )
    group_w = plot_w / len(by_type)
    bar_w = group_w * 0.8 / len(adapters)
    for g, row in enumerate(by_type):
        x0 = left + g * group_w + group_w * 0.1
        for a_i, a in enumerate(adapters):
            v = int(row.get(a, 0))
            bh = plot_h * v / y_max
            x, y = x0 + a_i * bar_w, top + plot_h - bh
            parts.append(
                f"<rect class='bar' data-type='{html.escape(str(row['module type']))}' "
                f"data-adapter='{html.escape(a)}' data-value='{v}' x='{x:.1f}' y='{y:.1f}' "
                f"width='{max(bar_w - 2, 1):.1f}' height='{bh:.1f}' fill='{PALETTE[a_i % len(PALETTE)]}'>"
                f"<title>{html.escape(a)} · {html.escape(str(row['module type']))}: "
                f"{fmt.count(v)}</title></rect>"
            )
        parts.append(
            f"<text class='x-tick' x='{left + (g + 0.5) * group_w:.1f}' y='{top + plot_h + 18}' "
            f"text-anchor='middle' fill='currentColor'>{html.escape(str(row['module type']))}</text>"
        )
    parts.append(
        f"<line x1='{left}' x2='{w - right}' y1='{top + plot_h}' y2='{top + plot_h}' stroke='currentColor'/>"
    )
    parts.append(
        f"<text class='x-title' x='{left + plot_w / 2:.1f}' y='{h - 12}' text-anchor='middle' "
        f"font-weight='bold' fill='currentColor'>{html.escape(x_title)}</text>"
    )
    parts.append(
        f"<text class='y-title' transform='translate(16 {top + plot_h / 2:.1f}) rotate(-90)' "
        f"text-anchor='middle' font-weight='bold' fill='currentColor'>{html.escape(y_title)}</text>"
    )
    parts.append("</svg>")
    legend = "".join(
        "<span class='legend-item' "
        "style='display:inline-flex;align-items:center;gap:6px;margin:2px 14px 2px 0'>"
        f"<span style='width:12px;height:12px;background:{PALETTE[i % len(PALETTE)]};display:inline-block'>"
        f"</span>{html.escape(a)}</span>"
        for i, a in enumerate(adapters)
    )
    return (
        "<div class='sizes-figure' style='overflow-x:auto'>"
        + "".join(parts)
        + f"<div class='sizes-legend' style='display:flex;flex-wrap:wrap;padding-left:{left}px'>"
        + legend
        + "</div>"
        + "</div>"
    )


def adapter_report(svc: AppService, name: str, progress: ProgressFn | None = None) -> Any:
    """The exact ``mad_models.more.AdapterReport`` of a registered adapter (computed once)."""
    with svc.lock:
        if name in svc.reports:
            return svc.reports[name]
    import_model_stack()
    from mad_models.loading import load_adapter
    from mad_models.more import adapter_report

    entry = svc.registry[name]
    if entry.kind != "adapter":
        raise AppInputError(f"{name!r} is not an adapter.")
    base = svc.get(entry.base, progress)
    try:  # checked against its tensors and the base before PEFT builds it
        with BUILD_LOCK:
            peft_model, _ = load_adapter(entry.path, copy.deepcopy(base.model))
    except (RuntimeError, ValueError, KeyError) as e:
        raise IncompatibleModelError(f"{name}: the adapter does not fit base {entry.base!r}: {e}") from e
    report = adapter_report(peft_model)
    with svc.lock:
        svc.reports[name] = report
    return report


def adapter_sizes(svc: AppService, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Totals per adapter, params per module type and per layer side by side, long-form bar rows.

    ``{"totals", "by_module_type", "per_layer", "bars", "adapters"}``; numbers are exact ints.
    """
    names = [e.name for e in svc.registry.adapters()] + [
        n for n in svc.reports if n not in svc.registry.entries
    ]
    if not names:
        raise AppInputError(svc.registry.problem or "No adapters are registered in the assets.")
    totals, by_type, bars, modules = [], {}, [], {}
    for n in names:
        rep = adapter_report(svc, n, progress)
        modules[n] = rep.modules
        totals.append(
            {
                "adapter": n,
                "method": fmt.method_name(rep.peft_type),
                "trainable params": rep.trainable_params,
                "bytes on disk": rep.bytes_on_disk,
                "% of base": round(rep.percent_of_base, 4),
                "LoRA rank with same count": round(rep.lora_rank_equivalent, 2),
                "base params": rep.base_params,
            }
        )
        for m in rep.modules:
            by_type.setdefault(m["type"], {})[n] = by_type.setdefault(m["type"], {}).get(n, 0) + m["params"]
    side = [{"module type": t, **{n: per.get(n, 0) for n in names}} for t, per in by_type.items()]
    for t, per in by_type.items():
        for n in names:
            bars.append(
                {"module type": t, "adapter": n, "bar": f"{t} · {n}", "trainable params": per.get(n, 0)}
            )
    return {
        "totals": totals,
        "by_module_type": side,
        "per_layer": per_layer_rows(modules),
        "bars": bars,
        "adapters": names,
    }
