"""The app on the bundled assets (built by `python -m build_assets build`), real SmolLM2 included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from app_fixture import launch_app, stop
from gradio_client import Client
from peft import PeftModel
from transformers import AutoModelForCausalLM

import mad_models  # noqa: F401
from build_assets.builder import MAD_MIX
from mad_models.mad import make_task, scored_counts
from mad_models.training.exact_match import chat_prompt

ASSETS = Path(__file__).resolve().parents[1] / "assets"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    url, proc, seconds = launch_app(None, tmp_path_factory.mktemp("log") / "app.log")  # default: ./assets
    print(f"app ready in {seconds:.1f} s on the bundled assets")
    try:
        yield Client(url, verbose=False)
    finally:
        stop(proc)


def test_bundled_hybrid_heatmap_and_mad_skills(client):
    registry = json.loads((ASSETS / "registry.json").read_text())
    assert {m["name"] for m in registry["models"]} >= {"mad/hybrid", "mad/hybrid-pruned", "SmolLM2 + MoRe"}
    status, heat, weights, cost, summary, _, _ = client.predict("mad/hybrid", 0.5, api_name="/mixture")
    assert "tab-ok" in status
    hybrid = AutoModelForCausalLM.from_pretrained(ASSETS / "mad/hybrid").eval()
    assert [row[1:] for row in weights["data"]] == hybrid.mixture_weights().tolist()
    kept = hybrid.prune(threshold=0.5).config.kept()
    assert kept == AutoModelForCausalLM.from_pretrained(ASSETS / "mad/hybrid-pruned").config.kept()
    assert f"keeps {sum(map(len, kept))} of" in summary

    status, acc, _, html, side, _ = client.predict(
        "selective_copying", ["mad/attention", "mad/hybrid"], 32, 5, api_name="/mad_skills"
    )
    assert "tab-ok" in status and "mad/hybrid" in side
    rows = {r[0]: r[1] for r in acc["data"]}
    x, y = make_task(
        "selective_copying", split="test", seed=12345 + 5, num_examples=32, **MAD_MIX["selective_copying"]
    )
    with torch.no_grad():
        correct, total = scored_counts(hybrid(input_ids=x).logits, y)
    assert 0.0 <= rows["mad/attention"] <= 1.0
    assert rows["mad/hybrid"] == pytest.approx(correct / total)


def test_bundled_more_adapter_in_the_app_equals_the_peft_model(client, smollm2):
    # a val question from the adapters' presets, typed as a user would; the app knows its answer
    registry = json.loads((ASSETS / "registry.json").read_text())
    more = next(m for m in registry["models"] if m["name"] == "SmolLM2 + MoRe")
    preset = more["meta"]["presets"][0]
    # base and adapter run in one batched mixed-adapter pass on one shared base
    result = client.predict(
        preset["prompt"],
        ["SmolLM2-135M-Instruct", "SmolLM2 + MoRe"],
        8,
        "greedy",
        0,
        0.8,
        0,
        True,
        api_name="/compare",
    )[0]
    cols = result["results"]
    assert all(c["error"] is None and c["token_ids"] for c in cols)
    assert result["reference_answer"] == preset["answer"]
    assert all(isinstance(c["correct"], bool) for c in cols)
    base, tok = smollm2
    model = PeftModel.from_pretrained(base, ASSETS / "language/more").eval()
    # the app's chat format is the one the adapter was trained and scored with (system turn included)
    ids = tok(chat_prompt(tok, preset["prompt"]), add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert "Reply with the answer only." in tok.decode(ids[0])
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=tok.eos_token_id)
    assert cols[1]["token_ids"] == ref[0, ids.shape[1] :].tolist()


def test_bundled_adapter_sizes(client):
    status, totals, chart, by_type, per_layer = client.predict(api_name="/adapter_sizes")
    assert "3 adapters" in status and len(per_layer["data"]) == 30  # SmolLM2's 30 layers
    rows = {r[0]: dict(zip(totals["headers"], r, strict=True)) for r in totals["data"]}
    more, lora4, lora16 = (
        rows["SmolLM2 + MoRe"],
        rows["SmolLM2 + LoRA r=4 (MoRe's count)"],
        rows["SmolLM2 + LoRA r=16"],
    )
    # MoRe k=4, r=1 on q/k/v of 30 layers: k*r*(n+m) per layer = LoRA r=4's count exactly
    assert more["trainable params"] == lora4["trainable params"] == 30 * 4 * (1152 + 768 + 768)
    assert lora16["trainable params"] == 4 * lora4["trainable params"]
    assert more["LoRA rank with same count"] == 4.0 and lora16["LoRA rank with same count"] == 16.0
    for name, sub in [("SmolLM2 + MoRe", "more"), ("SmolLM2 + LoRA r=16", "lora-r16")]:
        assert (
            rows[name]["bytes on disk"]
            == (ASSETS / f"language/{sub}/adapter_model.safetensors").stat().st_size
        )
    assert sorted(r[0] for r in by_type["data"]) == ["k_proj", "q_proj", "v_proj"]
