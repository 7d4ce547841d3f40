"""MoRe mixed-adapter batches: ``model(..., adapter_names=[...])`` and ``generate(..., adapter_names=...)``.

Each row of a mixed batch must equal that adapter run alone (and merged); "__base__" rows equal the base.
"""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

import mad_models  # noqa: F401  (registers MORE)
from mad_models.more import MoReConfig
from tests.tiny import VOCAB, tiny_llama

TARGETS = ["q_proj", "v_proj"]


def more_cfg(seed_rank: int = 1) -> MoReConfig:
    return MoReConfig(nblocks=2, block_rank=seed_rank, target_modules=TARGETS, init_weights=False)


def logits(model, ids, **kw):
    with torch.no_grad():
        return model(input_ids=ids, **kw).logits


@pytest.fixture
def two_more():
    """A MoRe PeftModel with adapters "a" and "b" (random, non-zero), and the plain base for reference."""
    base = tiny_llama(seed=0)
    torch.manual_seed(1)
    model = get_peft_model(copy.deepcopy(base), more_cfg(1), adapter_name="a")
    torch.manual_seed(2)
    model.add_adapter("b", more_cfg(2))
    return model.eval(), base


def alone(model, name, ids):
    if name == "__base__":
        with model.disable_adapter():
            return logits(model, ids)
    model.set_adapter(name)
    return logits(model, ids)


def test_each_row_equals_that_adapter_alone(two_more):
    model, base = two_more
    ids = torch.randint(0, VOCAB, (5, 9))
    names = ["a", "__base__", "b", "a", "b"]
    mixed = logits(model, ids, adapter_names=names)
    for i, name in enumerate(names):
        torch.testing.assert_close(mixed[i], alone(model, name, ids[i : i + 1])[0], atol=1e-5, rtol=1e-5)
    # base rows are the base model itself, and the adapters really differ from it
    torch.testing.assert_close(mixed[1], logits(base, ids[1:2])[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mixed[0], logits(base, ids[0:1])[0], atol=1e-3)
    assert not torch.allclose(mixed[2], alone(model, "a", ids[2:3])[0], atol=1e-3)  # "b" is not "a"


def test_each_row_equals_that_adapter_merged(two_more):
    model, _ = two_more
    ids = torch.randint(0, VOCAB, (3, 7))
    names = ["b", "a", "__base__"]
    mixed = logits(model, ids, adapter_names=names)
    for i, name in enumerate(names):
        if name == "__base__":
            continue
        merged = copy.deepcopy(model)
        merged.set_adapter(name)
        merged = merged.merge_and_unload(adapter_names=[name])
        torch.testing.assert_close(mixed[i], logits(merged, ids[i : i + 1])[0], atol=1e-4, rtol=1e-4)


def test_generate_with_adapter_names_greedy(two_more):
    model, _ = two_more
    ids = torch.randint(1, VOCAB, (3, 6))
    names = ["a", "b", "__base__"]
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), adapter_names=names, **kw)
    for i, name in enumerate(names):
        row = ids[i : i + 1]
        with torch.no_grad():
            if name == "__base__":
                with model.disable_adapter():
                    ref = model.generate(input_ids=row, attention_mask=torch.ones_like(row), **kw)
            else:
                model.set_adapter(name)
                ref = model.generate(input_ids=row, attention_mask=torch.ones_like(row), **kw)
        assert out[i].tolist() == ref[0].tolist(), name


