"""What a push may publish (issue 24, second security pass): never what a link points to, never a secret
file, never the token in use, in a file or in the commit message. Each test pushes through the real
huggingface_hub client to the local Hub (tests/hub_server.py) and reads back what landed."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

import mad_models  # noqa: F401  (registers MORE and "manticore")
from hub_tools import HubError, commit_folder, push, push_adapter, push_hybrid, push_space
from mad_models.hybrid import ManticoreForCausalLM
from mad_models.more import MoReConfig
from tests.hub_server import WRITE_TOKEN, hub_fixture  # noqa: F401  (the "hub" fixture)
from tests.tiny import tiny_char_tokenizer, tiny_llama, tiny_mamba, tiny_neox

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaPRIVATEKEYBYTES\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.fixture(autouse=True)
def _write_token(request, monkeypatch):
    """Tests on the local Hub push with the write token, as a logged-in user would (HF_TOKEN)."""
    if "hub" in request.fixturenames:
        request.getfixturevalue("hub")
        monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)


def everything_on(hub, repo_id: str, repo_type: str = "model") -> bytes:
    """Every byte the Hub holds for ``repo_id``: all files of all commits, and the commit messages."""
    repo = hub.repo(repo_id, repo_type)
    blobs = [data for commit in repo.commits.values() for data in commit.files.values()]
    return b"\n".join(blobs + [c.message.encode() for c in repo.commits.values()])


def tiny_hybrid() -> ManticoreForCausalLM:
    neox, mamba = tiny_neox(seed=1), tiny_mamba(seed=2)
    neox.config._name_or_path, mamba.config._name_or_path = "org/tiny-neox", "org/tiny-mamba"
    return ManticoreForCausalLM.from_components([neox, mamba], n_blocks=2).eval()


def more_model():
    torch.manual_seed(0)
    cfg = MoReConfig(nblocks=4, block_rank=1, target_modules=["q_proj", "v_proj"], init_weights=False)
    return get_peft_model(tiny_llama(), cfg).eval()


# ------------------------------------------------------------- hole 8: a model push never follows a link


def test_push_of_a_folder_never_publishes_what_a_link_points_to(hub, tmp_path):
    key = tmp_path / "home" / ".ssh" / "id_rsa"
    key.parent.mkdir(parents=True)
    key.write_text(KEY)
    folder = tmp_path / "hybrid"
    tiny_hybrid().save_pretrained(folder)
    tiny_char_tokenizer().save_pretrained(folder)
    (folder / "chat_template.jinja").symlink_to(key)
    try:
        push(folder, "me/linked-hybrid")
    except HubError as err:
        assert "chat_template.jinja is a link" in str(err) and "Nothing was uploaded" in str(err)
    assert all(b"PRIVATEKEYBYTES" not in everything_on(hub, r) for _, r in hub.state.repos), "key published"
    assert ("model", "me/linked-hybrid") not in hub.state.repos

    (folder / "chat_template.jinja").unlink()  # the same folder without the link goes up
    push(folder, "me/linked-hybrid")
    assert "tokenizer.json" in hub.files("me/linked-hybrid")


def test_commit_folder_refuses_links_too(hub, tmp_path):
    folder = tmp_path / "plain"
    tiny_llama().save_pretrained(folder)
    (folder / "notes.txt").symlink_to(tmp_path / "elsewhere.txt")
    (tmp_path / "elsewhere.txt").write_text(KEY)
    with pytest.raises(HubError, match=r"notes.txt is a link"):
        commit_folder(folder, "me/linked-plain", commit_message="x")
    assert ("model", "me/linked-plain") not in hub.state.repos


# ------------------------------------------------------------- hole 9: a Space takes what a Space needs

APP_FILES = {
    "app.py": "import gradio as gr\n",
    "requirements.txt": "mad-models\n",
    "sub/helper.py": "X = 1\n",
    "assets/registry.json": '{"models": []}\n',
    "assets/tiny/model.safetensors": "\0" * 64,
    "static/logo.png": "\x89PNG",
}
SECRETS = {
    ".pypirc": "[pypi]\npassword = pypi-secret\n",
    "id_rsa": KEY,
    "id_ed25519": KEY,
    ".ssh/id_rsa": KEY,
    ".ssh/config": "Host *\n",
    "secrets.toml": "api_key = 'x'\n",
    "kaggle.json": '{"username": "me", "key": "secret"}',
    "service-account.json": '{"private_key": "x"}',
    "prod.env": "DB_PASSWORD=x\n",
    ".npmrc": "//registry.npmjs.org/:_authToken=x\n",
    ".aws/config": "[default]\n",
    ".aws/credentials": "[default]\naws_secret_access_key=x\n",
    ".docker/config.json": '{"auths": {}}',
    "server.key": KEY,
    "cert.p12": "p12",
    "cert.pfx": "pfx",
    ".pgpass": "host:5432:db:user:pw\n",
    "notes.kdbx": "kdbx",
    "backup.sql": "INSERT INTO users VALUES ('x');\n",
    "settings.py": f"HF = '{WRITE_TOKEN}'\n",  # an ordinary name holding the token in use
    "config/deploy.yaml": f"token: {WRITE_TOKEN}\n",
}


def make_app(root: Path) -> Path:
    app = root / "app"
    for name, text in {**APP_FILES, **SECRETS}.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    return app


def test_space_push_outside_git_uploads_only_what_a_space_needs(hub, tmp_path, caplog):
    app = make_app(tmp_path)
    with caplog.at_level(logging.INFO, logger="hub_tools"):
        push_space(app, "me/space-walk")
    files = set(hub.files("me/space-walk", repo_type="space"))
    assert files == {".gitattributes", "README.md", *APP_FILES}, sorted(files - set(APP_FILES))
    assert WRITE_TOKEN.encode() not in everything_on(hub, "me/space-walk", "space")
    assert "settings.py (holds the token in use)" in caplog.text


def test_space_push_refuses_the_token_in_git_tracked_and_named_files(hub, tmp_path):
    app = make_app(tmp_path)
    git = ["git", "-C", str(app), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-f", "."], check=True)  # every file tracked, secrets included
    push_space(app, "me/space-git")
    files = set(hub.files("me/space-git", repo_type="space"))
    assert files == {".gitattributes", "README.md", *APP_FILES}, sorted(files - set(APP_FILES))
    seen = len(hub.state.requests)
    with pytest.raises(ValueError, match=r"settings.py"):
        push_space(app, "me/space-named", allow=["app.py", "settings.py"])
    assert len(hub.state.requests) == seen


# ------------------------------------------------------------- hole 10: the token in use never goes out


def test_push_adapter_never_publishes_the_token(hub):
    push_adapter(
        more_model(),
        "me/leaky-adapter",
        training={"hf_token": WRITE_TOKEN, "lr": 1e-3},
        commit_message=f"run with HF_TOKEN={WRITE_TOKEN}",
    )
    landed = everything_on(hub, "me/leaky-adapter")
    assert WRITE_TOKEN.encode() not in landed
    assert b"lr" in landed  # the rest of the settings still went up


def test_push_hybrid_never_publishes_the_token_even_when_passed_explicitly(hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    push_hybrid(
        tiny_hybrid(),
        "me/leaky-hybrid",
        token=WRITE_TOKEN,
        training={"note": f"pushed with {WRITE_TOKEN}"},
        commit_message=f"hybrid {WRITE_TOKEN}",
    )
    assert WRITE_TOKEN.encode() not in everything_on(hub, "me/leaky-hybrid")


def test_a_binary_holding_the_token_is_refused(hub, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "weights"
    folder.mkdir()
    save_file({"w": torch.zeros(2)}, folder / "model.safetensors", metadata={"note": WRITE_TOKEN})
    with pytest.raises(HubError, match=r"model.safetensors holds the token in use.*Nothing was uploaded"):
        commit_folder(folder, "me/leaky-weights", commit_message="x")
    assert ("model", "me/leaky-weights") not in hub.state.repos
