"""space.yaml is the Space's configuration: push_space writes it as the front matter of the Space's README,
so the project's README has none; and the configuration can start the app."""

from __future__ import annotations

from pathlib import Path

import gradio
import pytest
import yaml
from huggingface_hub import SpaceCard

from hub_tools import push_space
from hub_tools.space import space_config
from mad_models.loading import SMOLLM2_HUB_ID
from tests.hub_server import WRITE_TOKEN, hub_fixture  # noqa: F401  (the "hub" fixture)

ROOT = Path(__file__).resolve().parents[1]
KNOWN_HARDWARE = {"cpu-basic", "cpu-upgrade", "t4-small", "t4-medium", "l4x1", "a10g-small", "a10g-large"}


def front_matter_and_body(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n"), text[:200]
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def test_readme_has_no_front_matter():
    """The README is rendered on GitHub and PyPI; the Space's settings live in space.yaml."""
    assert not (ROOT / "README.md").read_text().startswith("---")


def test_pushed_space_card_has_space_yaml_as_front_matter(hub, monkeypatch):
    """The repo's own app files go up; the Space's README is space.yaml's settings over the project README."""
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    allow = ["app.py", "README.md", "space.yaml", "requirements.txt"]
    push_space(ROOT, "me/mad-models-space", allow=allow)
    files = hub.files("me/mad-models-space", repo_type="space")
    assert set(files) == {".gitattributes", *allow}
    pushed = files["README.md"].decode()
    front, body = front_matter_and_body(pushed)
    assert front == yaml.safe_load((ROOT / "space.yaml").read_text())
    assert body.strip() == (ROOT / "README.md").read_text().strip()
    # huggingface_hub parses it the way the Hub does
    card = SpaceCard(pushed)
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"
    assert card.data.sdk_version == gradio.__version__


def make_app(folder: Path, readme: str | None, space_yaml: str | None) -> Path:
    folder.mkdir()
    (folder / "app.py").write_text("import gradio as gr\ngr.Interface(lambda x: x, 'text', 'text').launch()")
    (folder / "requirements.txt").write_text("mad-models\n")
    if readme is not None:
        (folder / "README.md").write_text(readme)
    if space_yaml is not None:
        (folder / "space.yaml").write_text(space_yaml)
    return folder


def test_space_yaml_replaces_an_old_front_matter_and_fills_what_a_space_needs(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    old = "---\ntitle: old\nsdk: gradio\nsdk_version: 1.0.0\n---\n\n# My demo\n\nSome words.\n"
    app = make_app(tmp_path / "app", old, "title: New title\nemoji: 🦁\nhardware_note: cpu\n")
    push_space(app, "me/demo")
    front, body = front_matter_and_body(hub.files("me/demo", repo_type="space")["README.md"].decode())
    # space.yaml's keys in its order, then what a Space cannot start without
    assert list(front) == ["title", "emoji", "hardware_note", "sdk", "app_file", "sdk_version"]
    assert front["title"] == "New title" and front["emoji"] == "🦁"
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py"
    assert front["sdk_version"] == gradio.__version__  # not the README's stale 1.0.0
    assert body == "\n# My demo\n\nSome words.\n"  # one blank line after the front matter

    # no README.md uploaded: the generated card's body under space.yaml's settings
    app2 = make_app(tmp_path / "app2", None, "title: Second\n")
    push_space(app2, "me/demo2")
    front, body = front_matter_and_body(hub.files("me/demo2", repo_type="space")["README.md"].decode())
    assert front["title"] == "Second" and "# demo2" in body


@pytest.mark.parametrize(
    "space_yaml,match",
    [
        ("title: [unclosed\n", "space.yaml is not valid YAML"),
        ("- a list\n- not a mapping\n", "space.yaml must be a YAML mapping"),
        ("sdk: docker\n", "space.yaml says sdk: 'docker'"),
        ("app_file: main.py\n", "space.yaml says app_file: 'main.py', but the app to push is 'app.py'"),
    ],
)
def test_a_bad_space_yaml_is_named_and_nothing_is_pushed(hub, tmp_path, monkeypatch, space_yaml, match):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    app = make_app(tmp_path / "app", "# demo\n", space_yaml)
    with pytest.raises(ValueError, match=match):
        push_space(app, "me/bad")
    assert ("space", "me/bad") not in hub.state.repos  # refused before the repo was even created
    assert space_config(tmp_path) is None  # a folder without space.yaml has no settings


def test_space_config_can_start_the_app():
    space = space_config(ROOT)
    assert space["sdk"] == "gradio"
    assert space["sdk_version"] == gradio.__version__  # the gradio the app is tested with
    pins = (ROOT / "requirements.txt").read_text()
    assert f"gradio=={space['sdk_version']}" in pins
    assert (ROOT / space["app_file"]).is_file()
    assert space["suggested_hardware"] in KNOWN_HARDWARE
    assert str(space["python_version"]).startswith("3.11")
    # the base the language assets load at run time: linked from the Space, and downloaded into the
    # Space's HF cache when it is built, where load_smollm2 finds it offline (local_files_only)
    assert SMOLLM2_HUB_ID in space["models"]
    preloaded = dict(entry.split(" ", 1) for entry in space["preload_from_hub"])
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(preloaded[SMOLLM2_HUB_ID].split(","))
