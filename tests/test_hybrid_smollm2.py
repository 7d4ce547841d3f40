"""The real SmolLM2-135M (Llama family) as a Manticore component, hybridised with a tiny Mamba."""

from __future__ import annotations

import pytest
import torch

import mad_models  # noqa: F401
from mad_models.hybrid import ManticoreForCausalLM
from tests.tiny import tiny_mamba


@pytest.mark.slow
def test_smollm2_hybrid_runs_and_one_hot_is_smollm2(smollm2):
    smol, tok = smollm2
    smol = smol.eval()
    assert smol.dtype == torch.float32  # the GGUF file is dequantized on load
    mamba = tiny_mamba(seed=0, vocab=smol.config.vocab_size, hidden=48, layers=6)
    # the Mamba was built for SmolLM2's vocabulary, so the same tokenizer describes both
    hybrid = ManticoreForCausalLM.from_components([smol, mamba], n_blocks=3, tokenizers=[tok, tok]).eval()
    assert hybrid.config.hidden_size == 576 and hybrid.config.layer_map == [[10, 10, 10], [2, 2, 2]]

    inputs = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        hybrid.set_mixture([[1.0, 0.0]] * 3)
        torch.testing.assert_close(hybrid(**inputs).logits, smol(**inputs).logits, atol=1e-5, rtol=0)
        hybrid.set_mixture([[0.0, 1.0]] * 3)
        torch.testing.assert_close(
            hybrid(**inputs).logits, mamba(inputs["input_ids"]).logits, atol=1e-5, rtol=0
        )

    hybrid.set_mixture([[0.8, 0.2], [0.7, 0.3], [0.9, 0.1]])
    out = hybrid.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 6
    assert torch.isfinite(hybrid(**inputs).logits).all()
