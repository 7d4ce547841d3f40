"""The Load tab: models loaded here belong to this browser session, and can be unloaded again."""

from __future__ import annotations

import html
import logging

import gradio as gr

from app_backend.tabs.load import adapter_bases
from app_backend.ui.common import TabContext, error_md, error_text, status_md

log = logging.getLogger("mad-models-app")


def build(ctx: TabContext, models: gr.CheckboxGroup, hybrid: gr.Dropdown) -> None:
    """Lay out the Load tab. A load that succeeds adds the model to Compare's ``models`` and (a hybrid) to
    the ``hybrid`` picker of this session; a load that fails says why in the status line and leaves
    both pickers untouched (``gr.skip()``; the handler never raises, so no error state reaches them).
    Unload takes a model out of both pickers and, unless another page uses it too, out of memory."""
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
            f"is yours: other visitors do not see it, it goes when you close or reload the page (or unload "
            f"it below), and a page holds at most {svc.max_loaded_per_session} loaded models."
        )
        with gr.Row(elem_classes=["stack-on-phone"]):
            source = gr.Textbox(label="Repo id or local path", elem_id="load-source", min_width=0)
            revision = gr.Textbox(
                label="Revision (Hub repos, optional)", elem_id="load-revision", min_width=0
            )
            base = gr.Dropdown(
                [""] + adapter_bases(reg),
                value="",
                label="Base model (adapters only)",
                elem_id="load-base",
                min_width=0,
            )
        load_btn = gr.Button("Load", elem_id="run-load")
        load_md = gr.HTML(elem_id="load-status")
        with gr.Row():
            # the handler checks the name against this page's loads itself
            loaded = gr.Dropdown(
                [],
                label="Loaded on this page",
                elem_id="load-loaded",
                scale=3,
                min_width=0,
                allow_custom_value=True,
            )
            unload_btn = gr.Button("Unload", elem_id="run-unload", scale=1, min_width=100)

        def pickers(session, keep: str | None = None) -> tuple:
            names = svc.loaded_names(session)
            return (
                gr.CheckboxGroup(choices=svc.model_names(session)),
                gr.Dropdown(choices=svc.hybrid_names(session)),
                gr.Dropdown(choices=names, value=keep if keep in names else (names[-1] if names else None)),
            )

        def load(source, revision, base, request: gr.Request):
            """(status line, Compare's model list, Hybrid's list, this page's loads): the lists change only
            on success, and this never raises, so a failed load cannot mark, hide or block the pickers."""
            session = request.session_hash if request is not None else None
            try:
                info = svc.load(source, revision, base, session=session)
            except Exception as e:  # noqa: BLE001  (bad input and load failures: one line, in place)
                return error_md(error_text(e, "load")), gr.skip(), gr.skip(), gr.skip()
            name = html.escape(info["name"])
            msg = (
                f"Loaded <b>{name}</b>: {html.escape(info['kind'])}, {info['params']:,} parameters"
                f"{'' if info['tokenizer'] else ', prompts as token ids'}. It is now in Compare"
                f"{' and Hybrid mixtures' if info['hybrid'] else ''}."
            )
            if info.get("renamed"):
                msg += " (Another model this page loaded has the same folder name, hence the number.)"
            return (f"<div class='tab-ok'>{msg}</div>", *pickers(session, info["name"]))

        def unload(name, request: gr.Request):
            session = request.session_hash if request is not None else None
            try:
                if not name:
                    raise ValueError("Pick a model this page loaded.")
                done = svc.unload(name, session)
            except ValueError as e:  # AppInputError too
                return error_md(str(e)), gr.skip(), gr.skip(), gr.skip()
            return (status_md(done), *pickers(session))

        load_btn.click(
            load,
            [source, revision, base],
            [load_md, models, hybrid, loaded],
            api_name="load",
            concurrency_limit=1,
            concurrency_id="load",
            show_progress="minimal",
            show_progress_on=[load_md],  # the pickers are never covered while a load runs
        )
        unload_btn.click(
            unload, [loaded], [load_md, models, hybrid, loaded], api_name="unload", show_progress="hidden"
        )
