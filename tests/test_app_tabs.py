"""The pieces behind the Compare presets and the Adapter sizes, Hybrid and MAD tabs, without a server."""

from __future__ import annotations

import gradio as gr
import pytest
import torch

from app_backend import formatting as fmt
from app_backend.registry import AppInputError
from app_backend.tabs.hybrids import cost_diff_rows
from app_backend.tabs.mad import TASK_DESCRIPTIONS, mad_baselines, preset
from app_backend.tabs.sizes import grouped_bars_html, layer_of, per_layer_rows
from app_backend.ui.common import errors_in_place
from mad_models.mad import TASKS, make_task


def test_formatting():
    assert fmt.count(1874728) == "1,874,728"
    assert fmt.size(512) == "512 B" and fmt.size(4608) == "4.50 KiB" and fmt.size(1874728) == "1.79 MiB"
    assert fmt.accuracy(0.71875) == "0.719" and fmt.accuracy(None) == "—"
    assert fmt.number(0.3333333) == "0.3333" and fmt.number(460800) == "460,800"


def test_errors_in_place_shows_the_message_in_the_status_and_clears_outputs():
    @errors_in_place("", None)
    def handler(fail: str | None):
        if fail == "input":
            raise AppInputError("the seed must be >= 0")
        if fail == "bug":
            raise KeyError("oops")
        return "done <fast>", "<b>result</b>", 3

    status, html, n = handler(None)
    assert "tab-ok" in status and "done &lt;fast&gt;" in status and html == "<b>result</b>" and n == 3
    status, html, n = handler("input")
    assert "tab-error" in status and "the seed must be &gt;= 0" in status and (html, n) == ("", None)
    status, *_ = handler("bug")  # unexpected: one line naming the handler, no trace
    assert "Something went wrong in handler: KeyError" in status and "Traceback" not in status

    @errors_in_place(gr.skip())
    def streaming():
        yield "half", 1
        raise gr.Error("stopped")

    assert [r[0].split("'>")[1][:4] for r in streaming()] == ["half", "⚠ <b"]


def test_per_layer_rows_and_grouped_bars():
    modules = {
        "A": [
            {"name": "base_model.model.model.layers.0.self_attn.q_proj", "type": "q_proj", "params": 10},
            {"name": "base_model.model.model.layers.1.self_attn.q_proj", "type": "q_proj", "params": 7},
        ],
        "B": [{"name": "base_model.model.model.layers.1.self_attn.v_proj", "type": "v_proj", "params": 5}],
    }
    assert layer_of("model.layers.12.mlp.up_proj") == 12 and layer_of("lm_head") is None
    assert per_layer_rows(modules) == [
        {"layer": "0", "module types": "q_proj", "A": 10, "B": 0},
        {"layer": "1", "module types": "q_proj, v_proj", "A": 7, "B": 5},
    ]
    svg = grouped_bars_html(
        [{"module type": "q_proj", "A": 17, "B": 0}, {"module type": "v_proj", "A": 0, "B": 5}], ["A", "B"]
    )
    assert svg.count("<rect class='bar'") == 4 and "data-value='17'" in svg
    assert svg.count("class='legend-item'") == 2 and ">bar<" not in svg


def test_cost_diff_rows_line_up_before_and_after():
    rows = cost_diff_rows(
        {"params": {"total": 100, "mixture": 4}, "note": "x"}, {"params": {"total": 40}, "note": "x"}
    )
    by = {r["item"]: r for r in rows}
    assert by["params / total"] == {
        "item": "params / total",
        "before": 100,
        "after": 40,
        "Δ": -60,
        "Δ %": -60.0,
    }
    assert by["params / mixture"]["after"] is None and by["params / mixture"]["Δ"] is None
    assert by["note"]["Δ"] is None


def test_mad_baselines_on_a_hand_made_batch():
    ign = -100
    x = torch.tensor([[1, 9, 2, 10, 1, 9, 9, 2]])
    y = torch.tensor([[ign, ign, ign, ign, ign, 9, ign, 10]])
    base = mad_baselines("in_context_recall", x, y)
    assert base["chance"] == 1 / 8  # values are the upper half of the 16-token vocabulary
    # position 5: seen 9 (twice with this one), 10 once -> 9 right; position 7: 9 three times -> wrong
    assert base["heuristic"] == 0.5


