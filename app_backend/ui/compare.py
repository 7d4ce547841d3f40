"""The Compare outputs tab.

Layout, top to bottom: prompt and model list (stacked on a phone), decoding settings (the sampling ones
only when sampling), Run / Stop, the answer strip (one ✓/✗ chip per column), the status line, the
columns (output, speed line, "about this model" fold), the agreement table, one table of eval scores
(modules x picked models, base and heuristic beside), and the raw results with their downloads.

The ``compare`` API answers ``(results JSON, status line, agreement, answer strip, CSV file, JSON file,
cache line, then per column: text, speed line; then the Run button)``. Errors stay where they happened:
a bad request in the status line (every output cleared), a failing model in its own column, and the
status line gathers the columns' errors, one line per distinct message. Stop ends the run at the next
token: each column then says how far it got, and the partial results are exported like full ones.
The ``compare_preset`` API (the preset dropdown's change) takes a preset's prompt and answers
``(prompt, expected-answer line)``.
"""

from __future__ import annotations

import html
import logging
import threading
import time
import traceback
from typing import Any

import gradio as gr

from app_backend.exports import write_exports
from app_backend.generation import MAX_NEW_TOKENS
from app_backend.model_info import model_card_md, modules_table_html
from app_backend.registry import AppInputError
from app_backend.render import md_escape
from app_backend.results import (
    agreement_html,
    answer_strip_html,
    clip,
    column_errors,
    compare_json,
    mark_stopped,
    reference_answer,
)
from app_backend.tabs.compare import MAX_COMPARE, Run, compare_presets, preset_choices, preset_note
from app_backend.ui.common import TabContext, error_md, status_md

log = logging.getLogger("mad-models-app")
# js for the prompt's change: (prompt, picked preset, its answer line) -> (preset, answer line)
KEEP_PRESET_WHILE_PROMPT_IS_IT = (
    "(prompt, picked, note) => picked != null && (prompt || '').trim() === picked"
    " ? [picked, note] : [null, '']"
)
STOP_WAIT_S = 5.0  # how long Stop waits for the run's current step to end
UPDATES_PER_S = 8  # redraws of the columns while they generate (each one costs the server CPU)


def card_for(svc, name: str) -> str:
    entry = svc.registry.entries.get(name)
    if entry is not None:
        return model_card_md(entry, svc.registry.root)  # the card's path relative to the assets
    return f"**{md_escape(name)}**: loaded through the Load tab in this session."


def stats_html(line: str) -> str:
    """A column's speed line: it wraps between its parts, never inside a number."""
    return " · ".join(f"<span class='nowrap'>{html.escape(part)}</span>" for part in line.split(" · "))


class ActiveRuns:
    """The Compare run of each browser session, for its Stop button."""

    def __init__(self):
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def start(self, session: str, run: Run) -> None:
        with self._lock:
            old = self._runs.get(session)
            if old is not None:  # one run per page: a new one ends the old, which then draws nothing
                old.stop.set()
            self._runs[session] = run

    def end(self, session: str, run: Run) -> bool:
        """Forget ``run``; whether it was still its page's run (False: a newer one replaced it)."""
        with self._lock:
            if self._runs.get(session) is run:
                del self._runs[session]
                return True
            return False

    def get(self, session: str) -> Run | None:
        with self._lock:
            return self._runs.get(session)


