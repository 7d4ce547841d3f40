"""``load_causal_lm`` on an adapter dir (transformers then loads the base and attaches the adapter through
peft, which reads the config unchecked): the adapter config is checked against its weights' header first."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from mad_models.loading import load_causal_lm
from mad_models.validation import CheckpointError
from tests.tiny import tiny_llama


@pytest.fixture
def lora_dir(tmp_path):
    base = tiny_llama(seed=1)
    base.save_pretrained(tmp_path / "base")
    cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, cfg)
    model.save_pretrained(tmp_path / "adapter")
    cfg_path = tmp_path / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "base")
    cfg_path.write_text(json.dumps(cfg))
    return tmp_path / "adapter", model


def test_a_good_lora_dir_loads_with_its_adapter(lora_dir):
    folder, model = lora_dir
    loaded = load_causal_lm(folder, device="cpu")
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)


def test_a_lora_rank_pattern_larger_than_the_file_is_refused_before_building(lora_dir):
    folder, _ = lora_dir
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "rank_pattern": {"q_proj": 100_000}}))
    with pytest.raises(CheckpointError, match=r"rank_pattern\['q_proj'\]"):
        load_causal_lm(folder, device="cpu")


def test_an_adapter_config_link_leaving_the_dir_is_refused(lora_dir, tmp_path):
    folder, _ = lora_dir
    outside = tmp_path / "elsewhere.json"
    (folder / "adapter_config.json").rename(outside)
    (folder / "adapter_config.json").symlink_to(outside)
    with pytest.raises(CheckpointError, match="adapter_config.json is a link that leads outside"):
        load_causal_lm(folder, device="cpu")
