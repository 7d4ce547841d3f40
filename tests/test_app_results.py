"""What the Compare results say and how they are exported, in process: escaped names and outputs, the
answer strip, errors gathered by message and cut at a word, Stop marking each column, exports named by
time and cleaned up, the score and cost summaries; and the Load tab's names, bases and unload."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import threading
import time

import pytest
from app_fixture import TINY_PRESETS, build_tiny_assets

from app_backend.exports import PREFIX, clean_exports, write_exports
from app_backend.model_info import modules_table_html
from app_backend.registry import AppInputError, Registry
from app_backend.render import md_escape
from app_backend.results import (
    agreement_html,
    answer_strip_html,
    clip,
    column_errors,
    compare_json,
    mark_stopped,
    results_csv,
)
from app_backend.service import AppService
from app_backend.tabs.compare import Run
from app_backend.tabs.hybrids import cost_summary_rows
from app_backend.tabs.load import adapter_bases, unique_name

XSS = "<img src=x onerror=alert(1)>"


def col(name, text="", ids=(1,), error=None, state="done"):
    return {"name": name, "model": name, "text": text, "token_ids": list(ids), "error": error, "state": state}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    build_tiny_assets(root, presets=TINY_PRESETS)
    return root


def test_names_and_outputs_are_text_in_every_rendering():
    cols = [col("a|b|c", "4 | 5"), col(XSS, f"say {XSS}"), col("plain", error="boom")]
    for rendered in (agreement_html(cols, "4"), answer_strip_html(cols, "4")):
        assert "<img" not in rendered and "&lt;img src=x onerror=alert(1)&gt;" in rendered
    table = agreement_html(cols, "4")
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    assert len(rows) == 4 and all(r.count("<td>") == 5 for r in rows[1:])  # a | shifts no column
    assert "<td>a|b|c</td>" in table
    assert md_escape(XSS) == "&lt;img src=x onerror=alert\\(1\\)&gt;" and md_escape("a|b") == "a\\|b"


def test_answer_strip_marks_each_column():
    strip = answer_strip_html([col("one", "It is 42."), col("two", "41"), col("three", error="x")], "42")
    chips = re.findall(r"class='answer-chip (\w+)'", strip)
    assert chips == ["right", "wrong", "none"] and "✓ 1 · one" in strip and "✗ 2 · two" in strip
    assert "reference answer <code>42</code>" in strip
    assert re.findall(r"answer-chip (\w+)", answer_strip_html([col("one", "42")])) == ["none"]


def test_errors_gathered_by_message_and_cut_at_a_word():
    msg = "The prompt is too long: 600 tokens, the limit is 512. " + "Shorten it please. " * 30
    cols = [col("a", error=msg), col("b", error="other"), col("c", error=msg), col("d", "ok")]
    lines = column_errors(cols)
    assert len(lines) == 2 and lines[0].endswith("(columns 1 a, 3 c)") and lines[1] == "other (column 2 b)"
    cut = clip(msg, 60)
    assert cut.endswith("…") and len(cut) <= 61 and msg.startswith(cut[:-1])
    assert cut[:-1].split()[-1] in msg.split()  # the last word is whole
    assert clip("short", 60) == "short"


def test_stop_marks_every_unfinished_column():
    cols = [
        col("done", "x", state="done"),
        {**col("mid", "x y", ids=(1, 2, 3), state="generating"), "decode_tokens_per_s": 12.5},
        col("loading", ids=(), state="loading"),
        col("waiting", ids=(), state="waiting"),
        col("failed", ids=(), error="boom", state="error"),
    ]
    before_done = dict(cols[0])
    mark_stopped(cols)
    assert cols[0] == before_done and cols[4]["state"] == "error"
    assert cols[1]["stats"] == "stopped after 3 tokens · decode 12.5 tok/s" and cols[1]["stopped"] is True
    assert cols[2]["stats"] == cols[3]["stats"] == "not run: stopped before it started"
    assert not any("generating" in c.get("stats", "") or "loading" in c.get("stats", "") for c in cols)


def test_exports_are_named_by_time_and_old_ones_go(tmp_path):
    result = compare_json("1 2 3", [{**col("a", "4"), "settings": {}}], "4")
    csv_path, json_path = write_exports(result, tmp_path)
    assert re.fullmatch(rf"{PREFIX}\d{{8}}T\d{{6}}Z-[0-9a-f]{{6}}\.csv", csv_path.name)
    assert (
        json_path.with_suffix(".csv") == csv_path and json.loads(json_path.read_text())["prompt"] == "1 2 3"
    )
    row = next(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert row["prompt"] == "1 2 3" and row["reference_answer"] == "4" and row["stopped"] == ""
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    # an hour-old export and anything beyond the newest KEEP go; other files stay
    old = tmp_path / f"{PREFIX}old.csv"
    old.write_text("x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    (tmp_path / "notes.txt").write_text("mine")
    assert clean_exports(tmp_path) == 1 and not old.exists() and (tmp_path / "notes.txt").exists()
    for _ in range(5):
        write_exports(result, tmp_path)
    assert clean_exports(tmp_path, keep_files=4) == 8  # 12 export files, the 4 newest kept
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(PREFIX)]) == 4


def test_results_csv_has_one_row_per_column_with_the_run():
    result = compare_json("q", [{**col("a"), "settings": {"seed": 0}}, {**col("b"), "settings": {}}], None)
    rows = list(csv.DictReader(io.StringIO(results_csv(result))))
    assert [r["name"] for r in rows] == ["a", "b"] and {r["time_utc"] for r in rows} == {result["time_utc"]}


def test_score_table_modules_by_models_with_base_and_heuristic(tmp_path):
    meta = {
        "per_module": {"arithmetic__mul": 0.25, "numbers__gcd": 0.5},
        "base_per_module": {"arithmetic__mul": 0.0, "numbers__gcd": 0.125},
        "heuristic_per_module": {"arithmetic__mul": 0.05, "numbers__gcd": 0.1},
        "eval": "val.jsonl (360 rows)",
    }
    (tmp_path / "a").mkdir()
    registry = {
        "models": [
            {"name": "base", "kind": "causal_lm", "path": "a", "group": "language"},
            {"name": XSS, "kind": "adapter", "path": "a", "base": "base", "group": "language", "meta": meta},
        ]
    }
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    reg = Registry.from_dir(tmp_path)
    table = modules_table_html([reg.entries[XSS]])
    head = re.findall(r"<th>(.*?)</th>", table)
    assert head == ["", "&lt;img src=x onerror=alert(1)&gt;", "base alone (base)", "no-learning heuristic"]
    assert re.findall(r"<th class='row'>(.*?)</th>", table) == ["arithmetic: mul", "numbers: gcd"]
    assert re.findall(r"<td class='num'>(.*?)</td>", table) == [
        "0.250",
        "0.000",
        "0.050",
        "0.500",
        "0.125",
        "0.100",
    ]


def test_cost_summary_five_rows():
    before = {
        "params": {"total": 1000},
        "flops_per_token": {"total": 3.0e6},
        "standalone": {"att": {"flops_per_token": 2.0e6}, "ssm": {"flops_per_token": 1.0e6}},
    }
    after = {"params": {"total": 800}, "flops_per_token": {"total": 2.0e6}}
    rows = cost_summary_rows(before, after, 4, 3)
    assert [r["cost"] for r in rows] == [
        "parameters",
        "FLOPs per token",
        "× att alone",
        "× ssm alone",
        "(block, component) pairs run",
    ]
    assert rows[0] == {"cost": "parameters", "full": "1,000", "pruned": "800", "change": "-20.0 %"}
    assert rows[1]["full"] == "3 M" and rows[2]["full"] == "1.50×" and rows[3]["pruned"] == "2.00×"
    assert rows[4]["change"] == "-25.0 %"


def test_load_names_bases_and_unload(assets, tmp_path):
    svc = AppService(Registry.from_dir(assets))
    assert adapter_bases(svc.registry) == ["tiny-base"]
    with pytest.raises(
        AppInputError, match="'mad/attention' is not a base for adapters here: pick one of tiny-base"
    ):
        svc.load(str(assets / "language/lora"), base="mad/attention", session="s")
    own: dict[str, str] = {}
    assert unique_name("loaded: x", "k1", own) == "loaded: x"
    own["loaded: x"] = "k1"
    assert unique_name("loaded: x", "k1", own) == "loaded: x"  # the same folder again: the same name
    assert unique_name("loaded: x", "k2", own) == "loaded: x (2)"
    for sub in ("one", "two"):
        shutil.copytree(assets / "mad/hybrid", tmp_path / sub / "hybrid")
    a = svc.load(str(tmp_path / "one/hybrid"), session="s")
    b = svc.load(str(tmp_path / "two/hybrid"), session="s")
    assert (a["name"], b["name"], b["renamed"]) == ("loaded: hybrid", "loaded: hybrid (2)", True)
    svc.load(str(tmp_path / "one/hybrid"), session="t")  # another page holds the first one too
    key = svc.sessions["s"]["loaded: hybrid"]
    assert svc.unload("loaded: hybrid", "s") == "Unloaded loaded: hybrid."
    assert svc.loaded_names("s") == ["loaded: hybrid (2)"] and key in svc.pulled  # still page t's
    svc.unload("loaded: hybrid", "t")
    assert key not in svc.pulled and key not in svc.cache.stats()["loaded"]
    with pytest.raises(AppInputError, match="not one of the models this page loaded"):
        svc.unload("loaded: hybrid", "s")


def test_stop_ends_a_run_between_tokens(assets):
    svc = AppService(Registry.from_dir(assets))
    run = Run(prompt="1 2 3")
    seen = []

    def press_stop():  # Stop from another thread once the first column is generating
        while not any(c.get("state") == "generating" and c["token_ids"] for c in run.cols):
            time.sleep(0.001)
        run.stop.set()

    presser = threading.Thread(target=press_stop)
    presser.start()
    for cols in svc.compare("1 2 3", ["mad/attention", "mad/mamba"], 256, run=run, chat=False):
        seen.append([c["state"] for c in cols])
    presser.join()
    cols = mark_stopped(run.snapshot())
    assert 0 < len(cols[0]["token_ids"]) < 256 and cols[0]["stats"].startswith("stopped after")
    assert cols[1]["stats"] == "not run: stopped before it started"  # the second never started
    assert "done" not in [s for states in seen for s in states]


class SlowStepService(AppService):
    """The real service, whose run waits at ``gate`` after its first draw: a model load that outlasts
    Stop's wait (a cold SmolLM2 load takes longer than STOP_WAIT_S)."""

    gate = threading.Event()

    def compare(self, prompt, models, max_new_tokens, **kw):
        runs = super().compare(prompt, models, max_new_tokens, **kw)
        yield next(runs)
        if prompt == "slow":
            assert self.gate.wait(60)
        yield from runs


