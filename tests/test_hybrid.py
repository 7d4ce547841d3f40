"""Manticore hybrids: one-hot equality, cached generation, save/load, mixtures and gradients."""

from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

import mad_models  # noqa: F401  (registers "manticore")
from mad_models.hybrid import ExponentiatedGradient, ManticoreConfig, ManticoreForCausalLM
from tests.tiny import VOCAB, tiny_gpt2, tiny_gpt_neo, tiny_llama, tiny_mamba, tiny_mamba2, tiny_neox

BUILDERS = {
    "gpt_neox": lambda: tiny_neox(seed=1),  # hidden 64 x 4 layers
    "mamba": lambda: tiny_mamba(seed=2),  # hidden 48 x 6 layers
    "gpt2": lambda: tiny_gpt2(seed=3),
    "gpt_neo": lambda: tiny_gpt_neo(seed=4),
    "llama": lambda: tiny_llama(seed=5),
    "mamba2": lambda: tiny_mamba2(seed=6),
}


@pytest.fixture(scope="module")
def models():
    return {name: build() for name, build in BUILDERS.items()}


def one_hot(n_blocks: int, k: int, m: int) -> torch.Tensor:
    w = torch.zeros(n_blocks, k)
    w[:, m] = 1.0
    return w


def ids(batch: int = 2, length: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pair", list(itertools.combinations(BUILDERS, 2)), ids="+".join)
def test_one_hot_equals_component(models, pair):
    comps = [models[name] for name in pair]
    hybrid = ManticoreForCausalLM.from_components(comps, n_blocks=2).eval()
    x = ids()
    with torch.no_grad():
        mixed = hybrid(x).logits
        for m, name in enumerate(pair):
            hybrid.set_mixture(one_hot(2, 2, m))
            # against a fresh build of the pretrained component: the hybrid shares the module objects, so
            # comparing with those would not notice if building the hybrid changed their weights
            torch.testing.assert_close(hybrid(x).logits, BUILDERS[name]()(x).logits, atol=1e-5, rtol=0)
    # the mixed hybrid is a different function from either component
    assert not torch.allclose(mixed, comps[0](x).logits, atol=1e-3)


def test_hidden_size_is_widest_and_layer_counts_differ(models):
    hybrid = ManticoreForCausalLM.from_components([models["gpt_neox"], models["mamba"]], n_blocks=2)
    assert hybrid.config.hidden_size == 64
    assert hybrid.config.layer_map == [[2, 2], [3, 3]]
    assert hybrid.proj_in["c1_b0"].weight.shape == (48, 64)  # D -> d_mamba
    assert hybrid.proj_out["c1_b1"].weight.shape == (64, 48)
    assert hybrid.mixture_weights().shape == (2, 2)


def test_explicit_layer_map_when_blocks_do_not_divide(models):
    neox, mamba = models["gpt_neox"], models["mamba"]
    with pytest.raises(ValueError, match="does not divide the depth"):
        ManticoreForCausalLM.from_components([neox, mamba], n_blocks=3)
    hybrid = ManticoreForCausalLM.from_components([neox, mamba], n_blocks=3, layer_map=[[1, 1, 2], [2, 2, 2]])
    hybrid.set_mixture(one_hot(3, 2, 0))
    with torch.no_grad():
        torch.testing.assert_close(hybrid(ids()).logits, neox(ids()).logits, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="layer_map row"):
        ManticoreForCausalLM.from_components([neox, mamba], n_blocks=3, layer_map=[[1, 1, 1], [2, 2, 2]])
    with pytest.raises(ValueError, match="one row per component"):
        ManticoreForCausalLM.from_components([neox, mamba], n_blocks=3, layer_map=[[1, 1, 2]])


@pytest.mark.parametrize(
    "pair",
    [("gpt_neox", "mamba"), ("gpt2", "mamba2"), ("gpt_neo", "llama"), ("llama", "mamba")],
    ids="+".join,
)
def test_cached_greedy_equals_cache_free(models, pair):
    hybrid = ManticoreForCausalLM.from_components([models[n] for n in pair], n_blocks=2).eval()
    hybrid.set_mixture([[0.6, 0.4], [0.3, 0.7]])
    x = ids(length=6)
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    with_cache = hybrid.generate(x, attention_mask=torch.ones_like(x), use_cache=True, **kwargs)
    no_cache = hybrid.generate(x, attention_mask=torch.ones_like(x), use_cache=False, **kwargs)
    assert with_cache.shape == (2, 16)
    assert torch.equal(with_cache, no_cache)


def test_cached_generation_with_left_padding(models):
    hybrid = ManticoreForCausalLM.from_components([models["gpt_neox"], models["mamba"]], n_blocks=2).eval()
    x = ids(length=7)
    mask = torch.ones_like(x)
    mask[0, :3] = 0  # left padding in the first row
    kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(
        hybrid.generate(x, use_cache=True, **kwargs), hybrid.generate(x, use_cache=False, **kwargs)
    )


def test_forward_cache_matches_full_forward(models):
    hybrid = ManticoreForCausalLM.from_components([models["llama"], models["mamba"]], n_blocks=2).eval()
    x = ids(length=8)
    with torch.no_grad():
        full = hybrid(x).logits
        cache = hybrid.new_cache()
        first = hybrid(x[:, :5], past_key_values=cache, use_cache=True)
        rest = [
            hybrid(x[:, t : t + 1], past_key_values=first.past_key_values, use_cache=True).logits
            for t in range(5, 8)
        ]
    assert cache.get_seq_length() == 8
    torch.testing.assert_close(torch.cat([first.logits] + rest, 1), full, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_is_exact(models, tmp_path):
    comps = [models["gpt_neo"], models["mamba2"], models["gpt2"], models["mamba"]]
    hybrid = ManticoreForCausalLM.from_components(comps, n_blocks=2).eval()
    with torch.no_grad():
        hybrid.mixture.alphas.normal_()  # learned-looking logits
    hybrid.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]
    saved = load_file(tmp_path / "model.safetensors")
    # tied heads (GPT-2, GPT-Neo, Mamba) are stored once
    assert "components.3.backbone.embeddings.weight" in saved and "components.3.lm_head.weight" not in saved
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, ManticoreConfig) and config.components[1]["model_type"] == "mamba2"

    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(again) is ManticoreForCausalLM
    assert again.config.component_names == hybrid.config.component_names
    assert again.config.mixture_mode == "softmax"
    assert again.components[3].lm_head.weight is again.components[3].backbone.embeddings.weight
    x = ids()
    with torch.no_grad():
        assert torch.equal(again(x).logits, hybrid(x).logits)
    sd, sd2 = hybrid.state_dict(), again.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_checkpoint_with_missing_tensors_is_refused(models, tmp_path):
    from safetensors.torch import save_file

    hybrid = ManticoreForCausalLM.from_components([models["gpt_neox"], models["mamba"]], n_blocks=2)
    hybrid.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["proj_in.c1_b0.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing tensors.*proj_in\.c1_b0\.weight"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_gradients_reach_mixture_and_projectors_not_frozen_components(models):
    hybrid = ManticoreForCausalLM.from_components([tiny_neox(seed=1), tiny_mamba(seed=2)], n_blocks=2).train()
    hybrid.freeze_components(True)
    x = ids()
    hybrid(x, labels=x).loss.backward()
    assert hybrid.mixture.alphas.grad is not None and hybrid.mixture.alphas.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hybrid.projector_parameters())
    assert all(p.grad is None for p in hybrid.components.parameters())
    assert {id(p) for p in hybrid.mixture_parameters()} == {id(hybrid.mixture.alphas)}

    hybrid.zero_grad(set_to_none=True)
    hybrid.freeze_components(False)
    hybrid(x, labels=x).loss.backward()
    assert all(p.grad is not None for p in hybrid.components[1].backbone.layers.parameters())


