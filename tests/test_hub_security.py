"""Security and reliability of hub_tools (issue 12): each test attacks one hole through the real client
against the local Hub double (tests/hub_server.py, 127.0.0.1)."""

from __future__ import annotations

import json
import logging
import subprocess
import time
import traceback
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from peft import PeftModel, get_peft_model

import mad_models  # noqa: F401  (registers MORE with peft, "manticore" with transformers)
from hub_tools import (
    HubError,
    HubRevisionNotFoundError,
    HubUnreachableError,
    RepoContentError,
    commit_folder,
    pull,
    push,
    push_adapter,
    push_hybrid,
    push_space,
)
from mad_models.cli import main
from mad_models.hybrid import ManticoreForCausalLM
from mad_models.more import MoReConfig
from tests.hub_server import WRITE_TOKEN, hub_fixture  # noqa: F401  (the "hub" fixture)
from tests.tiny import tiny_char_tokenizer, tiny_llama, tiny_mamba, tiny_neox

IDS = torch.tensor([[1, 5, 9, 2, 7, 3]])
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(autouse=True)
def _write_token(request, monkeypatch):
    """Tests on the local Hub authenticate with the write token (set after the hub fixture clears it)."""
    if "hub" in request.fixturenames:
        request.getfixturevalue("hub")
        monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)


def more_model(seed: int = 0, base=None) -> PeftModel:
    base = base if base is not None else tiny_llama()
    torch.manual_seed(seed)
    cfg = MoReConfig(nblocks=4, block_rank=1, target_modules=["q_proj", "v_proj"], init_weights=False)
    return get_peft_model(base, cfg).eval()


def tiny_hybrid() -> ManticoreForCausalLM:
    neox, mamba = tiny_neox(seed=1), tiny_mamba(seed=2)
    neox.config._name_or_path, mamba.config._name_or_path = "org/tiny-neox", "org/tiny-mamba"
    return ManticoreForCausalLM.from_components([neox, mamba], n_blocks=2).eval()


def all_text(files: dict[str, bytes]) -> str:
    return "\n".join(d.decode("utf-8", "replace") for f, d in files.items() if not f.endswith(".safetensors"))


# ------------------------------------------------------------------ hole 1: push_space publishes secrets


def app_with_secrets(root: Path, token_file: Path) -> Path:
    app = root / "app"
    (app / "sub").mkdir(parents=True)
    (app / "app.py").write_text("import gradio as gr\n")
    (app / "requirements.txt").write_text("mad-models\n")
    (app / "sub" / "helper.py").write_text("X = 1\n")
    secrets = {
        ".env": "HF_TOKEN=hf_secret\n",
        ".env.local": "A=1\n",
        ".git-credentials": "https://me:hf_secret@huggingface.co\n",
        ".netrc": "machine huggingface.co password hf_secret\n",
        "server.pem": "-----BEGIN PRIVATE KEY-----\n",
        "sub/aws_credentials.json": "{}",
        "hf_token.txt": "hf_secret\n",
    }
    for name, text in secrets.items():
        (app / name).write_text(text)
    (app / "linked_token").symlink_to(token_file)
    return app


SECRET_NAMES = {
    ".env",
    ".env.local",
    ".git-credentials",
    ".netrc",
    "server.pem",
    "sub/aws_credentials.json",
    "hf_token.txt",
    "linked_token",
}


def test_push_space_never_uploads_secrets_or_symlinks(hub, tmp_path, caplog):
    token_file = tmp_path / "token"
    token_file.write_text(WRITE_TOKEN)
    app = app_with_secrets(tmp_path, token_file)
    with caplog.at_level(logging.INFO, logger="hub_tools"):
        push_space(app, "me/space-secrets")
    files = hub.files("me/space-secrets", repo_type="space")
    assert set(files) == {".gitattributes", "README.md", "app.py", "requirements.txt", "sub/helper.py"}
    assert WRITE_TOKEN.encode() not in b"".join(files.values())
    # the upload list is shown before the commit; the refused files are named
    assert "app.py" in caplog.text and "sub/helper.py" in caplog.text
    assert ".env" in caplog.text and "linked_token" in caplog.text


