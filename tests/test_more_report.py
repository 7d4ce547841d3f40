"""adapter_report: exact counts and on-disk bytes, for MoRe and for LoRA."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

import mad_models  # noqa: F401
from mad_models.more import AdapterReport, MoReConfig, adapter_report
from tests.tiny import tiny_bert_classifier, tiny_gpt2, tiny_llama, tiny_mamba

CASES = {
    "more-llama": (
        tiny_llama,
        MoReConfig(nblocks=4, block_rank=2, target_modules=["q_proj", "v_proj", "down_proj"]),
    ),
    "more-gpt2": (tiny_gpt2, MoReConfig(nblocks=2, block_rank=1, target_modules=["c_attn"])),
    "more-mamba-padded": (tiny_mamba, MoReConfig(nblocks=4, block_rank=1, target_modules=["x_proj"])),
    "more-bert-head": (tiny_bert_classifier, MoReConfig(target_modules=["query"], task_type="SEQ_CLS")),
    "lora-llama": (tiny_llama, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"])),
    "lora-gpt2": (tiny_gpt2, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True)),
    "lora-bert-head": (tiny_bert_classifier, LoraConfig(r=4, target_modules=["query"], task_type="SEQ_CLS")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_report_is_exact(case, tmp_path):
    build, cfg = CASES[case]
    base_count = sum(p.numel() for p in build().parameters())
    model = get_peft_model(build(), cfg)
    rep = adapter_report(model)
    assert isinstance(rep, AdapterReport)
    assert rep.peft_type == ("MORE" if case.startswith("more") else "LORA")

    # bytes on disk: exactly the file save_pretrained writes
    model.save_pretrained(tmp_path)
    assert rep.bytes_on_disk == (tmp_path / "adapter_model.safetensors").stat().st_size

    # trainable = what requires grad = the sum over modules
    assert rep.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert rep.trainable_params == sum(m["params"] for m in rep.modules)
    assert rep.base_params == base_count
    assert rep.percent_of_base == pytest.approx(100 * rep.trainable_params / base_count)

    # LoRA rank with the same count on the same targets
    tuned = [m for m in rep.modules if m["type"] != "modules_to_save"]
    span = sum(m["in_features"] + m["out_features"] for m in tuned)
    assert rep.lora_rank_equivalent == pytest.approx(sum(m["params"] for m in tuned) / span)
    if case == "more-llama":
        assert rep.lora_rank_equivalent == 8.0 and rep.padding_params == 0
        assert {m["type"] for m in rep.modules} == {"q_proj", "v_proj", "down_proj"}
        assert rep.modules[0] == dict(
            name="model.layers.0.self_attn.q_proj",
            type="q_proj",
            in_features=64,
            out_features=64,
            params=8 * 128,
            padding_params=0,
        )
    if case == "lora-llama":
        assert rep.lora_rank_equivalent == 8.0
    if case == "more-mamba-padded":  # 96 -> 19 pads the output to 20: k*r*1 = 4 padding entries per layer
        assert rep.padding_params == 4 * 6
        assert "only touch zero padding" in rep.to_markdown()
    if case.endswith("head"):
        heads = [m for m in rep.modules if m["type"] == "modules_to_save"]
        assert heads and heads[0]["params"] == 64 * 3 + 3  # classifier Linear(64, 3)

    d = rep.to_dict()
    assert set(d) >= {
        "modules",
        "trainable_params",
        "bytes_on_disk",
        "base_params",
        "percent_of_base",
        "lora_rank_equivalent",
        "peft_type",
    }
    md = rep.to_markdown()
    assert f"{rep.trainable_params:,}" in md and f"{rep.bytes_on_disk:,}" in md


def test_more_and_lora_compare_at_equal_params():
    more = adapter_report(
        get_peft_model(tiny_llama(), MoReConfig(nblocks=4, block_rank=1, target_modules=["q_proj"]))
    )
    lora = adapter_report(get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"])))
    assert more.trainable_params == lora.trainable_params == 2 * 4 * 128
    assert more.bytes_on_disk == pytest.approx(lora.bytes_on_disk, rel=0.1)


def test_report_for_a_second_adapter_and_bad_names():
    model = get_peft_model(tiny_llama(), MoReConfig(target_modules=["q_proj"]))
    model.add_adapter("big", MoReConfig(nblocks=2, block_rank=4, target_modules=["q_proj", "k_proj"]))
    assert adapter_report(model).trainable_params == 2 * 4 * 128
    assert adapter_report(model, "big").trainable_params == 2 * 8 * 128 + 2 * 8 * 96
    assert adapter_report(model, "big").base_params == adapter_report(model).base_params
    with pytest.raises(ValueError, match="no adapter named 'nope'"):
        adapter_report(model, "nope")
    with pytest.raises(TypeError, match="needs a peft.PeftModel"):
        adapter_report(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "targets", [["q_proj", "embed_tokens"], r".*\.(q_proj|embed_tokens)", r"model\.embed_tokens"]
)
def test_bytes_on_disk_when_embeddings_are_targeted(targets, tmp_path):
    # peft saves the base embedding layers next to the adapter when target_modules names them, as a list or
    # as a regex; the report must count the same file
    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=targets))
    with pytest.warns(UserWarning, match="save_embedding_layers"):
        model.save_pretrained(tmp_path)
    assert adapter_report(model).bytes_on_disk == (tmp_path / "adapter_model.safetensors").stat().st_size
