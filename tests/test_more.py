"""MoRe as a PEFT method on tiny random models: behaviour, persistence, architectures, bad inputs."""

import io
import os
from contextlib import redirect_stdout

import peft
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers.pytorch_utils import Conv1D

import mad_models  # noqa: F401  (registers MORE)
from mad_models.more import MoReConfig, MoReLayer, adapter_report
from tests.tiny import VOCAB, tiny_bert_classifier, tiny_gpt2, tiny_llama, tiny_mamba, tiny_neox

# name -> (builder, target modules, task type)
ARCHS = {
    "gpt2": (tiny_gpt2, ["c_attn", "c_proj"], None),  # transformers Conv1D
    "neox": (tiny_neox, ["query_key_value", "dense"], None),
    "llama": (tiny_llama, ["q_proj", "k_proj", "v_proj", "o_proj"], None),
    "mamba": (tiny_mamba, ["in_proj", "x_proj", "out_proj"], None),
    "bert": (tiny_bert_classifier, ["query", "key", "value"], "SEQ_CLS"),
}


def out(model, ids):
    with torch.no_grad():
        return model(ids).logits


def train_steps(model, ids, steps=3, lr=1e-2, lm_loss=False):
    """Adam on the trainable parameters; returns the losses. The default loss is any loss that moves the
    adapter (squared logits, works for every head); ``lm_loss`` uses next-token prediction on ``ids``."""
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(ids, labels=ids).loss if lm_loss else model(ids).logits.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.mark.parametrize("arch", list(ARCHS))
def test_architecture_end_to_end(arch, tmp_path):
    build, targets, task = ARCHS[arch]
    ids = torch.randint(0, VOCAB, (2, 12))
    base_out = out(build(), ids)
    cfg = MoReConfig(nblocks=4, block_rank=1, target_modules=targets, task_type=task)
    model = get_peft_model(build(), cfg)

    # fresh adapter: bit-identical to the base model
    assert torch.equal(out(model, ids), base_out)

    # parameter count: k*r*(n+m) per adapted layer, plus zero padding where k does not divide a size
    # (only Mamba's x_proj, 96 -> 19, padded to 20 outputs)
    layers = [(n, m) for n, m in model.get_base_model().named_modules() if isinstance(m, MoReLayer)]
    assert layers and all(any(n.endswith(t) for t in targets) for n, _ in layers)
    report = adapter_report(model)
    per_module = {m["name"]: m for m in report.modules}
    for name, layer in layers:
        n_in, n_out = layer.in_features, layer.out_features
        count = layer.more_blkdiag1["default"].numel() + layer.more_blkdiag2["default"].numel()
        padding = 4 * ((-n_in % 4) + (-n_out % 4))  # k*r * (padded - real) per side
        assert count == 4 * 1 * (n_in + n_out) + padding
        assert per_module[name]["params"] == count and per_module[name]["padding_params"] == padding
        assert (padding > 0) == name.endswith("x_proj")
    adapter_total = sum(m["params"] for m in report.modules if m["type"] != "modules_to_save")
    head = sum(m["params"] for m in report.modules if m["type"] == "modules_to_save")
    assert report.trainable_params == adapter_total + head
    assert (head > 0) == (task == "SEQ_CLS")  # the BERT classifier head is trained and saved too
    if arch == "gpt2":
        assert all(isinstance(layer.get_base_layer(), Conv1D) for _, layer in layers)

    # training moves the outputs away from the base
    train_steps(model, ids)
    trained = out(model, ids)
    assert not torch.allclose(trained, base_out, atol=1e-4)
    with model.disable_adapter():
        disabled = out(model, ids)
    if task is None:  # (a trained classifier head is not an adapter layer and stays on)
        assert torch.equal(disabled, base_out)

    # merged and unmerged agree to 1e-5; unmerge restores
    model.merge_adapter()
    torch.testing.assert_close(out(model, ids), trained, rtol=0, atol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(out(model, ids), trained, rtol=0, atol=1e-5)

    # save, then load into a fresh base: exact
    model.save_pretrained(tmp_path)
    cfg_text = (tmp_path / "adapter_config.json").read_text()
    assert '"peft_type": "MORE"' in cfg_text
    assert (tmp_path / "adapter_model.safetensors").stat().st_size == report.bytes_on_disk
    loaded = PeftModel.from_pretrained(build(), tmp_path)
    assert isinstance(loaded.peft_config["default"], MoReConfig)
    assert torch.equal(out(loaded, ids), trained)

    # merge_and_unload returns the plain architecture with the update baked in
    merged = loaded.merge_and_unload()
    assert not any(isinstance(m, MoReLayer) for m in merged.modules())
    torch.testing.assert_close(out(merged, ids), trained, rtol=0, atol=1e-5)


@pytest.mark.parametrize("r", [1, 2])
def test_one_block_equals_lora_at_rank_r(r):
    ids = torch.randint(0, VOCAB, (2, 10))
    targets = ["q_proj", "v_proj"]
    more = get_peft_model(
        tiny_llama(), MoReConfig(nblocks=1, block_rank=r, target_modules=targets, init_weights=False)
    )
    lora = get_peft_model(
        tiny_llama(), LoraConfig(r=r, lora_alpha=r, target_modules=targets, init_lora_weights=False)
    )  # scaling alpha/r = 1
    more_layers = {n: m for n, m in more.named_modules() if isinstance(m, MoReLayer)}
    with torch.no_grad():
        for name, module in lora.named_modules():
            if name in more_layers:
                module.lora_A["default"].weight.copy_(more_layers[name].more_blkdiag1["default"][0])
                module.lora_B["default"].weight.copy_(more_layers[name].more_blkdiag2["default"][0])
    torch.testing.assert_close(out(more, ids), out(lora, ids), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out(more, ids), out(tiny_llama(), ids))
    assert adapter_report(more).trainable_params == adapter_report(lora).trainable_params


def test_scale_and_dropout():
    ids = torch.randint(0, VOCAB, (2, 10))
    base = out(tiny_gpt2(), ids)
    deltas = []
    for scale in (1.0, 3.0):
        torch.manual_seed(1)
        m = get_peft_model(
            tiny_gpt2(), MoReConfig(target_modules=["c_attn"], init_weights=False, scale=scale)
        )
        deltas.append(out(m, ids) - base)
    # logits are nonlinear in the delta, but a single layer's delta is exactly linear in scale
    layer_a = get_peft_model(
        tiny_gpt2(), MoReConfig(target_modules=["c_attn"], init_weights=False, scale=1.0)
    )
    layer = next(m for m in layer_a.modules() if isinstance(m, MoReLayer))
    x = torch.randn(3, 64)
    with torch.no_grad():
        d1 = layer(x) - layer.get_base_layer()(x)
        layer.scale["default"] = 3.0
        d3 = layer(x) - layer.get_base_layer()(x)
    torch.testing.assert_close(d3, 3 * d1, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(deltas[0], deltas[1])
    # dropout acts on the adapter input only in training
    m = get_peft_model(tiny_gpt2(), MoReConfig(target_modules=["c_attn"], init_weights=False, dropout=0.5))
    m.eval()
    assert torch.equal(out(m, ids), out(m, ids))
    m.train()
    with torch.no_grad():
        assert not torch.equal(m(ids).logits, m(ids).logits)


def test_multiple_named_adapters(tmp_path):
    ids = torch.randint(0, VOCAB, (2, 10))
    torch.manual_seed(1)
    model = get_peft_model(
        tiny_llama(), MoReConfig(target_modules=["q_proj", "v_proj"], init_weights=False), adapter_name="a"
    )
    model.add_adapter("b", MoReConfig(nblocks=2, block_rank=2, target_modules=["k_proj"], init_weights=False))
    out_a = out(model, ids)
    # only the active adapter trains
    assert all(("more_" not in n) or (".a" in n) for n, p in model.named_parameters() if p.requires_grad)
    model.set_adapter("b")
    out_b = out(model, ids)
    assert all(("more_" not in n) or (".b" in n) for n, p in model.named_parameters() if p.requires_grad)
    assert not torch.allclose(out_a, out_b)
    model.set_adapter("a")
    assert torch.equal(out(model, ids), out_a)
    assert adapter_report(model, "b").trainable_params == 2 * 2 * (64 + 32) * 2  # k_proj 64->32 in 2 layers

    model.save_pretrained(tmp_path)
    # PEFT writes non-default adapters to sub-folders named after them
    assert (tmp_path / "a" / "adapter_model.safetensors").exists()
    assert (tmp_path / "b" / "adapter_model.safetensors").exists()
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path / "a", adapter_name="a")
    loaded.load_adapter(tmp_path / "b", adapter_name="b")
    assert torch.equal(out(loaded, ids), out_a)
    loaded.set_adapter("b")
    assert torch.equal(out(loaded, ids), out_b)


def test_print_trainable_parameters_matches_report():
    model = get_peft_model(
        tiny_neox(), MoReConfig(nblocks=4, block_rank=2, target_modules=["query_key_value"])
    )
    buf = io.StringIO()
    with redirect_stdout(buf):
        model.print_trainable_parameters()
    text = buf.getvalue()
    rep = adapter_report(model)
    assert f"trainable params: {rep.trainable_params:,}" in text
    assert rep.trainable_params == 4 * 4 * 2 * (64 + 192)  # 4 layers, k*r=8, 64 -> 192
    assert rep.lora_rank_equivalent == 8.0


def test_default_targets_follow_lora():
    model = get_peft_model(tiny_llama(), MoReConfig())
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, MoReLayer)}
    assert names == set(peft.utils.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["llama"])


