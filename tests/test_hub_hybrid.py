"""push_hybrid / pull round trips of a real ManticoreForCausalLM through the local Hub double."""

from __future__ import annotations

import json
import re

import pytest
import torch
from huggingface_hub import ModelCard, constants

import mad_models  # noqa: F401  (registers "manticore" with transformers)
from hub_tools import RepoContentError, commit_folder, pull, push, push_hybrid
from mad_models.hybrid import ManticoreForCausalLM
from tests.hub_server import WRITE_TOKEN, hub_fixture  # noqa: F401  (the "hub" fixture)
from tests.tiny import tiny_char_tokenizer, tiny_mamba, tiny_neox

IDS = torch.tensor([[3, 17, 40, 2, 9]])


def publish_component(tmp_path, model, repo_id: str, license: str) -> str:
    """Push a component (a plain transformers model with a licensed card); returns its commit."""
    folder = tmp_path / repo_id.replace("/", "_")
    model.save_pretrained(folder)
    (folder / "README.md").write_text(f"---\nlicense: {license}\n---\n# {repo_id}\n")
    return commit_folder(folder, repo_id, commit_message="component").oid


def make_hybrid(tmp_path, licenses=("apache-2.0", "apache-2.0")) -> ManticoreForCausalLM:
    neox, mamba = tiny_neox(seed=1), tiny_mamba(seed=2)
    revs = []
    for model, rid, lic in zip((neox, mamba), ("org/tiny-neox", "org/tiny-mamba"), licenses, strict=True):
        revs.append(publish_component(tmp_path, model, rid, lic))
        model.config._name_or_path = rid  # as if loaded from the Hub
    hybrid = ManticoreForCausalLM.from_components([neox, mamba], n_blocks=2, revisions=revs)
    hybrid.set_mixture([[0.7, 0.3], [0.25, 0.75]])
    return hybrid.eval()


def test_hybrid_round_trip_sharded_with_tokenizer_and_card(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    hybrid = make_hybrid(tmp_path)
    evals = [
        dict(
            task_type="text-generation",
            dataset_type="mad/in-context-recall",
            dataset_name="MAD in-context recall",
            metric_type="accuracy",
            metric_value=0.5,
        )
    ]
    search = {"arch_lr": 0.01, "steps": 20, "search": "alternating"}
    url = push_hybrid(
        hybrid,
        "me/neox-mamba",
        tokenizer=tiny_char_tokenizer(),
        max_shard_size="200KB",
        commit_message="searched on MAD",
        training=search,
        eval_results=evals,
    )
    repo = hub.repo("me/neox-mamba")
    assert len(repo.commits) == 2 and repo.commits[url.oid].message == "searched on MAD"
    files = hub.files("me/neox-mamba")
    shards = [f for f in files if re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", f)]
    assert len(shards) > 1 and "model.safetensors.index.json" in files
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    ):
        assert name in files, name
    assert json.loads(files["config.json"])["model_type"] == "manticore"

    pulled = pull("me/neox-mamba")
    assert type(pulled) is ManticoreForCausalLM
    want, got = hybrid.state_dict(), pulled.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) and want[k].dtype == got[k].dtype for k in want)
    with torch.no_grad():
        assert torch.equal(hybrid(IDS).logits, pulled(IDS).logits)

    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "transformers"
    assert card.data.tags == ["mad-models", "manticore"]
    assert card.data.base_model == ["org/tiny-neox", "org/tiny-mamba"]
    assert card.data.license == "apache-2.0"  # both components agree
    assert card.data.pipeline_tag == "text-generation"
    assert (
        card.data.eval_results[0].metric_value == 0.5
        and card.data.eval_results[0].dataset_type == "mad/in-context-recall"
    )
    neox_rev, mamba_rev = hybrid.config.component_revisions
    assert f"| 0:gpt_neox | org/tiny-neox | {neox_rev} |" in card.text
    assert f"| 1:mamba | org/tiny-mamba | {mamba_rev} |" in card.text
    assert (
        "| 0 | 0.7 | 0.3 |" in card.text and "| 1 | 0.25 | 0.75 |" in card.text
    )  # mixture weights per block
    cost = hybrid.cost_report()
    assert f"| whole hybrid | {cost['params']['total']:,} |" in card.text
    rel = cost["relative_flops"]["org/tiny-mamba"]
    assert f"{rel:.4g} |" in card.text
    assert "| arch_lr | 0.01 |" in card.text and "| search | alternating |" in card.text

    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    exec(compile(snippet, "card-snippet", "exec"), {})
    assert capsys.readouterr().out.strip() == "torch.Size([1, 12])"

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # from the cache, no traffic
    seen = len(hub.state.requests)
    with torch.no_grad():
        assert torch.equal(pull("me/neox-mamba", url.oid)(IDS).logits, hybrid(IDS).logits)
    assert len(hub.state.requests) == seen


