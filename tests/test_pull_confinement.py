"""``pull`` reads a repo's shard index and weight files only inside the snapshot or local dir (issue 12):
the index goes through mad_models.validation's capped, confined JSON reader, and a weight file that is a
link leading outside is refused, as validation's other readers refuse it."""

from __future__ import annotations

import json
import os
import shutil
import traceback
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model

import mad_models  # noqa: F401  (registers MORE with peft)
from hub_tools import RepoContentError, pull
from mad_models.more import MoReConfig
from tests.tiny import tiny_llama

INDEX = "model.safetensors.index.json"


@pytest.fixture
def sharded(tmp_path) -> tuple[Path, dict]:
    folder = tmp_path / "sharded"
    tiny_llama(seed=4).save_pretrained(folder, max_shard_size="100KB")
    return folder, json.loads((folder / INDEX).read_text())


def refused(folder: Path, match: str) -> str:
    with pytest.raises(RepoContentError, match=match) as e:
        pull(folder)
    return "".join(traceback.format_exception(e.value))


def test_a_sharded_dir_still_loads(sharded):
    folder, index = sharded
    assert len(set(index["weight_map"].values())) > 1
    assert type(pull(folder)).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize(
    "text,match",
    [
        ("{not json", rf"{INDEX} is not valid JSON"),
        ('[{"weight_map": {}}]', rf"{INDEX} must hold a JSON object"),
        ('{"weight_map": ' + "[" * 5000 + "]" * 5000 + "}", rf"{INDEX} is nested"),
        ('{"weight_map": ["model-00001-of-00002.safetensors"]}', rf"{INDEX} has no weight_map"),
        ('{"metadata": {}}', rf"{INDEX} has no weight_map"),
    ],
    ids=["not-json", "a-list", "deep", "weight-map-list", "no-weight-map"],
)
def test_a_bad_shard_index_is_a_repo_content_error_naming_it(sharded, text, match):
    folder, _ = sharded
    (folder / INDEX).write_text(text)
    refused(folder, rf"'{folder}': {match}")


def test_an_oversized_shard_index_is_refused_before_parsing(sharded):
    folder, index = sharded
    (folder / INDEX).write_text(json.dumps({**index, "pad": "x" * (33 * 2**20)}))
    refused(folder, rf"{INDEX} is [\d,]+ bytes, more than any config needs")


def test_a_shard_index_linking_outside_the_dir_is_refused(sharded, tmp_path):
    folder, index = sharded
    outside = tmp_path / "elsewhere" / INDEX
    outside.parent.mkdir()
    outside.write_text(json.dumps(index))  # a valid index: loadable, if the link were followed
    (folder / INDEX).unlink()
    os.symlink(outside, folder / INDEX)
    text = refused(folder, rf"{INDEX} is a link that leads outside")
    assert "elsewhere" not in text


@pytest.fixture
def single(tmp_path) -> Path:
    folder = tmp_path / "single"
    tiny_llama(seed=4).save_pretrained(folder)
    return folder


def test_a_model_safetensors_linking_outside_the_dir_is_refused(single, tmp_path):
    outside = tmp_path / "secret-place" / "model.safetensors"
    outside.parent.mkdir()
    shutil.move(single / "model.safetensors", outside)  # valid weights: loadable, if the link were followed
    os.symlink(outside, single / "model.safetensors")
    text = refused(single, r"model.safetensors is a link that leads outside")
    assert "secret-place" not in text


def test_an_adapter_model_safetensors_linking_outside_the_dir_is_refused(tmp_path):
    base = tiny_llama(seed=1)
    base.save_pretrained(tmp_path / "base")
    cfg = MoReConfig(nblocks=4, block_rank=1, target_modules=["q_proj", "v_proj"], init_weights=False)
    adapter = tmp_path / "adapter"
    get_peft_model(base, cfg).save_pretrained(adapter)
    assert isinstance(pull(adapter, base_model=str(tmp_path / "base")), PeftModel)
    outside = tmp_path / "secret-place" / "adapter_model.safetensors"
    outside.parent.mkdir()
    shutil.move(adapter / "adapter_model.safetensors", outside)
    os.symlink(outside, adapter / "adapter_model.safetensors")
    with pytest.raises(
        RepoContentError, match=r"adapter_model.safetensors is a link that leads outside"
    ) as e:
        pull(adapter, base_model=str(tmp_path / "base"))
    assert "secret-place" not in "".join(traceback.format_exception(e.value))


def cache_snapshot(root: Path, repo: str, model) -> Path:
    """A Hugging Face cache layout: snapshots/<sha>/<file> links to ../../blobs/<hash>."""
    repo_dir = root / f"models--org--{repo}"
    snap, blobs = repo_dir / "snapshots" / ("0" * 40), repo_dir / "blobs"
    model.save_pretrained(snap)
    blobs.mkdir(parents=True)
    for f in list(snap.iterdir()):
        blob = blobs / f"{repo}-{f.name}"
        shutil.move(f, blob)
        os.symlink(Path("..", "..", "blobs", blob.name), f)
    return snap


def test_a_cache_snapshot_may_link_into_its_own_blobs_but_not_another_repos(tmp_path):
    a = cache_snapshot(tmp_path / "hub", "a", tiny_llama(seed=1))
    b = cache_snapshot(tmp_path / "hub", "b", tiny_llama(seed=2))
    with torch.no_grad():
        ids = torch.tensor([[1, 2, 3]])
        assert torch.equal(pull(a)(ids).logits, tiny_llama(seed=1)(ids).logits)  # its own blobs: fine
    (a / "model.safetensors").unlink()
    os.symlink(b.resolve() / "model.safetensors", a / "model.safetensors")  # into repo b's blobs
    refused(a, r"model.safetensors is a link that leads outside")
