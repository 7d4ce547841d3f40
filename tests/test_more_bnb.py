"""MoRe on bitsandbytes 4-bit and 8-bit bases (QLoRA-style); bitsandbytes 0.50 runs both on CPU."""

import warnings

import bitsandbytes as bnb
import pytest
import torch
from peft import PeftModel, get_peft_model

import mad_models  # noqa: F401
from mad_models.loading import load_causal_lm
from mad_models.more import MoReConfig, MoReLayer, adapter_report
from tests.test_more import train_steps
from tests.tiny import VOCAB, tiny_llama

LAYER = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llama")
    tiny_llama().save_pretrained(path)
    return path


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("quant", ["4bit", "8bit"])
def test_more_on_quantized_base(quant, tiny_dir, tmp_path):
    ids = torch.randint(0, VOCAB, (2, 10))
    base = load_causal_lm(tiny_dir, device="cpu", quantization=quant)
    assert isinstance(base.model.layers[0].self_attn.q_proj, LAYER[quant])
    base_out = logits(base, ids)
    model = get_peft_model(
        base, MoReConfig(target_modules=["q_proj", "v_proj"], init_weights=False, scale=4.0)
    )
    layers = [m for m in model.modules() if isinstance(m, MoReLayer)]
    assert len(layers) == 4
    assert all(isinstance(m.get_base_layer(), LAYER[quant]) for m in layers)
    assert all(m.quantization_backend is not None for m in layers)
    # the adapter is full precision and the only thing that trains
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("more_blkdiag" in n for n in trainable)
    report = adapter_report(model)
    assert report.trainable_params == 2 * 4 * (64 + 64) + 2 * 4 * (64 + 32)  # q 64->64, v 64->32, 2 layers
    assert report.base_params == sum(p.numel() for p in tiny_llama().parameters())  # 4-bit counted unpacked

    # a few training steps lower the loss; the quantized weights do not move
    w_before = layers[0].get_base_layer().weight.data.clone()
    losses = train_steps(model, ids, steps=5, lm_loss=True)
    assert losses[-1] < losses[0]
    assert torch.equal(layers[0].get_base_layer().weight.data, w_before)
    trained = logits(model, ids)
    assert not torch.allclose(trained, base_out, atol=1e-3)

    # save / load onto a freshly quantized base: the adapter tensors are exact. bitsandbytes' CPU 4-bit
    # layer repacks its weight for a bf16 kernel on eval forwards and unpacks it in state_dict(), and that
    # round trip moves the base's outputs by ~1e-3, so 4-bit outputs get a tolerance
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(load_causal_lm(tiny_dir, device="cpu", quantization=quant), tmp_path)
    ours = {k: v for k, v in model.state_dict().items() if "more_blkdiag" in k}
    theirs = loaded.state_dict()
    assert ours and all(torch.equal(v, theirs[k]) for k, v in ours.items())
    torch.testing.assert_close(logits(loaded, ids), trained, rtol=0, atol=1e-2 if quant == "4bit" else 1e-6)

    # merging dequantizes, adds and re-quantizes, with a warning; the result keeps most of the update
    with pytest.warns(UserWarning, match="dequantizes the weight"):
        merged = loaded.merge_and_unload()
    assert isinstance(merged.model.layers[0].self_attn.q_proj, LAYER[quant])
    merged_out = logits(merged, ids)
    err, update = (merged_out - trained).norm(), (base_out - trained).norm()
    assert err < (0.5 if quant == "4bit" else 0.1) * update


def test_unmerge_on_quantized_base_warns_and_restores_approximately(tiny_dir):
    ids = torch.randint(0, VOCAB, (2, 10))
    model = get_peft_model(
        load_causal_lm(tiny_dir, device="cpu", quantization="8bit"),
        MoReConfig(target_modules=["q_proj"], init_weights=False),
    )
    unmerged = logits(model, ids)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.merge_adapter()
        merged = logits(model, ids)
        model.unmerge_adapter()
    assert any("re-quantizes" in str(w.message) or "dequantizes" in str(w.message) for w in caught)
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=0.05)
    torch.testing.assert_close(logits(model, ids), unmerged, rtol=0, atol=0.05)


def test_bad_quantization_argument(tiny_dir):
    with pytest.raises(ValueError, match="quantization must be None, '4bit' or '8bit'"):
        load_causal_lm(tiny_dir, device="cpu", quantization="3bit")