def test_every_mad_task_has_a_description_and_a_preset():
    assert set(TASK_DESCRIPTIONS) == set(TASKS)
    for task in TASKS:
        settings = {"seq_len": 32, **({"num_tokens_to_copy": 4} if task == "selective_copying" else {})}
        p = preset(task, settings)
        ids = [int(t) for t in p["prompt"].split()]
        x, y = make_task(task, split="test", seed=12345 + 999, num_examples=1, **settings)
        # a prefix of a test sequence, cut right after a scored position whose target is the answer
        assert ids == x[0, : len(ids)].tolist() and p["next"] == int(y[0, len(ids) - 1]) != -100


def test_bad_threshold_is_refused():
    from app_backend.tabs.hybrids import HybridLab

    class NoService:
        registry = None

    with pytest.raises(AppInputError, match=r"in \[0, 1\)"):
        HybridLab(NoService()).pruned_vs_full("h", 1.5, "1 2", 4)


def test_mad_tab_offers_and_scores_only_the_tasks_a_model_was_trained_on(tmp_path):
    """Compression is MAD's auto-encoder task: a model trained without its decoder is not scored on it."""
    import json

    from app_backend.registry import Registry
    from app_backend.service import AppService

    registry = {
        "models": [
            {"name": "m", "kind": "causal_lm", "path": "m", "group": "mad",
             "meta": {"mad_tasks": {"in_context_recall": {"vocab_size": 16, "seq_len": 32}}}},
        ]
    }  # fmt: skip
    (tmp_path / "m").mkdir()
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    svc = AppService(Registry.from_dir(tmp_path))
    assert svc.mad_tasks() == ["in_context_recall"]
    with pytest.raises(AppInputError, match="not trained on compression"):
        svc.mad_skills("compression", ["m"], 4, 0)


def _registry(tmp_path, models):
    import json

    from app_backend.registry import Registry

    for m in models:
        if m.get("path"):
            (tmp_path / m["path"]).mkdir(parents=True, exist_ok=True)
    (tmp_path / "registry.json").write_text(json.dumps({"models": models}))
    return Registry.from_dir(tmp_path)


def test_compare_presets_come_from_the_language_adapters_once_per_prompt(tmp_path):
    from app_backend.results import reference_answer
    from app_backend.tabs.compare import LABEL_CHARS, compare_presets, preset_choices, preset_note

    add = {"prompt": "What is 2 + 3?", "answer": "5", "module": "arithmetic__add_or_sub"}
    solve = {"prompt": " Solve 2*x = 6 for x.\n", "answer": 3, "module": "algebra__linear_1d"}
    long = {"prompt": "Let f(x) = " + "x + " * 40 + "1. What is f(0)?", "answer": "1", "module": "calculus"}
    reg = _registry(
        tmp_path,
        [
            {"name": "base", "kind": "causal_lm", "path": "base", "group": "language",
             "meta": {"presets": [{"prompt": "not an adapter's", "answer": "x"}]}},
            {"name": "lora", "kind": "adapter", "path": "lora", "base": "base", "group": "language",
             "meta": {"presets": [add, solve, {"prompt": "", "answer": "?"}, "junk", {"answer": "1"}]}},
            {"name": "plain", "kind": "adapter", "path": "plain", "base": "base", "group": "language"},
            {"name": "more", "kind": "adapter", "path": "more", "base": "base", "group": "language",
             "meta": {"presets": [{**add, "answer": "five"}, long]}},
            {"name": "mad/x", "kind": "causal_lm", "path": "madx", "group": "mad",
             "meta": {"presets": [{"prompt": "1 2 3", "answer": "4"}]}},
        ],
    )  # fmt: skip
    presets = compare_presets(reg)
    # registry order, one per prompt (stripped); the first entry's answer; every adapter listing it
    assert [p.prompt for p in presets] == ["What is 2 + 3?", "Solve 2*x = 6 for x.", long["prompt"]]
    assert [p.answer for p in presets] == ["5", "3", "1"]
    assert [p.models for p in presets] == [("lora", "more"), ("lora",), ("more",)]
    labels = [label for label, _ in preset_choices(presets)]
    assert labels[:2] == [
        "[arithmetic__add_or_sub] What is 2 + 3?",
        "[algebra__linear_1d] Solve 2*x = 6 for x.",
    ]
    assert labels[2].startswith("[calculus] Let f(x) = x + x") and labels[2].endswith("…")
    assert len(labels[2]) == LABEL_CHARS
    assert [value for _, value in preset_choices(presets)] == [p.prompt for p in presets]
    # the answer the note promises is the one the agreement view marks against
    note = preset_note(presets[1])
    assert "algebra__linear_1d" in note and "`3`" in note and "lora" in note
    assert reference_answer(reg, presets[1].prompt, ["lora"]) == "3"
    # a registry whose adapters list no presets offers none, without an error
    bare = _registry(
        tmp_path / "bare",
        [
            {"name": "base", "kind": "causal_lm", "path": "base", "group": "language"},
            {"name": "lora", "kind": "adapter", "path": "lora", "base": "base", "group": "language",
             "meta": {"presets": None}},
            {"name": "more", "kind": "adapter", "path": "more", "base": "base", "group": "language",
             "meta": {"presets": "not a list"}},
        ],
    )  # fmt: skip
    assert compare_presets(bare) == [] and preset_choices([]) == []