# ---- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(nblocks=0), "nblocks must be >= 1"),
        (dict(block_rank=0), "block_rank must be >= 1"),
        (dict(dropout=1.5), "dropout must be in"),
        (dict(scale=float("nan")), "scale must be a finite"),
    ],
)
def test_bad_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MoReConfig(target_modules=["q_proj"], **kwargs)


def test_block_rank_too_large_names_the_module():
    with pytest.raises(ValueError, match=r"k_proj.*larger than a block allows"):
        get_peft_model(tiny_llama(), MoReConfig(nblocks=4, block_rank=3, target_modules=["k_proj"]))


def test_targets_matching_nothing():
    with pytest.raises(ValueError, match="not found in the base model"):
        get_peft_model(tiny_llama(), MoReConfig(target_modules=["no_such_proj"]))


@pytest.mark.parametrize(
    "build,target", [(tiny_mamba, "conv1d"), (tiny_llama, "embed_tokens"), (tiny_llama, "input_layernorm")]
)
def test_unsupported_module_type(build, target):
    with pytest.raises(TypeError, match="unsupported module type"):
        get_peft_model(build(), MoReConfig(target_modules=[target]))


def test_adapter_for_a_base_with_other_shapes(tmp_path):
    get_peft_model(tiny_llama(), MoReConfig(target_modules=["q_proj"])).save_pretrained(tmp_path)
    other = tiny_llama()
    other_cfg = other.config
    other_cfg.hidden_size, other_cfg.intermediate_size = 32, 64
    from transformers import LlamaForCausalLM

    with pytest.raises(ValueError, match="other layer shapes"):
        PeftModel.from_pretrained(LlamaForCausalLM(other_cfg), tmp_path)


