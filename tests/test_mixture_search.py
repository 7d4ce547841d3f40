"""The hybrid's mixture search: held-out alternating DARTS, GAEA floor, simplex jobs, DASH tau, run keys,
zero weights that do not run."""

import json
import warnings

import pytest
import torch
from tiny import tiny_mamba, tiny_neox

import mad_models  # noqa: F401
from mad_models.hybrid import ManticoreForCausalLM
from mad_models.hybrid.mixture import ExponentiatedGradient
from mad_models.mad import MADDataset
from mad_models.training import TrainArgs, train_mad
from mad_models.training.mixture_search import search_mixtures
from mad_models.training.projectors import pretrain_projectors
from mad_models.training.text import token_blocks


def hybrid(seed: int = 0) -> ManticoreForCausalLM:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = ManticoreForCausalLM.from_components(
            [tiny_neox(seed=seed, hidden=32, layers=2), tiny_mamba(seed=seed, hidden=24, layers=2)],
            n_blocks=2,
        )
    return h.train()


def data(split="train", n=32, **kw):
    return MADDataset("in_context_recall", split=split, num_examples=n, seq_len=16, **kw)


def args(out, **kw):
    return TrainArgs(str(out), **{**dict(batch_size=8, log_every=2, save_every=2, progress=False), **kw})


def test_alternating_darts_takes_arch_steps_on_held_out_batches_one_pass_each(tmp_path):
    h = hybrid()
    train, held = data(), data("valid", 16)
    train_rows, held_rows = train.rows(), held.rows()
    assert not train_rows & held_rows
    seen: list[tuple[str, int]] = []

    def record(module, inputs, kwargs):
        ids = kwargs.get("input_ids", inputs[0] if inputs else None)
        rows = {tuple(r) for r in ids.tolist()}
        kind = "train" if rows <= train_rows else "held" if rows <= held_rows else "mixed"
        seen.append((kind, len(rows)))

    h.register_forward_pre_hook(record, with_kwargs=True)
    search_mixtures(h, train, args(tmp_path, max_steps=3), arch_data=held, arch_lr=0.05)
    kinds = [k for k, _ in seen if k != "mixed"]
    # weight step on a training batch, arch step on a held-out batch, one forward each, alternating
    assert [k for k, _ in seen][:6] == ["train", "held"] * 3
    assert len(kinds) == len(seen) == 6  # not two passes over the same batch


def test_alternating_without_held_out_data_is_refused(tmp_path):
    with pytest.raises(ValueError, match="held-out"):
        search_mixtures(hybrid(), data(), args(tmp_path), mode="alternating")


def test_gaea_floor_and_clipped_exponent_keep_the_simplex():
    w = torch.nn.Parameter(torch.tensor([[0.5, 0.5], [0.7, 0.3], [1.0, 0.0]]))
    opt = ExponentiatedGradient([w], lr=1.0)
    w.grad = torch.tensor([[1e6, -1e6], [float("nan"), 0.0], [5.0, -5.0]])
    opt.step()
    assert torch.allclose(w.sum(-1), torch.ones(3), atol=1e-6)
    assert w[0, 0] >= 0.99e-5 and w[0, 0] < 1e-3  # floored, not zeroed for good
    assert torch.isfinite(w).all()
    assert w[2, 1] == 0  # a pruned (zero) entry stays zero
    # the clipped exponent: exp(-9) at most per step, so the weight can recover
    w.grad = torch.tensor([[-1e6, 1e6], [0.0, 0.0], [0.0, 0.0]])
    opt.step()
    assert w[0, 0] > 0.5


def test_jobs_training_a_simplex_mixture_with_adamw_are_refused(tmp_path):
    h = hybrid()
    h.set_mixture([[0.5, 0.5], [0.5, 0.5]], mode="simplex")
    with pytest.raises(ValueError, match="simplex"):
        pretrain_projectors(h, token_blocks(torch.arange(400) % 7, 16), args(tmp_path / "p", max_steps=2))
    with pytest.raises(ValueError, match="simplex"):
        train_mad(h, "in_context_recall", args(tmp_path / "m", max_steps=2), num_train=16, seq_len=16)
    # a fixed or frozen simplex mixture is fine: nothing moves it off the simplex
    pretrain_projectors(
        h, token_blocks(torch.arange(400) % 7, 16), args(tmp_path / "q", max_steps=2), train_mixture=False
    )
    assert torch.allclose(h.mixture_weights().sum(-1), torch.ones(2))


def test_dash_tau_is_saved_and_refused_elsewhere(tmp_path):
    h = hybrid()
    search_mixtures(
        h, data(), args(tmp_path / "d", max_steps=2), arch_data=data("valid", 8), method="dash", tau=0.3
    )
    assert h.config.gumbel_tau == 0.3 and h.mixture.tau == 0.3
    cfg = json.loads((tmp_path / "d" / "final" / "config.json").read_text())
    assert cfg["gumbel_tau"] == 0.3
    back = ManticoreForCausalLM.from_pretrained(tmp_path / "d" / "final")
    assert back.mixture.tau == 0.3
    for method in ("darts", "gaea"):
        with pytest.raises(ValueError, match="tau"):
            search_mixtures(hybrid(), data(), args(tmp_path / method), arch_data=data("valid", 8),
                            method=method, tau=0.5)  # fmt: skip


def test_a_rerun_with_other_data_model_or_task_is_refused_not_resumed(tmp_path):
    out = tmp_path / "s"
    held = data("valid", 8)
    search_mixtures(
        hybrid(), data(), args(out, max_steps=4, stop_after=2), arch_data=held, run_key={"task": "a"}
    )
    with pytest.raises(ValueError, match="data"):
        search_mixtures(hybrid(), data(seed=5), args(out, max_steps=4), arch_data=held, run_key={"task": "a"})
    with pytest.raises(ValueError, match="model"):
        search_mixtures(hybrid(seed=1), data(), args(out, max_steps=4), arch_data=held, run_key={"task": "a"})
    with pytest.raises(ValueError, match="task"):
        search_mixtures(hybrid(), data(), args(out, max_steps=4), arch_data=held, run_key={"task": "b"})
    with pytest.raises(ValueError, match="tau"):
        search_mixtures(
            hybrid(), data(), args(out, max_steps=4), arch_data=held, method="dash", run_key={"task": "a"}
        )
    res = search_mixtures(hybrid(), data(), args(out, max_steps=4), arch_data=held, run_key={"task": "a"})
    assert res["step"] == 4 and res["finished"]


def test_a_component_with_weight_zero_does_not_run():
    h = hybrid().eval()
    x = torch.randint(0, 16, (2, 12))
    h.set_mixture([[1.0, 0.0], [1.0, 0.0]])
    ref = h(input_ids=x).logits
    calls = []
    mamba = h.component_wrappers[1]
    hooks = [layer.register_forward_hook(lambda *a: calls.append(1)) for layer in mamba.layers]
    with torch.no_grad():  # poison the unused component
        for p in mamba.model.parameters():
            p.fill_(float("nan"))
    out = h(input_ids=x).logits
    assert not calls  # it did not run
    assert torch.isfinite(out).all() and torch.equal(out, ref)  # exact, and no NaN from the unused one
    for hk in hooks:
        hk.remove()
    # the same holds for a block-wise choice: only block 1 of mamba runs
    h2 = hybrid().eval()
    h2.set_mixture([[1.0, 0.0], [0.0, 1.0]])
    calls.clear()
    hooks = [
        layer.register_forward_hook(lambda *a: calls.append(1)) for layer in h2.component_wrappers[1].layers
    ]
    h2(input_ids=x)
    assert len(calls) == 1
