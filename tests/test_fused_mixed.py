"""The fused mixed-adapter forward (mad_models/fused_adapters.py), as the app's host uses it: each row
equals its adapter alone and PEFT's own mixed-batch forward; it is taken only where it applies, and PEFT
outside the host is untouched."""

from __future__ import annotations

import threading

import pytest
import torch
from app_fixture import build_tiny_assets
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.layer import Linear as LoraLinear
from tiny import tiny_llama

import mad_models  # noqa: F401
from app_backend.shared import AdapterHost, _tuner_layers, adapter_rows, sharing_copy
from hub_tools import pull
from mad_models import fused_adapters as fused
from mad_models.loading import load_causal_lm
from mad_models.more.layer import Linear as MoReLinear

TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    build_tiny_assets(root)
    return root


def make_host(assets, subs=("lora", "more", "lora-zero"), quantization=None):
    base = load_causal_lm(assets / "language/base", device="cpu", quantization=quantization)
    host = AdapterHost(base)
    aids = {s: host.add(pull(str(assets / "language" / s), base_model=sharing_copy(base))) for s in subs}
    return base, host, aids


def total_fused_calls(host) -> int:
    return sum(fused.fused_calls(layer) for layer in _tuner_layers(host.model))


def mixed(host, names, ids, peft_path=False):
    with host.reading(), adapter_rows(names), torch.no_grad():
        if peft_path:
            with fused.peft_mixed_forward():
                return host.model(ids).logits
        return host.model(ids).logits


@pytest.fixture(scope="module")
def tree(assets):
    return make_host(assets)


def test_each_row_equals_its_adapter_alone_and_peft_mixed_forward(tree):
    base, host, aids = tree
    # LoRA and MoRe stack on the same modules: the fused path covers a nested stack
    q = host.model.model.layers[0].self_attn.q_proj
    assert {type(q), type(q.base_layer)} == {LoraLinear, MoReLinear}
    lora, more, zero = aids["lora"], aids["more"], aids["lora-zero"]
    ids = torch.randint(0, 128, (6, 7))
    # non-contiguous rows of one adapter, the base in between, every kind once at least
    names = [lora, "__base__", more, lora, zero, more]
    before = total_fused_calls(host)
    got = mixed(host, names, ids)
    assert total_fused_calls(host) > before  # the fused path ran
    n = total_fused_calls(host)
    ref = mixed(host, names, ids, peft_path=True)
    assert total_fused_calls(host) == n  # ... and this one did not
    torch.testing.assert_close(got, ref, **TOL)
    with torch.no_grad():
        plain = base(ids).logits
        for row, name in enumerate(names):
            alone = plain if name == "__base__" else host.view(name)(ids).logits
            torch.testing.assert_close(got[row], alone[row], **TOL)
    torch.testing.assert_close(got[1], plain[1], **TOL)  # base rows: the plain base
    torch.testing.assert_close(got[4], plain[4], **TOL)  # a zero LoRA: the base too
    assert not torch.allclose(got[0], plain[0], atol=1e-3) and not torch.allclose(got[2], plain[2], atol=1e-3)