def test_truncated_safetensors(tmp_path):
    get_peft_model(tiny_llama(), MoReConfig(target_modules=["q_proj"])).save_pretrained(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="is truncated"):
        PeftModel.from_pretrained(tiny_llama(), tmp_path)
    path.write_bytes(data[:5])
    with pytest.raises(ValueError, match="truncated or not a safetensors file"):
        PeftModel.from_pretrained(tiny_llama(), tmp_path)
    os.remove(path)


def test_half_precision_base_and_all_linear(tmp_path):
    ids = torch.randint(0, VOCAB, (2, 8))
    base = tiny_llama().to(torch.bfloat16)
    model = get_peft_model(base, MoReConfig(target_modules="all-linear", init_weights=False))
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, MoReLayer)}
    assert names == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }  # not lm_head
    # PEFT keeps adapter weights in fp32 on a bf16 base; outputs stay bf16
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "more_" in n)
    y = out(model, ids)
    assert y.dtype == torch.bfloat16
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_llama().to(torch.bfloat16), tmp_path, low_cpu_mem_usage=True)
    assert torch.equal(out(loaded, ids), y)
    merged = loaded.merge_and_unload()
    assert merged.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    torch.testing.assert_close(out(merged, ids).float(), y.float(), rtol=0, atol=0.1)  # bf16 rounding


