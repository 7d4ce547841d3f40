"""The transformers API on hybrids, mirroring transformers' common model and generation tests
(`test_save_load`, `test_resize_tokens_embeddings`, assisted decoding, `test_hidden_states_output`,
tuple outputs) over neox+mamba, llama+mamba2 and gpt2+llama."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

import mad_models  # noqa: F401  (registers "manticore")
from mad_models.hybrid import ManticoreForCausalLM
from mad_models.validation import check_causal_lm_folder, decode_special_floats
from tests.tiny import VOCAB, tiny_gpt2, tiny_llama, tiny_mamba, tiny_mamba2, tiny_neox

PAIRS = {
    "neox+mamba": (lambda s=0: tiny_neox(seed=1 + s), lambda s=0: tiny_mamba(seed=2 + s)),
    "llama+mamba2": (lambda s=0: tiny_llama(seed=3 + s), lambda s=0: tiny_mamba2(seed=4 + s)),
    "gpt2+llama": (lambda s=0: tiny_gpt2(seed=5 + s), lambda s=0: tiny_llama(seed=6 + s)),
}
STATEFUL = {"neox+mamba", "llama+mamba2"}
MIXTURE = [[0.7, 0.3], [0.4, 0.6]]


def hybrid_of(pair: str, mixture=MIXTURE, seed: int = 0) -> ManticoreForCausalLM:
    first, second = PAIRS[pair]
    return ManticoreForCausalLM.from_components(
        [first(seed), second(seed)], n_blocks=2, mixture=mixture
    ).eval()


def ids(batch: int = 2, length: int = 7, high: int = VOCAB, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, high, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pair", PAIRS)
def test_save_load(pair, tmp_path):
    hybrid = hybrid_of(pair)
    hybrid.save_pretrained(tmp_path)
    x = ids()
    with torch.no_grad():
        want = hybrid(x).logits
        for loader in (ManticoreForCausalLM, AutoModelForCausalLM):  # the class itself, not only the Auto one
            again = loader.from_pretrained(tmp_path).eval()
            assert type(again) is ManticoreForCausalLM
            assert torch.equal(again(x).logits, want)
    # saving the loaded model again writes the same config
    again.save_pretrained(tmp_path / "again")
    assert (
        json.loads((tmp_path / "again/config.json").read_text())["components"]
        == json.loads((tmp_path / "config.json").read_text())["components"]
    )


def test_mamba2_time_step_limit_survives_the_checked_load(tmp_path):
    """Mamba2 keeps time_step_limit=(0.0, inf): config.json holds it as {"__float__": "Infinity"}, and the
    pre-load check must decode it as transformers does (it used to refuse every hybrid with a Mamba2)."""
    mamba2 = tiny_mamba2()
    assert mamba2.config.time_step_limit[1] == math.inf
    mamba2.save_pretrained(tmp_path / "mamba2")
    raw = json.loads((tmp_path / "mamba2/config.json").read_text())
    assert raw["time_step_limit"][1] == {"__float__": "Infinity"}
    check_causal_lm_folder(tmp_path / "mamba2")
    hybrid = ManticoreForCausalLM.from_components([tiny_llama(), mamba2], n_blocks=2)
    hybrid.save_pretrained(tmp_path / "hybrid")
    loaded = ManticoreForCausalLM.from_pretrained(tmp_path / "hybrid")
    assert loaded.components[1].config.time_step_limit[1] == math.inf


def test_decode_special_floats():
    got = decode_special_floats(
        {"a": [{"__float__": "NaN"}, {"__float__": "-Infinity"}], "b": {"__float__": "other"}, "c": 1}
    )
    assert math.isnan(got["a"][0]) and got["a"][1] == -math.inf
    assert got["b"] == {"__float__": "other"} and got["c"] == 1  # not a tag transformers writes: left alone
    assert decode_special_floats({"__float__": ["Infinity"]}) == {"__float__": ["Infinity"]}


@pytest.mark.parametrize("pair", PAIRS)
def test_resize_tokens_embeddings(pair, tmp_path):
    hybrid = hybrid_of(pair)
    old = [c.get_input_embeddings().weight.detach().clone() for c in hybrid.components]
    tied = [c.get_output_embeddings().weight is c.get_input_embeddings().weight for c in hybrid.components]
    x = ids()
    with torch.no_grad():
        before = hybrid(x).logits

    emb = hybrid.resize_token_embeddings(VOCAB + 10)
    assert emb is hybrid.get_input_embeddings() and emb.weight.shape[0] == VOCAB + 10
    assert hybrid.config.vocab_size == VOCAB + 10
    for m, comp in enumerate(hybrid.components):
        assert comp.get_input_embeddings().weight.shape[0] == VOCAB + 10
        assert comp.get_output_embeddings().weight.shape[0] == VOCAB + 10
        assert comp.config.vocab_size == hybrid.config.components[m]["vocab_size"] == VOCAB + 10
        assert torch.equal(comp.get_input_embeddings().weight[:VOCAB], old[m])  # old rows kept
        # tied heads stay tied, untied ones stay apart
        assert (comp.get_output_embeddings().weight is comp.get_input_embeddings().weight) == tied[m]
    with torch.no_grad():
        grown = hybrid(x).logits
        assert grown.shape[-1] == VOCAB + 10
        torch.testing.assert_close(grown[..., :VOCAB], before, atol=1e-5, rtol=0)  # old tokens unchanged
        hybrid(torch.tensor([[VOCAB + 9, 3, VOCAB]]))  # the new ids embed and decode
    hybrid.save_pretrained(tmp_path)
    again = ManticoreForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(x).logits, grown)

    hybrid.resize_token_embeddings(VOCAB - 15)
    assert hybrid.config.vocab_size == VOCAB - 15
    with torch.no_grad():
        assert hybrid(ids(high=VOCAB - 15)).logits.shape[-1] == VOCAB - 15
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 113\)"):
        hybrid(torch.tensor([[VOCAB - 15]]))

    hybrid.resize_token_embeddings(VOCAB + 1, pad_to_multiple_of=8)
    assert hybrid.config.vocab_size == VOCAB + 8
    assert all(c.get_input_embeddings().weight.shape[0] == VOCAB + 8 for c in hybrid.components)


def test_resize_a_pruned_hybrid(tmp_path):
    """A pruned hybrid dropped the embedding or head its components never run; the rest resizes."""
    hybrid = hybrid_of("neox+mamba", mixture=[[1.0, 0.0], [0.3, 0.7]])
    pruned = hybrid.prune(threshold=0.25)  # mamba not in block 0 (no embedding), both in block 1
    assert pruned.components[1].backbone.embeddings is None
    pruned.resize_token_embeddings(VOCAB + 4)
    assert pruned.components[1].lm_head.weight.shape[0] == VOCAB + 4
    assert pruned.components[0].get_input_embeddings().weight.shape[0] == VOCAB + 4
    pruned.save_pretrained(tmp_path)
    again = ManticoreForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.tensor([[VOCAB + 3, 5, 7]])
    with torch.no_grad():
        assert torch.equal(again(x).logits, pruned(x).logits)


@pytest.mark.parametrize("pair", PAIRS)
def test_assisted_decoding(pair):
    """A hybrid with a Mamba component is refused as Mamba refuses it (its state cannot be rolled back);
    an attention-only hybrid decodes with an assistant exactly as it decodes greedily alone."""
    hybrid, assistant = hybrid_of(pair), hybrid_of(pair, mixture=[[0.5, 0.5], [0.5, 0.5]], seed=10)
    x = ids(batch=1, length=5)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
    if pair in STATEFUL:
        with pytest.raises(ValueError, match="assisted generation is not supported with stateful models"):
            hybrid.generate(x, assistant_model=assistant, **kwargs)
        return
    greedy = hybrid.generate(x, **kwargs)
    assisted = hybrid.generate(x, assistant_model=assistant, **kwargs)
    assert torch.equal(assisted, greedy)
    # an assistant with a Mamba component says why it cannot serve instead of crashing in its cache
    with pytest.raises(ValueError, match="cannot roll its cache back"):
        hybrid.generate(x, assistant_model=hybrid_of("neox+mamba"), **kwargs)


@pytest.mark.parametrize("pair", PAIRS)
def test_hidden_states_output(pair):
    hybrid = hybrid_of(pair)
    x = ids()
    with torch.no_grad():
        out = hybrid(x, output_hidden_states=True)
    D = hybrid.config.hidden_size
    assert len(out.hidden_states) == hybrid.config.n_blocks + 1
    assert all(h.shape == (2, 7, D) for h in out.hidden_states)
    # the last one is what the heads read: the mixed logits follow from it
    w = hybrid.mixture_weights()
    logits = sum(
        w[-1, m] * a.head(out.hidden_states[-1][..., : a.hidden_size])
        for m, a in enumerate(hybrid.component_wrappers)
    )
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)
    assert hybrid(x).hidden_states is None  # only when asked
    hybrid.config.output_hidden_states = True  # the config's setting is honoured too
    assert len(hybrid(x).hidden_states) == 3


@pytest.mark.parametrize("pair", PAIRS)
def test_hidden_states_of_a_one_hot_hybrid_are_the_components(pair):
    """With all weight on one component, block i's output is that component's hidden state after its
    layers of blocks 0..i (the last one after its final norm), zero-padded to the hybrid's width."""
    for m, build in enumerate(PAIRS[pair]):
        w = torch.zeros(2, 2)
        w[:, m] = 1.0
        hybrid = hybrid_of(pair, mixture=w)
        x = ids()
        with torch.no_grad():
            mine = hybrid(x, output_hidden_states=True).hidden_states
            theirs = build()(x, output_hidden_states=True).hidden_states
        wrapper = hybrid.component_wrappers[m]
        d, depth = wrapper.hidden_size, wrapper.num_layers
        # transformers' Mamba models leave the embeddings out of their tuple: entry k follows layer k + 1
        after = {k: theirs[k - (0 if wrapper.has_attention else 1)] for k in range(1, depth)} | {
            depth: theirs[-1]
        }
        for i in (1, 2):
            torch.testing.assert_close(mine[i][..., :d], after[i * depth // 2], atol=1e-5, rtol=0)
            assert not mine[i][..., d:].any()


@pytest.mark.parametrize("pair", PAIRS)
def test_tuple_outputs(pair):
    hybrid = hybrid_of(pair)
    x = ids()
    with torch.no_grad():
        out = hybrid(x, labels=x, output_hidden_states=True)
        tup = hybrid(x, labels=x, output_hidden_states=True, return_dict=False)
        assert isinstance(tup, tuple) and len(tup) == 4  # loss, logits, cache, hidden states
        assert torch.equal(tup[0], out.loss) and torch.equal(tup[1], out.logits)
        assert all(torch.equal(a, b) for a, b in zip(tup[3], out.hidden_states, strict=True))
        no_cache = hybrid(x, use_cache=False, return_dict=False)
        assert len(no_cache) == 1 and torch.equal(no_cache[0], out.logits)
        hybrid.config.return_dict = False
        assert isinstance(hybrid(x, use_cache=False), tuple)
        assert not isinstance(hybrid(x, use_cache=False, return_dict=True), tuple)
    with pytest.raises(ValueError, match="does not return attention weights"):
        hybrid(x, output_attentions=True)


@pytest.mark.parametrize("pair", ["llama+mamba2"])
def test_generate_returns_hidden_states(pair):
    hybrid = hybrid_of(pair)
    out = hybrid.generate(
        ids(batch=1, length=4),
        max_new_tokens=3,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
        output_hidden_states=True,
        return_dict_in_generate=True,
    )
    assert len(out.hidden_states) == 3  # one entry per new token
    assert out.hidden_states[0][0].shape[1] == 4 and out.hidden_states[1][0].shape[1] == 1