def test_colliding_preset_labels_are_numbered():
    from app_backend.tabs.compare import LABEL_CHARS, Preset, preset_choices

    start = "What is " + "9" * LABEL_CHARS
    a, b = Preset(start + "1?", "1", "m", ("x",)), Preset(start + "2?", "2", "m", ("x",))
    (la, va), (lb, vb) = preset_choices([a, b])
    assert la != lb and lb == la + " (2)" and (va, vb) == (a.prompt, b.prompt)


def test_text_hybrid_generates_next_to_its_components(tmp_path):
    """The Hybrid tab's text rows: the hybrid first, then each component its registry entry names, each the
    greedy continuation its own generate gives."""
    from tiny import tiny_char_tokenizer, tiny_mamba, tiny_neox
    from transformers import AutoModelForCausalLM

    from app_backend.service import AppService
    from app_backend.tabs.hybrids import text_next_to_components
    from mad_models.hybrid import ManticoreForCausalLM

    tok = tiny_char_tokenizer()
    gpt, mamba = tiny_neox(seed=1, vocab=len(tok), layers=2), tiny_mamba(seed=2, vocab=len(tok), layers=2)
    hybrid = ManticoreForCausalLM.from_components([gpt, mamba], n_blocks=2, mixture=[[0.7, 0.3], [0.2, 0.8]])
    for path, model in (("text/gpt", gpt), ("text/mamba", mamba), ("text/hybrid", hybrid)):
        model.save_pretrained(tmp_path / path)
        tok.save_pretrained(tmp_path / path)
    reg = _registry(tmp_path, [
        {"name": "text/gpt", "kind": "causal_lm", "path": "text/gpt", "group": "text",
         "meta": {"val_bits_per_char": 2.5}},
        {"name": "text/mamba", "kind": "causal_lm", "path": "text/mamba", "group": "text"},
        {"name": "text/hybrid", "kind": "causal_lm", "path": "text/hybrid", "group": "text",
         "meta": {"components": ["text/gpt", "text/mamba"], "val_bits_per_char": 2.25}},
        {"name": "mad/hybrid", "kind": "causal_lm", "path": "text/hybrid", "group": "mad"},
    ])  # fmt: skip
    svc = AppService(reg)
    d = text_next_to_components(svc, "text/hybrid", "To be", 6)
    assert [(r["model"], r["role"], r["val bits/char"]) for r in d["rows"]] == [
        ("text/hybrid", "hybrid", 2.25), ("text/gpt", "component", 2.5), ("text/mamba", "component", None)
    ]  # fmt: skip
    ids = tok("To be", return_tensors="pt").input_ids
    for row, path in zip(d["rows"], ("text/hybrid", "text/gpt", "text/mamba"), strict=True):
        model = AutoModelForCausalLM.from_pretrained(tmp_path / path).eval()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=tok.eos_token_id)
        assert row["continuation"] == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True), path
    assert len({r["continuation"] for r in d["rows"]}) > 1  # three different models, not one answer copied
    with pytest.raises(AppInputError, match="names no components"):
        text_next_to_components(svc, "mad/hybrid", "To be", 6)