def test_push_space_uploads_only_git_tracked_files_of_a_work_tree(hub, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(WRITE_TOKEN)
    app = app_with_secrets(tmp_path, token_file)
    (app / "notes.ipynb").write_text('{"cells": []}')  # untracked: never leaves the machine
    git = ["git", "-C", str(app), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    # a secret that was committed by mistake is still refused
    subprocess.run([*git, "add", "app.py", "requirements.txt", "sub/helper.py", "-f", ".env"], check=True)
    push_space(app, "me/space-git")
    files = set(hub.files("me/space-git", repo_type="space"))
    assert files == {".gitattributes", "README.md", "app.py", "requirements.txt", "sub/helper.py"}

    # an explicit allow-list wins over git; asking for a secret is refused before any traffic
    push_space(app, "me/space-allow", allow=["app.py"])
    assert set(hub.files("me/space-allow", repo_type="space")) == {".gitattributes", "README.md", "app.py"}
    seen = len(hub.state.requests)
    with pytest.raises(ValueError, match=r"\.netrc"):
        push_space(app, "me/space-allow", allow=["app.py", ".netrc"])
    assert len(hub.state.requests) == seen

    # inside a repository git cannot read: refused, never a fallback to "every file"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ".git").write_text("not a gitdir\n")
    (broken / "app.py").write_text("import gradio as gr\n")
    with pytest.raises(ValueError, match=r"git cannot list its tracked files.*allow="):
        push_space(broken, "me/space-broken")
    assert len(hub.state.requests) == seen


def test_push_space_cache_folder_gives_a_hub_error(hub, tmp_path, caplog):
    app = tmp_path / "app"
    (app / ".cache" / "huggingface").mkdir(parents=True)
    (app / "app.py").write_text("import gradio as gr\n")
    (app / ".cache" / "huggingface" / "x.lock").write_text("")
    # a Space push leaves hidden folders out (issue 24) ...
    with caplog.at_level(logging.INFO, logger="hub_tools"):
        push_space(app, "me/space-cache")
    assert set(hub.files("me/space-cache", repo_type="space")) == {".gitattributes", "README.md", "app.py"}
    assert ".cache/huggingface/x.lock (hidden file)" in caplog.text
    # ... and a folder committed as it is gets the Hub's refusal as a HubError, before any traffic
    with pytest.raises(HubError, match=r"\.cache/huggingface/x\.lock.*allow="):
        commit_folder(app, "me/space-cache2", repo_type="space", commit_message="x")
    assert ("space", "me/space-cache2") not in hub.state.repos  # refused before the repo was created


def test_cli_space_push_default_dir_applies_the_same_rules(hub, tmp_path, monkeypatch, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(WRITE_TOKEN)
    app = app_with_secrets(tmp_path, token_file)
    monkeypatch.chdir(app)  # `mad-models space push me/x` uploads the current dir
    assert main(["space", "push", "me/cli-space"]) == 0
    files = set(hub.files("me/cli-space", repo_type="space"))
    assert not files & SECRET_NAMES and "app.py" in files
    err = capsys.readouterr().err
    assert "sub/helper.py" in err and ".netrc" in err  # the list and the refusals reach the terminal
    assert main(["space", "push", "me/cli-allow", "--allow", "app.py", "sub/*"]) == 0
    assert set(hub.files("me/cli-allow", repo_type="space")) == {
        ".gitattributes",
        "README.md",
        "app.py",
        "sub/helper.py",
    }  # sub/aws_credentials.json matches sub/* but is never uploaded


# ------------------------------------------------------------------ hole 2: shard index escapes


def test_shard_index_cannot_escape_the_snapshot(hub, tmp_path):
    base = tiny_llama(seed=4)
    folder = tmp_path / "sharded"
    base.save_pretrained(folder, max_shard_size="100KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    victim_shard = sorted(set(index["weight_map"].values()))[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.safetensors").write_bytes((folder / victim_shard).read_bytes())  # loadable, if reached
    messages = []
    for bad in (str(outside / "evil.safetensors"), "../outside/evil.safetensors", "/etc/passwd", "/no/such"):
        moved = {k: (bad if v == victim_shard else v) for k, v in index["weight_map"].items()}
        (folder / "model.safetensors.index.json").write_text(json.dumps({**index, "weight_map": moved}))
        with pytest.raises(RepoContentError, match="outside") as e:
            pull(folder)
        text = "".join(traceback.format_exception(e.value))
        assert bad not in text and "evil" not in text and "passwd" not in text
        messages.append(str(e.value))
    assert len(set(messages)) == 1  # the message does not depend on what exists on this machine

    (folder / "model.safetensors.index.json").write_text(
        json.dumps({**index, "weight_map": {k: ("../../" + v) for k, v in index["weight_map"].items()}})
    )
    commit_folder(folder, "me/escaping-index", commit_message="escape")
    with pytest.raises(RepoContentError, match=r"'me/escaping-index'.*outside"):
        pull("me/escaping-index")


# ------------------------------------------------------------------ hole 4: private=True on a public repo


def test_private_true_makes_an_existing_public_repo_private(hub):
    push_adapter(more_model(seed=1), "me/was-public")
    assert not hub.repo("me/was-public").private
    push_adapter(more_model(seed=2), "me/was-public", private=True)
    assert hub.repo("me/was-public").private


def test_private_true_refuses_to_publish_when_the_repo_cannot_be_made_private(hub):
    push_adapter(more_model(seed=1), "me/stays-public")
    before = dict(hub.files("me/stays-public"))
    hub.state.settings_enabled = False
    with pytest.raises(HubError, match=r"'me/stays-public'.*public.*private=True.*Nothing was uploaded"):
        push_adapter(more_model(seed=2), "me/stays-public", private=True)
    assert hub.files("me/stays-public") == before and len(hub.repo("me/stays-public").commits) == 2


# ------------------------------------------------------------------ hole 5: concurrent pushes


def test_concurrent_pushes_never_mix(hub, tmp_path):
    v0, sharded, single = tmp_path / "v0", tmp_path / "a", tmp_path / "b"
    tiny_llama(seed=0).save_pretrained(v0, max_shard_size="100KB")
    tiny_llama(seed=1).save_pretrained(sharded, max_shard_size="100KB")
    model_b = tiny_llama(seed=2)
    model_b.save_pretrained(single)
    commit_folder(v0, "me/race", commit_message="v0 (sharded)")

    # push B lands while push A is between reading the repo and committing
    hub.state.before_commit = lambda: commit_folder(single, "me/race", commit_message="B")
    with pytest.raises(HubError, match=r"'me/race'.*changed while this push.*[Rr]etry"):
        commit_folder(sharded, "me/race", commit_message="A")
    files = hub.files("me/race")
    assert "model.safetensors" in files and not any(f.startswith("model-") for f in files)
    assert "model.safetensors.index.json" not in files
    with torch.no_grad():
        assert torch.equal(pull("me/race")(IDS).logits, model_b(IDS).logits)
    # a repo mixed by another tool (single file next to a shard index) is refused, not served silently
    commit_folder(sharded, "me/race", commit_message="mixed", delete_patterns=())
    assert {"model.safetensors", "model.safetensors.index.json"} <= set(hub.files("me/race"))
    with pytest.raises(RepoContentError, match=r"'me/race' holds both model.safetensors and model"):
        pull("me/race")


# ------------------------------------------------------------------ hole 6: adapter base cycles


def test_adapter_base_cycles_are_refused_quickly(hub):
    push_adapter(more_model(), "me/self-base", base_model="me/self-base")
    push_adapter(more_model(), "me/cyc-a", base_model="me/cyc-b")
    push_adapter(more_model(), "me/cyc-b", base_model="me/cyc-a")
    t0, seen = time.perf_counter(), len(hub.state.requests)
    with pytest.raises(RepoContentError, match=r"cycle.*me/self-base"):
        pull("me/self-base")
    with pytest.raises(RepoContentError, match=r"cycle.*me/cyc-a.*me/cyc-b.*me/cyc-a"):
        pull("me/cyc-a")
    # one repo-info call and a few file downloads per repo in the chain, not hundreds
    assert time.perf_counter() - t0 < 10 and len(hub.state.requests) - seen < 60

    for i in range(5):  # no cycle, but a chain of bases deeper than MAX_BASE_DEPTH
        push_adapter(more_model(), f"me/deep-{i}", base_model=f"me/deep-{i + 1}")
    with pytest.raises(RepoContentError, match=r"nest deeper than 4 \(me/deep-0 -> .* -> me/deep-5\)"):
        pull("me/deep-0")


def test_hub_adapter_may_not_name_a_local_base_and_base_revision_can_be_pinned(
    hub, tmp_path, caplog, monkeypatch
):
    base_dir = tmp_path / "local-base"
    tiny_llama(seed=3).save_pretrained(base_dir)
    model = more_model()
    model.save_pretrained(tmp_path / "adapter", save_embedding_layers=False)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base_dir)  # crafted: names a path on the puller's machine
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
    commit_folder(tmp_path / "adapter", "me/local-base", commit_message="crafted")
    with pytest.raises(RepoContentError, match=r"'me/local-base'.*not a Hub repo id") as e:
        pull("me/local-base")
    assert str(base_dir) not in str(e.value)
    assert isinstance(pull(tmp_path / "adapter"), PeftModel)  # the user's own local dir may

    v1_base, v2_base = tiny_llama(seed=5), tiny_llama(seed=6)
    v1_base.save_pretrained(tmp_path / "b1")
    v2_base.save_pretrained(tmp_path / "b2")
    v1 = commit_folder(tmp_path / "b1", "org/moving-base", commit_message="v1")
    commit_folder(tmp_path / "b2", "org/moving-base", commit_message="v2")
    adapter = more_model(seed=7, base=tiny_llama(seed=5))
    push_adapter(adapter, "me/on-moving-base", base_model="org/moving-base")
    decoy = tmp_path / "cwd" / "org" / "moving-base"  # a local folder named like the base id
    tiny_llama(seed=9).save_pretrained(decoy)
    monkeypatch.chdir(tmp_path / "cwd")
    with caplog.at_level(logging.INFO, logger="hub_tools"):
        pinned = pull("me/on-moving-base", base_revision=v1.oid)  # the base comes from the Hub
        assert f"base model org/moving-base at revision {v1.oid}" in caplog.text
        unpinned = pull("me/on-moving-base")
        assert "base model org/moving-base at revision main (unpinned" in caplog.text
    with torch.no_grad():
        assert torch.equal(pinned(IDS).logits, adapter(IDS).logits)
        assert not torch.equal(unpinned(IDS).logits, adapter(IDS).logits)


# ------------------------------------------------------------------ hole 7: tokenizer remote code


def test_push_dir_never_runs_tokenizer_remote_code(hub, tmp_path, monkeypatch):
    run = tmp_path / "run"
    tiny_hybrid().save_pretrained(run)
    tiny_char_tokenizer().save_pretrained(run)
    marker = tmp_path / "remote-code-ran"
    cfg = json.loads((run / "tokenizer_config.json").read_text())
    cfg.update(
        tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    )
    (run / "tokenizer_config.json").write_text(json.dumps(cfg))
    (run / "tokenization_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "y")  # a user at a tty
    with pytest.raises(RepoContentError, match=r"remote code"):
        push(run, "me/evil-tokenizer")
    assert not marker.exists() and asked == []
    assert ("model", "me/evil-tokenizer") not in hub.state.repos


# ------------------------------------------------------------------ messages after 5xx / drop / timeout


def test_failed_commit_messages_say_whether_the_commit_landed(hub):
    push_adapter(more_model(seed=1), "me/flaky")
    hub.state.fail_next_commit = True  # 500 before anything is applied
    with pytest.raises(HubError, match=r"500.*Nothing was changed") as e:
        push_adapter(more_model(seed=2), "me/flaky")
    assert "HF_HUB_OFFLINE" not in str(e.value)

    head = hub.repo("me/flaky").branches["main"]
    hub.state.commit_then_fail = "500"  # applied, then the answer failed
    with pytest.raises(HubError, match=r"500") as e:
        push_adapter(more_model(seed=3), "me/flaky")
    new = hub.repo("me/flaky").branches["main"]
    assert new != head
    assert "Nothing was changed" not in str(e.value)
    assert "did land" in str(e.value) and new[:12] in str(e.value)

    hub.state.commit_then_fail = "drop"
    with pytest.raises(HubUnreachableError) as e:
        push_adapter(more_model(seed=4), "me/flaky")
    assert "did land" in str(e.value) and "HF_HUB_OFFLINE" not in str(e.value)


def test_timed_out_push_checks_the_head_and_never_suggests_offline_mode(hub):
    push_adapter(more_model(seed=1), "me/slow-commit")
    hub.state.commit_then_fail, hub.state.stall_seconds = "stall", 2.0
    with pytest.raises(HubUnreachableError, match=r"did not answer within 0.5 s") as e:
        push_adapter(more_model(seed=2), "me/slow-commit", timeout=0.5)
    assert "HF_HUB_OFFLINE" not in str(e.value) and "did land" in str(e.value)

    hub.state.delay = 1.0  # the whole Hub stalls: nothing could be checked
    with pytest.raises(HubUnreachableError, match=r"did not answer within 0.3 s") as e:
        push_adapter(more_model(seed=3), "me/slow-commit", timeout=0.3)
    assert "HF_HUB_OFFLINE" not in str(e.value)


# ------------------------------------------------------------------ stale files


def test_pushes_remove_stale_model_files_and_card_says_what_is_there(hub):
    hybrid = tiny_hybrid()
    push_hybrid(hybrid, "me/switch", tokenizer=tiny_char_tokenizer())
    assert TOKENIZER_FILES <= set(hub.files("me/switch"))
    push_hybrid(hybrid, "me/switch")  # no tokenizer this time
    files = hub.files("me/switch")
    assert not TOKENIZER_FILES & set(files)
    card = files["README.md"].decode()
    assert "no tokenizer" in card.lower() and "| model.safetensors |" in card

    push_adapter(more_model(), "me/switch", base_model="org/base")  # a hybrid repo becomes an adapter repo
    files = hub.files("me/switch")
    assert "config.json" not in files and "model.safetensors" not in files
    assert "generation_config.json" not in files
    assert "| adapter_model.safetensors |" in files["README.md"].decode()

    push_adapter(more_model(), "me/to-hybrid", base_model="org/base")
    push_hybrid(hybrid, "me/to-hybrid")  # an adapter repo becomes a hybrid repo
    files = hub.files("me/to-hybrid")
    assert "adapter_config.json" not in files and "adapter_model.safetensors" not in files
    assert isinstance(pull("me/to-hybrid"), ManticoreForCausalLM)


# ------------------------------------------------------------------ local paths


def test_local_paths_never_go_into_pushed_files(hub, tmp_path, caplog):
    neox_dir, mamba_dir = tmp_path / "runs" / "neox", tmp_path / "runs" / "mamba"
    tiny_neox(seed=1).save_pretrained(neox_dir)
    tiny_mamba(seed=2).save_pretrained(mamba_dir)
    hybrid = ManticoreForCausalLM.from_components([str(neox_dir), str(mamba_dir)], n_blocks=2).eval()
    assert hybrid.config.component_names == [str(neox_dir), str(mamba_dir)]
    with caplog.at_level(logging.WARNING, logger="hub_tools"):
        push_hybrid(hybrid.prune(0.0), "me/local-hybrid")
    files = hub.files("me/local-hybrid")
    assert str(tmp_path) not in all_text(files)
    assert "local path" in caplog.text
    assert hybrid.config.component_names == [str(neox_dir), str(mamba_dir)]  # the caller's model untouched
    with torch.no_grad():
        ids = torch.tensor([[3, 17, 40, 2, 9]])
        assert torch.equal(pull("me/local-hybrid")(ids).logits, hybrid.prune(0.0)(ids).logits)

    base_dir = tmp_path / "my-base"
    tiny_llama().save_pretrained(base_dir)
    adapter = more_model(base=pull(base_dir))
    assert adapter.peft_config["default"].base_model_name_or_path == str(base_dir)
    push_adapter(
        adapter, "me/local-base-adapter", training={"data": str(tmp_path / "train.jsonl"), "lr": 0.1}
    )
    files = hub.files("me/local-base-adapter")
    assert str(tmp_path) not in all_text(files)
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] is None
    assert ModelCard(files["README.md"].decode()).data.base_model is None


# SmolLM2 loaded from the GGUF package is named by its Hub id: asserted in
# tests/test_more_smollm2.py::test_more_finetunes_smollm2, which loads it anyway (a second load costs ~1 min).


# ------------------------------------------------------------------ token redaction


def test_token_is_redacted_in_the_chained_cause_and_in_debug_logs(hub, caplog):
    push_adapter(more_model(), "me/redact")
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")  # its own level is WARNING by default
    with pytest.raises(HubRevisionNotFoundError) as e:
        pull("me/redact", revision=WRITE_TOKEN, base_model=tiny_llama())  # a token pasted as revision
    text = "".join(traceback.format_exception(e.value))
    assert e.value.__cause__ is not None and WRITE_TOKEN not in text
    assert "huggingface_hub" in caplog.text and WRITE_TOKEN not in caplog.text
