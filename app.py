"""mad-models demo: compare base models, MoRe/LoRA adapters and Manticore hybrids side by side.

    python app.py                          # bundled assets in ./assets, http://127.0.0.1:7860
    python app.py --assets DIR --port 0    # another asset dir (a registry.json), any free port

Models load lazily on first use into an LRU cache with a memory bound ($MAD_MODELS_CACHE_MB), so the
page is up in seconds. The logic of each tab lives in mad_models/app_backend/service.py.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
import os
import traceback

import gradio as gr
import pandas as pd

from mad_models.app_backend.generation import MAX_NEW_TOKENS, MAX_PROMPT_TOKENS
from mad_models.app_backend.registry import AppInputError, Registry
from mad_models.app_backend.render import cost_rows, heatmap_html, mad_example_html
from mad_models.app_backend.service import MAX_COMPARE, AppService

log = logging.getLogger("mad-models-app")
MAD_TASKS = (
    "in_context_recall",
    "fuzzy_recall",
    "noisy_recall",
    "selective_copying",
    "compression",
    "memorization",
)


def ui_errors(fn):
    """Show bad input as a message in the UI; log anything unexpected and show one line, never a trace."""

    def convert(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, AppInputError):
            return gr.Error(str(e))
        log.error("unexpected error in %s:\n%s", fn.__name__, traceback.format_exc())
        return gr.Error(f"Something went wrong in {fn.__name__}: {type(e).__name__}: {str(e)[:300]}")

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                raise convert(e) from None

        return gen

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise convert(e) from None

    return wrapper


def build_app(svc: AppService) -> gr.Blocks:
    reg = svc.registry
    names = reg.names()
    language = reg.names(group="language")
    default_models = (language or names)[:4]
    status = f"⚠ {reg.problem}" if reg.problem else f"{len(names)} models registered from `{reg.root}`."
    cpu = svc.runtime.device == "cpu"
    # CPU: two generations at a time share the cores; more would only slow every user down.
    limit = 2 if cpu else 4
    on_models = dict(concurrency_limit=limit, concurrency_id="models")  # every event that runs a model

    with gr.Blocks(title="mad-models") as demo:
        gr.Markdown("# mad-models: MoRe adapters and Manticore hybrids, side by side")
        gr.Markdown(svc.runtime.describe(), elem_id="runtime")
        gr.Markdown(status, elem_id="asset-status")

        with gr.Tabs():
            # ---------------------------------------------------------------- Compare outputs
            with gr.Tab("Compare outputs", id="compare"):
                with gr.Row():
                    prompt = gr.Textbox(
                        label="Prompt (text; token-id models take ids like `3 9 4 12`)",
                        value="What is 12 plus 7?" if language else "1 9 2 10 3 11 1",
                        lines=3,
                        scale=3,
                        elem_id="prompt",
                    )
                    models = gr.CheckboxGroup(
                        names, value=default_models, label="Models", scale=2, elem_id="models"
                    )
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

            # ---------------------------------------------------------------- Adapter sizes
            with gr.Tab("Adapter sizes", id="adapters"):
                gr.Markdown(
                    "Exact counts from `mad_models.more.adapter_report`: trainable parameters, bytes of "
                    "`adapter_model.safetensors`, % of the base, and the LoRA rank with the same count."
                )
                sizes_btn = gr.Button("Compute adapter sizes", elem_id="run-sizes")
                totals = gr.Dataframe(label="Per adapter", interactive=False, elem_id="sizes-totals")
                by_type = gr.Dataframe(
                    label="Trainable params per module type (side by side)", interactive=False
                )
                bars = gr.BarPlot(
                    x="bar",
                    y="trainable params",
                    color="adapter",
                    label="Trainable params per module type",
                    x_label_angle=-30,
                    height=320,
                )

                @ui_errors
                def adapter_sizes(progress=gr.Progress()):  # noqa: B008  (gradio injects progress)
                    d = svc.adapter_sizes(progress)
                    return (
                        pd.DataFrame(d["totals"]),
                        pd.DataFrame(d["by_module_type"]),
                        pd.DataFrame(d["bars"]),
                    )

                sizes_btn.click(
                    adapter_sizes,
                    None,
                    [totals, by_type, bars],
                    api_name="adapter_sizes",
                    **on_models,
                )

            # ---------------------------------------------------------------- Hybrid mixtures
            with gr.Tab("Hybrid mixtures", id="hybrids"):
                hybrids = svc.hybrid_names()
                with gr.Row():
                    hybrid = gr.Dropdown(hybrids, value=hybrids[0] if hybrids else None, label="Hybrid")
                    threshold = gr.Slider(0.0, 0.95, value=0.25, step=0.05, label="Prune threshold")
                    mix_btn = gr.Button("Show", elem_id="run-mixture")
                heat = gr.HTML(elem_id="heatmap")
                weights_df = gr.Dataframe(label="Mixture weights (blocks × components)", interactive=False)
                with gr.Row():
                    # long item names: give the value column room so figures are not cut off
                    cost_df = gr.Dataframe(
                        label="Cost report", interactive=False, column_widths=["65%", "35%"], wrap=True
                    )
                    pruned_df = gr.Dataframe(
                        label="Cost after pruning at the threshold",
                        interactive=False,
                        column_widths=["65%", "35%"],
                        wrap=True,
                    )
                prune_md = gr.Markdown()

                @ui_errors
                def mixture(name, threshold, progress=gr.Progress()):  # noqa: B008  (gradio injects progress)
                    if not name:
                        raise AppInputError(
                            reg.problem or "No hybrid is registered; build the assets or load one."
                        )
                    d = svc.mixture(name, threshold, progress)
                    w = pd.DataFrame(d["weights"], columns=d["components"])
                    w.insert(0, "block", list(range(len(d["weights"]))))
                    kept = sum(sum(r) for r in d["kept"])
                    total = sum(len(r) for r in d["kept"])
                    return (
                        heatmap_html(d["weights"], d["components"], d["kept"]),
                        w,
                        pd.DataFrame(cost_rows(d["cost"])),
                        pd.DataFrame(cost_rows(d["pruned_cost"])),
                        f"Pruning at {d['threshold']:.2f} keeps {kept} of {total} (block, component) pairs.",
                    )

                mix_btn.click(
                    mixture,
                    [hybrid, threshold],
                    [heat, weights_df, cost_df, pruned_df, prune_md],
                    api_name="mixture",
                    **on_models,
                )

            # ---------------------------------------------------------------- MAD skills
            with gr.Tab("MAD skills", id="mad"):
                mad_list = svc.mad_names()
                with gr.Row():
                    task = gr.Dropdown(list(MAD_TASKS), value="in_context_recall", label="Task")
                    mad_pick = gr.CheckboxGroup(mad_list, value=mad_list[:4], label="Models")
                    n_seq = gr.Number(64, label="Sequences in the fresh test batch", precision=0)
                    mad_seed = gr.Number(1, label="Seed (test batch drawn at 12345 + seed)", precision=0)
                mad_btn = gr.Button("Evaluate", elem_id="run-mad")
                acc_df = gr.Dataframe(
                    label="Accuracy on scored positions", interactive=False, elem_id="mad-acc"
                )
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

            # ---------------------------------------------------------------- Load
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
        gr.Markdown(
            f"Limits: prompts ≤ {MAX_PROMPT_TOKENS} tokens, ≤ {MAX_NEW_TOKENS} new tokens, "
            f"{MAX_COMPARE} models at once."
        )
    demo.queue(max_size=64, default_concurrency_limit=limit)
    return demo


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--assets", default=os.environ.get("MAD_MODELS_ASSETS"), help="asset dir with registry.json"
    )
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    svc = AppService(Registry.from_dir(args.assets))
    if svc.registry.problem:
        print(f"mad-models: {svc.registry.problem}", flush=True)
    build_app(svc).launch(server_name=args.host, server_port=args.port or None)


if __name__ == "__main__":
    main()
