"""The mad-models command line, run in-process on tiny settings (plus one real subprocess)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import mad_models  # noqa: F401
from hub_tools.cli import EXAMPLES as HUB_EXAMPLES
from mad_models.cli import EXAMPLES, main
from mad_models.training import read_log
from tests.hub_server import WRITE_TOKEN, hub_fixture  # noqa: F401  (the "hub" fixture)
from tests.tiny import tiny_llama

SUBCOMMANDS = [
    ["mad", "train"],
    ["mad", "eval"],
    ["hybrid", "build"],
    ["hybrid", "pretrain-projectors"],
    ["hybrid", "search"],
    ["hybrid", "prune"],
    ["hybrid", "eval"],
    ["more", "train"],
    ["more", "search"],
    ["push"],
    ["pull"],
    ["space", "push"],
]


def run(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as err:  # show why, instead of a bare "SystemExit: 1"
        raise AssertionError(f"mad-models {argv[:2]} exited {err.code}: {capsys.readouterr().err}") from err
    out = capsys.readouterr().out
    return code, out


def last_json(out: str) -> dict:
    start = out.rindex("\n{") + 1 if "\n{" in out else out.index("{")
    return json.loads(out[start:])


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help_with_examples(cmd, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*cmd, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"mad-models {' '.join(cmd)}" in out
    assert {**EXAMPLES, **HUB_EXAMPLES}[" ".join(cmd)].splitlines()[1].strip() in out


@pytest.mark.parametrize(
    "argv,match",
    [
        (["mad", "train", "--task", "nope", "--out", "x"], "invalid choice: 'nope'"),
        (["mad", "train", "--task", "compression"], "the following arguments are required: --out"),
        (["mad", "train", "--task", "compression", "--out", "x", "--steps", "0"], "expected an integer > 0"),
        (
            ["more", "search", "--base-model", "m", "--data", "d", "--budget", "-3", "--out", "o"],
            "budget must be > 0",
        ),
        (
            [
                "more",
                "search",
                "--base-model",
                "m",
                "--data",
                "d",
                "--budget",
                "1",
                "--nblocks",
                "a",
                "--out",
                "o",
            ],
            "comma-separated integers",
        ),
        (["hybrid", "search", "--model", "m", "--mode", "both", "--out", "o"], "invalid choice: 'both'"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, match, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert match in capsys.readouterr().err


def test_errors_from_the_work_are_reported_not_raised(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "mad",
                "train",
                "--task",
                "memorization",
                "--set",
                "seq_len=33",
                "--steps",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
    assert exit_.value.code == 1
    assert "seq_len must be even" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["mad", "eval", "--model", str(tmp_path / "missing"), "--task", "compression"])
    assert exit_.value.code == 2
    assert "is not a directory saved by save_pretrained" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["mad", "train", "--task", "compression", "--set", "oops", "--out", str(tmp_path)])
    assert "--set expects KEY=VALUE" in capsys.readouterr().err


def test_mad_train_resume_and_eval(tmp_path, capsys):
    common = [
        "mad", "train", "--task", "memorization", "--arch", "llama", "--width", "32", "--layers", "1",
        "--set", "vocab_size=16", "--set", "seq_len=8", "--num-train", "64", "--num-test", "32",
        "--steps", "6", "--batch-size", "16", "--lr", "3e-3", "--log-every", "2", "--save-every", "2",
        "--no-progress", "--out", tmp_path,
    ]  # fmt: skip
    code, _ = run([*common, "--stop-after", "4"], capsys)
    assert code == 0 and [r["step"] for r in read_log(tmp_path)] == [2, 4]
    code, out = run(common, capsys)
    res = last_json(out)
    assert res["step"] == 6 and [r["step"] for r in read_log(tmp_path)] == [2, 4, 6]
    assert 0 <= res["eval_accuracy"] <= 1 and res["params"] > 0
    code, out = run(
        ["mad", "eval", "--model", tmp_path / "final", "--task", "memorization", "--set", "vocab_size=16",
         "--set", "seq_len=8", "--num-examples", "32"],
        capsys,
    )  # fmt: skip
    ev = last_json(out)
    assert code == 0 and ev["accuracy"] == pytest.approx(res["eval_accuracy"])


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def tiny_base(tmp_path):
    base = tiny_llama()
    base.save_pretrained(tmp_path / "base")
    rows = [{"input_ids": [(i + j) % 11 + 3 for j in range(16)]} for i in range(24)]
    return tmp_path / "base", _jsonl(tmp_path / "train.jsonl", rows)


def test_more_train_and_search(tiny_base, tmp_path, capsys):
    base, data = tiny_base
    code, out = run(
        ["more", "train", "--base-model", base, "--data", data, "--eval-data", data, "--nblocks", "2",
         "--targets", "q_proj,v_proj", "--steps", "4", "--no-progress", "--out", tmp_path / "more"],
        capsys,
    )  # fmt: skip
    res = last_json(out)
    assert code == 0 and res["trainable_params"] == 2 * (2 * (64 + 64) + 2 * (64 + 32))  # 2 layers, k*r*(n+m)
    cfg = json.loads((tmp_path / "more" / "final" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "MORE" and cfg["nblocks"] == 2
    code, out = run(
        ["more", "train", "--base-model", base, "--data", data, "--method", "lora", "--lora-rank", "2",
         "--targets", "q_proj", "--steps", "2", "--no-progress", "--out", tmp_path / "lora"],
        capsys,
    )  # fmt: skip
    assert last_json(out)["trainable_params"] == 2 * 2 * (64 + 64)
    code = main([str(x) for x in
        ["more", "search", "--base-model", base, "--data", data, "--budget", "0.5", "--nblocks", "1,2",
         "--block-ranks", "1", "--target-sets", "q_proj,v_proj", "--steps", "2", "--no-progress",
         "--out", tmp_path / "search"]])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "| rank | adapter |" in out and "LoRA r=8 (baseline)" in out
    assert "Budget: 0.5 x LoRA r=8 on q_proj, v_proj" in (tmp_path / "search" / "table.md").read_text()
    assert "choosing on the last 2 of 24 rows, held out from training" in err  # no --eval-data


def test_more_search_budget_one_is_not_silently_one_parameter(tiny_base, tmp_path, capsys):
    base, data = tiny_base
    with pytest.raises(SystemExit) as exit_:
        main(["more", "search", "--base-model", str(base), "--data", str(data), "--budget", "1",
              "--out", str(tmp_path / "s")])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "1 trainable parameters (absolute) is under one LoRA rank" in err
    assert "write a fraction such as 1.0" in err


def test_more_search_exact_match_dev_test_and_a_journal_storage(tmp_path, capsys):
    from tests.tiny import tiny_char_tokenizer

    tiny_llama(vocab=98).save_pretrained(tmp_path / "base")
    tok = tiny_char_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}|{% endfor %}"
    tok.save_pretrained(tmp_path / "tok")
    qa = [{"prompt": f"{i}+1?", "answer": str(i + 1)} for i in range(12)]
    train, dev, test = (_jsonl(tmp_path / f"{n}.jsonl", rows) for n, rows in
                        (("train", qa), ("dev", qa[:4]), ("test", qa[4:8])))  # fmt: skip
    argv = ["more", "search", "--base-model", tmp_path / "base", "--tokenizer", tmp_path / "tok", "--data",
            train, "--eval-data", dev, "--test-data", test, "--metric", "exact_match", "--budget", "1.0",
            "--lora-rank", "2", "--nblocks", "2", "--block-ranks", "1", "--target-sets", "q_proj,v_proj",
            "--steps", "2", "--lrs", "1e-3,1e-2", "--seeds", "1", "--batch-size", "4", "--no-progress",
            "--storage", tmp_path / "s.journal", "--out", tmp_path / "search"]  # fmt: skip
    code = main([str(x) for x in argv])
    out = capsys.readouterr().out
    assert code == 0 and "| dev exact_match |" in out and "| test |" in out and "(higher is better)" in out
    assert (tmp_path / "s.journal").stat().st_size > 0 and not (tmp_path / "search" / "search.db").exists()
    text = _jsonl(tmp_path / "text.jsonl", [{"text": "no answers here"}] * 4)
    with pytest.raises(SystemExit) as exit_:
        main([str(x) for x in argv[:11] + [text] + argv[12:]])  # --test-data without prompt/answer rows
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "--test-data for --metric exact_match" in err and "'prompt'" in err


def test_more_train_text_rows_need_a_tokenizer(tiny_base, tmp_path, capsys):
    base, _ = tiny_base
    data = _jsonl(tmp_path / "text.jsonl", [{"prompt": "1+1=", "answer": "2"}])
    with pytest.raises(SystemExit) as exit_:
        main(["more", "train", "--base-model", str(base), "--data", str(data), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 1 and "give a tokenizer" in capsys.readouterr().err


def test_push_and_pull_through_hub_tools(hub, tiny_base, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    base, data = tiny_base
    run(["more", "train", "--base-model", base, "--data", data, "--targets", "q_proj", "--nblocks", "2",
         "--steps", "2", "--no-progress", "--out", tmp_path / "run"], capsys)  # fmt: skip
    code, out = run(["push", tmp_path / "run" / "final", "me/cli-adapter", "--base-model", base], capsys)
    assert code == 0 and "/me/cli-adapter/commit/" in last_json(out)["url"]
    code, out = run(["pull", "me/cli-adapter", "--base-model", base, "--out", tmp_path / "pulled"], capsys)
    assert code == 0 and last_json(out)["loaded"] == "PeftModelForCausalLM"
    a = load_file(tmp_path / "run" / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "pulled" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit) as exit_:
        main(["pull", "me/does-not-exist", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 1 and "me/does-not-exist" in capsys.readouterr().err


def test_space_push_uploads_the_app(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    (tmp_path / "app.py").write_text("import gradio as gr\n")
    code, out = run(["space", "push", "me/demo-space", "--dir", tmp_path], capsys)
    assert code == 0 and "/spaces/me/demo-space/commit/" in last_json(out)["url"]
    assert {"app.py", "README.md"} <= set(hub.files("me/demo-space", repo_type="space"))
    with pytest.raises(SystemExit) as exit_:
        main(["space", "push", "me/demo-space", "--dir", str(tmp_path / "nowhere")])
    assert exit_.value.code == 1 and "is not a directory" in capsys.readouterr().err


def test_python_dash_m_runs_as_a_subprocess():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run(
        [sys.executable, "-m", "mad_models", "mad", "eval", "--help"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0 and "accuracy of a saved model" in out.stdout


HEAVY = ("torch", "transformers", "peft", "accelerate")


@pytest.mark.parametrize("argv", [["--help"], ["mad", "train", "--help"], ["pull", "--help"], []])
def test_help_imports_no_torch(argv):
    """``python -m mad_models --help`` (and a command's --help, and no arguments) imports neither torch,
    transformers nor peft: help answers without loading them (the parser, hub_tools' commands included,
    is built from light modules)."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['mad-models', *{argv!r}]\n"
        "try:\n    runpy.run_module('mad_models', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as e:\n    code = e.code\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), 'EXIT', code)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "usage: mad-models" in out.stdout, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "HEAVY [] EXIT 0", out.stdout[-500:]


def test_the_parser_offers_the_library_tasks_and_architectures():
    from mad_models.cli.common import ARCH_NAMES, TASK_NAMES
    from mad_models.mad import TASKS
    from mad_models.training import ARCHS

    assert TASK_NAMES == TASKS and ARCH_NAMES == ARCHS


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("usage: mad-models")
    assert main(["hybrid"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mad-models hybrid") and "build" in out and "prune" in out


@pytest.fixture
def component_dirs(tmp_path):
    from tests.tiny import tiny_mamba, tiny_neox

    tiny_neox(hidden=32, layers=2).save_pretrained(tmp_path / "neox")
    tiny_mamba(hidden=24, layers=2).save_pretrained(tmp_path / "mamba")
    return tmp_path / "neox", tmp_path / "mamba"


def test_hybrid_search_cli_saves_only_finished_work_and_refuses_other_runs(component_dirs, tmp_path, capsys):
    neox, mamba = component_dirs
    code, _ = run(["hybrid", "build", "--components", neox, mamba, "--n-blocks", "2",
                   "--out", tmp_path / "h"], capsys)  # fmt: skip
    common = ["hybrid", "search", "--model", tmp_path / "h", "--set", "seq_len=16", "--num-train", "16",
              "--num-test", "8", "--steps", "4", "--batch-size", "8", "--save-every", "1", "--no-progress",
              "--retrain-steps", "2", "--out", tmp_path / "s"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:  # tau belongs to dash only
        main([str(a) for a in [*common, "--task", "in_context_recall", "--tau", "0.5"]])
    assert exit_.value.code == 2 and "--tau" in capsys.readouterr().err
    # a stopped search: nothing saved, no retrain of a partial mixture, no results
    code, out = run([*common, "--task", "in_context_recall", "--stop-after", "2"], capsys)
    res = last_json(out)
    assert res["saved"] == [] and "retrain" not in res and "resume" in res["note"]
    assert not (tmp_path / "s" / "retrain").exists() and not (tmp_path / "s" / "results.json").exists()
    # another task (or model) into the same directory is refused, never resumed
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in [*common, "--task", "noisy_recall"]])
    assert exit_.value.code == 1 and "settings changed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in [*common, "--task", "in_context_recall", "--model", neox]])
    assert exit_.value.code == 2
    assert "is a GPTNeoXForCausalLM, not a Manticore hybrid" in capsys.readouterr().err
    code, out = run([*common, "--task", "in_context_recall"], capsys)
    res = last_json(out)
    assert res["saved"] == [str(tmp_path / "s" / "final"), str(tmp_path / "s" / "retrain" / "final")]
    for d in (tmp_path / "s", tmp_path / "s" / "retrain"):
        saved = json.loads((d / "results.json").read_text())
        assert saved["task"] == "in_context_recall" and saved["settings"] and saved["source_model"]
        assert 0 <= saved["eval_accuracy"] <= 1 and "eval_macro_accuracy" in saved
    # prune, then retrain: accuracy before, after and after the retrain
    code, out = run(["hybrid", "prune", "--model", tmp_path / "s" / "retrain" / "final", "--argmax",
                     "--task", "in_context_recall", "--set", "seq_len=16", "--num-train", "16",
                     "--num-test", "8", "--retrain-steps", "2", "--batch-size", "8", "--no-progress",
                     "--out", tmp_path / "pr"], capsys)  # fmt: skip
    rep = last_json(out)
    for k in ("accuracy_before_prune", "accuracy_after_prune", "accuracy_after_retrain"):
        assert 0 <= rep[k]["accuracy"] <= 1, k
    assert rep["saved"] == [str(tmp_path / "pr"), str(tmp_path / "pr" / "retrain" / "final")]
    assert json.loads((tmp_path / "pr" / "results.json").read_text())["accuracy_after_retrain"]


def test_hybrid_build_pretrain_search_prune(component_dirs, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    neox, mamba = component_dirs
    code, out = run(["hybrid", "build", "--components", neox, mamba, "--n-blocks", "2",
                     "--mixture", "0.6,0.4;0.3,0.7", "--out", tmp_path / "h"], capsys)  # fmt: skip
    assert code == 0 and torch.allclose(
        torch.tensor(last_json(out)["mixture"]), torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    )
    rows = [{"input_ids": [(i * 3 + j) % 13 + 2 for j in range(12)]} for i in range(16)]
    data = _jsonl(tmp_path / "text.jsonl", rows)
    code, out = run(["hybrid", "pretrain-projectors", "--model", tmp_path / "h", "--data", data,
                     "--steps", "2", "--batch-size", "4", "--no-progress",
                     "--out", tmp_path / "p"], capsys)  # fmt: skip
    assert code == 0 and last_json(out)["step"] == 2 and (tmp_path / "p" / "final" / "config.json").exists()
    code, out = run(["hybrid", "search", "--model", tmp_path / "p" / "final", "--task", "in_context_recall",
                     "--set", "seq_len=16", "--num-train", "16", "--num-test", "8", "--steps", "2",
                     "--batch-size", "8", "--arch-lr", "0.1", "--retrain-steps", "1", "--no-progress",
                     "--out", tmp_path / "s"], capsys)  # fmt: skip
    res = last_json(out)
    assert code == 0 and res["search"]["step"] == 2 and res["retrain"]["step"] == 1
    assert 0 <= res["search"]["eval_accuracy"] <= 1 and len(res["search"]["mixture"]) == 2
    assert res["saved"] == [str(tmp_path / "s" / "final"), str(tmp_path / "s" / "retrain" / "final")]
    searched = AutoModelForCausalLM.from_pretrained(tmp_path / "s" / "retrain" / "final")
    assert searched.config.mixture_mode == "fixed"
    code, out = run(["hybrid", "prune", "--model", tmp_path / "h", "--threshold", "0.5",
                     "--out", tmp_path / "pruned"], capsys)  # fmt: skip
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    assert code == 0 and pruned.mixture_weights().detach().tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in searched.parameters())
    with pytest.raises(SystemExit) as exit_:
        main(["hybrid", "prune", "--model", str(tmp_path / "h"), "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "exactly one of --threshold" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["hybrid", "search", "--model", str(tmp_path / "h"), "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "exactly one of --data" in capsys.readouterr().err
