"""The Adapter sizes tab."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app_backend.ui.common import TabContext, ui_errors


def build(ctx: TabContext) -> None:
    """Lay out the Adapter sizes tab inside the open ``gr.Blocks`` and wire its events."""
    svc, on_models = ctx.svc, ctx.on_models
    with gr.Tab("Adapter sizes", id="adapters"):
        gr.Markdown(
            "Exact counts from `mad_models.more.adapter_report`: trainable parameters, bytes of "
            "`adapter_model.safetensors`, % of the base, and the LoRA rank with the same count."
        )
        sizes_btn = gr.Button("Compute adapter sizes", elem_id="run-sizes")
        totals = gr.Dataframe(label="Per adapter", interactive=False, elem_id="sizes-totals")
        by_type = gr.Dataframe(label="Trainable params per module type (side by side)", interactive=False)
        bars = gr.BarPlot(
            x="bar",
            y="trainable params",
            color="adapter",
            label="Trainable params per module type",
            x_label_angle=-30,
            height=320,
        )

        @ui_errors
        def adapter_sizes(progress=gr.Progress()):  # noqa: B008  (gradio injects progress)
            d = svc.adapter_sizes(progress)
            return (
                pd.DataFrame(d["totals"]),
                pd.DataFrame(d["by_module_type"]),
                pd.DataFrame(d["bars"]),
            )

        sizes_btn.click(
            adapter_sizes,
            None,
            [totals, by_type, bars],
            api_name="adapter_sizes",
            **on_models,
        )
