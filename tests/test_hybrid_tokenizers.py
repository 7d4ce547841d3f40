"""Tokenizer sharing is decided from tokenizer contents, and fresh embeddings when they differ."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import mad_models  # noqa: F401
from mad_models.hybrid import ManticoreForCausalLM, tokenizer_fingerprint
from tests.tiny import VOCAB, tiny_mamba, tiny_neox, tiny_word_tokenizer


def save_component(path, model, tokenizer):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_local_dirs_with_the_same_tokenizer_share_embeddings(tmp_path):
    neox, mamba = tiny_neox(seed=1), tiny_mamba(seed=2)
    a = save_component(tmp_path / "a", neox, tiny_word_tokenizer())
    b = save_component(tmp_path / "b", mamba, tiny_word_tokenizer())
    hybrid = ManticoreForCausalLM.from_components([a, b], n_blocks=2).eval()
    assert hybrid.config.component_names == [a, b]
    assert hybrid.config.fresh_embeddings == [False, False]
    assert hybrid.config.tokenizer_fingerprint == tokenizer_fingerprint(tiny_word_tokenizer())
    x = torch.randint(0, VOCAB, (1, 6))
    hybrid.set_mixture([[0.0, 1.0], [0.0, 1.0]])
    with torch.no_grad():
        torch.testing.assert_close(hybrid(x).logits, mamba(x).logits, atol=1e-5, rtol=0)


def test_different_tokenizer_files_are_refused_unless_fresh_embeddings(tmp_path):
    a = save_component(tmp_path / "a", tiny_neox(seed=1), tiny_word_tokenizer())
    b = save_component(tmp_path / "b", tiny_mamba(seed=2), tiny_word_tokenizer(shuffle_seed=1))
    with pytest.raises(ValueError, match="do not share a tokenizer.*fresh_embeddings=True"):
        ManticoreForCausalLM.from_components([a, b], n_blocks=2)
    hybrid = ManticoreForCausalLM.from_components([a, b], n_blocks=2, fresh_embeddings=True).eval()
    assert hybrid.config.fresh_embeddings == [False, True]
    mamba = hybrid.components[1]
    assert mamba.lm_head.weight is mamba.backbone.embeddings.weight

    hybrid.freeze_components(True)
    assert mamba.backbone.embeddings.weight.requires_grad  # fresh embeddings keep training
    assert not mamba.backbone.layers[0].mixer.in_proj.weight.requires_grad

    hybrid.save_pretrained(tmp_path / "h")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "h")
    x = torch.randint(0, VOCAB, (1, 6))
    with torch.no_grad():
        assert torch.equal(again(x).logits, hybrid(x).logits)


def test_model_objects_compare_explicit_tokenizers_not_names():
    neox, mamba = tiny_neox(seed=1), tiny_mamba(seed=2)
    same_name_other_vocab = [tiny_word_tokenizer(), tiny_word_tokenizer(shuffle_seed=3)]
    for tok in same_name_other_vocab:
        tok.name_or_path = "EleutherAI/gpt-neox-20b"
    with pytest.raises(ValueError, match="do not share a tokenizer"):
        ManticoreForCausalLM.from_components([neox, mamba], n_blocks=2, tokenizers=same_name_other_vocab)
    other_names_same_vocab = [tiny_word_tokenizer(), tiny_word_tokenizer()]
    other_names_same_vocab[1].name_or_path = "state-spaces/mamba-130m-hf"
    hybrid = ManticoreForCausalLM.from_components(
        [neox, mamba], n_blocks=2, tokenizers=other_names_same_vocab
    )
    assert hybrid.config.fresh_embeddings == [False, False]


def test_without_tokenizers_vocab_sizes_must_agree():
    neox, small_vocab = tiny_neox(seed=1), tiny_mamba(seed=2, vocab=100)
    with pytest.raises(ValueError, match=r"vocab sizes / embedding rows differ \(\[128, 100\]\)"):
        ManticoreForCausalLM.from_components([neox, small_vocab], n_blocks=2)
    hybrid = ManticoreForCausalLM.from_components([neox, small_vocab], n_blocks=2, fresh_embeddings=True)
    assert hybrid.config.vocab_size == VOCAB
    assert hybrid.components[1].backbone.embeddings.weight.shape == (VOCAB, 48)
    assert small_vocab.backbone.embeddings.weight.shape == (100, 48)  # the caller's model is untouched
    assert hybrid(torch.randint(0, VOCAB, (1, 5))).logits.shape == (1, 5, VOCAB)


def test_hub_ids_load_model_and_tokenizer_with_the_same_hub_options(tmp_path, monkeypatch):
    # local_files_only / cache_dir given for the components hold for their tokenizers too: an offline build
    # from a cache must not ask the Hub, and must find the tokenizers there
    from huggingface_hub import constants, file_download

    commit = "0" * 40
    for name, model in (("tiny-neox", tiny_neox(seed=1)), ("tiny-mamba", tiny_mamba(seed=2))):
        repo = tmp_path / f"models--org--{name}"
        save_component(repo / "snapshots" / commit, model, tiny_word_tokenizer())
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)

    def no_network(url, *args, **kwargs):
        raise AssertionError(f"network request to {url}")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(file_download, "get_hf_file_metadata", no_network)
    hybrid = ManticoreForCausalLM.from_components(
        ["org/tiny-neox", "org/tiny-mamba"], n_blocks=2, cache_dir=tmp_path, local_files_only=True
    )
    assert hybrid.config.tokenizer_fingerprint == tokenizer_fingerprint(tiny_word_tokenizer())


def test_components_load_from_safetensors_only(tmp_path):
    neox = tiny_neox(seed=1)
    neox.config.save_pretrained(tmp_path)
    torch.save(neox.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle checkpoint, never to be loaded
    with pytest.raises(OSError, match="model.safetensors"):
        ManticoreForCausalLM.from_components([str(tmp_path), tiny_mamba(seed=2)], n_blocks=2)
