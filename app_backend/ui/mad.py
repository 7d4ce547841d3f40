"""The MAD skills tab."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app_backend import formatting as fmt
from app_backend.model_info import cards_md
from app_backend.registry import AppInputError
from app_backend.render import styled
from app_backend.tabs.mad import bench_table_md, mad_example_html, preset, side_by_side_html, task_description
from app_backend.ui.common import TabContext, errors_in_place, status_line

ACC_COLUMNS = ["model", "accuracy", "correct", "scored", "seq_len"]


def build(ctx: TabContext) -> None:
    """Lay out the MAD skills tab inside the open ``gr.Blocks`` and wire its events."""
    svc, reg, on_models = ctx.svc, ctx.registry, ctx.on_models

    def task_settings(task: str) -> dict:
        """The settings the registered MAD models were trained with on ``task`` (the presets use them)."""
        for n in svc.mad_names():
            settings = (reg.entries[n].meta or {}).get("mad_tasks", {})
            if task in settings:
                return settings[task]
        return {}

    def about_parts(task: str) -> tuple[str, str, str]:
        p = preset(task, task_settings(task))
        note = f"Token-id prompt for {task.replace('_', ' ')} (paste into Compare; the answer is {p['next']})"
        return task_description(task), p["prompt"], note

    def about(task: str):
        text, prompt, note = about_parts(task)
        return text, gr.Textbox(value=prompt, label=note)

    def cards(names):
        return cards_md([reg.entries.get(n, n) for n in names or []], reg.root)

    with gr.Tab("MAD skills", id="mad"):
        mad_list = svc.mad_names()
        tasks = svc.mad_tasks()
        first_task = "in_context_recall" if "in_context_recall" in tasks else tasks[0]
        with gr.Row():
            task = gr.Dropdown(tasks, value=first_task, label="Task", elem_id="mad-task")
            mad_pick = gr.CheckboxGroup(mad_list, value=mad_list[:4], label="Models", elem_id="mad-models")
            n_seq = gr.Number(64, label="Sequences in the fresh test batch", precision=0)
            # seed 0: the standard test batch, the one the cards' figures were measured on
            mad_seed = gr.Number(
                0, label="Seed (test batch drawn at 12345 + seed)", precision=0, elem_id="mad-seed"
            )
        desc0, prompt0, note0 = about_parts(first_task)
        describe = gr.Markdown(desc0, elem_id="mad-task-about")
        prompt = gr.Textbox(
            value=prompt0,
            label=note0,
            interactive=False,
            buttons=["copy"],
            elem_id="mad-preset",
        )
        mad_btn = gr.Button("Evaluate", elem_id="run-mad")
        status = status_line("mad-status")
        acc_df = gr.Dataframe(
            pd.DataFrame(columns=ACC_COLUMNS),
            label="Accuracy on scored positions (with chance and a no-learning heuristic)",
            interactive=False,
            elem_id="mad-acc",
        )
        examples_state = gr.JSON({}, visible=False)  # sequence 0 per model: for the picker and the API
        with gr.Row():
            pick = gr.Dropdown([], label="Marked example of", elem_id="mad-example-model", scale=1)
            gr.Markdown(
                "Sequence 0 of the batch, marked for the model picked here; the table below has every "
                "model's prediction at each scored position.",
                container=False,
            )
        example = gr.HTML(elem_id="mad-example")
        with gr.Accordion("All models on sequence 0, side by side", open=True):
            side = gr.HTML(elem_id="mad-side-by-side")
        with gr.Accordion("What each model is", open=False):
            cards_view = gr.Markdown(cards(mad_list[:4]), elem_id="mad-cards")
        with gr.Accordion(
            "The MAD benchmark: every row, trained from scratch (bench/results/mad.json)", open=False
        ):
            gr.Markdown(bench_table_md(), elem_id="mad-bench")

        task.change(about, task, [describe, prompt], api_visibility="private")
        mad_pick.change(cards, mad_pick, cards_view, api_visibility="private")

        @errors_in_place(pd.DataFrame(columns=ACC_COLUMNS), gr.update(choices=[], value=None), "", "", {})
        def mad_skills(task, names, n, seed, progress=gr.Progress()):  # noqa: B008  (gradio injects progress)
            if n is None or seed is None:
                raise AppInputError("The number of sequences and the seed must be whole numbers.")
            d = svc.mad_skills(task, names, int(n), int(seed), progress)
            rows = d["rows"]
            models = [r["model"] for r in rows[:-2]]
            beaten = [r["model"] for r in rows[:-2] if r["accuracy"] <= d["baselines"]["heuristic"]]
            summary = f"{task}: {len(models)} models on {int(n):,} sequences (seed 12345 + {int(seed)})."
            if beaten:
                summary += (
                    f" At or below the no-learning heuristic (learned nothing here): {', '.join(beaten)}."
                )
            return (
                summary,
                styled(rows, {"accuracy": fmt.accuracy, "correct": _count_or_dash}),
                gr.Dropdown(choices=models, value=models[0]),
                mad_example_html(d["example"]),
                side_by_side_html(d["examples"]),
                d["examples"],
            )

        mad_btn.click(
            mad_skills,
            [task, mad_pick, n_seq, mad_seed],
            [status, acc_df, pick, example, side, examples_state],
            api_name="mad_skills",
            show_progress_on=[status],
            **on_models,
        )

        def show_example(name, examples):
            return mad_example_html(examples[name]) if examples and name in examples else ""

        pick.change(show_example, [pick, examples_state], example, api_visibility="private")


def _count_or_dash(v) -> str:
    return "—" if v is None or v != v else fmt.count(v)  # NaN != NaN: a row without a count
