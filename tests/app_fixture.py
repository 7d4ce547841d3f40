"""For the app tests: a tiny asset dir (registry.json + tiny models) and the real app in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tiny import tiny_char_tokenizer, tiny_llama, tiny_mamba, tiny_neox

import mad_models  # noqa: F401
from mad_models.hybrid import ManticoreForCausalLM
from mad_models.more import MoReConfig

ROOT = Path(__file__).resolve().parents[1]
MAD_VOCAB = 32
HYBRID_MIXTURE = [[0.7, 0.3], [0.2, 0.8]]
MAD_TASKS = {
    "in_context_recall": {"seq_len": 32},
    "selective_copying": {"seq_len": 32, "num_tokens_to_copy": 4},
}


# meta.presets as the asset build writes them for the language adapters: LoRA and MoRe share a task, so
# one prompt appears in both (the app offers it once); "LoRA (zero)" lists none.
TINY_PRESETS = {
    "tiny-base + LoRA": [
        {"prompt": "Calculate -3 + 5.", "answer": "2", "module": "arithmetic__add_or_sub"},
        {"prompt": "Solve 2*x = 6 for x.", "answer": "3", "module": "algebra__linear_1d"},
    ],
    "tiny-base + MoRe": [
        {"prompt": "Calculate -3 + 5.", "answer": "2", "module": "arithmetic__add_or_sub"},
        {"prompt": "What is 7 times 6?", "answer": "42", "module": "arithmetic__mul"},
    ],
}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"  # screenshots of the browser tests (git-ignored)


def build_tiny_assets(root: Path, presets: dict[str, list[dict]] | None = None) -> dict:
    """Tiny random models laid out as `python -m build_assets build` does; returns the registry.

    ``presets``: ``{entry name: meta.presets}`` to inject (e.g. ``TINY_PRESETS``); none by default.
    """
    root.mkdir(parents=True, exist_ok=True)
    tok = tiny_char_tokenizer()
    base = tiny_llama(seed=0, vocab=128)
    base.generation_config.eos_token_id = tok.eos_token_id
    base.save_pretrained(root / "language/base")
    tok.save_pretrained(root / "language/base")
    targets = ["q_proj", "v_proj"]
    adapters = {
        "lora-zero": LoraConfig(r=2, target_modules=targets),  # B = 0: must equal the base exactly
        "lora": LoraConfig(r=2, target_modules=targets, init_lora_weights=False),  # random B: differs
        "more": MoReConfig(nblocks=2, block_rank=1, target_modules=targets, init_weights=False),
    }
    for name, cfg in adapters.items():
        torch.manual_seed(1)
        get_peft_model(tiny_llama(seed=0, vocab=128), cfg).save_pretrained(root / f"language/{name}")
    attention, mamba = tiny_neox(seed=0, vocab=MAD_VOCAB), tiny_mamba(seed=0, vocab=MAD_VOCAB)
    attention.save_pretrained(root / "mad/attention")
    mamba.save_pretrained(root / "mad/mamba")
    hybrid = ManticoreForCausalLM.from_components([attention, mamba], n_blocks=2, mixture=HYBRID_MIXTURE)
    hybrid.save_pretrained(root / "mad/hybrid")
    hybrid.prune(threshold=0.5).save_pretrained(root / "mad/hybrid-pruned")
    mad_meta = {"mad_tasks": MAD_TASKS}
    registry = {
        "models": [
            {"name": "tiny-base", "kind": "causal_lm", "path": "language/base", "group": "language"},
            {
                "name": "tiny-base + LoRA (zero)",
                "kind": "adapter",
                "path": "language/lora-zero",
                "base": "tiny-base",
                "group": "language",
            },
            {
                "name": "tiny-base + LoRA",
                "kind": "adapter",
                "path": "language/lora",
                "base": "tiny-base",
                "group": "language",
            },
            {
                "name": "tiny-base + MoRe",
                "kind": "adapter",
                "path": "language/more",
                "base": "tiny-base",
                "group": "language",
            },
            {
                "name": "mad/attention",
                "kind": "causal_lm",
                "path": "mad/attention",
                "group": "mad",
                "meta": mad_meta,
            },
            {"name": "mad/mamba", "kind": "causal_lm", "path": "mad/mamba", "group": "mad", "meta": mad_meta},
            {
                "name": "mad/hybrid",
                "kind": "causal_lm",
                "path": "mad/hybrid",
                "group": "mad",
                "meta": mad_meta,
            },
            {
                "name": "mad/hybrid-pruned",
                "kind": "causal_lm",
                "path": "mad/hybrid-pruned",
                "group": "mad",
                "meta": mad_meta,
            },
        ]
    }
    for entry in registry["models"]:
        if entry["name"] in (presets or {}):
            entry.setdefault("meta", {})["presets"] = presets[entry["name"]]
    (root / "registry.json").write_text(json.dumps(registry, indent=1))
    return registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(assets: Path | None, log_path: Path, timeout: float = 90.0, env: dict | None = None):
    """Start `python app.py` on 127.0.0.1 and a free port; returns (url, process, seconds to ready).

    ``env``: variables set on top of the defaults (offline Hub, CPU), e.g. ``SPACE_ID`` for public mode or
    ``MAD_MODELS_THREADS``."""
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "MAD_MODELS_DEVICE": "cpu",
        **(env or {}),
    }
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    if assets is not None:
        cmd += ["--assets", str(assets)]
    log = open(log_path, "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return url, proc, time.perf_counter() - t0
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"app not ready in {timeout} s:\n{log_path.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def open_tab(page, name: str) -> None:
    """Click a tab of the app in a Playwright page. On a narrow page Gradio folds some tabs into its
    "More tabs" menu, where they are plain buttons: the menu is opened and the tab's button clicked."""
    tab = page.get_by_role("tab", name=name)
    if tab.is_visible():
        tab.click()
        return
    page.get_by_role("button", name="More tabs").click()
    page.locator(".overflow-dropdown").get_by_role("button", name=name, exact=True).click()


def set_models(page, names: list[str]) -> None:
    """Tick exactly ``names`` in the Compare tab's model list, in that order: the picked list (and with it
    the columns and the exports' rows) follows the order of ticking, so everything is unticked first."""
    boxes = page.locator("#models input[type=checkbox]")
    labels = [boxes.nth(i).locator("xpath=..").inner_text().strip() for i in range(boxes.count())]
    for i in range(boxes.count()):
        if boxes.nth(i).is_checked():
            boxes.nth(i).click()
    for name in names:
        boxes.nth(labels.index(name)).click()