def test_more_and_lora_mix_in_one_batch():
    """A LoRA adapter injected into the MoRe model's module tree (what PeftMixedModel does for its types)."""
    base = tiny_llama(seed=0)
    torch.manual_seed(1)
    model = get_peft_model(copy.deepcopy(base), more_cfg(1), adapter_name="mo").eval()
    more_alone = copy.deepcopy(model)  # the same MoRe weights, in a model without LoRA
    torch.manual_seed(3)
    lora_cfg = LoraConfig(r=2, target_modules=TARGETS, init_lora_weights=False)
    lora_alone = get_peft_model(copy.deepcopy(base), lora_cfg, adapter_name="lo").eval()
    state = get_peft_model_state_dict(lora_alone, adapter_name="lo")  # keys as saved on disk
    inject_adapter_in_model(lora_cfg, model.base_model.model, adapter_name="lo")
    set_peft_model_state_dict(model.base_model.model, state, adapter_name="lo")
    ids = torch.randint(0, VOCAB, (4, 8))
    names = ["lo", "mo", "__base__", "lo"]
    mixed = logits(model, ids, adapter_names=names)
    refs = {
        "lo": lambda x: logits(lora_alone, x),
        "mo": lambda x: logits(more_alone, x),
        "__base__": lambda x: logits(base, x),
    }
    for i, name in enumerate(names):
        torch.testing.assert_close(mixed[i], refs[name](ids[i : i + 1])[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mixed[0], refs["mo"](ids[0:1])[0], atol=1e-3)  # LoRA's row is not MoRe's


def test_bad_adapter_names(two_more):
    model, _ = two_more
    ids = torch.randint(0, VOCAB, (2, 5))
    with pytest.raises(ValueError, match="non-existing adapter.*nope"):
        logits(model, ids, adapter_names=["a", "nope"])
    with pytest.raises(ValueError, match="same as the number of inputs"):
        logits(model, ids, adapter_names=["a", "b", "a"])
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        logits(model, ids, adapter_names=["a", "b"])
    model.eval()
    model.set_adapter("a")
    model.merge_adapter()
    with pytest.raises(ValueError, match="merged adapters"):
        logits(model, ids, adapter_names=["a", "b"])


def test_contiguous_rows_take_views_and_equal_each_adapter_alone(two_more):
    model, _ = two_more
    ids = torch.randint(0, VOCAB, (4, 7))
    names = ["__base__", "a", "b", "b"]  # one run of rows per adapter, as the app's Compare sends
    mixed = logits(model, ids, adapter_names=names)
    for i, name in enumerate(names):
        torch.testing.assert_close(mixed[i], alone(model, name, ids[i : i + 1])[0], atol=1e-5, rtol=1e-5)


def test_folded_factors_are_kept_at_inference_and_follow_in_place_changes(two_more):
    """Decoding reuses the folded factors; a changed factor (optimizer step, load) is never served stale."""
    from mad_models.monarch import monarch_to_dense
    from mad_models.more.layer import MoReLayer

    model, _ = two_more
    model.set_adapter("a")
    layer = next(m for m in model.modules() if isinstance(m, MoReLayer))
    x = torch.randn(3, layer.in_features)

    def expected():
        b1, b2 = layer.more_blkdiag1["a"], layer.more_blkdiag2["a"]
        m = monarch_to_dense(b1, b2, layer.in_features, layer.out_features)
        return layer.get_base_layer()(x) + layer.scale["a"] * x @ m.T

    with torch.no_grad():
        first = layer(x)
        pair = layer.folded_factors("a")
        assert pair is not None and layer.folded_factors("a") is pair  # kept, not rebuilt
        torch.testing.assert_close(first, expected(), atol=1e-5, rtol=1e-5)
        layer.more_blkdiag2["a"].mul_(3.0)  # an in-place change bumps the version: the pair is rebuilt
        assert layer.folded_factors("a") is not pair
        torch.testing.assert_close(layer(x), expected(), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(layer(x), first, atol=1e-4)
    assert layer.folded_factors("a") is None  # with gradients on, the fold is part of the graph: no cache
    y = layer(x)
    y.sum().backward()
    assert layer.more_blkdiag2["a"].grad is not None and layer.more_blkdiag2["a"].grad.abs().sum() > 0


def test_peft_layers_take_adapter_names_as_our_hook_passes_them():
    """MoReModel hands ``adapter_names`` to every tuner layer through its own pre-forward hook (PEFT keeps its
    version private). This pins what the hook relies on: PEFT's LoRA ``Linear.forward`` takes the keyword
    and runs row i through adapter i ("__base__": no adapter)."""
    from functools import partial

    from peft.tuners.lora.layer import Linear as LoraLinear

    from mad_models.more.model import pass_adapter_names

    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    net = torch.nn.Sequential(copy.deepcopy(base))
    for name in ("x", "y"):
        cfg = LoraConfig(r=2, target_modules=["0"], init_lora_weights=False)
        inject_adapter_in_model(cfg, net, adapter_name=name)
    layer = net[0]
    assert isinstance(layer, LoraLinear)
    layer.eval()
    x = torch.randn(3, 6)
    handle = layer.register_forward_pre_hook(
        partial(pass_adapter_names, adapter_names=["x", "__base__", "y"]), with_kwargs=True
    )
    with torch.no_grad():
        mixed = layer(x)
    handle.remove()
    with torch.no_grad():
        refs = []
        for name in ("x", "y"):
            layer.set_adapter(name)
            refs.append(layer(x))
    torch.testing.assert_close(mixed[0], refs[0][0])
    torch.testing.assert_close(mixed[1], base(x[1]))
    torch.testing.assert_close(mixed[2], refs[1][2])
    assert not torch.allclose(mixed[0], base(x[0]))
