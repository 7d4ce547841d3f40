"""MoRe fine-tunes the real SmolLM2-135M-Instruct (offline GGUF) and the loss falls."""

import pytest
import torch
from peft import get_peft_model

import mad_models  # noqa: F401
from mad_models.more import MoReConfig, adapter_report
from tests.test_more import train_steps


@pytest.mark.slow
def test_more_finetunes_smollm2(smollm2):
    model, tok = smollm2
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    cfg = MoReConfig(nblocks=4, block_rank=1, target_modules=["q_proj", "k_proj", "v_proj"])
    peft_model = get_peft_model(model, cfg)
    # named by its Hub id, not the site-packages folder of the GGUF (the adapter records it as its base)
    assert model.config._name_or_path == tok.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert peft_model.peft_config["default"].base_model_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    rep = adapter_report(peft_model)
    # q: 576->576, k and v: 576->192 (3 kv heads of 64); k*r = 4; 30 layers
    assert rep.trainable_params == 30 * 4 * ((576 + 576) + 2 * (576 + 192))
    assert rep.lora_rank_equivalent == 4.0 and rep.padding_params == 0

    text = "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid."
    batch = tok([text] * 2, return_tensors="pt")
    ids = batch["input_ids"][:, :24]
    with torch.no_grad():
        peft_model.eval()
        fresh = peft_model(ids).logits
        with peft_model.disable_adapter():
            assert torch.equal(fresh, peft_model(ids).logits)
    losses = train_steps(peft_model, ids, steps=3, lr=5e-3, lm_loss=True)
    assert losses[-1] < losses[0] - 0.1, losses
