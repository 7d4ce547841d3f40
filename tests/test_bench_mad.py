"""bench/reproduce_mad.py and bench/mad_calibrate.py on tiny settings: the attention shape, memorization's
size, the records' settings guard (arch lr included), the transfer row's frozen weights, resumption and
the report (JSON + Markdown) from the records alone."""

import dataclasses
import json

import pytest
import torch

from bench import mad_calibrate
from bench import reproduce_mad as rm

TASKS = {"in_context_recall": dict(seq_len=16), "memorization": dict(vocab_size=16, seq_len=8)}
TINY = dataclasses.replace(
    rm.FULL,
    name="tiny",
    width=16,
    blocks=2,
    batch_tokens=64,
    steps={t: 3 for t in TASKS},
    num_train={t: 16 for t in TASKS},
    num_valid=8,
    num_test=8,
    lr_grid=(1e-3, 3e-3),
    arch_lr_grid=(0.01, 0.05),
    arch_warmup=0.34,
    seeds=(0, 1),
    tasks=TASKS,
    lr_warmup=1,
    ckpt_every=10**6,
)
ROWS = ("hybrid-uniform", "hybrid-searched", "hybrid-transfer", "hand-striped-ma")


def _flat(mixture):
    return [w for block in mixture for w in block]


def test_attention_has_heads_of_8_dims_with_rotary_on_every_dim():
    """MAD-lab's shape. GPT-NeoX's rotary_pct 0.25 on 16-dim heads rotated 4 dims at frequencies 1 and
    0.01, so offsets 1, 20 and 26 got nearly the same rotation (in-context recall stayed at the heuristic)."""
    from mad_models.training.models import rotary_dims

    m = rm.Models(rm.FULL)
    att = m.component("attention", "in_context_recall", 0)
    assert rotary_dims(att) == (8, 8)
    assert att.config.num_attention_heads == rm.FULL.width // 8
    assert att.config.hidden_act == "silu" and hasattr(att.model.layers[0].mlp, "gate_proj")  # SwiGLU
    for model in (att, rm.Models(rm.FULL).component("attention", "memorization", 0)):
        rot = next(mod for n, mod in model.named_modules() if n.endswith("rotary_emb"))
        pos = torch.arange(32).unsqueeze(0)
        cos, sin = rot(torch.zeros(1, 32, 8), pos)
        angle = torch.cat([cos[0], sin[0]], -1)  # (T, 2 * head_dim)
        for far in (20, 26):  # offset 1 is told apart from far offsets
            assert (angle[1] - angle[far]).norm() > 1.0
    from mad_models.training import build_model

    assert rotary_dims(build_model("gpt_neox", 16, width=64)) == (8, 8)
    # Mamba: MAD-lab's d_state 4 in the bench; build_model's default stays 16 (ListOps, the bundled assets)
    assert m.component("mamba", "in_context_recall", 0).config.state_size == 4
    assert build_model("mamba", 16, width=32, layers=1).config.state_size == 16


def test_memorization_is_mads_setting_and_its_rows_see_256_sequences():
    s = rm.FULL
    assert s.num_train["memorization"] == 256
    m = rm.Models(s)
    assert m.vocab("memorization") >= 256
    assert len(m.data("memorization", "train", 0)) == 256
    assert all(n >= 12_800 for t, n in s.num_train.items() if t != "memorization")


def test_hand_designs_are_one_hot_pruned_hybrids_costing_what_they_keep():
    m = rm.Models(TINY)
    striped = m.one_hot("in_context_recall", 0, [[1.0, 0.0], [0.0, 1.0]])
    assert rm.Bench.pattern_of(striped) == "AM"
    both = m.hybrid("in_context_recall", 0)
    p_striped, f_striped = rm.lm_cost(striped, 16)
    p_both, f_both = rm.lm_cost(both, 16)
    assert p_striped < p_both and f_striped < f_both
    assert not striped.proj_in and not striped.proj_out  # one component per block: no projectors
    wide = m.matched_width("attention", "in_context_recall")
    assert wide > TINY.width and wide % 8 == 0


