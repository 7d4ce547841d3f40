"""The Load tab."""

from __future__ import annotations

import gradio as gr

from app_backend.ui.common import TabContext, ui_errors


def build(ctx: TabContext, models: gr.CheckboxGroup, hybrid: gr.Dropdown) -> None:
    """Lay out the Load tab; a loaded model is added to Compare's ``models`` and the ``hybrid`` picker."""
    svc, reg = ctx.svc, ctx.registry
    with gr.Tab("Load", id="load"):
        gr.Markdown(
            "Load an adapter or a hybrid from a Hub repo id or a local directory (through "
            "`hub_tools.pull`: safetensors only, no remote code). Adapters need the base they were "
            "trained on."
        )
        bases = [n for n, e in reg.entries.items() if e.kind != "adapter"]
        with gr.Row():
            source = gr.Textbox(label="Repo id or local path", elem_id="load-source")
            revision = gr.Textbox(label="Revision (optional)")
            base = gr.Dropdown([""] + bases, value="", label="Base model (adapters only)")
        load_btn = gr.Button("Load", elem_id="run-load")
        load_md = gr.Markdown(elem_id="load-status")

        @ui_errors
        def load(source, revision, base, progress=gr.Progress()):  # noqa: B008  (gradio injects progress)
            info = svc.load(source, revision, base, progress)
            msg = (
                f"Loaded **{info['name']}**: {info['kind']}, {info['params']:,} parameters"
                f"{'' if info['tokenizer'] else ', prompts as token ids'}. It is now in Compare"
                f"{' and Hybrid mixtures' if info['kind'] == 'hybrid' else ''}."
            )
            return (
                msg,
                gr.CheckboxGroup(choices=svc.model_names()),
                gr.Dropdown(choices=svc.hybrid_names()),
            )

        load_btn.click(
            load,
            [source, revision, base],
            [load_md, models, hybrid],
            api_name="load",
            concurrency_limit=1,
            concurrency_id="load",
        )
