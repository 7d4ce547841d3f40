"""The Load tab: models loaded here belong to this browser session."""

from __future__ import annotations

import logging
import traceback

import gradio as gr

from app_backend.registry import AppInputError
from app_backend.ui.common import TabContext

log = logging.getLogger("mad-models-app")


def build(ctx: TabContext, models: gr.CheckboxGroup, hybrid: gr.Dropdown) -> None:
    """Lay out the Load tab. A load that succeeds adds the model to Compare's ``models`` and (a hybrid) to
    the ``hybrid`` picker of this session; a load that fails says why in the status line and leaves
    both pickers untouched (``gr.skip()``; the handler never raises, so no error state reaches them)."""
    svc, reg = ctx.svc, ctx.registry
    with gr.Tab("Load", id="load"):
        where = (
            "a Hub repo id (owner/name)"
            if svc.public
            else "a Hub repo id or a local directory (a revision applies to Hub repos only)"
        )
        gr.Markdown(
            f"Load an adapter or a hybrid from {where}, through `hub_tools.pull`: safetensors only, no "
            f"remote code. Adapters need the base they were trained on and share its weights. What you load "
            f"is yours: other visitors do not see it, it goes when you close or reload the page, and a "
            f"session holds at most {svc.max_loaded_per_session} loaded models."
        )
        bases = [n for n, e in reg.entries.items() if e.kind != "adapter"]
        with gr.Row():
            source = gr.Textbox(label="Repo id or local path", elem_id="load-source")
            revision = gr.Textbox(label="Revision (Hub repos, optional)", elem_id="load-revision")
            base = gr.Dropdown(
                [""] + bases, value="", label="Base model (adapters only)", elem_id="load-base"
            )
        load_btn = gr.Button("Load", elem_id="run-load")
        load_md = gr.Markdown(elem_id="load-status")

        def load(source, revision, base, request: gr.Request):
            """(status line, Compare's model list, Hybrid's list): the lists change only on success,
            and this never raises, so a failed load cannot mark, hide or block the pickers."""
            session = request.session_hash if request is not None else None
            try:
                info = svc.load(source, revision, base, session=session)
            except AppInputError as e:
                return f"⚠ {e}", gr.skip(), gr.skip()
            except Exception as e:  # noqa: BLE001
                log.error("load failed:\n%s", traceback.format_exc())
                return f"⚠ Cannot load: {type(e).__name__}: {str(e)[:300]}", gr.skip(), gr.skip()
            msg = (
                f"Loaded **{info['name']}**: {info['kind']}, {info['params']:,} parameters"
                f"{'' if info['tokenizer'] else ', prompts as token ids'}. It is now in Compare"
                f"{' and Hybrid mixtures' if info['hybrid'] else ''}."
            )
            return (
                msg,
                gr.CheckboxGroup(choices=svc.model_names(session)),
                gr.Dropdown(choices=svc.hybrid_names(session)),
            )

        load_btn.click(
            load,
            [source, revision, base],
            [load_md, models, hybrid],
            api_name="load",
            concurrency_limit=1,
            concurrency_id="load",
            show_progress="minimal",
            show_progress_on=[load_md],  # the pickers are never covered while a load runs
        )
