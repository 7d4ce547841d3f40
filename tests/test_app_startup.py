"""Speed to first use (issue 23; measured by bench/app_startup.py): the page is built without the model
stack, and loading the Compare tab's models builds nothing Compare does not use."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from app_fixture import build_tiny_assets
from peft import PeftModel

from app_backend.registry import Registry
from app_backend.service import AppService

ROOT = Path(__file__).resolve().parents[1]
# what only loading a model needs: transformers and peft (with everything they import) cost about 5 CPU-s
# of a ~6 CPU-s start, which a visitor would otherwise wait through before the page is served
MODEL_STACK = ("transformers", "peft", "bitsandbytes", "accelerate", "hub_tools", "mad_models.training")


def test_building_the_page_imports_no_model_stack():
    code = (
        "import sys\n"
        "import app\n"
        "from app_backend.registry import Registry\n"
        "from app_backend.service import AppService\n"
        f"demo = app.build_app(AppService(Registry.from_dir({str(ROOT / 'assets')!r})))\n"
        "assert demo.fns, 'no events built'\n"
        f"print('HEAVY', sorted(m for m in {MODEL_STACK!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []", out.stdout[-500:]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    build_tiny_assets(root)
    return root


@pytest.fixture
def svc(assets):
    return AppService(Registry.from_dir(assets))


def test_an_adapter_view_is_built_on_first_use_not_at_load(svc, assets):
    base = svc.get("tiny-base")
    item = svc.get("tiny-base + MoRe")
    assert item.__dict__["_model"] is None  # loading built no view: Compare runs the host's rows
    assert item.config is base.host.model.config  # Compare reads the vocabulary without one
    *_, cols = svc.compare("Hello", ["tiny-base", "tiny-base + MoRe"], 4, chat=False)
    assert all(c["error"] is None and c["new_tokens"] == 4 for c in cols)
    assert item.__dict__["_model"] is None
    view = item.model  # asked for: built now, once, over the host's tensors
    assert item.model is view and item.__dict__["_model"] is view
    base_ptrs = {p.data_ptr() for p in base.model.parameters()}
    shared = [p for n, p in view.named_parameters() if "more_" not in n]
    assert shared and all(p.data_ptr() in base_ptrs for p in shared)
    ref = PeftModel.from_pretrained(copy.deepcopy(base.model), assets / "language" / "more").eval()
    ids = torch.randint(0, 128, (2, 9))
    with torch.no_grad():  # the view is that adapter alone
        torch.testing.assert_close(view(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-5)


def test_a_view_asked_for_after_its_adapter_left_the_host_says_so(svc):
    item = svc.get("tiny-base + LoRA")
    svc.cache.discard("tiny-base + LoRA")  # evicted (its host keeps serving the other adapters)
    with pytest.raises(KeyError, match="no longer on this host"):
        item.model  # noqa: B018


KEEP = "print(keep_out_bitsandbytes(pick_runtime()))"


def test_an_app_that_does_not_quantize_keeps_bitsandbytes_out():
    code = (
        "import importlib.util, sys\n"
        "from app_backend.runtime import Runtime, keep_out_bitsandbytes, pick_runtime\n"
        "assert not keep_out_bitsandbytes(Runtime('cuda', None, '4bit', 1, 2**30))\n"
        "assert 'bitsandbytes' not in sys.modules\n"
        "rt = pick_runtime()\n"
        "assert rt.quant == 'none' and keep_out_bitsandbytes(rt)\n"
        "import peft, torch\n"
        "from mad_models.loading import load_causal_lm  # noqa\n"
        "model = peft.get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)),\n"
        "                            peft.LoraConfig(target_modules=['0'], r=2))\n"
        "assert model(torch.ones(1, 4)).shape == (1, 4)\n"
        "from transformers.utils import is_bitsandbytes_available\n"
        "print('BNB', importlib.util.find_spec('bitsandbytes'), is_bitsandbytes_available(),\n"
        "      sys.modules['bitsandbytes'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAD_MODELS_QUANT": "none"}
    env.pop("MAD_MODELS_BITSANDBYTES", None)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "BNB None False None", out.stdout[-500:]
    out = subprocess.run(
        [sys.executable, "-c", f"from app_backend.runtime import *\n{KEEP}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "MAD_MODELS_BITSANDBYTES": "1"},
        timeout=300,
    )
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_models_are_built_one_at_a_time(svc):
    """transformers' from_pretrained patches class-wide functions while it runs (tie_weights among them):
    the loader builds behind BUILD_LOCK, so a load waits while another model is being built."""
    from app_backend.runtime import BUILD_LOCK

    done: list[object] = []
    with BUILD_LOCK:  # another model being built
        worker = threading.Thread(target=lambda: done.append(svc.get("mad/hybrid")))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and not done and "mad/hybrid" not in svc.cache.names()
    worker.join(timeout=120)
    assert done and done[0].model.config.model_type == "manticore"


RACE = """
import sys, threading
import app
from app_backend.registry import Registry
from app_backend.runtime import keep_out_bitsandbytes
from app_backend.service import AppService
svc = AppService(Registry.from_dir(sys.argv[1]))
keep_out_bitsandbytes(svc.runtime)
app.build_app(svc)
warm = threading.Thread(target=svc.warm, daemon=True)
warm.start()  # as app.main does once the page is up
svc.mixture("mad/hybrid", 0.5)  # a visitor's first request, meanwhile
warm.join()
print("OK")
"""


@pytest.mark.slow
def test_a_first_request_during_the_warm_up_loads_its_model():
    """The warm-up (SmolLM2 and its adapters) and a hybrid's first load at the same moment, both importing
    transformers and building models: failed with "missing tensors ['components.1.lm_head.weight']" (the
    hybrid's skeleton built while from_pretrained had tie_weights switched off) or "cannot import name"."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run(
        [sys.executable, "-c", RACE, str(ROOT / "assets")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-2000:]