def _bench(tmp_path, s=TINY):
    models = rm.Models(s)
    records = rm.RunRecords(tmp_path / "records", rm.guard_of(s, models))
    return rm.Bench(s, records, tmp_path / "work", models=models)


def test_records_refuse_other_settings_the_arch_lr_grid_included(tmp_path):
    models = rm.Models(TINY)
    rm.RunRecords(tmp_path, rm.guard_of(TINY, models))
    rm.RunRecords(tmp_path, rm.guard_of(TINY, models))  # the same settings: accepted
    other = dataclasses.replace(TINY, arch_lr_grid=(0.003,))
    with pytest.raises(SystemExit, match="other settings.*setting"):
        rm.RunRecords(tmp_path, rm.guard_of(other, rm.Models(other)))
    # and a run's own key holds its arch lr: two arch lrs are two records
    a = rm.Job("hybrid-searched", "in_context_recall", 0, 1e-3, 0.01)
    b = rm.Job("hybrid-searched", "in_context_recall", 0, 1e-3, 0.05)
    assert a.key != b.key


def test_tiny_bench_end_to_end_transfer_frozen_resume_and_report(tmp_path, one_thread):
    bench = _bench(tmp_path)
    bench.loop(ROWS, list(TASKS), poll=0.01)
    done = bench.records.all()
    # lr choice: seed 0 runs the grid; the search runs every arch lr at the uniform hybrid's lr
    searches = [r for r in done.values() if r["row"] == "hybrid-searched" and r["seed"] == 0]
    assert sorted({r["arch_lr"] for r in searches}) == [0.01, 0.05] and len({r["lr"] for r in searches}) == 1
    assert searches[0]["lr"] == bench.chosen("hybrid-uniform")[0]
    # each row chose its lr on in-context recall (seed 0) and trains every other task at it
    hand_lr = bench.chosen("hand-striped-ma")[0]
    assert {
        r["lr"] for r in done.values() if r["row"] == "hand-striped-ma" and r["task"] == "memorization"
    } == {hand_lr}
    # the transfer row: the mean of the *other* task's searched mixture, frozen while its weights trained
    for task, other in (("in_context_recall", "memorization"), ("memorization", "in_context_recall")):
        for seed in TINY.seeds:
            tr = bench.record("hybrid-transfer", task, seed)
            want = bench.record("hybrid-searched", other, seed)["mixture"]
            own = bench.record("hybrid-searched", task, seed)["mixture"]
            assert _flat(tr["mixture"]) == pytest.approx(_flat(want), abs=2e-4)
            assert _flat(tr["mixture"]) != pytest.approx(_flat(own), abs=1e-3)
    # a hand design runs one component per block
    for r in done.values():
        if r["row"] == "hand-striped-ma":
            assert all(sorted(b) == [0.0, 1.0] for b in r["mixture"])
        assert r["params"] > 0 and r["flops_per_token"] > 0
    n = len(done)
    # the time estimate counts exactly the runs the loop made
    ones = {k: dict.fromkeys(TASKS, 1.0) for k in ("hybrid", "hand")}
    assert rm.estimate(TINY, ROWS, speed=ones)[0] == n
    # resumption: nothing left to do, nothing re-run
    again = _bench(tmp_path)
    again.loop(ROWS, list(TASKS), poll=0.01)
    assert len(again.records.all()) == n
    # the report, from the records alone
    d = rm.write_report(again, tmp_path / "mad.md", tmp_path / "mad.json", "cmd")
    js = json.loads((tmp_path / "mad.json").read_text())
    for row in ROWS:
        for task in TASKS:
            cell = js["rows"][row]["tasks"][task]
            assert len(cell["test"]) == 2 and cell["params"] > 0 and cell["flops_per_token"] > 0
            assert cell["heuristic"] == d["baselines"][task]["heuristic"]
    assert js["selection"]["items"] == [] or "agree" in js["selection"]
    assert set(js["transfer"]["tasks"]) == set(TASKS)
    text = (tmp_path / "mad.md").read_text()
    assert "hand: striped M/A" in text and "FLOPs/token" in text and "Programming that transfers" in text
    # the app's MAD tab shows the same rows from the JSON, with the setting that made them
    from app_backend.tabs.mad import bench_table_md

    shown = bench_table_md(tmp_path / "mad.json")
    assert "| hand: striped M/A |" in shown and "Setting `tiny`" in shown
    assert f"{js['rows']['hybrid-uniform']['tasks']['in_context_recall']['params']:,}" in shown
    assert "No MAD benchmark report" in bench_table_md(tmp_path / "absent.json")


