"""The Hybrid mixtures tab."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from app_backend.registry import AppInputError
from app_backend.render import cost_rows, heatmap_html
from app_backend.ui.common import TabContext, ui_errors


def build(ctx: TabContext) -> dict[str, Any]:
    """Lay out the Hybrid mixtures tab inside the open ``gr.Blocks`` and wire its events."""
    svc, reg, on_models = ctx.svc, ctx.registry, ctx.on_models
    with gr.Tab("Hybrid mixtures", id="hybrids"):
        hybrids = svc.hybrid_names()
        with gr.Row():
            hybrid = gr.Dropdown(hybrids, value=hybrids[0] if hybrids else None, label="Hybrid")
            threshold = gr.Slider(0.0, 0.95, value=0.25, step=0.05, label="Prune threshold")
            mix_btn = gr.Button("Show", elem_id="run-mixture")
        heat = gr.HTML(elem_id="heatmap")
        weights_df = gr.Dataframe(label="Mixture weights (blocks × components)", interactive=False)
        with gr.Row():
            # long item names: give the value column room so figures are not cut off
            cost_df = gr.Dataframe(
                label="Cost report", interactive=False, column_widths=["65%", "35%"], wrap=True
            )
            pruned_df = gr.Dataframe(
                label="Cost after pruning at the threshold",
                interactive=False,
                column_widths=["65%", "35%"],
                wrap=True,
            )
        prune_md = gr.Markdown()

        @ui_errors
        def mixture(name, threshold, progress=gr.Progress()):  # noqa: B008  (gradio injects progress)
            if not name:
                raise AppInputError(reg.problem or "No hybrid is registered; build the assets or load one.")
            d = svc.mixture(name, threshold, progress)
            w = pd.DataFrame(d["weights"], columns=d["components"])
            w.insert(0, "block", list(range(len(d["weights"]))))
            kept = sum(sum(r) for r in d["kept"])
            total = sum(len(r) for r in d["kept"])
            return (
                heatmap_html(d["weights"], d["components"], d["kept"]),
                w,
                pd.DataFrame(cost_rows(d["cost"])),
                pd.DataFrame(cost_rows(d["pruned_cost"])),
                f"Pruning at {d['threshold']:.2f} keeps {kept} of {total} (block, component) pairs.",
            )

        mix_btn.click(
            mixture,
            [hybrid, threshold],
            [heat, weights_df, cost_df, pruned_df, prune_md],
            api_name="mixture",
            **on_models,
        )
    return {"hybrid": hybrid}