def test_decoding_steps_reuse_the_plan_and_match_generate_alone(assets):
    base, host, aids = make_host(assets)
    names = ["__base__", aids["more"], aids["lora"]]
    ids = torch.randint(0, 128, (3, 5))
    with host.reading(), adapter_rows(names), torch.no_grad():
        together = host.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    for row, name in enumerate(names):
        model = base if name == "__base__" else host.view(name)
        with torch.no_grad():
            alone = model.generate(ids[row : row + 1], max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert together[row].tolist() == alone[0].tolist(), name
    plans = vars(host.model.model.layers[0].self_attn.q_proj)["_fused_plans"]
    assert list(plans.masks) == [tuple(names)]  # built once for the names list, not per step
    assert list(plans.stacks) == [tuple(sorted(names[1:]))]


def test_two_threads_with_different_rows_do_not_mix(tree):
    _, host, aids = tree
    ids = torch.randint(0, 128, (4, 6))
    lists = [
        [aids["lora"], aids["more"], "__base__", aids["lora"]],
        [aids["more"], "__base__", aids["lora"], aids["more"]],
    ]
    refs = [mixed(host, names, ids, peft_path=True) for names in lists]
    errors: list[str] = []
    start = threading.Barrier(2)

    def work(k: int) -> None:
        start.wait()
        for _ in range(15):
            out = mixed(host, lists[k], ids)
            if not torch.allclose(out, refs[k], **TOL):
                errors.append(f"thread {k}: rows mixed up")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_the_all_threads_switch_reaches_worker_threads_and_is_undone(tree):
    """bench/app_compare times the app's Compare (which generates in a worker thread) through PEFT's own
    layers with this switch: a worker takes PEFT's path under it, and the fused path after it."""
    _, host, aids = tree
    names = [aids["lora"], "__base__", aids["more"]]
    ids = torch.randint(0, 128, (3, 5))
    ref = mixed(host, names, ids)
    got: list[torch.Tensor] = []
    worker = lambda: got.append(mixed(host, names, ids))  # noqa: E731
    n = total_fused_calls(host)
    with fused.peft_mixed_forward_in_all_threads():
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert total_fused_calls(host) == n  # PEFT's path in the worker
    torch.testing.assert_close(got[0], ref, **TOL)
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert total_fused_calls(host) > n  # the switch is undone: fused again


def test_a_changed_or_removed_adapter_is_never_served_from_a_stale_plan(assets):
    base, host, aids = make_host(assets, subs=("lora", "more"))
    names = [aids["lora"], aids["more"], "__base__"]
    ids = torch.randint(0, 128, (3, 5))
    first = mixed(host, names, ids)
    with torch.no_grad():  # an in-place change of one factor (its version moves)
        for layer in _tuner_layers(host.model):
            if isinstance(layer, LoraLinear):
                layer.lora_B[aids["lora"]].weight.mul_(3)
    changed = mixed(host, names, ids)
    assert not torch.allclose(changed[0], first[0], atol=1e-4)
    torch.testing.assert_close(changed, mixed(host, names, ids, peft_path=True), **TOL)
    torch.testing.assert_close(changed[1:], first[1:], **TOL)
    for layer in _tuner_layers(host.model):  # a scaling changed in place (PEFT's set_scale does so)
        if isinstance(layer, MoReLinear):
            layer.scale[aids["more"]] *= 0.5
    rescaled = mixed(host, names, ids)
    assert not torch.allclose(rescaled[1], first[1], atol=1e-4)
    torch.testing.assert_close(rescaled, mixed(host, names, ids, peft_path=True), **TOL)
    for layer in _tuner_layers(host.model):
        if isinstance(layer, MoReLinear):
            layer.scale[aids["more"]] *= 2
    host.remove(aids["lora"])
    # the layers skip a name they no longer hold (PEFT's rule): that row is the base, not the old LoRA
    after = mixed(host, names, ids)
    with torch.no_grad():
        torch.testing.assert_close(after[0], base(ids).logits[0], **TOL)
    torch.testing.assert_close(after[1:], first[1:], **TOL)


def test_unsupported_cases_take_the_layers_own_forward(assets):
    base, host, aids = make_host(assets, subs=("lora", "more"))
    names = [aids["lora"], aids["more"], "__base__"]
    ids = torch.randint(0, 128, (3, 5))
    ref = mixed(host, names, ids, peft_path=True)
    n = total_fused_calls(host)
    # gradients enabled (training code): PEFT's path, same values
    with host.reading(), adapter_rows(names):
        torch.testing.assert_close(host.model(ids).logits.detach(), ref, **TOL)
    assert total_fused_calls(host) == n
    # a DoRA adapter: PEFT's own path, which refuses mixed batches with its own error
    cfg = LoraConfig(r=2, target_modules=["q_proj"], use_dora=True)
    dora = get_peft_model(tiny_llama(seed=0, vocab=128), cfg)
    did = host.add(PeftModel.from_pretrained(sharing_copy(base), _saved(dora, assets, "dora")))
    with pytest.raises(ValueError, match="DoRA"):
        mixed(host, [did, "__base__", aids["more"]], ids)
    torch.testing.assert_close(mixed(host, names, ids), ref, **TOL)  # without DoRA rows: fused
    assert total_fused_calls(host) > n
    # an active dropout (a tree in training mode): the stack holding it runs its own forward
    cfg = LoraConfig(r=2, target_modules=["v_proj"], lora_dropout=0.5)
    drop = get_peft_model(tiny_llama(seed=0, vocab=128), cfg)
    xid = host.add(PeftModel.from_pretrained(sharing_copy(base), _saved(drop, assets, "drop")))
    attn = host.model.model.layers[0].self_attn
    q, v = attn.q_proj, attn.v_proj
    rows = [xid, "__base__", aids["more"]]
    host.model.train()
    try:
        calls_q, calls_v = fused.fused_calls(q), fused.fused_calls(v)
        mixed(host, rows, ids)
        assert fused.fused_calls(v) == calls_v  # v_proj holds the dropout: not fused
        assert fused.fused_calls(q) == calls_q + 1  # q_proj does not: fused
    finally:
        host.model.eval()
    mixed(host, rows, ids)
    assert fused.fused_calls(v) == calls_v + 1  # in eval mode the dropout is the identity: fused


def _saved(peft_model, assets, name="dora"):
    path = assets / "extra" / name
    peft_model.save_pretrained(path)
    return path


@pytest.mark.parametrize("subs", [("lora", "more"), ("more",)])
def test_a_quantized_base_takes_peft_path(assets, subs):
    """bitsandbytes 8-bit (runs on CPU here): the fused path leaves it to PEFT's and MoRe's own layers,
    whether a bnb LoRA layer is in the stack (LoRA + MoRe) or only the base is quantized (MoRe alone)."""
    _, host, aids = make_host(assets, subs=subs, quantization="8bit")
    names = [*aids.values(), "__base__"]
    ids = torch.randint(0, 128, (len(names), 5))
    got = mixed(host, names, ids)
    assert total_fused_calls(host) == 0
    torch.testing.assert_close(got, mixed(host, names, ids, peft_path=True), atol=0, rtol=0)


def test_peft_outside_the_host_is_untouched(tree, assets):
    base, host, aids = tree
    assert LoraLinear.forward.__module__ == "peft.tuners.lora.layer"
    assert MoReLinear.forward.__module__ == "mad_models.more.layer"
    assert all("forward" in vars(m) for m in _tuner_layers(host.model))
    plain = load_causal_lm(assets / "language/base", device="cpu")
    model = PeftModel.from_pretrained(plain, assets / "language/lora")
    assert not any("forward" in vars(m) for m in model.modules())
    ids = torch.randint(0, 128, (2, 5))
    with torch.no_grad():  # PEFT's own mixed batch agrees with the host's fused rows
        ref = model(ids, adapter_names=["default", "__base__"]).logits
    torch.testing.assert_close(mixed(host, [aids["lora"], "__base__"], ids), ref, **TOL)


def test_a_bf16_base(assets):
    """A half-precision base (the GPU path): the fused rows equal PEFT's layers' to bf16 rounding."""
    base = load_causal_lm(assets / "language/base", device="cpu").to(torch.bfloat16)
    host = AdapterHost(base)
    aids = [
        host.add(pull(str(assets / "language" / s), base_model=sharing_copy(base))) for s in ("lora", "more")
    ]
    names = [*aids, "__base__"]
    ids = torch.randint(0, 128, (3, 5))
    got = mixed(host, names, ids)
    assert total_fused_calls(host) > 0 and got.dtype == torch.bfloat16
    torch.testing.assert_close(got, mixed(host, names, ids, peft_path=True), atol=2e-2, rtol=2e-2)
    with torch.no_grad():
        assert not torch.allclose(got[0], base(ids).logits[0], atol=5e-2)
