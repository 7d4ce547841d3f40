"""mad-models demo: compare base models, MoRe/LoRA adapters and Manticore hybrids side by side.

    python app.py                          # bundled assets in ./assets, http://127.0.0.1:7860
    python app.py --assets DIR --port 0    # another asset dir (a registry.json), any free port

Models load lazily on first use into an LRU cache with a memory bound ($MAD_MODELS_CACHE_MB), so the
page is up in seconds. What goes where in app_backend: see its package docstring.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading

import gradio as gr

from app_backend.generation import MAX_NEW_TOKENS, MAX_PROMPT_TOKENS
from app_backend.registry import Registry
from app_backend.runtime import keep_out_bitsandbytes
from app_backend.service import AppService
from app_backend.tabs.compare import MAX_COMPARE
from app_backend.ui import compare, hybrids, load, mad, sizes
from app_backend.ui.common import TabContext
from app_backend.ui.theme import CSS
from app_backend.visitors import VisitorLimits, guard_events


def build_app(svc: AppService) -> gr.Blocks:
    """The whole page: a header, then one tab per builder in ``app_backend.ui``."""
    reg = svc.registry
    names = reg.names()
    where = "the bundled assets" if svc.public else f"`{reg.root}`"
    status = f"⚠ {reg.problem}" if reg.problem else f"{len(names)} models registered from {where}."
    cpu = svc.runtime.device == "cpu"
    # CPU: two generations at a time share the cores; more would only slow every user down.
    limit = 2 if cpu else 4
    on_models = dict(concurrency_limit=limit, concurrency_id="models")  # every event that runs a model

    # Gradio's own copies of served files (the exports) go after an hour, checked every hour
    with gr.Blocks(title="mad-models", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# mad-models: MoRe adapters and Manticore hybrids, side by side")
        gr.Markdown(svc.runtime.describe(), elem_id="runtime")
        gr.Markdown(status, elem_id="asset-status")

        ctx = TabContext(svc, on_models)
        with gr.Tabs():
            handles = compare.build(ctx)
            sizes.build(ctx)
            picks = hybrids.build(ctx)
            mad.build(ctx)
            load.build(ctx, handles["models"], picks["hybrid"])
        gr.Markdown(
            f"Limits: prompts ≤ {MAX_PROMPT_TOKENS} tokens, ≤ {MAX_NEW_TOKENS} new tokens, "
            f"{MAX_COMPARE} models at once."
        )

        def forget(request: gr.Request):  # the tab closed or reloaded: its loaded models go
            svc.forget_session(request.session_hash if request is not None else None)

        demo.unload(forget)
    demo.queue(max_size=64, default_concurrency_limit=limit)
    if svc.public:  # one visitor's flood of requests cannot hold the queue: see app_backend/visitors.py
        guard_events(demo, VisitorLimits(), ("models", "load"))
    return demo


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--assets", default=os.environ.get("MAD_MODELS_ASSETS"), help="asset dir with registry.json"
    )
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument(
        "--public",
        action="store_true",
        help="run as a public Space would ($SPACE_ID set): Load takes Hub ids only, no local paths",
    )
    p.add_argument("--no-warm", action="store_true", help="do not load the base model at start-up")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    public = args.public or bool(os.environ.get("SPACE_ID"))
    svc = AppService(Registry.from_dir(args.assets), public=public)
    keep_out_bitsandbytes(svc.runtime)  # nothing here quantizes: 2 CPU-s of the first model load saved
    if svc.registry.problem:
        print(f"mad-models: {svc.registry.problem}", flush=True)
    demo = build_app(svc)
    demo.launch(server_name=args.host, server_port=args.port or None, prevent_thread_lock=True, css=CSS)
    if not args.no_warm:
        # the base model loads once the page is up (not before: loading holds the GIL and would slow
        # the server's start), so the first Compare does not wait for it
        threading.Thread(target=svc.warm, name="warm-base", daemon=True).start()
    demo.block_thread()


if __name__ == "__main__":
    main()