def test_a_pickled_adapter_is_never_loaded(tmp_path):
    from safetensors.torch import load_file

    get_peft_model(tiny_llama(), MoReConfig(target_modules=["q_proj"])).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "adapter_model.safetensors")
    os.remove(tmp_path / "adapter_model.safetensors")
    torch.save(weights, tmp_path / "adapter_model.bin")  # peft would unpickle this
    with pytest.raises(ValueError, match=r"adapter_model.bin.*safe_serialization=True\), which writes"):
        PeftModel.from_pretrained(tiny_llama(), tmp_path)


def test_saving_a_pickle_is_refused_up_front(tmp_path):
    model = get_peft_model(tiny_llama(), MoReConfig(target_modules=["q_proj"]))
    for call in (
        lambda: model.save_pretrained(tmp_path / "a", safe_serialization=False),
        lambda: model.save_pretrained(tmp_path / "a", False),  # positional, as PEFT's signature allows
    ):
        with pytest.raises(ValueError, match=r"safetensors only.*Save with safe_serialization=True"):
            call()
    assert not (tmp_path / "a").exists()  # nothing written, not even the model card
    model.add_adapter("other", MoReConfig(target_modules=["v_proj"]))
    with pytest.raises(ValueError, match="safe_serialization=True"):
        model.save_pretrained(tmp_path / "c", safe_serialization=False, selected_adapters=["other"])
    # LoRA keeps PEFT's behaviour
    lora = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "lora", safe_serialization=False)
    assert (tmp_path / "lora/adapter_model.bin").is_file()
    model.save_pretrained(tmp_path / "d")  # the default still saves
    assert (tmp_path / "d/adapter_model.safetensors").is_file()


# ---- mends: config typing, regex + layers_to_transform, shape messages, dropout placement, rank ---------


def test_layers_to_transform_with_a_regex_is_refused_as_lora_does():
    with pytest.raises(ValueError, match="layers_to_transform.*target_modules is a str"):
        MoReConfig(target_modules=r".*q_proj", layers_to_transform=[0])
    with pytest.raises(ValueError, match="layers_pattern.*target_modules is a str"):
        MoReConfig(target_modules=r".*q_proj", layers_pattern="layers")
    MoReConfig(target_modules=["q_proj"], layers_to_transform=[0])  # a list is fine


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dropout="0.1"), r"MoReConfig\.dropout must be a number.*'0\.1'"),
        (dict(scale=None), r"MoReConfig\.scale must be a number.*None"),
        (dict(scale="2"), r"MoReConfig\.scale must be a number"),
        (dict(dropout=True), r"MoReConfig\.dropout must be a number"),
        (dict(dropout_position="middle"), r"MoReConfig\.dropout_position must be 'input' or 'output'"),
    ],
)
def test_config_type_errors_name_the_field(kwargs, match):
    with pytest.raises(TypeError if "position" not in str(kwargs) else ValueError, match=match):
        MoReConfig(target_modules=["q_proj"], **kwargs)


def test_config_type_errors_from_a_saved_config_name_the_field(tmp_path):
    import json

    get_peft_model(tiny_llama(), MoReConfig(target_modules=["q_proj"])).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg["scale"] = None
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(TypeError, match=r"MoReConfig\.scale"):
        PeftModel.from_pretrained(tiny_llama(), tmp_path)


def test_config_disagreeing_with_its_own_tensors_says_so(tmp_path):
    import json

    get_peft_model(tiny_llama(), MoReConfig(nblocks=4, target_modules=["q_proj"])).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg["nblocks"] = 2
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"own config.*disagrees with its saved tensors") as err:
        PeftModel.from_pretrained(tiny_llama(), tmp_path)
    assert "other layer shapes" not in str(err.value)


