"""bench/reproduce_listops.py end to end at a tiny size: every row (hand designs included) lands in the JSON
with params and FLOPs/token, predictions are kept, a re-run resumes from the records, other settings are
refused, and the budgets fit."""

from __future__ import annotations

import copy
import json

import pytest

from bench import reproduce_listops as rl
from bench.run_records import RunRecords, SettingsMismatch

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = rl.Setting(
    name="tiny", steps=1, batch_size=8, width=16, blocks=4, num_train=48, num_arch=16, num_val=16,
    num_test=24, lr_grid=(3e-3,), arch_lr_grid=(0.05,), seeds=(0, 1), warmup_steps=0,
    data={"max_length": 40},
)  # fmt: skip


def test_hand_design_patterns():
    assert [rl.pattern(h, 4) for h in rl.HAND] == ["AMAM", "MAMA", "MMAM", "AAMM", "MMAA"]
    assert rl.pattern("hand-mamba-heavy", 8) == "MMMMAMMM"  # Jamba's 1 in 8
    with pytest.raises(ValueError, match=">= 4 blocks"):
        rl.pattern("striped-am", 2)


def test_a_tiny_run_writes_every_row_resumes_and_refuses_other_settings(tmp_path, capsys):
    records, out = tmp_path / "runs", tmp_path / "results" / "listops"
    bench = rl.Bench(copy.deepcopy(TINY), records, tmp_path / "scratch")
    for row in rl.ROWS:
        bench.results_of(row)
    doc = rl.report(bench, rl.ROWS, out, "tiny")
    rows = doc["rows"]
    assert set(rows) == {"chance", "majority", *rl.ROWS} and not doc["unfinished"]
    assert [r for r in rows if "striped" in r or "hand" in r] == list(rl.HAND)
    assert rows["chance"]["test_mean"] == 0.1
    for name in rl.ROWS:
        r = rows[name]
        assert len(r["test_per_seed"]) == 2 and r["test_min"] <= r["test_mean"] <= r["test_max"]
        assert r["params"] > 0 and r["flops_per_token"] > 0
    # a pruned hand design costs less than the full hybrid, which costs more than either component
    full = rows["hybrid-uniform"]
    assert all(rows[h]["flops_per_token"] < full["flops_per_token"] for h in rl.HAND)
    assert full["params"] > max(rows["attention"]["params"], rows["mamba"]["params"])
    matched = rows["matched-component"]
    assert abs(matched["params"] - full["params"]) < 0.2 * full["params"]
    # searched mixtures are recorded; the pruned row uses each seed's argmax
    assert len(doc["searches"]) == 2
    for search, onehot in zip(
        doc["searches"], rows["hybrid-searched-pruned"]["mixture_per_seed"], strict=True
    ):
        assert onehot == rl.one_hot_argmax(search["mixture"])
    # per-example predictions kept; paired tests for the key pairs
    recs = RunRecords(records, rl.settings_record(TINY)).all()
    assert all(len(r["test_predictions"]) == TINY.num_test for r in recs.values() if r["row"] != "search")
    pairs = {(p["a"], p["b"]) for p in doc["paired_tests"]}
    assert ("hybrid-searched", doc["best_component_on_val"]) in pairs
    assert ("hybrid-searched-pruned", doc["best_hand_design_on_val"]) in pairs
    assert json.loads(out.with_suffix(".json").read_text())["rows"].keys() == rows.keys()
    md = out.with_suffix(".md").read_text()
    assert "hand: striped, attention first | AMAM |" in md and "McNemar" in md
    # a re-run reads the records: nothing is trained again
    n = len((records / "results.jsonl").read_text().splitlines())
    again = rl.Bench(copy.deepcopy(TINY), records, tmp_path / "scratch")
    for row in rl.ROWS:
        again.results_of(row)
    assert len((records / "results.jsonl").read_text().splitlines()) == n
    # other settings in the same records folder are refused, with what differs
    other = copy.deepcopy(TINY)
    other.steps = 2
    with pytest.raises(SettingsMismatch, match="steps differ"):
        rl.Bench(other, records, tmp_path / "scratch")
    # --report-only on an empty folder says so
    with pytest.raises(SettingsMismatch, match="holds no records"):
        rl.main(["--report-only", "--records", str(tmp_path / "none")])


def test_budgets_fit_and_dry_run_prints_them(capsys):
    runs, seconds = rl.estimate(rl.FULL)
    assert seconds / 2 <= 3 * 3600  # two processes on two quiet cores
    assert rl.estimate(rl.QUICK)[1] / 2 <= 30 * 60 and rl.estimate(rl.QUICK)[0] == runs
    assert rl.main(["--dry-run"]) == 0
    assert f"{runs} training runs of {rl.FULL.steps} steps" in capsys.readouterr().out
