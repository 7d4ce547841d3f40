"""The shared training loop: logging, safetensors checkpoints, exact stop-and-resume, MAD job."""

import json

import pytest
import torch
from tiny import tiny_gpt2

from mad_models.training import TrainArgs, build_model, count_parameters, read_log, train_mad
from mad_models.training.checkpoint import latest_checkpoint, load_state_dict, save_state_dict


def _args(out, **kw):
    base = dict(batch_size=8, lr=3e-3, log_every=2, save_every=3, progress=False)
    return TrainArgs(str(out), **{**base, **kw})


def _mad(model, out, **kw):
    return train_mad(model, "compression", _args(out, **kw), num_train=40, num_test=16, seq_len=16)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _strip(log):
    return [{k: v for k, v in r.items() if k != "train_time"} for r in log]


def test_stop_and_resume_equals_uninterrupted_run(tmp_path):
    # GPT-2 has dropout: equality needs the RNG states restored, and the data order too (40 / 8 = 5
    # batches per epoch, so the resume point at step 5 -> epoch 1 and step 7 both cross epochs).
    full = tiny_gpt2(seed=1)
    res_full = _mad(full, tmp_path / "full", max_steps=9)

    part = tiny_gpt2(seed=1)
    _mad(part, tmp_path / "part", max_steps=9, stop_after=7)
    assert latest_checkpoint(tmp_path / "part" / "checkpoints").name == "step-00000007"
    assert not (tmp_path / "part" / "final").exists()
    resumed = tiny_gpt2(seed=2)  # a different init: everything trainable comes from the checkpoint
    res_resumed = _mad(resumed, tmp_path / "part", max_steps=9)

    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for n in a:
        assert torch.equal(a[n], b[n]), n
    assert _strip(read_log(tmp_path / "full")) == _strip(read_log(tmp_path / "part"))
    assert res_full["eval_accuracy"] == res_resumed["eval_accuracy"]
    assert [r["step"] for r in read_log(tmp_path / "full")] == [2, 4, 6, 8, 9]
    # and the run really trained: parameters moved away from the init
    init = _params(tiny_gpt2(seed=1))
    assert any(not torch.equal(init[n], a[n]) for n in a)


def test_resume_after_a_crash_between_checkpoints_drops_stale_log_lines(tmp_path):
    m = tiny_gpt2(seed=1)
    _mad(m, tmp_path, max_steps=9, stop_after=4)  # checkpoints at 3 and 4, log lines at 2 and 4
    # simulate a crash after step 4's log line but before a later checkpoint: remove the step-4 ckpt
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "step-00000004")
    _mad(tiny_gpt2(seed=1), tmp_path, max_steps=9)
    steps = [r["step"] for r in read_log(tmp_path)]
    assert steps == [2, 4, 6, 8, 9]


def test_checkpoints_are_safetensors_and_json_only(tmp_path):
    _mad(tiny_gpt2(), tmp_path, max_steps=3)
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    suffixes = {p.suffix for p in ckpt.iterdir()}
    assert suffixes == {".safetensors", ".json"}
    # the optimiser state round-trips exactly
    state = load_state_dict(ckpt / "optim-model")
    assert state["param_groups"][0]["lr"] > 0 and len(state["state"]) > 0
    step_state = next(iter(state["state"].values()))
    assert {"exp_avg", "exp_avg_sq", "step"} <= set(step_state)
    save_state_dict(state, tmp_path / "again")
    again = load_state_dict(tmp_path / "again")
    assert torch.equal(next(iter(again["state"].values()))["exp_avg"], step_state["exp_avg"])
    assert (tmp_path / "final" / "model.safetensors").exists()
    log = read_log(tmp_path)
    assert log[-1]["step"] == 3 and "eval_accuracy" in log[-1] and 0 <= log[-1]["accuracy"] <= 1
    assert json.loads((ckpt / "state.json").read_text())["job"] == "mad"


def test_not_resuming_starts_over(tmp_path):
    _mad(tiny_gpt2(), tmp_path, max_steps=4)
    _mad(tiny_gpt2(), tmp_path, max_steps=2, resume=False)
    assert [r["step"] for r in read_log(tmp_path)] == [2]


