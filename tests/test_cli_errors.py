"""The CLI on bad input (issue 12): one line naming the problem and a non-zero exit, never a stack trace,
never "saved" when nothing was; non-finite --lr and negative --warmup-steps refused; a run whose loss turns
NaN stops without saving NaN weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mad_models  # noqa: F401
from mad_models.cli import main
from mad_models.hybrid import ManticoreForCausalLM
from tests.tiny import tiny_llama, tiny_mamba, tiny_neox


def fails(argv, capsys, code: int = 1) -> str:
    """Run the CLI in-process; it must exit with `code` and a one-line message. Returns that line."""
    with pytest.raises(SystemExit) as exit_:  # any other exception would be a stack trace for the user
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert exit_.value.code == code, err
    assert "saved" not in out
    lines = [ln for ln in err.splitlines() if ln.startswith("mad-models")]  # (progress bars aside)
    assert len(lines) == 1 and lines[0].startswith("mad-models: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    hybrid = ManticoreForCausalLM.from_components(
        [tiny_neox(hidden=32, layers=2), tiny_mamba(hidden=24, layers=2)]
    )
    hybrid.save_pretrained(root / "hybrid")
    tiny_llama().save_pretrained(root / "plain")
    pickle_only = root / "pickle-only"
    tiny_llama().save_pretrained(pickle_only)
    torch.save(load_file(pickle_only / "model.safetensors"), pickle_only / "pytorch_model.bin")
    (pickle_only / "model.safetensors").unlink()
    (root / "a-file").write_text("not a directory\n")
    (root / "ids.jsonl").write_text(
        "".join(json.dumps({"input_ids": [1, 2, 3, 500]}) + "\n" for _ in range(4))
    )
    return root


def test_out_that_is_a_file_saves_nothing_and_says_so(dirs, capsys):
    a_file = dirs / "a-file"
    line = fails(["hybrid", "prune", "--model", dirs / "hybrid", "--argmax", "--out", a_file], capsys, 2)
    assert f"--out {a_file} is a file" in line
    line = fails(["pull", dirs / "hybrid", "--out", a_file], capsys, 2)
    assert f"--out {a_file} is a file" in line
    assert a_file.read_text() == "not a directory\n"


def test_out_that_cannot_be_written(dirs, capsys):
    line = fails(
        ["hybrid", "prune", "--model", dirs / "hybrid", "--argmax", "--out", "/sys/mad-models/x"], capsys
    )
    assert "/sys/mad-models" in line


def test_pickle_only_and_missing_dirs(dirs, tmp_path, capsys):
    line = fails(
        ["hybrid", "prune", "--model", dirs / "pickle-only", "--argmax", "--out", tmp_path / "o"], capsys
    )
    assert "model.safetensors" in line
    line = fails(
        [
            "more",
            "train",
            "--base-model",
            tmp_path / "missing",
            "--data",
            dirs / "ids.jsonl",
            "--out",
            tmp_path / "o",
        ],
        capsys,
    )
    assert "missing" in line
    assert not (tmp_path / "o").exists()


def test_hybrid_prune_on_a_plain_model(dirs, tmp_path, capsys):
    line = fails(
        ["hybrid", "prune", "--model", dirs / "plain", "--argmax", "--out", tmp_path / "o"], capsys, 2
    )
    assert "is a LlamaForCausalLM, not a Manticore hybrid" in line
    assert not (tmp_path / "o").exists()


def test_jsonl_ids_outside_the_vocabulary(dirs, tmp_path, capsys):
    line = fails(
        ["more", "train", "--base-model", dirs / "plain", "--data", dirs / "ids.jsonl", "--steps", "1",
         "--no-progress", "--out", tmp_path / "o"],
        capsys,
        2,
    )  # fmt: skip
    assert "ids.jsonl" in line and "500" in line and "vocabulary of 128" in line
    assert not (tmp_path / "o" / "final").exists()


@pytest.mark.parametrize(
    "flag, value, match",
    [("--lr", "inf", "finite"), ("--lr", "nan", "finite"), ("--warmup-steps", "-1", ">= 0")],
)
def test_non_finite_lr_and_negative_warmup_are_refused(flag, value, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["mad", "train", "--task", "memorization", flag, value, "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and match in err


def test_a_run_whose_loss_turns_nan_stops_without_saving(dirs, tmp_path, capsys):
    out, data = tmp_path / "nan-run", tmp_path / "no-labels.jsonl"
    row = {"input_ids": list(range(3, 19)), "labels": [-100] * 16}  # nothing scored: the mean loss is 0/0
    data.write_text("".join(json.dumps(row) + "\n" for _ in range(24)))
    line = fails(
        ["more", "train", "--base-model", dirs / "plain", "--data", data, "--steps", "6", "--batch-size", "8",
         "--log-every", "3", "--save-every", "2", "--no-progress", "--out", out],
        capsys,
    )  # fmt: skip
    assert "became not finite by step" in line and "stopped without saving" in line
    assert not (out / "final").exists()
    for ckpt in (out / "checkpoints").glob("*/**/*.safetensors"):
        for name, t in load_file(ckpt).items():
            assert torch.isfinite(t).all(), f"{ckpt} holds non-finite {name}"
    assert Path(out).is_dir()


def test_a_model_dir_whose_config_outgrows_its_weights(tmp_path, capsys):
    folder = tmp_path / "huge-vocab"
    tiny_llama().save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vocab_size"] = 1_000_000
    (folder / "config.json").write_text(json.dumps(cfg))
    line = fails(["mad", "eval", "--model", folder, "--task", "memorization"], capsys)
    assert "model.safetensors does not match config.json" in line and "1000000" in line


# ------------------------------------------------------------------ bugs, Ctrl-C, the wrong kind of model


def test_a_bug_says_so_in_one_line_and_shows_its_trace_on_request(dirs, monkeypatch, capsys):
    """A programming error is not bad input: one line saying it is a bug and how to see the trace, exit 70;
    with --traceback (anywhere on the line) or MAD_MODELS_DEBUG=1 the full trace too."""
    import mad_models.cli.mad as mad_cli

    def cmd_with_a_bug(a):
        return {}["a key the code forgot"]

    monkeypatch.setattr(mad_cli, "cmd_mad_eval", cmd_with_a_bug)
    argv = ["mad", "eval", "--model", str(dirs / "plain"), "--task", "memorization"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 70 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("mad-models: error: a bug in mad-models"), err
    assert "KeyError" in err and "--traceback" in err and "MAD_MODELS_DEBUG=1" in err
    for traced in ([*argv, "--traceback"], ["--traceback", *argv]):
        with pytest.raises(SystemExit) as exit_:
            main(traced)
        err = capsys.readouterr().err
        assert exit_.value.code == 70 and "Traceback (most recent call last)" in err, err
        assert "in cmd_with_a_bug" in err and err.rstrip().splitlines()[-1].startswith(
            "mad-models: error: a bug"
        )
    monkeypatch.setenv("MAD_MODELS_DEBUG", "1")
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 70 and "in cmd_with_a_bug" in capsys.readouterr().err


def test_ctrl_c_prints_one_line_keeps_the_checkpoints_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    from mad_models.training import loop

    saved = []

    def save_then_interrupt(*args, **kwargs):
        loop_save(*args, **kwargs)
        saved.append(args[0])
        raise KeyboardInterrupt

    loop_save = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", save_then_interrupt)
    out = tmp_path / "run"
    argv = ["mad", "train", "--task", "memorization", "--width", "16", "--layers", "1", "--heads", "2",
            "--batch-size", "8", "--num-train", "32", "--num-test", "8", "--steps", "4", "--save-every", "2",
            "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 130
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    kept = f"the checkpoints in {out / 'checkpoints'} are kept (run the same command again to resume"
    assert lines == [f"mad-models: interrupted; {kept} from the last one)"], err
    assert len(saved) == 1 and saved[0].is_dir() and saved[0].parent == out / "checkpoints"
    monkeypatch.setattr(loop, "save_checkpoint", loop_save)
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["saved"] == str(out / "final") and result["step"] == 4
    assert [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()][-1] == 4


def test_ctrl_c_elsewhere_is_one_line_too(dirs, monkeypatch, capsys):
    import mad_models.cli.mad as mad_cli

    def interrupted(a):
        raise KeyboardInterrupt

    monkeypatch.setattr(mad_cli, "cmd_mad_eval", interrupted)
    assert main(["mad", "eval", "--model", str(dirs / "plain"), "--task", "memorization"]) == 130
    assert capsys.readouterr().err.strip() == "mad-models: interrupted"


def test_hybrid_build_needs_two_components_that_exist(dirs, tmp_path, capsys):
    build = ["hybrid", "build", "--n-blocks", "2", "--out", tmp_path / "h", "--components"]
    line = fails([*build, dirs / "plain"], capsys, 2)
    assert "needs 2 or more --components, got 1" in line
    missing = ["runs/neox/final", "runs/mamba/final"]  # what the README's example names
    line = fails([*build, *missing], capsys, 2)
    assert "--components runs/neox/final: no such folder" in line and "Repo id" not in line
    assert not (tmp_path / "h").exists()


def test_the_wrong_kind_of_model_is_named(dirs, tmp_path, capsys):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"prompt": "1+1", "answer": "2"}) + "\n")
    line = fails(["more", "eval", "--model", dirs / "hybrid", "--data", qa, "--no-progress"], capsys, 2)
    assert "has no tokenizer" in line and "mad eval" in line
    adapter = tmp_path / "adapter"
    from peft import LoraConfig, get_peft_model

    get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    line = fails(["mad", "eval", "--model", adapter, "--task", "memorization"], capsys, 2)
    assert "is a PEFT adapter" in line and "more eval" in line
    search = ["hybrid", "search", "--task", "memorization", "--out", tmp_path / "s", "--model"]
    line = fails([*search, dirs / "plain"], capsys, 2)
    assert "is a LlamaForCausalLM, not a Manticore hybrid" in line


@pytest.mark.parametrize(
    "setting, match",
    [
        ("seq_len=abc", "--set seq_len=abc: expected an integer"),
        ("seq_lenn=8", "--set seq_lenn: unknown setting"),
    ],
)
def test_task_settings_of_the_wrong_name_or_type(setting, match, tmp_path, capsys):
    line = fails(
        ["mad", "train", "--task", "memorization", "--set", setting, "--out", tmp_path / "o"], capsys, 2
    )
    assert match in line
