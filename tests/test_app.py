"""The real app (python app.py) on tiny models in a tmp dir, driven through gradio_client."""

from __future__ import annotations

import csv
import html
import json
import os
import re

import pytest
import torch
from app_fixture import MAD_TASKS, TINY_PRESETS, launch_app, stop
from gradio_client import Client
from gradio_client.exceptions import AppError
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

import mad_models  # noqa: F401
from mad_models.mad import chance_accuracy, heuristic_accuracy, make_task, scored_counts
from mad_models.more import adapter_report

N_COLS = 8  # MAX_COMPARE columns
# the compare API answers (results JSON, status, agreement, CSV file, cache line), then per column
# MAX_COMPARE texts, MAX_COMPARE stats lines and MAX_COMPARE cards
HEAD = 7  # results JSON, status, agreement, answer strip, CSV, JSON file, cache line; then the columns


# fixtures (conftest.py): `assets`, the tiny models with presets; `client`, the app on them


def compare(client, prompt, models, max_new=12, mode="greedy", seed=0, temperature=0.8, top_k=0, chat=False):
    out = client.predict(prompt, models, max_new, mode, seed, temperature, top_k, chat, api_name="/compare")
    result = out[0]
    cols = result["results"]
    assert [c["name"] for c in cols] == models
    assert result["settings"]["max_new_tokens"] == max_new and all(c["settings"] for c in cols)
    values = [o.get("value") if isinstance(o, dict) else o for o in out]  # gr.update dicts
    assert values[HEAD : HEAD + len(models)] == [c["text"] for c in cols]  # the columns show the JSON
    for c, line in zip(cols, values[HEAD + N_COLS : HEAD + N_COLS + len(models)], strict=True):
        c["stats"] = html.unescape(re.sub(r"<[^>]+>", "", line))  # the line as the page shows it
    # the CSV and JSON downloads hold the same records
    with open(out[4]["value"] if isinstance(out[4], dict) else out[4], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == models and [r["text"] for r in rows] == [c["text"] for c in cols]
    assert all(r["prompt"] == prompt for r in rows)
    with open(out[5]["value"] if isinstance(out[5], dict) else out[5], encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["prompt"] == prompt and [r["token_ids"] for r in saved["results"]] == [
        c["token_ids"] for c in cols
    ]
    return cols


def greedy_reference(model, tok, prompt, max_new):
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids,
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    return out[0, ids.shape[1] :].tolist()


def test_compare_greedy_base_and_merged_adapters(client, assets):
    names = ["tiny-base", "tiny-base + LoRA (zero)", "tiny-base + LoRA", "tiny-base + MoRe"]
    cols = compare(client, "Hello there", names, max_new=12)
    ids = {c["name"]: c["token_ids"] for c in cols}
    assert all(c["error"] is None and len(c["token_ids"]) >= 1 for c in cols)
    assert all(
        c["stats"].startswith("done · ") and "tok/s" in c["stats"] and c["tokens_per_s"] > 0 for c in cols
    )
    # a zero-initialised adapter merged into the base generates exactly the base's tokens
    assert ids["tiny-base + LoRA (zero)"] == ids["tiny-base"]
    # the app serves adapters unmerged on one shared base, in one batch; the PeftModel alone must agree
    tok = AutoTokenizer.from_pretrained(assets / "language/base")
    base_ref = greedy_reference(
        AutoModelForCausalLM.from_pretrained(assets / "language/base"), tok, "Hello there", 12
    )
    assert ids["tiny-base"] == base_ref
    for name, sub in [("tiny-base + LoRA", "lora"), ("tiny-base + MoRe", "more")]:
        base = AutoModelForCausalLM.from_pretrained(assets / "language/base")
        unmerged = PeftModel.from_pretrained(base, assets / f"language/{sub}").eval()
        assert ids[name] == greedy_reference(unmerged, tok, "Hello there", 12), name
    assert ids["tiny-base + LoRA"] != ids["tiny-base"]  # the random adapter really changes the model


def test_compare_sampling_repeats_with_seed(client):
    a = compare(client, "abc", ["tiny-base"], max_new=16, mode="sample", seed=7, temperature=1.0)
    b = compare(client, "abc", ["tiny-base"], max_new=16, mode="sample", seed=7, temperature=1.0)
    c = compare(client, "abc", ["tiny-base"], max_new=16, mode="sample", seed=8, temperature=1.0)
    assert a[0]["token_ids"] == b[0]["token_ids"]
    assert a[0]["token_ids"] != c[0]["token_ids"]


def test_compare_token_id_models_and_per_column_errors(client):
    cols = compare(client, "1 17 2 18 1", ["mad/attention", "mad/mamba"], max_new=5)
    for c in cols:
        assert len(c["token_ids"]) == 5 and all(0 <= t < 32 for t in c["token_ids"])
        assert c["text"] == " ".join(map(str, c["token_ids"]))
    # text for a token-id model: that column says why, the other column still runs
    cols = compare(client, "hello", ["mad/attention", "tiny-base"], max_new=4)
    assert "token ids" in cols[0]["error"] and cols[0]["text"].startswith("⚠")
    assert cols[1]["error"] is None and cols[1]["token_ids"]
    cols = compare(client, "1 99", ["mad/attention"], max_new=4)
    assert "out of range" in cols[0]["error"]


@pytest.mark.parametrize(
    "prompt,models,max_new,message",
    [
        ("hi", ["tiny-base"], 100_000, "Too many new tokens: 100000 asked, the limit is 256"),
        ("hi", ["tiny-base"], 0, "at least 1"),
        ("x" * 600, ["tiny-base"], 4, "The prompt is too long: 600 tokens, the limit is 512"),
        ("", ["tiny-base"], 4, "The prompt is empty"),
        ("hi", [], 4, "Pick at least one model"),
    ],
)
def test_compare_bad_input_is_a_clean_message(client, prompt, models, max_new, message):
    out = client.predict(prompt, models, max_new, "greedy", 0, 0.8, 0, False, api_name="/compare")
    status = out[1]["value"] if isinstance(out[1], dict) else out[1]
    if message.startswith("The prompt is too long"):  # depends on each model's tokenizer: per column
        assert message in out[0]["results"][0]["error"]
        return
    # the red box every tab uses for errors, in the status line: no pill, no trace
    assert "tab-error" in status and message in status and "Traceback" not in status
    assert out[0] is None  # and no stale results


def test_picking_a_preset_fills_the_prompt_and_the_answer_marks_the_columns(client):
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/compare_preset"]
    props = {c["props"].get("elem_id"): c["props"] for c in client.config["components"]}
    assert props["compare-preset"]["visible"] is True
    offered = info["parameters"][0]["type"]["enum"]  # the dropdown's values: each prompt once
    prompts = [p["prompt"] for presets in TINY_PRESETS.values() for p in presets]
    assert offered == list(dict.fromkeys(prompts)) and len(offered) == 3
    prompt, note = client.predict("What is 7 times 6?", api_name="/compare_preset")
    prompt = prompt["value"] if isinstance(prompt, dict) else prompt
    assert prompt == "What is 7 times 6?"
    assert "arithmetic__mul" in note and "`42`" in note and "tiny-base + MoRe" in note
    # the filled prompt runs, and its preset's answer is the reference each column is marked against
    out = client.predict(
        prompt, ["tiny-base", "tiny-base + MoRe"], 4, "greedy", 0, 0.8, 0, False, api_name="/compare"
    )
    assert out[0]["reference_answer"] == "42"
    assert all(isinstance(r["correct"], bool) for r in out[0]["results"])
    assert "reference answer <code>42</code>" in out[2]
    # a value that is not a preset is refused by the dropdown's own check
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict("What is 8 times 6?", api_name="/compare_preset")
    # a list of one valid preset passes the dropdown's own check: a plain message, not a server error
    assert client.predict(["What is 7 times 6?"], api_name="/compare_preset")[1] == "Pick one preset."


def test_the_page_before_any_run(client):
    """Sampling controls hidden under greedy, MAD's seed 0 (the cards' batch), empty tables with their real
    column names (never a made-up "1 2 3")."""
    props = {c["props"].get("elem_id"): c["props"] for c in client.config["components"]}
    assert props["sampling"]["visible"] is False
    assert props["mad-seed"]["value"] == 0
    headers = {e: props[e]["value"]["headers"] for e in ("sizes-totals", "mad-acc", "cost-diff")}
    assert headers == {
        "sizes-totals": ["adapter", "method", "trainable params", "size on disk", "% of base"],
        "mad-acc": ["model", "accuracy", "correct", "scored", "seq_len"],
        "cost-diff": ["item", "before", "after", "Δ", "Δ %"],
    }
    first = {e: props[e]["value"]["headers"][:1] for e in ("mixture-weights", "prune-curve", "sizes-by-type")}
    assert first == {
        "mixture-weights": ["block"],
        "prune-curve": ["threshold"],
        "sizes-by-type": ["module type"],
    }


def test_adapter_sizes_are_the_exact_reports(client, assets):
    status, totals, chart, by_type, per_layer = client.predict(api_name="/adapter_sizes")
    assert "3 adapters" in status and "tab-error" not in status
    rows = {r[0]: dict(zip(totals["headers"], r, strict=True)) for r in totals["data"]}
    assert set(rows) == {"tiny-base + LoRA (zero)", "tiny-base + LoRA", "tiny-base + MoRe"}
    assert rows["tiny-base + MoRe"]["method"] == "MoRe"  # PEFT's "MORE" is written as the paper does
    for name, sub in [("tiny-base + LoRA", "lora"), ("tiny-base + MoRe", "more")]:
        base = AutoModelForCausalLM.from_pretrained(assets / "language/base")
        rep = adapter_report(PeftModel.from_pretrained(base, assets / f"language/{sub}"))
        assert rows[name]["trainable params"] == rep.trainable_params > 0
        assert rows[name]["bytes on disk"] == rep.bytes_on_disk
        assert rows[name]["bytes on disk"] == os.path.getsize(
            assets / f"language/{sub}/adapter_model.safetensors"
        )
        assert rows[name]["LoRA rank with same count"] == pytest.approx(2.0)  # LoRA r=2; MoRe k=2, r=1
        # on screen: separators and KiB (the raw numbers above are what the API returns)
        shown = totals["metadata"]["display_value"][list(rows).index(name)]
        assert f"{rep.bytes_on_disk:,}" in shown and f"{rep.bytes_on_disk / 1024:.2f} KiB" in shown
        # per layer: the report's modules summed by layer index
        col = per_layer["headers"].index(name)
        for row in per_layer["data"]:
            want = sum(m["params"] for m in rep.modules if f".layers.{row[0]}." in m["name"])
            assert row[col] == want > 0
    assert [r[0] for r in per_layer["data"]] == ["0", "1"]  # the tiny llama's two layers
    # MoRe and LoRA side by side per module type, drawn as grouped bars with both axis titles
    assert by_type["headers"][0] == "module type"
    assert sorted(r[0] for r in by_type["data"]) == ["q_proj", "v_proj"]
    assert chart.count("<rect class='bar'") == 2 * 3
    assert "module type</text>" in chart and "trainable parameters</text>" in chart


def test_mad_skills_accuracy_matches_a_direct_evaluation(client, assets):
    status, acc, _, html, side, examples = client.predict(
        "in_context_recall", ["mad/attention", "mad/mamba"], 16, 3, api_name="/mad_skills"
    )
    assert "tab-ok" in status
    rows = {r[0]: dict(zip(acc["headers"], r, strict=True)) for r in acc["data"]}
    x, y = make_task(
        "in_context_recall", split="test", seed=12345 + 3, num_examples=16, **MAD_TASKS["in_context_recall"]
    )
    for name, sub in [("mad/attention", "attention"), ("mad/mamba", "mamba")]:
        model = AutoModelForCausalLM.from_pretrained(assets / f"mad/{sub}").eval()
        with torch.no_grad():
            correct, total = scored_counts(model(input_ids=x).logits, y)
        assert 0.0 <= rows[name]["accuracy"] <= 1.0
        assert rows[name]["accuracy"] == pytest.approx(correct / total)
        assert rows[name]["scored"] == total
        # the side-by-side view has this model's predictions on sequence 0
        with torch.no_grad():
            pred = model(input_ids=x[:1]).logits[0].argmax(-1).tolist()
        assert examples[name]["predictions"] == pred and examples[name]["input_ids"] == x[0].tolist()
    assert "mad/attention" in html and ("mad-right" in html or "mad-wrong" in html)
    assert "mad/mamba" in side and "mad-side-by-side" in side
    # chance and the no-learning heuristic (mad_models.mad.baselines), on the same batch
    settings = MAD_TASKS["in_context_recall"]
    assert rows["chance (1 / possible targets)"]["accuracy"] == pytest.approx(
        chance_accuracy("in_context_recall", **settings)
    )
    heur = rows["no-learning heuristic (most frequent candidate so far)"]
    assert heur["accuracy"] == pytest.approx(
        heuristic_accuracy("in_context_recall", x, y, **settings)["micro"]
    )
    # bad input: the message in the tab's status line, the tables emptied
    status, acc, *_ = client.predict(
        "in_context_recall", ["mad/attention"], 10_000, 3, api_name="/mad_skills"
    )
    assert "tab-error" in status and "number of sequences must be in 1..512" in status and not acc["data"]
    # the task picker offers only the tasks the MAD models were trained on (meta.mad_tasks)
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict("memorization", ["mad/attention"], 4, 3, api_name="/mad_skills")


def test_load_tab(client, assets, tmp_path):
    # a repo that does not exist (offline Hub): a message naming it, no trace
    msg = client.predict("nobody-here/no-such-repo", "", "", api_name="/load")[0]
    assert "tab-error" in msg and "nobody-here/no-such-repo" in msg and "Traceback" not in msg
    # an adapter trained for another base: clean "does not fit"
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    narrow = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    other = get_peft_model(narrow, LoraConfig(r=2, target_modules=["q_proj"]))
    other.save_pretrained(tmp_path / "other")
    assert (
        "does not fit base 'tiny-base'"
        in client.predict(str(tmp_path / "other"), "", "tiny-base", api_name="/load")[0]
    )
    msg, models, hybrids, _ = client.predict(str(assets / "language/lora"), "", "", api_name="/load")
    assert "is an adapter: pick the base" in msg
    assert models.get("choices") is None  # a failed load leaves the pickers as they are
    # a good local adapter loads through hub_tools and is then usable in Compare (same session)
    msg, models, _, _ = client.predict(str(assets / "language/lora"), "", "tiny-base", api_name="/load")
    name = "loaded: lora"
    assert name in msg and "shares its base" in msg and str(assets) not in msg
    assert name in [c[0] if isinstance(c, list) else c for c in models["choices"]]
    cols = compare(client, "Hello there", [name, "tiny-base + LoRA"], max_new=8)
    assert cols[0]["token_ids"] == cols[1]["token_ids"]


def test_load_offers_only_language_bases_and_names_the_missing_modules(client, app_url, assets, tmp_path):
    props = {c["props"].get("elem_id"): c["props"] for c in client.config["components"]}
    offered = [c[0] if isinstance(c, list) else c for c in props["load-base"]["choices"]]
    assert offered == ["", "tiny-base"]  # no adapter, no MAD model, no hybrid
    mine = Client(app_url, verbose=False)  # a session of its own (each holds at most 3 loads)
    with pytest.raises(AppError, match="mad/attention is not in the list of choices"):  # gradio checks
        mine.predict(str(assets / "language/lora"), "", "mad/attention", api_name="/load")
    # a language base that lacks the adapter's target modules says exactly that
    from peft import LoraConfig, get_peft_model
    from tiny import tiny_gpt2

    get_peft_model(tiny_gpt2(), LoraConfig(r=2, target_modules=["c_attn"])).save_pretrained(
        tmp_path / "gpt2-lora"
    )
    msg = mine.predict(str(tmp_path / "gpt2-lora"), "", "tiny-base", api_name="/load")[0]
    assert "none of the adapter's target modules (c_attn)" in msg and str(tmp_path) not in msg

    # two folders with the same name stay two models; one can be unloaded again
    for sub in ("one", "two"):
        (tmp_path / sub).mkdir()
        __import__("shutil").copytree(assets / "mad/hybrid", tmp_path / sub / "hybrid")
    first = mine.predict(str(tmp_path / "one/hybrid"), "", "", api_name="/load")
    second = mine.predict(str(tmp_path / "two/hybrid"), "", "", api_name="/load")
    assert "loaded: hybrid</b>" in first[0] and "loaded: hybrid (2)</b>" in second[0]
    assert "same folder name" in second[0]
    names = [c[0] if isinstance(c, list) else c for c in second[1]["choices"]]
    assert "loaded: hybrid" in names and "loaded: hybrid (2)" in names
    assert compare(mine, "1 2", ["loaded: hybrid (2)"], max_new=2)[0]["error"] is None
    done, models, hybrids, loaded = mine.predict("loaded: hybrid", api_name="/unload")
    assert "Unloaded loaded: hybrid." in done
    assert [c[0] if isinstance(c, list) else c for c in loaded["choices"]] == ["loaded: hybrid (2)"]
    assert "loaded: hybrid" not in [c[0] if isinstance(c, list) else c for c in models["choices"]]
    msg = mine.predict("loaded: hybrid", api_name="/unload")[0]
    assert "tab-error" in msg and "not one of the models this page loaded" in msg


def test_registry_json_is_what_the_app_shows(client, assets):
    info = client.view_api(return_format="dict", print_info=False)
    assert "/compare" in info["named_endpoints"] and "/mixture" in info["named_endpoints"]
    registry = json.loads((assets / "registry.json").read_text())
    cols = compare(client, "1 2", ["mad/mamba"], max_new=2)
    assert cols[0]["name"] in {m["name"] for m in registry["models"]}


def test_app_without_assets_starts_and_explains(tmp_path):
    url, proc, seconds = launch_app(tmp_path / "empty", tmp_path / "app.log")
    try:
        html = __import__("urllib.request").request.urlopen(url).read().decode()
        assert "No demo assets" in html and "python -m build_assets build" in html
        client = Client(url, verbose=False)
        out = client.predict("hi", [], 4, "greedy", 0, 0.8, 0, False, api_name="/compare")
        assert "Pick at least one model" in (out[1]["value"] if isinstance(out[1], dict) else out[1])
        assert "No demo assets" in client.predict(api_name="/adapter_sizes")[0]
        # no adapter lists presets: the dropdown is hidden, and its endpoint answers without an error
        props = {c["props"].get("elem_id"): c["props"] for c in client.config["components"]}
        assert props["compare-preset"]["visible"] is False
        assert client.predict(None, api_name="/compare_preset")[1] == ""
        assert "No demo assets" in client.predict(None, 0.25, api_name="/mixture")[0]
    finally:
        stop(proc)


def test_hybrid_mixtures_heatmap_is_the_models_weights(client, assets):
    status, heat, weights, cost, summary, _, lead = client.predict("mad/hybrid", 0.25, api_name="/mixture")
    assert "tab-ok" in status
    model = AutoModelForCausalLM.from_pretrained(assets / "mad/hybrid")
    expected = model.mixture_weights().tolist()
    assert weights["headers"][0] == "block" and len(weights["headers"]) == 3
    got = [row[1:] for row in weights["data"]]
    assert got == expected  # the same float32 values, exactly
    assert torch.allclose(torch.tensor(expected), torch.tensor([[0.7, 0.3], [0.2, 0.8]]))
    # the heatmap cells carry the same numbers
    for b, row in enumerate(expected):
        for k, w in enumerate(row):
            assert f"data-block='{b}' data-comp='{k}'" in heat and f"{w:.3f}" in heat
    # at 0.25 only block 1's 0.2 is below the threshold: block 1 drops component 0
    kept = model.prune(threshold=0.25).config.kept()
    assert kept == [[0, 1], [1]]
    assert f"keeps {sum(map(len, kept))} of 4" in summary
    assert "line-through" in heat  # the dropped cell is struck through
    # weights shown to 3 digits over the exact values
    assert weights["metadata"]["display_value"][0][1:] == [f"{w:.3f}" for w in expected[0]]
    # the cost table: the full model's report (before), the pruned one's (after), and the change
    from mad_models.hybrid.cost import flatten_report

    before = flatten_report(model.cost_report())
    after = flatten_report(model.prune(threshold=0.25).cost_report())
    assert cost["headers"] == ["item", "before", "after", "Δ", "Δ %"]
    by_item = {r[0]: r for r in cost["data"]}
    total = by_item["params / total"]
    assert total[1:4] == [
        before["params / total"],
        after["params / total"],
        after["params / total"] - before["params / total"],
    ]
    assert total[3] < 0  # pruning drops parameters
    # the summary leads with five rows: params, FLOPs/token, times each component alone, pairs run
    rows = re.findall(
        r"<tr><th class='row'>(.*?)</th><td class='num'>(.*?)</td><td class='num'>(.*?)</td>", lead
    )
    labels = [
        k.split(" / ")[1] for k in before if k.startswith("standalone /") and k.endswith("flops_per_token")
    ]
    assert [r[0] for r in rows] == [
        "parameters",
        "FLOPs per token",
        *[f"× {label} alone" for label in labels],
        "(block, component) pairs run",
    ]
    assert len(rows) == 5 and rows[0][1:] == (f"{before['params / total']:,}", f"{after['params / total']:,}")
    alone = before["flops_per_token / total"] / before[f"standalone / {labels[0]} / flops_per_token"]
    assert rows[2][1] == f"{alone:.2f}×" and rows[4][1:] == ("4", "3")
    _, _, _, _, summary_all, _, _ = client.predict("mad/hybrid", 0.5, api_name="/mixture")
    assert "keeps 2 of 4" in summary_all
    with pytest.raises(
        AppError, match="mad/attention is not in the list of choices"
    ):  # gradio checks choices
        client.predict("mad/attention", 0.25, api_name="/mixture")
    with pytest.raises(
        AppError, match="Value 1.5 is greater than maximum value 0.95"
    ):  # gradio's slider check
        client.predict("mad/hybrid", 1.5, api_name="/mixture")


def test_compare_hybrid_and_pruned_hybrid(client, assets):
    cols = compare(client, "1 17 2 18", ["mad/hybrid", "mad/hybrid-pruned"], max_new=6)
    model = AutoModelForCausalLM.from_pretrained(assets / "mad/hybrid").eval()
    with torch.no_grad():
        ref = model.generate(torch.tensor([[1, 17, 2, 18]]), max_new_tokens=6, do_sample=False)[
            0, 4:
        ].tolist()
    assert cols[0]["token_ids"] == ref
    assert len(cols[1]["token_ids"]) == 6


def test_prune_accuracy_curve_is_a_direct_evaluation(client, assets):
    from app_backend.tabs.hybrids import CURVE_SEED, CURVE_SEQUENCES, THRESHOLDS

    status, curve = client.predict("mad/hybrid", 0.5, api_name="/prune_accuracy")
    assert "tab-ok" in status
    rows = [dict(zip(curve["headers"], r, strict=True)) for r in curve["data"]]
    assert [r["threshold"] for r in rows] == list(THRESHOLDS)
    assert [r["threshold"] for r in rows if r["slider"]] == [0.5]
    # a slider value off the grid gets its own row, scored like the others
    _, curve_off = client.predict("mad/hybrid", 0.25, api_name="/prune_accuracy")
    off = [dict(zip(curve_off["headers"], r, strict=True)) for r in curve_off["data"]]
    assert [r["threshold"] for r in off if r["slider"]] == [0.25] and len(off) == len(THRESHOLDS) + 1
    assert next(r for r in off if r["slider"])["kept pairs"] == 3  # 0.25 drops block 1's 0.2
    model = AutoModelForCausalLM.from_pretrained(assets / "mad/hybrid").eval()
    for r in (rows[0], rows[-1]):  # the full hybrid, and the hybrid pruned hardest
        pruned = model.prune(threshold=r["threshold"]).eval()
        accs = []
        for task, settings in MAD_TASKS.items():
            x, y = make_task(task, split="test", seed=CURVE_SEED, num_examples=CURVE_SEQUENCES, **settings)
            with torch.no_grad():
                correct, total = scored_counts(pruned(input_ids=x).logits, y)
            assert r[task] == pytest.approx(correct / total)
            accs.append(correct / total)
        assert r["mean"] == pytest.approx(sum(accs) / len(accs))
        assert r["kept pairs"] == sum(map(len, pruned.config.kept()))


def test_pruned_vs_full_outputs_are_greedy_continuations(client, assets):
    status, table, d = client.predict("mad/hybrid", 0.5, "1 17 2 18", 6, api_name="/pruned_vs_full")
    assert "tab-ok" in status and f"on {d['agree']} of 6" in status
    model = AutoModelForCausalLM.from_pretrained(assets / "mad/hybrid").eval()
    for label, m in (("full", model), ("pruned", model.prune(threshold=0.5).eval())):
        with torch.no_grad():
            ref = m.generate(
                torch.tensor([[1, 17, 2, 18]]), max_new_tokens=6, do_sample=False, eos_token_id=None
            )[0, 4:].tolist()
        assert d[label] == ref
    assert table.count("<tr class='pvf-") == 6
    status, table, _ = client.predict("mad/hybrid", 0.5, "1 99", 6, api_name="/pruned_vs_full")
    assert "tab-error" in status and "out of range" in status and table == ""
