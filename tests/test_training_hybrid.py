"""Hybrid jobs: projector pretraining, mixture search (DARTS / DASH / GAEA), retraining."""

import warnings

import pytest
import torch
from tiny import tiny_gpt2, tiny_mamba, tiny_neox

import mad_models  # noqa: F401
from mad_models.hybrid import ManticoreForCausalLM
from mad_models.mad import MADDataset
from mad_models.training import TrainArgs, read_log
from mad_models.training.checkpoint import latest_checkpoint
from mad_models.training.mixture_search import search_mixtures
from mad_models.training.projectors import pretrain_projectors
from mad_models.training.retrain import retrain
from mad_models.training.text import token_blocks


def hybrid(seed: int = 0) -> ManticoreForCausalLM:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no tokenizers for model objects: vocab sizes are compared
        h = ManticoreForCausalLM.from_components(
            [tiny_neox(seed=seed, hidden=32, layers=2), tiny_mamba(seed=seed, hidden=24, layers=2)],
            n_blocks=2,
        )
    return h.train()


def mad_data():
    return MADDataset("in_context_recall", num_examples=32, seq_len=16)


def held_data():
    return MADDataset("in_context_recall", split="valid", num_examples=16, seq_len=16)


def args(out, **kw):
    return TrainArgs(str(out), **{**dict(batch_size=8, log_every=2, save_every=2, progress=False), **kw})


def snapshot(model, pred=lambda n: True):
    return {n: p.detach().clone() for n, p in model.named_parameters() if pred(n)}


def test_pretrain_projectors_trains_only_projectors_and_mixture(tmp_path):
    h = hybrid()
    before = snapshot(h)
    data = token_blocks(torch.arange(800) % 13 + 2, 16)
    res = pretrain_projectors(h, data, args(tmp_path, max_steps=6, lr=1e-2))
    after = snapshot(h)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith(("proj_in", "proj_out", "mixture")) for n in changed)
    assert any(n.startswith("mixture") for n in changed)
    assert any(n.startswith("proj_in") for n in changed) and any(n.startswith("proj_out") for n in changed)
    log = read_log(tmp_path)
    assert "mixture" in log[-1] and len(log[-1]["mixture"]) == 2 and res["step"] == 6
    # the checkpoint holds only what was trained
    from safetensors.torch import load_file

    saved = load_file(latest_checkpoint(tmp_path / "checkpoints") / "model.safetensors")
    assert set(saved) == {n for n, p in h.named_parameters() if p.requires_grad}
    assert not any(n.startswith("components") for n in saved)


def test_pretrain_projectors_with_frozen_mixture(tmp_path):
    h = hybrid()
    w = h.mixture_weights().detach().clone()
    pretrain_projectors(
        h, token_blocks(torch.arange(400) % 7, 16), args(tmp_path, max_steps=2), train_mixture=False
    )
    assert torch.equal(h.mixture_weights().detach(), w)


@pytest.mark.parametrize("mode", ["alternating", "simultaneous"])
def test_darts_search_moves_the_mixture_and_the_weights(tmp_path, mode):
    h = hybrid()
    comp_before = snapshot(h, lambda n: n.startswith("components"))
    res = search_mixtures(
        h, mad_data(), args(tmp_path, max_steps=4, lr=1e-3), arch_data=held_data(), arch_lr=0.05, mode=mode
    )
    w = torch.tensor(res["mixture"])
    assert w.shape == (2, 2) and torch.allclose(w.sum(-1), torch.ones(2), atol=1e-4)
    assert not torch.allclose(w, torch.full((2, 2), 0.5))  # moved off the uniform start
    assert any(not torch.equal(v, snapshot(h)[n]) for n, v in comp_before.items())  # weights trained too
    assert h.mixture.mode == "softmax"
    log = read_log(tmp_path)
    assert log[-1]["mixture"] == res["mixture"] and set(log[-1]["lr"]) == {"weights", "arch"}


def test_gaea_keeps_weights_on_the_simplex(tmp_path):
    h = hybrid()
    res = search_mixtures(
        h, mad_data(), args(tmp_path, max_steps=4), arch_data=held_data(), arch_lr=0.5, method="gaea"
    )
    w = h.mixture_weights().detach()
    assert h.mixture.mode == "simplex" and (w >= 0).all()
    assert torch.allclose(w.sum(-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(w, torch.full((2, 2), 0.5)) and res["step"] == 4


def test_dash_search_resumes_exactly(tmp_path):
    # Gumbel noise draws from the global RNG: exact resumption needs the RNG state and both optimisers
    def run(out, **kw):
        h = hybrid()
        search_mixtures(
            h,
            mad_data(),
            args(out, max_steps=5, **kw),
            arch_data=held_data(),
            arch_lr=0.05,
            method="dash",
            tau=0.5,
        )
        return h

    full = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=3)
    ckpt = latest_checkpoint(tmp_path / "b" / "checkpoints")
    assert {p.name for p in ckpt.glob("optim-*.json")} == {"optim-weights.json", "optim-arch.json"}
    resumed = run(tmp_path / "b")
    a, b = snapshot(full), snapshot(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    strip = lambda log: [{k: v for k, v in r.items() if k != "train_time"} for r in log]  # noqa: E731
    assert strip(read_log(tmp_path / "a")) == strip(read_log(tmp_path / "b"))


def test_retrain_keeps_the_searched_mixture_fixed(tmp_path):
    h = hybrid()
    search_mixtures(h, mad_data(), args(tmp_path / "s", max_steps=3), arch_data=held_data(), arch_lr=0.05)
    searched = h.mixture.expected_weights().clone()
    before = snapshot(h, lambda n: n.startswith("components"))
    retrain(h, mad_data(), args(tmp_path / "r", max_steps=3, lr=1e-2))
    assert h.mixture.mode == "fixed" and torch.allclose(h.mixture_weights().detach(), searched, atol=1e-6)
    assert any(not torch.equal(v, snapshot(h)[n]) for n, v in before.items())
    weights = [[1.0, 0.0], [0.25, 0.75]]
    retrain(h, mad_data(), args(tmp_path / "r2", max_steps=1), weights=weights)
    assert torch.allclose(h.mixture_weights().detach(), torch.tensor(weights))


def test_hybrid_jobs_refuse_plain_models_and_bad_options(tmp_path):
    with pytest.raises(TypeError, match="needs a Manticore hybrid"):
        search_mixtures(tiny_gpt2(), mad_data(), args(tmp_path))
    with pytest.raises(ValueError, match="mode must be one of"):
        search_mixtures(hybrid(), mad_data(), args(tmp_path), mode="both")
    with pytest.raises(ValueError, match="method must be one of"):
        search_mixtures(hybrid(), mad_data(), args(tmp_path), method="enas")
    with pytest.raises(ValueError, match="arch_lr must be > 0"):
        search_mixtures(hybrid(), mad_data(), args(tmp_path), arch_lr=0)


def test_retrain_after_projector_pretraining_trains_the_components_end_to_end(tmp_path):
    h = hybrid()
    h.freeze_components()  # the state projector pretraining leaves the hybrid in
    before = snapshot(h, lambda n: n.startswith("components"))
    retrain(h, mad_data(), args(tmp_path / "r", max_steps=2, lr=1e-2))
    comps = {n: p for n, p in h.named_parameters() if n.startswith("components")}
    assert all(p.requires_grad for p in comps.values())
    assert sum(not torch.equal(v, comps[n].detach()) for n, v in before.items()) > len(before) // 2
