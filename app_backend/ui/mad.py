"""The MAD skills tab."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app_backend.registry import AppInputError
from app_backend.render import mad_example_html
from app_backend.ui.common import TabContext, ui_errors
from mad_models.mad import TASKS as MAD_TASKS


def build(ctx: TabContext) -> None:
    """Lay out the MAD skills tab inside the open ``gr.Blocks`` and wire its events."""
    svc, on_models = ctx.svc, ctx.on_models
    with gr.Tab("MAD skills", id="mad"):
        mad_list = svc.mad_names()
        with gr.Row():
            task = gr.Dropdown(list(MAD_TASKS), value="in_context_recall", label="Task")
            mad_pick = gr.CheckboxGroup(mad_list, value=mad_list[:4], label="Models")
            n_seq = gr.Number(64, label="Sequences in the fresh test batch", precision=0)
            mad_seed = gr.Number(1, label="Seed (test batch drawn at 12345 + seed)", precision=0)
        mad_btn = gr.Button("Evaluate", elem_id="run-mad")
        acc_df = gr.Dataframe(label="Accuracy on scored positions", interactive=False, elem_id="mad-acc")
        example = gr.HTML(elem_id="mad-example")

        @ui_errors
        def mad_skills(task, names, n, seed, progress=gr.Progress()):  # noqa: B008  (gradio injects progress)
            if n is None or seed is None:
                raise AppInputError("The number of sequences and the seed must be whole numbers.")
            d = svc.mad_skills(task, names, int(n), int(seed), progress)
            return pd.DataFrame(d["rows"]), mad_example_html(d["example"])

        mad_btn.click(
            mad_skills,
            [task, mad_pick, n_seq, mad_seed],
            [acc_df, example],
            api_name="mad_skills",
            **on_models,
        )
