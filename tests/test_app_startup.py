"""Speed to first use (issue 23; measured by bench/app_startup.py): the page is built without the model
stack, an app that does not quantize keeps bitsandbytes out, and a first request during the warm-up loads
its model. (Adapter views built on first use and one model built at a time: tests/test_app_engine.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what only loading a model needs: transformers and peft (with what they import) took about 5 of the ~9 CPU-s
# before the server was up, which a visitor waited through before the page was served
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


KEEP = "print(keep_out_bitsandbytes(pick_runtime()))"


def test_an_app_that_does_not_quantize_keeps_bitsandbytes_out():
    code = (
        "import importlib.util, sys\n"
        "from app_backend.runtime import Runtime, keep_out_bitsandbytes, pick_runtime\n"
        "assert not keep_out_bitsandbytes(Runtime('cuda', None, '4bit', 1, 2**30))\n"
        "assert not keep_out_bitsandbytes(Runtime('cuda', None, 'none', 1, 2**30))  # may Load quantized\n"
        "assert 'bitsandbytes' not in sys.modules\n"
        "rt = pick_runtime()\n"
        "assert rt.quant == 'none' and keep_out_bitsandbytes(rt)\n"
        "import peft, torch\n"
        "from mad_models.loading import load_causal_lm  # noqa\n"
        "model = peft.get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)),\n"
        "                            peft.LoraConfig(target_modules=['0'], r=2))\n"
        "assert model(torch.ones(1, 4)).shape == (1, 4)\n"
        "from app_backend.service import _hub_message\n"
        "err = ImportError('Using `bitsandbytes` 4-bit quantization requires bitsandbytes: pip install')\n"
        "assert 'MAD_MODELS_BITSANDBYTES=1' in _hub_message('me/q4', None, err)  # what to do, named\n"
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
