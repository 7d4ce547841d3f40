"""bench/mad_calibrate.py and reproduce_mad's budget: bad run specs are refused, a run is cached, the
full setting's estimate stays within its 2-hour budget on 2 processes."""

from __future__ import annotations

import copy
import json

import pytest

from bench import mad_calibrate, reproduce_mad

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("transformer:in_context_recall:10:1e-3", "arch must be one of"),
        ("mamba:recall:10:1e-3", "task must be one of"),
        ("mamba:in_context_recall:10", "expected arch:task:steps:lr"),
        ("mamba:in_context_recall:0:1e-3", "steps >= 1"),
        ("attention:in_context_recall:10:1e-3:30", "multiple of 4"),
    ],
)
def test_bad_run_specs_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        mad_calibrate.parse_run(spec, 64)
    assert mad_calibrate.parse_run("mamba:memorization:4:3e-3", 32)["width"] == 32


def test_a_calibration_run_reports_checkpoints_baselines_and_is_cached(tmp_path):
    s = copy.deepcopy(reproduce_mad.QUICK)
    s.num_train, s.num_valid, s.num_test = 64, 16, 16
    run = mad_calibrate.parse_run("attention:memorization:4:3e-3:16", s.width)
    res = mad_calibrate.calibrate(s, run, every=2, work=tmp_path)
    assert sorted(res["checkpoints"]) == [2, 4]
    assert all(0.0 <= v <= 1.0 for v in res["checkpoints"].values())
    assert res["chance"] == pytest.approx(
        reproduce_mad.chance_accuracy("memorization", vocab_size=64), abs=1e-4
    )
    assert 0.0 <= res["heuristic_valid"] <= 1.0 and res["s_per_step"] > 0
    (cached,) = tmp_path.glob("attention-memorization-4-*.json")
    assert json.loads(cached.read_text())["test"] == res["test"]
    # a re-run reads the cached result; other data sizes are another run
    assert mad_calibrate.calibrate(s, run, every=2, work=tmp_path) == json.loads(cached.read_text())
    s.num_train = 128
    mad_calibrate.calibrate(s, run, every=2, work=tmp_path)
    assert len(list(tmp_path.glob("attention-memorization-4-*.json"))) == 2


def test_full_setting_estimate_fits_two_hours_on_two_processes(capsys):
    runs, seconds = reproduce_mad.estimate(reproduce_mad.FULL)
    assert runs == len(reproduce_mad.ROWS) * len(reproduce_mad.FULL.tasks) * 3
    assert seconds / 2 <= 2 * 3600
    quick_runs, quick_seconds = reproduce_mad.estimate(reproduce_mad.QUICK)
    assert quick_seconds / 2 <= 30 * 60 and quick_runs == runs
    assert reproduce_mad.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"= {runs} runs of {reproduce_mad.FULL.steps} steps" in out and "min on 1 thread" in out