def test_adapter_for_another_base_is_not_blamed_on_its_config(tmp_path):
    get_peft_model(tiny_llama(), MoReConfig(target_modules=["q_proj"])).save_pretrained(tmp_path)
    other_cfg = tiny_llama().config
    other_cfg.hidden_size, other_cfg.intermediate_size = 32, 64
    from transformers import LlamaForCausalLM

    with pytest.raises(ValueError, match="saved for a base model with other layer shapes") as err:
        PeftModel.from_pretrained(LlamaForCausalLM(other_cfg), tmp_path)
    assert "disagrees" not in str(err.value)


def test_dropout_on_the_output_as_the_reference_places_it():
    torch.manual_seed(0)
    layer_in = get_peft_model(
        tiny_gpt2(), MoReConfig(target_modules=["c_attn"], init_weights=False, dropout=0.5)
    )
    torch.manual_seed(0)
    layer_out = get_peft_model(
        tiny_gpt2(),
        MoReConfig(target_modules=["c_attn"], init_weights=False, dropout=0.5, dropout_position="output"),
    )
    li = next(m for m in layer_in.modules() if isinstance(m, MoReLayer))
    lo = next(m for m in layer_out.modules() if isinstance(m, MoReLayer))
    lo.load_state_dict(li.state_dict())
    x = torch.randn(4, 64)
    li.train()
    lo.train()
    with torch.no_grad():
        base = li.get_base_layer()(x)
        torch.manual_seed(3)
        d_out = lo(x) - base
        torch.manual_seed(3)
        d_in = li(x) - base
        li.eval()
        full = li(x) - base
    # output placement: every delta entry is either dropped (0) or the full delta scaled by 1/(1-p)
    kept = d_out != 0
    assert 0.2 < kept.float().mean() < 0.8
    torch.testing.assert_close(d_out[kept], 2 * full[kept], rtol=1e-4, atol=1e-5)
    # input placement mixes dropped inputs: its delta is not of that form
    assert not torch.allclose(d_in[kept], 2 * full[kept], rtol=1e-3, atol=1e-4)
    # in eval both placements are the identity
    lo.eval()
    with torch.no_grad():
        torch.testing.assert_close(lo(x) - base, full, rtol=1e-5, atol=1e-6)


def test_dropout_position_defaults_to_input_and_round_trips(tmp_path):
    assert MoReConfig(target_modules=["q_proj"]).dropout_position == "input"
    cfg = MoReConfig(target_modules=["q_proj"], dropout=0.1, dropout_position="output")
    get_peft_model(tiny_llama(), cfg).save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    assert loaded.peft_config["default"].dropout_position == "output"


@pytest.mark.parametrize("n,k,r,expected", [(64, 4, 1, 16), (26, 4, 1, 16), (17, 4, 1, 14), (65, 8, 1, 58)])
def test_rank_when_nblocks_does_not_divide(n, k, r, expected):
    """Rank of M reaches min(m, n, k*k*r) when k divides the sizes (and when padding leaves the last block
    at least k*r real rows, n=26); a shorter last block caps it: n=17, k=4 gives blocks of 5, 5, 5, 2 real
    inputs, so at most 4+4+4+2 = 14 < 16. The formula is in MoReConfig's docstring."""
    from mad_models.monarch import monarch_factors_to_dense_pair, monarch_shapes

    torch.manual_seed(0)
    sh = monarch_shapes(n, n, k, r)
    b1 = torch.randn(sh.blkdiag1, dtype=torch.float64)
    b2 = torch.randn(sh.blkdiag2, dtype=torch.float64)
    a, b = monarch_factors_to_dense_pair(b1, b2, n, n)
    assert torch.linalg.matrix_rank(b @ a).item() == expected


def test_more_train_cli_offers_the_dropout_position():
    from mad_models.cli import build_parser
    from mad_models.cli.more import adapter_config

    argv = ["more", "train", "--base-model", "b", "--data", "d", "--out", "o", "--dropout", "0.1"]
    cfg = adapter_config(build_parser().parse_args([*argv, "--dropout-position", "output"]))
    assert cfg.dropout_position == "output" and cfg.dropout == 0.1
    assert adapter_config(build_parser().parse_args(argv)).dropout_position == "input"