def test_fixed_mixture_gets_no_gradient(models):
    hybrid = ManticoreForCausalLM.from_components([tiny_neox(seed=1), tiny_mamba(seed=2)], n_blocks=2)
    hybrid.set_mixture([[0.7, 0.3], [0.2, 0.8]])
    assert hybrid.config.mixture_mode == "fixed" and not hybrid.mixture.alphas.requires_grad
    torch.testing.assert_close(hybrid.mixture_weights(), torch.tensor([[0.7, 0.3], [0.2, 0.8]]))


def test_gumbel_samples_while_training_only(models):
    hybrid = ManticoreForCausalLM.from_components([models["gpt_neox"], models["mamba"]], n_blocks=2)
    hybrid.set_mixture(None, mode="gumbel")
    hybrid.train()
    a, b = hybrid.mixture_weights(), hybrid.mixture_weights()
    assert not torch.allclose(a, b) and torch.allclose(a.sum(-1), torch.ones(2))
    hybrid.eval()
    torch.testing.assert_close(hybrid.mixture_weights(), torch.full((2, 2), 0.5))
    hybrid.train()
    x = ids()
    hybrid(x, labels=x).loss.backward()
    assert hybrid.mixture.alphas.grad.abs().sum() > 0


def test_simplex_mode_with_exponentiated_gradient(models):
    hybrid = ManticoreForCausalLM.from_components([tiny_neox(seed=1), tiny_mamba(seed=2)], n_blocks=2)
    hybrid.set_mixture([[0.5, 0.5], [0.5, 0.5]], mode="simplex")
    opt = ExponentiatedGradient(hybrid.mixture_parameters(), lr=0.5)
    x = ids()
    for _ in range(3):
        opt.zero_grad()
        hybrid(x, labels=x).loss.backward()
        opt.step()
    w = hybrid.mixture_weights().detach()
    assert (w > 0).all() and torch.allclose(w.sum(-1), torch.ones(2), atol=1e-6)
    assert not torch.allclose(w, torch.full((2, 2), 0.5))