def test_a_stop_that_outwaits_a_step_leaves_run_disabled_and_the_old_run_never_draws_again(
    assets, monkeypatch
):
    """Stop during a step longer than its wait draws the stopped state but leaves Run disabled (the run's
    own last draw enables it); a run replaced by a newer one from the same page draws nothing over it."""
    import gradio as gr

    from app_backend.ui import compare as ui
    from app_backend.ui.common import TabContext

    monkeypatch.setattr(ui, "STOP_WAIT_S", 0.2)
    svc = SlowStepService(Registry.from_dir(assets))
    with gr.Blocks() as demo:
        ui.build(TabContext(svc))
    fns = {bf.fn.__name__: bf.fn for bf in demo.fns.values() if bf.fn is not None}
    compare, stop_run = fns["compare"], fns["stop_run"]
    page = type("Request", (), {"session_hash": "page"})()
    settings = ("greedy", 0, 1.0, 0, False)

    old = compare("slow", ["mad/attention"], 4, *settings, request=page)
    next(old)  # its first draw; then it waits in its slow step
    later = []
    puller = threading.Thread(target=lambda: later.extend(old))  # Gradio pulling the run's updates
    puller.start()
    time.sleep(0.1)
    stopped = stop_run(page)
    assert "Stopped" in stopped[1] and stopped[-1] == gr.skip()  # drawn, Run not enabled
    new = compare("1 2 3", ["mad/attention"], 4, *settings, request=page)  # e.g. through the API
    next(new)
    SlowStepService.gate.set()
    puller.join(60)
    assert later == []  # the replaced run drew nothing over the new one
    last = list(new)[-1]
    assert "Done: 1 of 1" in last[1] and isinstance(last[-1], gr.Button) and last[-1].interactive
