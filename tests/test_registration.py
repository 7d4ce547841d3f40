"""``import mad_models`` is light (no torch) and still registers MoRe with PEFT and "manticore" with
transformers, whichever is imported first and whenever: each case runs in a fresh interpreter."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = (
    "import sys\n"
    "import peft, transformers\n"
    "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
    "from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING\n"
    "import mad_models.hybrid, mad_models.more\n"
    "assert peft.PeftType('MORE') is peft.PeftType.MORE\n"
    "assert peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING['MORE'] is mad_models.more.MoReConfig\n"
    "assert CONFIG_MAPPING['manticore'] is mad_models.hybrid.ManticoreConfig\n"
    "from mad_models.hybrid import ManticoreConfig, ManticoreForCausalLM\n"
    "assert MODEL_FOR_CAUSAL_LM_MAPPING[ManticoreConfig] is ManticoreForCausalLM\n"
    "from mad_models import registration\n"
    "assert not registration._pending and registration._FINDER not in sys.meta_path\n"
    "print('OK')\n"
)


def python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_import_mad_models_loads_no_torch():
    res = python(
        "import sys, mad_models\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules))\n"
        "print(mad_models.__version__)\n"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["[]", "0.1.0"]


@pytest.mark.parametrize(
    "first",
    [
        "import mad_models\nimport peft",  # peft imports transformers: both register
        "import mad_models\nimport transformers\nimport peft",
        "import peft, transformers\nimport mad_models",  # already imported: register at once
        "import transformers\nimport mad_models",
        "import mad_models.loading",  # a library module importing transformers during its own import
        "from mad_models.training import train_mad",
        "from hub_tools import pull",
    ],
)
def test_registration_whatever_is_imported_first(first):
    """Once ``import mad_models`` has run, the registrations hold as soon as the libraries are imported; the
    check imports them last, so each case first imports them its own way."""
    res = python(
        f"{first}\n"
        "import sys\n"
        "waiting = sys.modules['mad_models.registration']._pending\n"
        "assert 'transformers' not in sys.modules or 'transformers' not in waiting, waiting\n"
        "assert 'peft' not in sys.modules or 'peft' not in waiting, waiting\n"
        f"{CHECK}"
    )
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stderr[-3000:]


def test_a_subpackage_is_an_attribute_on_first_use():
    res = python("import mad_models\nprint(mad_models.monarch.monarch_param_count.__name__)\n")
    assert res.returncode == 0 and res.stdout.strip() == "monarch_param_count", res.stderr[-2000:]
    res = python("import mad_models\nmad_models.no_such_thing\n")
    assert "AttributeError: module 'mad_models' has no attribute 'no_such_thing'" in res.stderr
