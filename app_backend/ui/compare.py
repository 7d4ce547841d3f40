"""The Compare outputs tab."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app_backend.generation import MAX_NEW_TOKENS
from app_backend.registry import AppInputError
from app_backend.service import MAX_COMPARE
from app_backend.ui.common import TabContext, ui_errors


def build(ctx: TabContext) -> dict[str, Any]:
    """Lay out the Compare outputs tab inside the open ``gr.Blocks`` and wire its events."""
    svc, reg, on_models = ctx.svc, ctx.registry, ctx.on_models
    names = reg.names()
    language = reg.names(group="language")
    default_models = (language or names)[:4]
    with gr.Tab("Compare outputs", id="compare"):
        with gr.Row():
            prompt = gr.Textbox(
                label="Prompt (text; token-id models take ids like `3 9 4 12`)",
                value="What is 12 plus 7?" if language else "1 9 2 10 3 11 1",
                lines=3,
                scale=3,
                elem_id="prompt",
            )
            models = gr.CheckboxGroup(names, value=default_models, label="Models", scale=2, elem_id="models")
        with gr.Row():
            max_new = gr.Number(32, label=f"Max new tokens (≤ {MAX_NEW_TOKENS})", precision=0)
            mode = gr.Radio(["greedy", "sample"], value="greedy", label="Decoding")
            seed = gr.Number(0, label="Seed", precision=0)
            temperature = gr.Slider(0.1, 2.0, value=0.8, step=0.05, label="Temperature (sample)")
            top_k = gr.Number(50, label="Top-k (sample, 0 = off)", precision=0)
            chat = gr.Checkbox(True, label="Chat template")
        run = gr.Button("Run", variant="primary", elem_id="run-compare")
        outs, stats = [], []
        with gr.Row(equal_height=True):
            for i in range(MAX_COMPARE):
                with gr.Column(min_width=180):
                    label = default_models[i] if i < len(default_models) else f"output {i + 1}"
                    visible = i < len(default_models)
                    outs.append(
                        gr.Textbox(
                            label=label,
                            lines=6,
                            interactive=False,
                            visible=visible,
                            elem_id=f"out-{i}",
                        )
                    )
                    stats.append(gr.Markdown("", visible=visible, elem_id=f"stats-{i}"))
        with gr.Accordion("Raw results (token ids, timings)", open=False):
            raw = gr.JSON(label="results", elem_id="compare-json")
        cache_md = gr.Markdown("", elem_id="cache-status")

        @ui_errors
        def compare(
            prompt,
            models,
            max_new,
            mode,
            seed,
            temperature,
            top_k,
            chat,
            progress=gr.Progress(),  # noqa: B008
        ):
            if seed is None or top_k is None:
                raise AppInputError("Seed and top-k must be whole numbers.")
            cols = []
            for cols in svc.compare(
                prompt,
                models,
                max_new,
                sample=mode == "sample",
                seed=int(seed),
                temperature=float(temperature),
                top_k=int(top_k),
                chat=bool(chat),
                progress=progress,
            ):
                yield render_columns(cols) + [cols, ""]
            st = svc.cache.stats()
            yield render_columns(cols) + [
                cols,
                f"Model cache: {', '.join(st['loaded']) or 'empty'} · {st['bytes'] / 2**20:.0f} of "
                f"{st['max_bytes'] / 2**20:.0f} MiB · {st['evictions']} evictions",
            ]

        def render_columns(cols):
            texts = [gr.Textbox(value=c["text"], label=c["model"], visible=True) for c in cols] + [
                gr.Textbox(value="", visible=False) for _ in range(MAX_COMPARE - len(cols))
            ]
            lines = [gr.Markdown(value=c["stats"], visible=True) for c in cols] + [
                gr.Markdown(value="", visible=False) for _ in range(MAX_COMPARE - len(cols))
            ]
            return texts + lines

        run.click(
            compare,
            [prompt, models, max_new, mode, seed, temperature, top_k, chat],
            outs + stats + [raw, cache_md],
            api_name="compare",
            **on_models,
        )
    return {"models": models}