def build(ctx: TabContext) -> dict[str, Any]:
    """Lay out the Compare outputs tab inside the open ``gr.Blocks`` and wire its events."""
    svc, reg, on_models = ctx.svc, ctx.registry, ctx.on_models
    names = reg.names()
    language = reg.names(group="language")
    default_models = (language or names)[:4]
    active = ActiveRuns()

    def scores(picked) -> str:
        return modules_table_html([reg.entries[n] for n in picked or [] if n in reg.entries])

    with gr.Tab("Compare outputs", id="compare"):
        with gr.Row(elem_classes=["stack-on-phone"]):
            prompt = gr.Textbox(
                label="Prompt (text; token-id models take ids like `3 9 4 12`)",
                value="What is 12 plus 7?" if language else "1 9 2 10 3 11 1",
                lines=3,
                scale=3,
                min_width=0,
                elem_id="prompt",
            )
            models = gr.CheckboxGroup(
                names, value=default_models, label="Models", scale=2, min_width=0, elem_id="models"
            )
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
        with gr.Row(elem_classes=["stack-on-phone"]):
            max_new = gr.Number(32, label=f"Max new tokens (≤ {MAX_NEW_TOKENS})", precision=0, min_width=120)
            mode = gr.Radio(["greedy", "sample"], value="greedy", label="Decoding", min_width=120)
            chat = gr.Checkbox(True, label="Chat template (with the adapters' training system turn)")
        with gr.Row(visible=False, elem_id="sampling") as sampling:  # only when sampling
            seed = gr.Number(0, label="Seed", precision=0, min_width=100)
            temperature = gr.Slider(0.1, 2.0, value=0.8, step=0.05, label="Temperature", min_width=160)
            top_k = gr.Number(50, label="Top-k (0 = off)", precision=0, min_width=100)
        with gr.Row():
            run = gr.Button("Run", variant="primary", elem_id="run-compare", min_width=100)
            stop = gr.Button("Stop", variant="stop", elem_id="stop-compare", min_width=100)
        strip = gr.HTML("", elem_id="answer-strip")
        status = gr.HTML("", elem_id="compare-status")
        columns, outs, stats, cards = [], [], [], []
        with gr.Row(equal_height=False, elem_classes=["compare-columns"]):
            for i in range(MAX_COMPARE):
                visible = i < len(default_models)
                with gr.Column(min_width=160, visible=visible, elem_id=f"col-{i}") as column:
                    columns.append(column)
                    label = default_models[i] if visible else f"output {i + 1}"
                    outs.append(
                        gr.Textbox(label=label, lines=4, max_lines=12, interactive=False, elem_id=f"out-{i}")
                    )
                    stats.append(gr.Markdown("", elem_id=f"stats-{i}", elem_classes=["col-stats"]))
                    with gr.Accordion("about this model", open=False, elem_id=f"about-{i}"):
                        cards.append(
                            gr.Markdown(
                                card_for(svc, default_models[i]) if visible else "", elem_id=f"card-{i}"
                            )
                        )
        agreement = gr.HTML("", elem_id="agreement")
        modules_table = gr.HTML(scores(default_models), elem_id="modules-table")
        with gr.Accordion("Raw results (JSON, CSV)", open=False):
            raw = gr.JSON(label="results", elem_id="compare-json")
            with gr.Row():
                csv_file = gr.File(label="results (CSV)", elem_id="compare-csv", interactive=False)
                json_file = gr.File(label="results (JSON)", elem_id="compare-json-file", interactive=False)
        cache_md = gr.Markdown("", elem_id="cache-status")

        def layout(picked):
            """Only the picked models' columns, sharing the full width; labels, cards and the score table
            follow the pick."""
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
                + [scores(picked)]
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
        mode.change(
            lambda m: gr.Row(visible=m == "sample"),
            mode,
            sampling,
            api_visibility="private",
            show_progress="hidden",
            queue=False,
        )
        models.change(
            layout,
            [models],
            columns + outs + stats + cards + [modules_table],
            api_visibility="private",
            show_progress="hidden",
        )

        def per_column(cols):
            texts = [gr.Textbox(value=c["text"], label=c["model"]) for c in cols]
            texts += [gr.Textbox(value="") for _ in range(MAX_COMPARE - len(cols))]
            lines = [gr.Markdown(value=stats_html(c["stats"])) for c in cols]
            lines += [gr.Markdown(value="") for _ in range(MAX_COMPARE - len(cols))]
            return texts + lines

        def cleared(message: str) -> list:
            return [None, error_md(message), "", "", None, None, gr.skip()] + per_column([]) + [enabled()]

        def finished(run: Run, cols: list[dict[str, Any]], session: str | None, stopped: bool) -> list:
            """Everything after a run ends, done or stopped: exports, agreement, strip, status."""
            result = compare_json(run.prompt, cols, run.answer)
            csv_path, json_path = write_exports(result)
            errors = column_errors(cols)
            if stopped:
                ran = sum(1 for c in cols if c.get("token_ids"))
                line = f"Stopped: {ran} of {len(cols)} models had output; the results are partial."
            else:
                failed = sum(1 for c in cols if c.get("error"))
                line = f"Done: {len(cols) - failed} of {len(cols)} models ran."
            status_html = status_md(line) + (error_md(" · ".join(errors)) if errors else "")
            return [
                result,
                status_html,
                agreement_html(cols, run.answer),
                answer_strip_html(cols, run.answer),
                str(csv_path),
                str(json_path),
                svc.cache_line(session),
            ] + per_column(cols)

        def enabled() -> gr.Button:
            return gr.Button(interactive=True)

        def untouched(run_button: Any = None) -> list:
            """Every output left as it is (the Run button set to ``run_button`` if given)."""
            return [gr.skip()] * (7 + 2 * MAX_COMPARE) + [run_button if run_button is not None else gr.skip()]

        def compare(prompt, models, max_new, mode, seed, temperature, top_k, chat, request: gr.Request):
            session = request.session_hash if request is not None else ""
            run = Run(prompt=prompt or "")
            try:
                if max_new is None or (mode == "sample" and (seed is None or top_k is None)):
                    raise AppInputError("Max new tokens, seed and top-k must be whole numbers.")
                runs = svc.compare(
                    prompt,
                    models,
                    max_new,
                    sample=mode == "sample",
                    seed=int(seed or 0),
                    temperature=float(temperature),
                    top_k=int(top_k or 0),
                    chat=bool(chat),
                    session=session,
                    run=run,
                )
                cols = next(runs)  # the request's own checks run here
            except AppInputError as e:
                yield cleared(str(e))
                return
            except Exception as e:  # noqa: BLE001
                log.error("compare failed:\n%s", traceback.format_exc())
                yield cleared(f"Something went wrong: {type(e).__name__}: {clip(str(e), 300)}")
                return
            run.answer = reference_answer(reg, prompt, list(models or []))
            active.start(session, run)
            try:
                yield [None, "", "", "", None, None, gr.skip()] + per_column(cols) + [gr.skip()]
                shown = time.monotonic()
                for _ in runs:  # at most UPDATES_PER_S redraws: the page keeps up, generation is not slowed
                    if run.stop.is_set():  # no redraw after Stop (the run ends at the next token)
                        continue
                    if time.monotonic() - shown >= 1.0 / UPDATES_PER_S:
                        yield [gr.skip()] * 7 + per_column(run.snapshot()) + [gr.skip()]
                        shown = time.monotonic()
            finally:
                current = active.end(session, run)
            # this generator draws the run's last state itself, so nothing it sent earlier can land after
            # it; a run replaced by a newer one from the same page draws nothing (the newer one owns the page)
            if not current:
                return
            stopped = run.stop.is_set()
            cols = mark_stopped(run.snapshot()) if stopped else run.snapshot()
            last = finished(run, cols, session, stopped=stopped) + [enabled()]
            run.drawn.set()  # after the exports are written: if that fails, Stop still draws the end
            yield last

        def stop_run(request: gr.Request):
            """End this page's run at the next token; each column says how far it got, and the partial
            results are exported and compared like full ones.

            The run's own event draws that last state (one writer, so no redraw of it can arrive after
            it); Stop draws it only when the run's current step (a model load, say) does not end within
            STOP_WAIT_S, and the run draws it again, with what the step made, when the step ends."""
            session = request.session_hash if request is not None else ""
            run = active.get(session)
            if run is None:  # nothing running (already done): just make sure Run can be pressed
                return untouched(run_button=enabled())
            run.stop.set()
            if run.drawn.wait(timeout=STOP_WAIT_S):
                return untouched()
            log.warning("stop: the run's step did not end in %.0f s", STOP_WAIT_S)
            # Run stays disabled: the run's own last draw enables it when the step ends (a new run started
            # meanwhile would have to wait for the step anyway, and the old run's draw would cover it)
            return finished(run, mark_stopped(run.snapshot()), session, stopped=True) + [gr.skip()]

        outputs = [raw, status, agreement, strip, csv_file, json_file, cache_md] + outs + stats + [run]
        busy = run.click(
            lambda: gr.Button(interactive=False),
            None,
            run,
            queue=False,
            api_visibility="private",
            show_progress="hidden",
        )
        busy.then(
            compare,
            [prompt, models, max_new, mode, seed, temperature, top_k, chat],
            outputs,
            api_name="compare",
            show_progress="hidden",  # each column shows its own progress line
            **on_models,
        )
        # no cancels= on the run's event: the run ends itself at the next token and draws its stopped state
        stop.click(stop_run, None, outputs, api_visibility="private", show_progress="hidden")
    return {"models": models}