def test_calibration_run_records_curve_and_is_cached(tmp_path, one_thread):
    run = mad_calibrate.parse_run("attention:in_context_recall:4:3e-3")
    r = mad_calibrate.calibrate(TINY, run, every=2, work=tmp_path)
    assert sorted(r["checkpoints"]) == ["2", "4"]
    assert all(0.0 <= v <= 1.0 for v in r["checkpoints"].values()) and r["cpu_s_per_step"] > 0
    assert r["batch_size"] == TINY.batch_tokens // 16 and r["chance"] == pytest.approx(1 / 8)
    assert not list(tmp_path.glob("run-*"))  # the finished run's checkpoints are gone, its record kept
    assert mad_calibrate.calibrate(TINY, run, every=2, work=tmp_path) == r  # cached: nothing re-trained
    assert "attention" in mad_calibrate.table([r]) and "| 4 |" in mad_calibrate.table([r])


def test_calibration_run_specs_and_overrides():
    with pytest.raises(ValueError, match="kind must be"):
        mad_calibrate.parse_run("gpt:in_context_recall:10:1e-3")
    with pytest.raises(ValueError, match="steps must be an int"):
        mad_calibrate.parse_run("mamba:in_context_recall:ten:1e-3")
    assert mad_calibrate.parse_run("mamba:memorization:10:3e-3")["lr"] == 3e-3
    s = mad_calibrate.with_overrides(rm.FULL, ["batch_tokens=1024", "width=32"])
    assert (s.batch_tokens, s.width) == (1024, 32)
    with pytest.raises(ValueError, match="field=value"):
        mad_calibrate.with_overrides(rm.FULL, ["tasks=1"])


def test_dry_run_estimates_from_measured_cpu_seconds_per_step(tmp_path, monkeypatch, capsys):
    speed = {k: dict.fromkeys(rm.FULL.tasks, 0.5) for k in mad_calibrate.SPEED_KINDS}
    monkeypatch.setattr(rm, "SPEED_FILE", tmp_path / "mad-speed.json")
    with pytest.raises(SystemExit):
        rm.main(["--dry-run"])
    assert "measure it first with bench/mad_calibrate.py --speed" in capsys.readouterr().err
    rm.SPEED_FILE.write_text(json.dumps({"cpu_s_per_step": speed}))
    runs, seconds = rm.estimate(rm.FULL)
    quick_runs, quick_seconds = rm.estimate(rm.QUICK)
    assert quick_runs == runs and quick_seconds < seconds / 4  # the quick setting: a fifth of the steps
    # every task's steps count, the search's arch steps twice
    one_task = rm.estimate(rm.FULL, rows=("attention",), tasks=["fuzzy_recall"])
    assert one_task == (2, 2 * rm.FULL.steps["fuzzy_recall"] * 0.5)
    assert rm.main(["--dry-run", "--workers", "2"]) == 0
    assert f"= {runs} runs; about {seconds / 3600:.1f} CPU-hours" in capsys.readouterr().out