def test_mad_training_learns_memorization(tmp_path):
    torch.manual_seed(0)
    m = build_model("gpt_neox", vocab_size=16, width=32, layers=1, heads=2)
    res = train_mad(
        m,
        "selective_copying",
        _args(tmp_path, max_steps=60, lr=3e-3, log_every=20, batch_size=16),
        num_train=256,
        num_test=32,
        seq_len=24,
        num_tokens_to_copy=2,
        vocab_size=6,
    )
    log = read_log(tmp_path)
    assert log[-1]["loss"] < log[0]["loss"]
    assert res["eval_accuracy"] > 0.3  # chance is 1 / 4


def test_built_mamba_keeps_its_dt_proj_bias_init():
    m = build_model("mamba", vocab_size=16, width=32, layers=2)
    bias = m.backbone.layers[0].mixer.dt_proj.bias
    assert bias.abs().min() > 0  # the reference's re-init zeroed it
    assert count_parameters(m) > count_parameters(m, trainable_only=True) - 1


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(max_steps=0), "max_steps must be >= 1"),
        (dict(lr=0), "lr must be > 0"),
        (dict(epochs=0), "epochs must be > 0"),
    ],
)
def test_bad_train_args(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        TrainArgs(str(tmp_path), **kw)


def test_train_seed_equal_to_the_test_seed_trains_on_other_rows(tmp_path):
    from mad_models.mad.tasks import TEST_SEED, make_task

    # splits draw from (seed, split) streams: the MAD test seed no longer repeats the test set
    train = {tuple(r) for r in make_task("compression", "train", TEST_SEED, 256)[0].tolist()}
    assert not train & {tuple(r) for r in make_task("compression", "test")[0].tolist()}
    res = train_mad(
        tiny_gpt2(), "compression", _args(tmp_path, max_steps=1), num_train=8, data_seed=TEST_SEED
    )
    assert res["step"] == 1


def test_bad_model_or_task(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("rwkv", 16)
    with pytest.raises(ValueError, match="model vocab is 8"):
        train_mad(build_model("llama", 8, width=32), "compression", _args(tmp_path, max_steps=1))


def test_two_processes_with_torchrun_shard_data_and_resume_exactly(tmp_path):
    """The same CLI code under a 2-process CPU launch (gloo DDP through accelerate): checkpoints hold
    each process's RNG state, and stop-and-resume matches the uninterrupted run."""
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file

    env = {**os.environ, "PYTHONPATH": os.getcwd(), "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "mad_models",
        "mad", "train", "--task", "compression", "--arch", "llama", "--width", "32", "--layers", "1",
        "--set", "seq_len=16", "--num-train", "64", "--num-test", "16", "--steps", "6", "--batch-size", "8",
        "--save-every", "3", "--log-every", "3", "--no-progress",
    ]  # fmt: skip

    def launch(out):
        done = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    launch(tmp_path / "a")  # uninterrupted; keeps its step-3 checkpoint
    # "interrupted" after step 3: only the step-3 checkpoint and the log up to it survive; then resume
    step3 = "checkpoints/step-00000003"
    shutil.copytree(tmp_path / "a" / step3, tmp_path / "b" / step3)
    (tmp_path / "b" / "log.jsonl").write_text(
        (tmp_path / "a" / "log.jsonl").read_text().splitlines()[0] + "\n"
    )
    launch(tmp_path / "b")
    log = read_log(tmp_path / "a")
    assert [r["epoch"] for r in log] == [0.75, 1.5]  # 64 / 8 / 2 processes = 4 batches per epoch each
    ckpt = latest_checkpoint(tmp_path / "b" / "checkpoints")
    assert ckpt.name == "step-00000006"
    assert (ckpt / "rng-0.safetensors").exists() and (ckpt / "rng-1.safetensors").exists()
    a, b = (
        load_file(tmp_path / "a" / "final" / "model.safetensors"),
        load_file(tmp_path / "b" / "final" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _strip(log) == _strip(read_log(tmp_path / "b"))


def test_resuming_with_changed_settings_is_refused(tmp_path):
    _mad(tiny_gpt2(), tmp_path, max_steps=6, stop_after=3)
    with pytest.raises(ValueError, match=r"settings changed \(lr: 0.003 -> 0.01, total_steps: 6 -> 12\)"):
        _mad(tiny_gpt2(), tmp_path, max_steps=12, lr=1e-2)
    with pytest.raises(ValueError, match="config"):
        train_mad(
            tiny_gpt2(), "compression", _args(tmp_path, max_steps=6), num_train=40, num_test=16, seq_len=8
        )
    _mad(tiny_gpt2(), tmp_path, max_steps=6)  # the same settings resume
    assert [r["step"] for r in read_log(tmp_path)] == [2, 4, 6]
