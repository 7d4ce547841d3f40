"""The Adapter sizes tab."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app_backend import formatting as fmt
from app_backend.model_info import cards_md
from app_backend.render import styled
from app_backend.tabs.sizes import grouped_bars_html
from app_backend.ui.common import TabContext, errors_in_place, status_line

TOTALS_COLUMNS = ["adapter", "method", "trainable params", "size on disk", "% of base"]


def build(ctx: TabContext) -> None:
    """Lay out the Adapter sizes tab inside the open ``gr.Blocks`` and wire its events."""
    svc, reg, on_models = ctx.svc, ctx.registry, ctx.on_models
    with gr.Tab("Adapter sizes", id="adapters"):
        gr.Markdown(
            "Exact counts from `mad_models.more.adapter_report`: trainable parameters, size of "
            "`adapter_model.safetensors`, % of the base, and the LoRA rank with the same count."
        )
        sizes_btn = gr.Button("Compute adapter sizes", elem_id="run-sizes")
        status = status_line("sizes-status")
        totals = gr.Dataframe(
            pd.DataFrame(columns=TOTALS_COLUMNS),
            label="Per adapter",
            interactive=False,
            elem_id="sizes-totals",
        )
        chart = gr.HTML(elem_id="sizes-chart", label="Trainable parameters per module type")
        by_type = gr.Dataframe(
            pd.DataFrame(columns=["module type"]),
            label="Trainable parameters per module type (side by side)",
            interactive=False,
            elem_id="sizes-by-type",
        )
        with gr.Accordion("Per-layer breakdown", open=False):
            per_layer = gr.Dataframe(
                pd.DataFrame(columns=["layer", "module types"]),
                label="Trainable parameters per layer",
                interactive=False,
                elem_id="sizes-per-layer",
            )
        with gr.Accordion("What each adapter is", open=True):
            adapters = reg.adapters()
            gr.Markdown(
                cards_md(adapters, reg.root) if adapters else "No adapters registered.", elem_id="sizes-cards"
            )

        @errors_in_place(
            pd.DataFrame(columns=TOTALS_COLUMNS),
            "",
            pd.DataFrame(columns=["module type"]),
            pd.DataFrame(columns=["layer", "module types"]),
        )
        def adapter_sizes(progress=gr.Progress()):  # noqa: B008  (gradio injects progress)
            d = svc.adapter_sizes(progress)
            shown = []
            for r in d["totals"]:  # the human-readable size next to the exact byte count
                row = {}
                for k, v in r.items():
                    if k == "bytes on disk":
                        row["size on disk"] = fmt.size(v)
                    row[k] = v
                shown.append(row)
            table = styled(
                shown,
                {
                    "% of base": lambda v: fmt.percent(v),
                    "LoRA rank with same count": lambda v: f"{v:g}",
                },
            )
            return (
                f"{len(d['totals'])} adapters, exact counts.",
                table,
                grouped_bars_html(d["by_module_type"], d["adapters"]),
                styled(d["by_module_type"]),
                styled(d["per_layer"]),
            )

        sizes_btn.click(
            adapter_sizes,
            None,
            [status, totals, chart, by_type, per_layer],
            api_name="adapter_sizes",
            show_progress_on=[status],
            **on_models,
        )
