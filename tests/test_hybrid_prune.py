"""Pruning / discretisation and the cost report of Manticore hybrids."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.masking_utils import create_causal_mask

import mad_models  # noqa: F401
from mad_models.hybrid import ManticoreForCausalLM
from tests.tiny import VOCAB, tiny_mamba, tiny_neox


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def pair():
    return tiny_neox(seed=1), tiny_mamba(seed=2)  # 64 x 4 layers, 48 x 6 layers


@pytest.fixture
def hybrid(pair):
    return ManticoreForCausalLM.from_components(list(pair), n_blocks=2).eval()


def ids(length: int = 9) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(0))


def stitched(neox, mamba, x):
    """The plain stitched model, written against the transformers modules directly:
    Pythia's embedding and layers 0-1, then Mamba's layers 3-5, its final norm and head."""
    g = neox.gpt_neox
    h = g.embed_in(x)
    pos = torch.arange(x.shape[1])[None]
    rotary = g.rotary_emb(h, position_ids=pos)
    mask = create_causal_mask(
        config=neox.config, inputs_embeds=h, attention_mask=None, past_key_values=None, position_ids=pos
    )
    for layer in g.layers[:2]:
        h = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=rotary)
    h = h[..., : mamba.config.hidden_size]
    for layer in mamba.backbone.layers[3:]:
        h = layer(h)
    return mamba.lm_head(mamba.backbone.norm_f(h))


def test_discretized_hybrid_is_the_plain_stitched_model(pair, hybrid, tmp_path):
    neox, mamba = pair
    hybrid.set_mixture([[0.9, 0.1], [0.2, 0.8]])
    small = hybrid.discretize()
    assert small.config.block_components == [[0], [1]]
    assert small.config.pruning["method"] == "argmax"
    assert len(small.proj_in) == 0 and len(small.proj_out) == 0
    torch.testing.assert_close(small.mixture_weights(), torch.eye(2))

    # exactly the pieces it no longer runs are gone
    dropped = (
        count(neox.gpt_neox.layers[2:])
        + count(neox.gpt_neox.final_layer_norm)
        + count(neox.lm_head)
        + count(mamba.backbone.layers[:3])
        + count(hybrid.proj_in)
        + count(hybrid.proj_out)
    )
    assert count(small) == count(hybrid) - dropped
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(small(x).logits, stitched(neox, mamba, x), atol=1e-5, rtol=0)

    small.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.config.block_components == [[0], [1]] and again.config.pruning == small.config.pruning
    assert count(again) == count(small)
    with torch.no_grad():
        assert torch.equal(again(x).logits, small(x).logits)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(
        again.generate(x, use_cache=True, **kwargs), again.generate(x, use_cache=False, **kwargs)
    )


def test_threshold_keeps_heavy_components_and_drops_unused_ones(pair, hybrid):
    neox, mamba = pair
    hybrid.set_mixture([[0.7, 0.3], [0.1, 0.9]])
    small = hybrid.prune(threshold=0.25)
    assert small.config.block_components == [[0, 1], [1]]
    assert set(small.proj_in) == {"c0_b0", "c1_b0"}
    torch.testing.assert_close(small.mixture_weights(), torch.tensor([[0.7, 0.3], [0.0, 1.0]]))
    assert count(small) < count(hybrid)

    only_mamba = hybrid.prune(threshold=0.75)  # block 0 keeps its argmax (Pythia), block 1 Mamba
    assert only_mamba.config.block_components == [[0], [1]]

    hybrid.set_mixture([[0.2, 0.8], [0.1, 0.9]])
    mamba_only = hybrid.prune(threshold=0.5)
    assert mamba_only.config.component_names == [hybrid.config.component_names[1]]
    assert mamba_only.config.num_components == 1 and mamba_only.config.hidden_size == 48
    assert count(mamba_only) == count(mamba) + 2  # + one mixture weight per block
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(mamba_only(x).logits, mamba(x).logits, atol=1e-5, rtol=0)
    report = mamba_only.cost_report()
    assert report["relative_flops"][mamba_only.config.component_names[0]] == pytest.approx(1.0)


def test_prune_at_zero_keeps_everything(hybrid):
    with torch.no_grad():
        hybrid.mixture.alphas.copy_(torch.tensor([[0.3, -0.2], [1.0, 0.5]]))
    same = hybrid.prune(threshold=0.0)
    assert same.config.block_components == [[0, 1], [0, 1]] and count(same) == count(hybrid)
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(same(x).logits, hybrid(x).logits, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="threshold must be in"):
        hybrid.prune(threshold=1.5)


def test_cost_report(pair, hybrid):
    neox, mamba = pair
    report = hybrid.cost_report(context=256)
    names = hybrid.config.component_names
    params = report["params"]
    assert params["total"] == count(hybrid)
    assert params["components"] == {names[0]: count(neox), names[1]: count(mamba)}
    D = 64
    per_block = (D * 64 + 64) + (64 * D + D) + (D * 48 + 48) + (48 * D + D)
    assert params["projectors"] == 2 * per_block
    assert [b["projectors"] for b in params["per_block"]] == [per_block, per_block]
    assert params["per_block"][0]["components"][names[1]] == count(mamba.backbone.layers[:3])

    flops = report["flops_per_token"]
    # every layer and head of both components runs: their FLOPs are the standalone FLOPs
    for name in names:
        assert flops["components"][name] == report["standalone"][name]["flops_per_token"]
    assert flops["projectors"] == 2.0 * (2 * per_block - 2 * (64 + 64 + 48 + 64))  # biases are not matmuls
    assert flops["total"] == pytest.approx(sum(flops["components"].values()) + flops["projectors"])
    assert flops["total"] == pytest.approx(sum(b["total"] for b in flops["per_block"]) + flops["heads"])
    # attention cost grows with the context, the SSM's does not
    longer = hybrid.cost_report(context=512)["flops_per_token"]["components"]
    assert (
        longer[names[0]] > flops["components"][names[0]] and longer[names[1]] == flops["components"][names[1]]
    )

    hybrid.set_mixture([[0.9, 0.1], [0.2, 0.8]])
    assert hybrid.discretize().cost_report(context=256)["flops_per_token"]["total"] < flops["total"]
