"""The Compare outputs tab.

The ``compare`` API answers ``(results JSON, status line, agreement markdown, CSV file, cache line,
then per column: text, stats line, card)``. Errors stay where they happened: a bad request in the status
line (every output cleared), a failing model in its own column. The ``compare_preset`` API (the preset
dropdown's change) takes a preset's prompt and answers ``(prompt, expected-answer line)``.
"""

from __future__ import annotations

import logging
import tempfile
import traceback
from pathlib import Path
from typing import Any

import gradio as gr

from app_backend.generation import MAX_NEW_TOKENS
from app_backend.model_info import model_card_md
from app_backend.registry import AppInputError
from app_backend.results import agreement_html, compare_json, reference_answer, results_csv
from app_backend.tabs.compare import MAX_COMPARE, compare_presets, preset_choices, preset_note
from app_backend.ui.common import TabContext

log = logging.getLogger("mad-models-app")
EXPORT_DIR = Path(tempfile.gettempdir()) / "mad-models-app-exports"
# js for the prompt's change: (prompt, picked preset, its answer line) -> (preset, answer line)
KEEP_PRESET_WHILE_PROMPT_IS_IT = (
    "(prompt, picked, note) => picked != null && (prompt || '').trim() === picked"
    " ? [picked, note] : [null, '']"
)


