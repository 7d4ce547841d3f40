"""bench/reproduce_more.py's own logic: splits, the settings guard, the LoRA curve and the verdict."""

import importlib.util
import json
from pathlib import Path

import pytest

from bench import reproduce_more as rm

ROOT = Path(__file__).resolve().parents[1]


def test_dev_is_carved_from_train_per_module_and_never_overlaps():
    rows = [{"module": m, "prompt": f"{m}{i}", "answer": str(i)} for m in "ab" for i in range(6)]
    dev, rest = rm.split_rows(rows, 2, last=True)
    assert [r["prompt"] for r in dev] == ["a4", "a5", "b4", "b5"]
    assert len(rest) == 8 and not {r["prompt"] for r in dev} & {r["prompt"] for r in rest}
    first, _ = rm.split_rows(rows, 1, last=False)
    assert [r["prompt"] for r in first] == ["a0", "b0"]
    assert rm.split_rows(rows, None, last=False) == (rows, [])


def test_the_shipped_data_splits():
    from mad_models.training.exact_match import load_qa_rows

    train = load_qa_rows(ROOT / "data" / "mathematics" / "train.jsonl")
    val = load_qa_rows(ROOT / "data" / "mathematics" / "val.jsonl")
    assert len(train) == 4500 and len(val) == 360
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}
    for mode in ("quick", "full"):
        dev, rest = rm.split_rows(train, rm.SETTINGS[mode]["dev_per_module"], last=True)
        assert len(dev) == 9 * rm.SETTINGS[mode]["dev_per_module"] and len(rest) + len(dev) == 4500


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    s = dict(rm.SETTINGS["quick"])
    rm.Run(tmp_path, s, 1)
    rm.Run(tmp_path, s, 2)  # the same settings (threads do not change results): resumes
    with pytest.raises(SystemExit, match=r"other settings \(steps differ\)"):
        rm.Run(tmp_path, {**s, "steps": 31}, 1)
    assert json.loads((tmp_path / "settings.json").read_text())["steps"] == 30


def test_the_verdict_reads_the_lora_curve_in_log_params():
    stats = {
        "LoRA r=1": {"params": 100, "mean": 0.2, "lo": 0.2, "hi": 0.2},
        "LoRA r=16": {"params": 1600, "mean": 0.6, "lo": 0.6, "hi": 0.6},
        "MoRe k=4 r=1": {"params": 400, "mean": 0.5, "lo": 0.45, "hi": 0.55},
    }
    assert rm.lora_at(stats, 400) == pytest.approx(0.4)  # halfway in log(params)
    assert rm.lora_at(stats, 50) is None
    text = rm.verdict(stats, {"heuristic": {"exact_match": 0.3}})
    assert "MoRe k=4 r=1 (400 params) scores 0.500, above LoRA's curve at that count (0.400" in text
    assert "At or below the no-learning heuristic (0.300)" in text and "LoRA r=1" in text


def test_the_report_keeps_the_records_it_was_written_from_and_they_resume(tmp_path):
    """The work dir does not outlive the machine: the report keeps results.jsonl and settings.json beside
    it, a report rewritten from that copy is the same, and a copy given as --work resumes (same settings)."""
    import argparse

    s = dict(rm.SETTINGS["quick"])
    run = rm.Run(tmp_path / "work", s, 1)
    per_module = {m: 0.5 for m in rm.SHORT}
    run.add({"key": "heuristic", "params": 0, "exact_match": 0.1, "n": 72, "per_module": per_module})
    run.add({"key": "base", "params": 0, "exact_match": 0.0, "n": 72, "per_module": per_module})
    run.add({"key": "LoRA r=1|lr", "lr": 0.01, "trials": {}})
    run.add(
        {"key": "LoRA r=1|seed0", "method": "LoRA r=1", "seed": 0, "lr": 0.01, "params": 80640,
         "exact_match": 0.25, "n": 72, "per_module": per_module}
    )  # fmt: skip
    out = tmp_path / "results"
    a = argparse.Namespace(out=str(out), quick=True, threads=1, report_only=True)
    assert rm.write_report(run, s, "quick", a, 0.0, [], [], []) == 0
    kept = out / "more-quick-runs"
    assert (kept / "results.jsonl").read_text() == run.results_path.read_text()
    first = (out / "more-quick.md").read_text()
    assert "**Unfinished" in first and "0.250" in first
    again = rm.Run(kept, s, 2)  # the kept records resume: the settings guard accepts them
    assert again.results()["LoRA r=1|seed0"]["exact_match"] == 0.25
    assert rm.write_report(again, s, "quick", a, 0.0, [], [], []) == 0  # writing from the copy itself
    assert (out / "more-quick.md").read_text() == first
    with pytest.raises(SystemExit, match="other settings"):
        rm.Run(kept, {**s, "steps": 31}, 1)


def test_a_missing_matplotlib_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    """The plot ends every run: without the [bench] extra it says so at once, not after hours of training."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else find_spec(name, *a)
    )
    with pytest.raises(SystemExit) as exit_:
        rm.main(["--quick", "--report-only", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and "needs matplotlib (the [bench] extra)" in err[-1]
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


def test_the_base_weights_are_part_of_the_settings(tmp_path):
    s = dict(rm.SETTINGS["quick"])
    gguf = {"source": "gguf", "hub_id": "x/y", "file": "m.gguf", "sha256": "a" * 64}
    rm.Run(tmp_path / "new", s, 1, weights=gguf)
    rm.Run(tmp_path / "new", s, 1, weights=gguf)  # the same weights: resumes
    with pytest.raises(SystemExit, match=r"other settings \(weights differ\)"):
        rm.Run(tmp_path / "new", s, 1, weights={"source": "hub", "hub_id": "x/y", "revision": "abc"})
    assert "sha256 " + "a" * 64 in rm.weights_note(rm.Run(tmp_path / "new", s, 1))  # --report-only reads it
    rm.Run(tmp_path / "old", s, 1)  # a record from before weights were recorded ...
    with pytest.raises(SystemExit, match=r"weights differ"):
        rm.Run(tmp_path / "old", s, 1, weights=gguf)  # ... cannot be resumed with any weights
    assert "not recorded" in rm.weights_note(rm.Run(tmp_path / "old", s, 1))
