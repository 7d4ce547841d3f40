"""space.yaml and the README front matter (what Hugging Face reads) agree and can start the Space."""

from __future__ import annotations

import re
from pathlib import Path

import gradio
import yaml
from huggingface_hub import SpaceCard

from mad_models.loading import SMOLLM2_HUB_ID

ROOT = Path(__file__).resolve().parents[1]
KNOWN_HARDWARE = {"cpu-basic", "cpu-upgrade", "t4-small", "t4-medium", "l4x1", "a10g-small", "a10g-large"}


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    m = re.match(r"\A---\n(.*?)\n---\n", text, re.S)
    assert m, "README.md must start with a YAML front matter block (--- ... ---)"
    return yaml.safe_load(m.group(1))


def test_space_yaml_and_readme_front_matter_agree():
    space = yaml.safe_load((ROOT / "space.yaml").read_text())
    readme = front_matter()
    assert readme == space, (
        f"differ in: {sorted(k for k in space.keys() | readme.keys() if space.get(k) != readme.get(k))}"
    )
    # huggingface_hub parses it the way the Hub does
    card = SpaceCard((ROOT / "README.md").read_text())
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"


def test_space_config_can_start_the_app():
    space = yaml.safe_load((ROOT / "space.yaml").read_text())
    assert space["sdk"] == "gradio"
    assert space["sdk_version"] == gradio.__version__  # the gradio the app is tested with
    pins = (ROOT / "requirements.txt").read_text()
    assert f"gradio=={space['sdk_version']}" in pins
    assert (ROOT / space["app_file"]).is_file()
    assert space["suggested_hardware"] in KNOWN_HARDWARE
    assert SMOLLM2_HUB_ID in space["models"]  # the base the language assets load at run time
    assert str(space["python_version"]).startswith("3.11")
