"""The model cards the app shows say what the files say."""

from __future__ import annotations

import json

from app_backend.model_info import method_line, model_card_md
from app_backend.registry import ModelEntry


def test_more_card_states_reachable_rank_against_lora_rank():
    line = method_line({"peft_type": "MORE", "nblocks": 4, "block_rank": 2})
    assert "k²r = 32" in line and "LoRA r = k·r = 8" in line


def test_card_reads_meta_and_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj"]})
    )
    entry = ModelEntry(
        "x",
        "adapter",
        path=tmp_path,
        base="b",
        description="d",
        meta={"trainable_params": 1234567, "exact_match": 0.5},
    )
    card = model_card_md(entry)
    assert "LoRA r=16" in card and "1,234,567" in card and "exact match 0.500" in card and "q_proj" in card