@pytest.mark.parametrize(
    "weights, mode, message",
    [
        ([[0.5, 0.5]], "fixed", r"shape \(n_blocks, K\) = \(2, 2\)"),
        ([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], "fixed", "shape"),
        ([[0.7, 0.7], [0.5, 0.5]], "fixed", "sum to one"),
        ([[1.5, -0.5], [0.5, 0.5]], "fixed", "non-negative"),
        ([[1.0, 0.0], [0.5, 0.5]], "softmax", "must be > 0"),
        ([[0.5, 0.5], [0.5, 0.5]], "bogus", "mixture mode must be one of"),
    ],
)
def test_bad_mixtures(models, weights, mode, message):
    hybrid = ManticoreForCausalLM.from_components([models["gpt_neox"], models["mamba"]], n_blocks=2)
    with pytest.raises(ValueError, match=message):
        hybrid.set_mixture(weights, mode=mode)


def test_bad_components_and_inputs(models):
    from tests.tiny import tiny_bert_classifier

    with pytest.raises(ValueError, match="Unknown component architecture 'bert'"):
        ManticoreForCausalLM.from_components([models["gpt_neox"], tiny_bert_classifier()], n_blocks=2)
    with pytest.raises(ValueError, match="needs the causal LM"):
        ManticoreForCausalLM.from_components([models["gpt_neox"], models["mamba"].backbone], n_blocks=2)
    with pytest.raises(TypeError, match="hub id, a local dir or a PreTrainedModel"):
        ManticoreForCausalLM.from_components([models["gpt_neox"], 3], n_blocks=2)
    with pytest.raises(ValueError, match="n_blocks must be a positive integer"):
        ManticoreForCausalLM.from_components([models["gpt_neox"]], n_blocks=0)
    with pytest.raises(ValueError, match="mixture_mode must be one of"):
        ManticoreForCausalLM.from_components([models["gpt_neox"]], n_blocks=2, mixture="dart")
    hybrid = ManticoreForCausalLM.from_components([models["gpt_neox"], models["mamba"]], n_blocks=2)
    with pytest.raises(ValueError, match="takes input_ids"):
        hybrid(inputs_embeds=torch.zeros(1, 3, 64))
    with pytest.raises(ValueError, match="ManticoreCache"):
        hybrid(ids(), past_key_values=object())


def test_loads_in_bfloat16(models, tmp_path):
    hybrid = ManticoreForCausalLM.from_components([models["gpt_neox"], models["mamba"]], n_blocks=2).eval()
    hybrid.save_pretrained(tmp_path)
    half = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.proj_out["c1_b0"].weight.dtype == torch.bfloat16
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(half(x).logits.float(), hybrid(x).logits, atol=0.05, rtol=0.05)
    assert half.generate(x, max_new_tokens=3, do_sample=False, pad_token_id=0).shape == (2, 12)


def test_a_pickle_checkpoint_is_never_loaded(models, tmp_path):
    hybrid = ManticoreForCausalLM.from_components([models["gpt_neox"], models["mamba"]], n_blocks=2)
    hybrid.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    torch.save(weights, tmp_path / "pytorch_model.bin")  # unpickling it could run code
    with pytest.raises(OSError, match="model.safetensors"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
