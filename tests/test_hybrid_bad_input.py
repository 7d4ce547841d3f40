"""Manticore hybrids facing bad input: loaded mixtures are validated, from_components leaves the
caller's models alone and refuses one object twice, unequal padded vocabularies never raise IndexError, and
the tokenizer fingerprint covers every stage that maps text to ids."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

import mad_models  # noqa: F401
from mad_models.hybrid import ManticoreForCausalLM, tokenizer_fingerprint
from tests.tiny import tiny_char_tokenizer, tiny_mamba, tiny_neox


def _save_with_alphas(tmp_path, mode: str, alphas: torch.Tensor):
    hybrid = ManticoreForCausalLM.from_components([tiny_neox(), tiny_mamba()], n_blocks=2)
    if mode != "softmax":
        hybrid.set_mixture([[0.5, 0.5], [0.5, 0.5]], mode=mode)
    hybrid.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["mixture.alphas"] = alphas
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path


@pytest.mark.parametrize(
    "mode, alphas, match",
    [
        ("softmax", torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]), "logits must be finite"),
        ("fixed", torch.tensor([[0.9, 0.9], [0.5, 0.5]]), "must sum to one"),
        ("simplex", torch.tensor([[1.5, -0.5], [0.5, 0.5]]), "finite and non-negative"),
    ],
    ids=["nan-logits", "rows-not-summing-to-one", "negative-weight"],
)
def test_from_pretrained_validates_mixture_values_as_set_mixture_does(tmp_path, mode, alphas, match):
    folder = _save_with_alphas(tmp_path, mode, alphas)
    with pytest.raises(ValueError, match=rf"invalid mixture weights \(mixture.alphas\).*{match}"):
        ManticoreForCausalLM.from_pretrained(folder)


def test_a_bf16_hybrid_with_fixed_weights_loads(tmp_path):
    hybrid = ManticoreForCausalLM.from_components([tiny_neox(), tiny_mamba()], n_blocks=2).to(torch.bfloat16)
    hybrid.set_mixture([[0.2, 0.8], [0.9, 0.1]])  # rounded in bf16: rows sum to 1 +- 1e-3
    hybrid.save_pretrained(tmp_path)
    loaded = ManticoreForCausalLM.from_pretrained(tmp_path)
    assert loaded.dtype == torch.bfloat16
    assert torch.equal(loaded.mixture_weights(), hybrid.mixture_weights())


def test_from_components_leaves_the_callers_models_alone_and_says_it_shares_them(caplog):
    neox, mamba = tiny_neox().train(), tiny_mamba().eval()  # different modes: the hybrid must not align them
    neox_head = neox.lm_head.weight.detach().clone()
    with caplog.at_level(logging.WARNING):
        hybrid = ManticoreForCausalLM.from_components([neox, mamba], n_blocks=2)
    assert neox.training and not mamba.training
    assert all(not m.training for m in mamba.modules()) and all(m.training for m in neox.modules())
    assert neox.dtype == mamba.dtype == torch.float32 and torch.equal(neox.lm_head.weight, neox_head)
    assert hybrid.training and hybrid.mixture.training
    assert "uses the model objects you passed (components [0, 1]) as they are, not copies" in caplog.text

    half = tiny_mamba().to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"components have different dtypes .*bfloat16.*convert them"):
        ManticoreForCausalLM.from_components([tiny_neox(), half], n_blocks=2)
    assert half.dtype == torch.bfloat16  # not converted behind the caller's back


def test_the_same_model_object_twice_is_refused():
    neox = tiny_neox()
    with pytest.raises(ValueError, match=r"components 0 and 1 are the same model object"):
        ManticoreForCausalLM.from_components([neox, neox], n_blocks=2)


def test_unequal_padded_vocabularies_never_raise_index_error():
    tok = tiny_char_tokenizer()  # one tokenizer, two models padded to different sizes (as Pythia vs Mamba)
    hybrid = ManticoreForCausalLM.from_components(
        [tiny_neox(vocab=136), tiny_mamba(vocab=128)], n_blocks=2, tokenizers=[tok, tok]
    ).eval()
    assert hybrid.config.vocab_size == 136
    ids = torch.tensor([[1, 5, 130, 135]])  # 130 and 135 are padding rows only the larger model has
    with torch.no_grad():
        logits = hybrid(ids).logits
    assert logits.shape == (1, 4, 136) and torch.isfinite(logits).all()
    hybrid.set_mixture([[0.5, 0.5], [1.0, 0.0]])  # only the larger head predicts: it may emit padding ids
    out = hybrid.generate(ids, max_new_tokens=4, do_sample=True, top_k=0, temperature=50.0)
    assert out.shape == (1, 8)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 136\)"):
        hybrid(torch.tensor([[1, 136]]))


def test_tokenizer_fingerprint_covers_normalizer_pre_tokenizer_and_post_processor():
    from tokenizers import normalizers, pre_tokenizers, processors

    base = tiny_char_tokenizer()
    fp = tokenizer_fingerprint(base)
    assert tokenizer_fingerprint(tiny_char_tokenizer()) == fp
    changes = {
        "normalizer": lambda t: setattr(t, "normalizer", normalizers.Lowercase()),
        "pre_tokenizer": lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.Whitespace()),
        "post_processor": lambda t: setattr(
            t,
            "post_processor",
            processors.TemplateProcessing(single="<eos> $A", special_tokens=[("<eos>", 1)]),
        ),
    }
    for stage, change in changes.items():
        tok = tiny_char_tokenizer()
        change(tok.backend_tokenizer)
        assert tok.get_vocab() == base.get_vocab()
        assert tokenizer_fingerprint(tok) != fp, stage
