"""The Hybrid mixtures tab."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd

from app_backend import formatting as fmt
from app_backend.generation import MAX_NEW_TOKENS
from app_backend.model_info import cards_md
from app_backend.registry import AppInputError
from app_backend.render import styled
from app_backend.tabs.hybrids import (
    HybridLab,
    cost_diff_rows,
    cost_summary_html,
    cost_summary_rows,
    heatmap_html,
    text_next_to_components,
)
from app_backend.tabs.mad import preset
from app_backend.ui.common import TabContext, errors_in_place, status_line
from mad_models.mad import TASKS as MAD_TASKS

COST_COLUMNS = ["item", "before", "after", "Δ", "Δ %"]


def build(ctx: TabContext) -> dict[str, Any]:
    """Lay out the Hybrid mixtures tab inside the open ``gr.Blocks`` and wire its events."""
    svc, reg, on_models = ctx.svc, ctx.registry, ctx.on_models
    lab = HybridLab(svc)

    def cards(name):
        return cards_md([reg.entries.get(name, name)] if name else [], reg.root)

    def preset_prompt(name, task):
        settings = {}
        try:
            settings = lab.task_settings(name).get(task, {}) if name else {}
        except AppInputError:
            pass
        return preset(task, settings)["prompt"]

    with gr.Tab("Hybrid mixtures", id="hybrids") as tab:
        hybrids = svc.hybrid_names()
        first = hybrids[0] if hybrids else None
        with gr.Row():
            hybrid = gr.Dropdown(hybrids, value=first, label="Hybrid", elem_id="hybrid-pick")
            threshold = gr.Slider(
                0.0, 0.95, value=0.25, step=0.05, label="Prune threshold", elem_id="prune-threshold"
            )
            mix_btn = gr.Button("Show", elem_id="run-mixture")
        status = status_line("hybrid-status")
        heat = gr.HTML(elem_id="heatmap")
        prune_md = gr.Markdown(elem_id="prune-summary")
        cost_md = gr.HTML(elem_id="cost-summary")
        weights_df = gr.Dataframe(
            pd.DataFrame(columns=["block"]),
            label="Mixture weights (blocks × components)",
            interactive=False,
            elem_id="mixture-weights",
        )
        with gr.Accordion("Full cost report (every block and component)", open=False):
            cost_df = gr.Dataframe(
                pd.DataFrame(columns=COST_COLUMNS),
                label="Cost: full hybrid (before) and pruned at the threshold (after)",
                interactive=False,
                column_widths=["40%", "15%", "15%", "15%", "15%"],
                max_height=420,
                elem_id="cost-diff",
            )
        with gr.Accordion("Accuracy against prune threshold", open=True):
            gr.Markdown(
                "The hybrid pruned at each threshold, scored on a fixed seeded MAD test batch "
                "(the tasks it was trained on; computed once per hybrid)."
            )
            curve_btn = gr.Button("Score thresholds", elem_id="run-curve", size="sm")
            curve_df = gr.Dataframe(
                pd.DataFrame(columns=["threshold"]),
                interactive=False,
                elem_id="prune-curve",
                show_label=False,
            )
        with gr.Accordion("Compare pruned vs full", open=True):
            with gr.Row():
                task = gr.Dropdown(list(MAD_TASKS), value="in_context_recall", label="Preset (MAD task)")
                prompt = gr.Textbox(
                    preset_prompt(first, "in_context_recall"),
                    label="Prompt (token ids)",
                    scale=3,
                    elem_id="pvf-prompt",
                )
                max_new = gr.Number(12, label=f"New tokens (≤ {MAX_NEW_TOKENS})", precision=0)
            pvf_btn = gr.Button("Compare pruned vs full", elem_id="run-pvf")
            pvf_status = status_line("pvf-status")
            pvf_html = gr.HTML(elem_id="pvf-table")
            pvf_json = gr.JSON(visible=False)
        with gr.Accordion("Text: the hybrid next to its components", open=True):
            gr.Markdown(
                "For the text hybrids (e.g. text/hybrid, character-level Shakespeare): greedy continuations "
                "of a prompt by the hybrid and by each pretrained component it joins, with their val bits "
                "per character. The mixture above is this hybrid's."
            )
            with gr.Row():
                text_prompt = gr.Textbox(
                    "ROMEO.\n", label="Prompt (text)", lines=2, scale=3, elem_id="text-gen-prompt"
                )
                text_new = gr.Number(64, label=f"New tokens (≤ {MAX_NEW_TOKENS})", precision=0)
            text_btn = gr.Button("Generate next to its components", elem_id="run-text-gen")
            text_status = status_line("text-gen-status")
            text_df = gr.Dataframe(interactive=False, wrap=True, show_label=False, elem_id="text-gen")
        with gr.Accordion("What this hybrid is", open=False):
            card = gr.Markdown(cards(first), elem_id="hybrid-card")

        def curve_table(curve: dict[str, Any]) -> Any:
            rows = [{**r, "slider": "◀ slider" if r["slider"] else ""} for r in curve["rows"]]
            return styled(rows, {"threshold": lambda v: f"{v:.2f}"})

        @errors_in_place(
            "",
            pd.DataFrame(columns=["block"]),
            pd.DataFrame(columns=COST_COLUMNS),
            "",
            gr.skip(),
            "",
        )
        def mixture(name, threshold, request: gr.Request, progress=gr.Progress()):  # noqa: B008  (gradio injects both)
            if not name:
                raise AppInputError(reg.problem or "No hybrid is registered; build the assets or load one.")
            with svc.session_scope(_session(request)):  # a loaded hybrid's name means this session's load
                d = svc.mixture(name, threshold, progress)
            w = [
                {"block": b, **dict(zip(d["components"], row, strict=True))}
                for b, row in enumerate(d["weights"])
            ]
            kept = sum(sum(r) for r in d["kept"])
            total = sum(len(r) for r in d["kept"])
            curve = lab.accuracy_curve(name, at=d["threshold"], progress=progress, compute=False)
            summary = cost_summary_rows(d["cost"], d["pruned_cost"], d["pairs_before"], kept)
            return (
                f"{name} at threshold {d['threshold']:.2f}.",
                heatmap_html(d["weights"], d["components"], d["kept"]),
                styled(w, {c: fmt.accuracy for c in d["components"]}),
                styled(cost_diff_rows(d["cost"], d["pruned_cost"]), _cost_formats()),
                f"Pruning at {d['threshold']:.2f} keeps {kept} of {total} (block, component) pairs.",
                curve_table(curve) if curve else gr.skip(),
                cost_summary_html(summary, d["threshold"]),
            )

        mix_outputs = [status, heat, weights_df, cost_df, prune_md, curve_df, cost_md]
        mix_btn.click(
            mixture,
            [hybrid, threshold],
            mix_outputs,
            api_name="mixture",
            show_progress_on=[status],
            **on_models,
        )
        # live: opening the tab, the slider and the picker redraw at once (always_last: a drag runs the
        # latest value)
        for trigger in (tab.select, threshold.change, hybrid.change):
            trigger(
                mixture,
                [hybrid, threshold],
                mix_outputs,
                api_visibility="private",
                show_progress="hidden",
                trigger_mode="always_last",
                **on_models,
            )
        hybrid.change(cards, hybrid, card, api_visibility="private")
        hybrid.change(preset_prompt, [hybrid, task], prompt, api_visibility="private")
        task.change(preset_prompt, [hybrid, task], prompt, api_visibility="private")

        @errors_in_place(None)
        def prune_accuracy(name, threshold, progress=gr.Progress()):  # noqa: B008
            curve = lab.accuracy_curve(name, at=float(threshold), progress=progress)
            return (
                f"Accuracy of {name} pruned at each threshold: {curve['sequences']} sequences per task "
                f"({', '.join(curve['tasks'])}), seed {curve['seed']}.",
                curve_table(curve),
            )

        curve_btn.click(
            prune_accuracy,
            [hybrid, threshold],
            [status, curve_df],
            api_name="prune_accuracy",
            show_progress_on=[status],
            **on_models,
        )

        @errors_in_place("", None)
        def pruned_vs_full(name, threshold, prompt, max_new, request: gr.Request, progress=gr.Progress()):  # noqa: B008
            if max_new is None:
                raise AppInputError("The number of new tokens must be a whole number.")
            with svc.session_scope(_session(request)):
                d = lab.pruned_vs_full(name, threshold, prompt, int(max_new), progress)
            return (
                f"Greedy, {d['new_tokens']} new tokens: pruned at {d['threshold']:.2f} agrees with the full "
                f"hybrid on {d['agree']} of {d['new_tokens']}.",
                pvf_table_html(d),
                d,
            )

        pvf_btn.click(
            pruned_vs_full,
            [hybrid, threshold, prompt, max_new],
            [pvf_status, pvf_html, pvf_json],
            api_name="pruned_vs_full",
            show_progress_on=[pvf_status],
            **on_models,
        )

        @errors_in_place("", None)
        def text_generation(name, prompt, max_new, request: gr.Request, progress=gr.Progress()):  # noqa: B008
            if max_new is None:
                raise AppInputError("The number of new tokens must be a whole number.")
            with svc.session_scope(_session(request)):
                d = text_next_to_components(svc, name, prompt, int(max_new), progress)
            bits = {"val bits/char": lambda v: "—" if v is None else f"{v:.3f}"}
            return (
                f"Greedy, up to {d['new_tokens']} new tokens from {name} and its {len(d['rows']) - 1} "
                "components.",
                styled(d["rows"], bits),
            )

        text_btn.click(
            text_generation,
            [hybrid, text_prompt, text_new],
            [text_status, text_df],
            api_name="text_next_to_components",
            show_progress_on=[text_status],
            **on_models,
        )
    return {"hybrid": hybrid}


def _session(request: gr.Request | None) -> str | None:
    return request.session_hash if request is not None else None


def _cost_formats() -> dict[str, Any]:
    def num(v):
        return "—" if v is None or v != v else fmt.number(int(v) if float(v).is_integer() else float(v))

    return {
        "before": num,
        "after": num,
        "Δ": lambda v: "—" if v is None or v != v else ("+" if v > 0 else "") + num(v),
        "Δ %": lambda v: "—" if v is None or v != v else ("0 %" if v == 0 else f"{v:+.1f} %"),
    }


def pvf_table_html(d: dict[str, Any]) -> str:
    """The full and the pruned hybrid's new tokens side by side; differing positions marked."""
    rows = []
    for i, (a, b) in enumerate(zip(d["full"], d["pruned"], strict=True)):
        same = a == b
        style = "" if same else "background:#fecaca"
        rows.append(
            f"<tr class='{'pvf-same' if same else 'pvf-diff'}' style='{style}'>"
            f"<td style='padding:2px 10px'>{i + 1}</td>"
            f"<td style='padding:2px 10px;text-align:center'>{a}</td>"
            f"<td style='padding:2px 10px;text-align:center'>{b}</td></tr>"
        )
    prompt = html.escape(" ".join(map(str, d["prompt_ids"])))
    return (
        f"<p style='font-family:monospace'>prompt: {prompt}</p>"
        "<table class='pvf' style='border-collapse:collapse;font-family:monospace'>"
        "<tr><th style='padding:2px 10px'>new token</th><th style='padding:2px 10px'>full</th>"
        f"<th style='padding:2px 10px'>pruned at {d['threshold']:.2f}</th></tr>{''.join(rows)}</table>"
    )