def card_for(svc, name: str) -> str:
    entry = svc.registry.entries.get(name)
    if entry is not None:
        return model_card_md(entry, svc.registry.root)  # the card's path relative to the assets
    return f"**{name}**: loaded through the Load tab in this session."


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
        presets = {p.prompt: p for p in compare_presets(reg)}
        with gr.Row(visible=bool(presets)):  # no adapter lists presets: no dropdown
            preset = gr.Dropdown(
                preset_choices(list(presets.values())),
                value=None,
                label="Preset prompts from the adapters' training tasks",
                scale=3,
                visible=bool(presets),
                elem_id="compare-preset",
            )
            preset_info = gr.Markdown("", elem_id="compare-preset-answer")
        with gr.Row():
            max_new = gr.Number(32, label=f"Max new tokens (≤ {MAX_NEW_TOKENS})", precision=0)
            mode = gr.Radio(["greedy", "sample"], value="greedy", label="Decoding")
            seed = gr.Number(0, label="Seed", precision=0)
            temperature = gr.Slider(0.1, 2.0, value=0.8, step=0.05, label="Temperature (sample)")
            top_k = gr.Number(50, label="Top-k (sample, 0 = off)", precision=0)
            chat = gr.Checkbox(True, label="Chat template (with the adapters' training system turn)")
        with gr.Row():
            run = gr.Button("Run", variant="primary", elem_id="run-compare")
            stop = gr.Button("Stop", variant="stop", elem_id="stop-compare")
        status = gr.Markdown("", elem_id="compare-status")
        columns, outs, stats, cards = [], [], [], []
        with gr.Row(equal_height=False):
            for i in range(MAX_COMPARE):
                visible = i < len(default_models)
                with gr.Column(min_width=160, visible=visible, elem_id=f"col-{i}") as column:
                    columns.append(column)
                    label = default_models[i] if visible else f"output {i + 1}"
                    outs.append(gr.Textbox(label=label, lines=6, interactive=False, elem_id=f"out-{i}"))
                    stats.append(gr.Markdown("", elem_id=f"stats-{i}"))
                    cards.append(
                        gr.Markdown(card_for(svc, default_models[i]) if visible else "", elem_id=f"card-{i}")
                    )
        agreement = gr.Markdown("", elem_id="agreement")
        with gr.Accordion("Raw results (JSON, CSV)", open=False):
            raw = gr.JSON(label="results", elem_id="compare-json")
            csv_file = gr.File(label="results.csv", elem_id="compare-csv", interactive=False)
        cache_md = gr.Markdown("", elem_id="cache-status")

        def layout(picked):
            """Only the picked models' columns, sharing the full width; labels and cards follow the pick."""
            picked = [n for n in (picked or []) if n][:MAX_COMPARE]
            return (
                [gr.Column(visible=i < len(picked)) for i in range(MAX_COMPARE)]
                + [
                    gr.Textbox(label=picked[i] if i < len(picked) else "", value="")
                    for i in range(MAX_COMPARE)
                ]
                + [gr.Markdown(value="") for _ in range(MAX_COMPARE)]
                + [
                    gr.Markdown(value=card_for(svc, picked[i]) if i < len(picked) else "")
                    for i in range(MAX_COMPARE)
                ]
            )

        def pick_preset(choice):
            """A picked preset fills the prompt box; the line beside it gives the expected answer."""
            if choice is not None and not isinstance(choice, str):  # an API caller's list or number
                return gr.skip(), "Pick one preset."
            p = presets.get(choice) if choice else None
            if p is None:  # cleared (the user typed their own prompt): the prompt stays as typed
                return gr.skip(), ""
            return p.prompt, preset_note(p)

        preset.change(
            pick_preset, [preset], [prompt, preset_info], api_name="compare_preset", show_progress="hidden"
        )
        # a prompt of one's own (typed, pasted, edited): the preset and its answer line no longer apply.
        # In the browser only; the preset's own fill of the prompt keeps them.
        prompt.change(
            None,
            [prompt, preset, preset_info],
            [preset, preset_info],
            js=KEEP_PRESET_WHILE_PROMPT_IS_IT,
            api_visibility="private",
            show_progress="hidden",
        )

        models.change(
            layout, [models], columns + outs + stats + cards, api_visibility="private", show_progress="hidden"
        )

        def per_column(cols):
            texts = [gr.Textbox(value=c["text"], label=c["model"]) for c in cols]
            texts += [gr.Textbox(value="") for _ in range(MAX_COMPARE - len(cols))]
            lines = [gr.Markdown(value=c["stats"]) for c in cols]
            lines += [gr.Markdown(value="") for _ in range(MAX_COMPARE - len(cols))]
            return texts + lines + [gr.skip() for _ in range(MAX_COMPARE)]  # cards: set by layout()

        def cleared(message: str) -> list:
            return [None, message, "", None, gr.skip()] + per_column([])

        def compare(prompt, models, max_new, mode, seed, temperature, top_k, chat, request: gr.Request):
            session = request.session_hash if request is not None else None
            try:
                if seed is None or top_k is None or max_new is None:
                    raise AppInputError("Max new tokens, seed and top-k must be whole numbers.")
                runs = svc.compare(
                    prompt,
                    models,
                    max_new,
                    sample=mode == "sample",
                    seed=int(seed),
                    temperature=float(temperature),
                    top_k=int(top_k),
                    chat=bool(chat),
                    session=session,
                )
                cols = next(runs)  # the request's own checks run here
            except AppInputError as e:
                yield cleared(f"⚠ {e}")
                return
            except Exception as e:  # noqa: BLE001
                log.error("compare failed:\n%s", traceback.format_exc())
                yield cleared(f"⚠ Something went wrong: {type(e).__name__}: {str(e)[:300]}")
                return
            answer = reference_answer(reg, prompt, list(models or []))
            yield [None, "", "", None, gr.skip()] + per_column(cols)
            for cols in runs:
                yield [gr.skip()] * 5 + per_column(cols)
            result = compare_json(prompt, cols, answer)
            EXPORT_DIR.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", suffix=".csv", prefix="compare-", dir=EXPORT_DIR, delete=False, encoding="utf-8"
            ) as f:
                f.write(results_csv(result))
            failed = [c["model"] for c in cols if c["error"]]
            done = f"Done: {len(cols) - len(failed)} of {len(cols)} models ran" + (
                f"; failed: {', '.join(failed)} (see their columns)." if failed else "."
            )
            yield [result, done, agreement_html(cols, answer), f.name, svc.cache_line(session)] + per_column(
                cols
            )

        run_event = run.click(
            compare,
            [prompt, models, max_new, mode, seed, temperature, top_k, chat],
            [raw, status, agreement, csv_file, cache_md] + outs + stats + cards,
            api_name="compare",
            show_progress="hidden",  # each column shows its own progress line
            **on_models,
        )
        stop.click(None, None, None, cancels=[run_event])
    return {"models": models}
