"""Which base an adapter loads on: one set of rules (mad_models.adapter_base) that ``pull``, ``more eval``
(mad_models.loading) and the app all apply. A Hub repo may name only Hub ids as its base, never a path on
this machine (``../x``, absolute, ``~``); cycles and chains deeper than MAX_BASE_DEPTH are refused."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model

import mad_models  # noqa: F401  (registers MORE with peft)
from app_backend.registry import AppInputError, Registry
from app_backend.service import AppService
from hub_tools import RepoContentError, commit_folder, pull
from mad_models.adapter_base import MAX_BASE_DEPTH, BaseModelError, adapter_base, resolving_base_of
from mad_models.cli import main
from mad_models.loading import load_adapter, load_pretrained
from mad_models.more import MoReConfig
from tests.hub_server import WRITE_TOKEN, hub_fixture  # noqa: F401  (the "hub" fixture)
from tests.tiny import tiny_llama

IDS = torch.tensor([[1, 5, 9, 2, 7, 3]])


def save_adapter(folder: Path, base_name: str, seed: int = 0) -> Path:
    """A MoRe adapter on tiny_llama(seed) whose config records ``base_name`` as its base."""
    torch.manual_seed(seed)
    cfg = MoReConfig(nblocks=2, block_rank=1, target_modules=["q_proj", "v_proj"], init_weights=False)
    get_peft_model(tiny_llama(seed=seed), cfg).save_pretrained(folder, save_embedding_layers=False)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_name
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_the_rules():
    assert adapter_base({"base_model_name_or_path": "org/base"}, "me/a", from_hub=True) == "org/base"
    for local in ("../x", "./x", "/abs/x", "~/x", "x", "a/b/c"):
        with pytest.raises(BaseModelError, match=r"'me/a'.*not a Hub repo id"):
            adapter_base({"base_model_name_or_path": local}, "me/a", from_hub=True)
        # the user's own folder may name a local base, and a caller's explicit choice always stands
        assert adapter_base({"base_model_name_or_path": local}, "runs/a", from_hub=False) == local
        assert (
            adapter_base({"base_model_name_or_path": "org/b"}, "me/a", from_hub=True, base_model=local)
            == local
        )
    with pytest.raises(BaseModelError, match="does not name its base model"):
        adapter_base({}, "me/a", from_hub=True)
    with resolving_base_of("me/a", hub_only=True), resolving_base_of("me/b", hub_only=True):
        with pytest.raises(BaseModelError, match=r"cycle \(me/a -> me/b -> me/c -> me/a\)"):
            adapter_base({"base_model_name_or_path": "me/a"}, "me/c", from_hub=True)
    with contextlib.ExitStack() as chain:
        for i in range(MAX_BASE_DEPTH):
            chain.enter_context(resolving_base_of(f"me/d{i}", hub_only=True))
        with pytest.raises(BaseModelError, match=rf"nest deeper than {MAX_BASE_DEPTH}"):
            adapter_base({"base_model_name_or_path": "me/deeper"}, "me/last", from_hub=True)


def test_local_adapters_load_on_their_recorded_base_and_cycles_are_refused(tmp_path):
    tiny_llama(seed=0).save_pretrained(tmp_path / "base")
    adapter = save_adapter(tmp_path / "adapter", str(tmp_path / "base"))
    model, tok = load_pretrained(adapter)
    assert isinstance(model, PeftModel) and tok is None
    again, _ = load_adapter(adapter, tiny_llama(seed=0))  # a base the caller loaded
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, again(IDS).logits)
    a, b = tmp_path / "a", tmp_path / "b"
    save_adapter(a, str(b))
    save_adapter(b, str(a))
    with pytest.raises(BaseModelError, match=rf"cycle \({a} -> {b} -> {a}\)"):
        load_pretrained(a)


@pytest.fixture
def relative_base_repo(hub, tmp_path, monkeypatch):
    """'me/rel-base' on the local Hub names '../x' as its base, and from the current folder '../x' is a real
    model (the one a loader following the name would read)."""
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    tiny_llama(seed=9).save_pretrained(tmp_path / "x")
    commit_folder(save_adapter(tmp_path / "adapter", "../x"), "me/rel-base", commit_message="crafted")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert (Path("..") / "x" / "config.json").is_file()
    return "me/rel-base"


def test_a_hub_adapter_naming_a_relative_base_is_refused_by_pull_more_eval_and_the_app(
    relative_base_repo, assets, tmp_path, capsys
):
    with pytest.raises(RepoContentError, match=r"'me/rel-base'.*not a Hub repo id"):
        pull(relative_base_repo)

    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"prompt": "1+1", "answer": "2"}) + "\n")
    with pytest.raises(SystemExit) as exit_:
        main(["more", "eval", "--model", relative_base_repo, "--data", str(data), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("mad-models")] == [
        next(ln for ln in err.splitlines() if "'me/rel-base'" in ln and "not a Hub repo id" in ln)
    ]

    svc = AppService(Registry.from_dir(assets))
    with pytest.raises(AppInputError, match=r"not a Hub repo id"):
        svc.load(relative_base_repo, "", "", session="s1")
    assert svc.sessions.get("s1", {}) == {}  # nothing was loaded for the visitor


def test_more_eval_loads_a_hub_adapter_on_the_hub_base_it_names(hub, tmp_path, monkeypatch, capsys):
    """The same rules let a well-formed Hub adapter through: its base comes from the Hub, even when a
    folder of that name sits in the current directory."""
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    tiny_llama(seed=0).save_pretrained(tmp_path / "base")
    commit_folder(tmp_path / "base", "org/tiny-base", commit_message="base")
    commit_folder(save_adapter(tmp_path / "adapter", "org/tiny-base"), "me/good-base", commit_message="a")
    decoy = tmp_path / "cwd" / "org" / "tiny-base"
    tiny_llama(seed=9).save_pretrained(decoy)
    monkeypatch.chdir(tmp_path / "cwd")
    model, _ = load_pretrained("me/good-base")
    expected, _ = load_adapter(tmp_path / "adapter", tiny_llama(seed=0))
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, expected(IDS).logits)