def test_hybrid_license_unknown_when_components_disagree_and_push_from_dir(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    hybrid = make_hybrid(tmp_path, licenses=("apache-2.0", "mit")).prune(0.5)
    hybrid.save_pretrained(tmp_path / "run")
    tiny_char_tokenizer().save_pretrained(tmp_path / "run")
    push(tmp_path / "run", "me/pruned")  # the CLI path: a saved dir, tokenizer files picked up
    files = hub.files("me/pruned")
    assert "model.safetensors" in files and "tokenizer.json" in files
    card = ModelCard(files["README.md"].decode())
    assert card.data.license is None  # never guessed
    pulled = pull("me/pruned")
    with torch.no_grad():
        assert torch.equal(pulled(IDS).logits, hybrid(IDS).logits)

    cfg = json.loads(files["config.json"])
    cfg["components"][1]["expand"] = 1  # the saved Mamba mixers are 2 x 48 wide
    del cfg["components"][1]["intermediate_size"]  # (derived from expand)
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        RepoContentError, match=r"run': model.safetensors does not match config.json: shape mismatches"
    ):
        pull(tmp_path / "run")  # refused before building the model


def test_text_models_push_from_dir_with_data_and_bits_per_char_and_pull(hub, tmp_path, monkeypatch):
    """The bundled text models' folders (a plain component and a hybrid, each with its tokenizer and
    bits_per_char.json): pushed from the folder, their cards state the data and bits/char; pulled back."""
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    tok = tiny_char_tokenizer()
    mamba = tiny_mamba(seed=2, vocab=len(tok))
    hybrid = ManticoreForCausalLM.from_components([tiny_neox(seed=1, vocab=len(tok)), mamba], n_blocks=2)
    hybrid.set_mixture([[0.6, 0.4], [0.1, 0.9]])
    record = {
        "trained_on": "Shakespeare's tragedies and histories, then his comedies",
        "val": "val plays: julius_caesar, twelfth_night, winters_tale",
        "val_bits_per_char": 2.345,
        "dev_bits_per_char": 2.4,
        "unigram_val_bits_per_char": 4.78,
        "command": "python -m build_assets build --only text",
    }
    for name, model in (("mamba", mamba), ("hybrid", hybrid)):
        folder = tmp_path / name
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "bits_per_char.json").write_text(json.dumps({**record, "val_bits_per_char": len(name) / 2}))
        push(folder, f"me/text-{name}")
        files = hub.files(f"me/text-{name}")
        assert "tokenizer.json" in files and "bits_per_char.json" not in files  # the card says it
        card = ModelCard(files["README.md"].decode())
        assert "## Data and bits per character" in card.text
        assert f"| {record['val']} | {len(name) / 2:.4g} |" in card.text
        assert "Trained on: Shakespeare's tragedies and histories" in card.text
        assert "| unigram character frequencies on val (no learning) | 4.78 |" in card.text
        result = card.data.eval_results[0]
        assert (result.metric_type, result.metric_value) == ("bits_per_char", len(name) / 2)
        pulled = pull(f"me/text-{name}")
        with torch.no_grad():
            assert torch.equal(pulled(IDS).logits, model.eval()(IDS).logits)
    mamba_card = ModelCard(hub.files("me/text-mamba")["README.md"].decode())
    assert "A mamba causal language model" in mamba_card.text and "Manticore" not in mamba_card.text
    assert "| 1 | 0.1 | 0.9 |" in ModelCard(hub.files("me/text-hybrid")["README.md"].decode()).text
