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


def test_card_shows_new_meta_fields_when_present_and_skips_absent_ones(tmp_path):
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "MORE", "nblocks": 4, "block_rank": 1, "target_modules": ["q_proj"]})
    )
    meta = {
        "trainable_params": 460800,
        "exact_match": 0.71875,
        "per_module": {"q_proj only": 0.5},
        "lr": 0.002,
        "steps": 1200,
        "trained_on": "DeepMind mathematics questions",
        "hub_repo": "someone/smollm2-more",
    }
    card = model_card_md(ModelEntry("m", "adapter", path=tmp_path, base="b", meta=meta))
    for text in (
        "trained on: DeepMind mathematics questions",
        "lr 0.002",
        "1,200 steps",
        "rank up to k²r = 16",
        "LoRA r = k·r = 4",
        "460,800",
        "exact match 0.719",
        "q_proj only 0.500",
        "(https://huggingface.co/someone/smollm2-more)",
    ):
        assert text in card, text
    bare = model_card_md(ModelEntry("m", "adapter", path=tmp_path, base="b"))
    assert "exact match" not in bare and "lr" not in bare.replace("block_rank", "")


def test_mad_card_puts_accuracy_next_to_heuristic_and_chance(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    meta = {
        "mad_accuracy": {"in_context_recall": 0.4224, "memorization": 1.0},
        "heuristic": {"in_context_recall": 0.343},
        "chance": {"in_context_recall": 0.125, "memorization": 1 / 15},
    }
    card = model_card_md(ModelEntry("mad/mamba", "causal_lm", path=tmp_path, meta=meta))
    assert "| task | accuracy | heuristic | chance |" in card
    assert "| in context recall | 0.422 | 0.343 | 0.125 |" in card
    assert "| memorization | 1.000 | — | 0.067 |" in card
    # the older builds' "accuracy" key is read too
    old = model_card_md(ModelEntry("x", "causal_lm", path=tmp_path, meta={"accuracy": {"mean": 0.5}}))
    assert "| mean | 0.500 |" in old and "heuristic" not in old


def test_card_reads_training_from_the_model_card_and_never_shows_absolute_paths(tmp_path):
    d = tmp_path / "language" / "more"
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    (d / "README.md").write_text(
        "# x\n\n## Training\n\n| setting | value |\n|---|---|\n| task | mathematics questions |\n"
        "| steps | 80 |\n| lr | 0.002 |\n"
    )
    card = model_card_md(ModelEntry("m", "adapter", path=d, base="b"), root=tmp_path)
    assert "trained on: mathematics questions" in card and "lr 0.002, 80 steps" in card
    assert "`language/more/README.md`" in card and str(tmp_path) not in card


def test_parameter_count_comes_from_the_safetensors_header(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    card = model_card_md(ModelEntry("t", "causal_lm", path=tmp_path))
    assert "parameters (all trained): 17" in card and "architecture: gpt_neox" in card
