"""The app's engine in process: one base shared by its adapters, one batched pass for the columns on a
base, per-column errors, the single loader, sessions and the public-Space rules of Load."""

from __future__ import annotations

import copy
import json
import shutil
import threading

import pytest
import torch
from app_fixture import build_tiny_assets
from peft import PeftModel

import mad_models  # noqa: F401
from app_backend.generation import encode_prompt, stream_generate, stream_generate_rows
from app_backend.registry import AppInputError, Registry
from app_backend.service import AppService

BASE, ADAPTERS = "tiny-base", ["tiny-base + LoRA (zero)", "tiny-base + LoRA", "tiny-base + MoRe"]
SUBDIRS = {"tiny-base + LoRA (zero)": "lora-zero", "tiny-base + LoRA": "lora", "tiny-base + MoRe": "more"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    build_tiny_assets(root)
    return root


@pytest.fixture
def svc(assets):
    return AppService(Registry.from_dir(assets))


def run(svc, prompt, names, max_new=10, **kw):
    *_, cols = svc.compare(prompt, names, max_new, chat=False, **kw)
    return cols


def test_adapters_share_the_base_weights_and_the_cache_counts_the_base_once(svc):
    base = svc.get(BASE)
    items = [svc.get(n) for n in ADAPTERS]
    host = base.host
    assert host is not None and all(it.host is host and it.base == BASE for it in items)
    assert len({it.adapter for it in items}) == 3
    # the host tree (and each adapter's view) holds the base's very tensors: no copy
    base_ptrs = {p.data_ptr() for p in base.model.parameters()}
    for model in [host.model] + [it.model for it in items]:
        shared = [p for n, p in model.named_parameters() if "lora_" not in n and "more_" not in n]
        assert shared and all(p.data_ptr() in base_ptrs for p in shared)
    # the base model itself stays a plain model (other tabs deep-copy it)
    assert not any("lora_" in n or "more_" in n for n, _ in base.model.named_parameters())
    adapter_bytes = sum(it.nbytes for it in items)
    assert 0 < adapter_bytes < 0.2 * base.nbytes
    assert svc.cache.total_bytes == base.nbytes + adapter_bytes


def test_each_adapter_view_is_that_peft_adapter(svc, assets):
    base = svc.get(BASE)
    ids = torch.randint(0, 128, (2, 9))
    for name in ADAPTERS:
        ref = PeftModel.from_pretrained(copy.deepcopy(base.model), assets / "language" / SUBDIRS[name]).eval()
        with torch.no_grad():
            torch.testing.assert_close(svc.get(name).model(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sample", [False, True])
def test_one_batched_pass_equals_each_model_alone(svc, sample):
    names = [BASE, *ADAPTERS]
    together = run(svc, "Hello there", names, 12, sample=sample, seed=5, temperature=1.0)
    assert all(c["error"] is None and "batched ×4" in c["stats"] for c in together)
    for i, name in enumerate(names):
        alone = run(svc, "Hello there", [name], 12, sample=sample, seed=5, temperature=1.0)[0]
        assert together[i]["token_ids"] == alone["token_ids"], name
        assert together[i]["text"] == alone["text"]
    assert together[0]["token_ids"] == together[1]["token_ids"]  # zero LoRA == base
    assert together[2]["token_ids"] != together[0]["token_ids"]  # a real adapter differs
    if not sample:  # and alone means: the merged PeftModel, greedy
        base = svc.get(BASE)
        ids = encode_prompt("Hello there", base.tokenizer, 128, chat=False)
        for i, name in enumerate(names[1:], start=1):
            path = svc.registry.entries[name].path
            merged = PeftModel.from_pretrained(copy.deepcopy(base.model), path).merge_and_unload()
            assert together[i]["token_ids"] == list(stream_generate(merged, ids, 12)), name
    for c in together:
        assert c["new_tokens"] == len(c["token_ids"]) and c["seconds"] > 0 and c["tokens_per_s"] > 0


def test_left_padding_rows_of_unequal_length(svc):
    base = svc.get(BASE)
    items = {n: svc.get(n) for n in ADAPTERS}
    host = base.host
    prompts = [[5, 9, 17], [40, 41, 42, 43, 44, 45, 46, 47], [3], [60, 61, 62, 63, 64]]
    names = ["__base__", items["tiny-base + LoRA"].adapter, items["tiny-base + MoRe"].adapter, "__base__"]
    got = [[] for _ in prompts]
    for row, tok in stream_generate_rows(
        host.model, prompts, 8, adapter_names=names, hold=host.reading(), stop_at_eos=False
    ):
        got[row].append(tok)
    models = [base.model, items["tiny-base + LoRA"].model, items["tiny-base + MoRe"].model, base.model]
    for row, (model, ids) in enumerate(zip(models, prompts, strict=True)):
        assert got[row] == list(stream_generate(model, ids, 8, stop_at_eos=False)), row


def test_a_failing_model_stops_only_its_column(svc, assets, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(assets / "language/more", broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    reg = json.loads((assets / "registry.json").read_text())
    reg["models"].append({"name": "broken", "kind": "adapter", "path": str(broken), "base": BASE})
    (tmp_path / "registry.json").write_text(json.dumps(reg))
    for m in reg["models"]:
        if m.get("path") and not m["path"].startswith("/"):
            m["path"] = str(assets / m["path"])
    (tmp_path / "registry.json").write_text(json.dumps(reg))
    svc = AppService(Registry.from_dir(tmp_path))
    cols = run(svc, "Hello there", [BASE, "broken", "tiny-base + LoRA", "mad/attention"], 6)
    assert cols[1]["error"] and cols[1]["text"].startswith("⚠") and "Traceback" not in cols[1]["error"]
    assert "token ids" in cols[3]["error"]
    assert cols[0]["error"] is None and cols[2]["error"] is None
    assert cols[0]["new_tokens"] > 0 and cols[2]["new_tokens"] > 0
    with pytest.raises(AppInputError, match="Too many new tokens"):  # the request itself: raised first
        next(svc.compare("hi", [BASE], 10_000))


def test_evicting_a_base_evicts_its_adapters_and_frees_their_layers(svc):
    base = svc.get(BASE)
    lora = svc.get("tiny-base + LoRA")
    assert lora.adapter in base.host.adapters
    svc.get("mad/attention")
    svc.cache.max_bytes = svc.cache.total_bytes - 1  # one more model must push the base out
    svc.get("mad/mamba")
    names = svc.cache.names()
    assert BASE not in names and "tiny-base + LoRA" not in names
    assert lora.adapter not in base.host.adapters  # its layers left the host
    assert not any(lora.adapter in getattr(m, "lora_A", {}) for m in base.host.model.modules())


def test_a_hybrid_loaded_with_a_base_selected_keeps_its_own_tokenizer(svc, assets):
    info = svc.load(str(assets / "mad/hybrid"), "", BASE, session="s1")  # the base has nothing to do with it
    assert info["hybrid"] and not info["tokenizer"]
    cols = run(svc, "1 17 2 18", [info["name"]], 5, session="s1")
    assert cols[0]["error"] is None and len(cols[0]["token_ids"]) == 5
    ref = run(svc, "1 17 2 18", ["mad/hybrid"], 5)
    assert cols[0]["token_ids"] == ref[0]["token_ids"]


def test_local_tokenizer_remote_code_never_runs(svc, assets, tmp_path):
    evil = tmp_path / "evil-model"
    shutil.copytree(assets / "language/base", evil)
    marker = tmp_path / "PWNED"
    (evil / "tokenization_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    cfg = json.loads((evil / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    cfg["tokenizer_class"] = "EvilTokenizer"
    (evil / "tokenizer_config.json").write_text(json.dumps(cfg))
    try:
        svc.load(str(evil), "", "", session="s1")
    except AppInputError as e:
        assert "Traceback" not in str(e)
    assert not marker.exists()


def test_load_rules_sessions_and_public_space(assets):
    svc = AppService(Registry.from_dir(assets), max_loaded_per_session=2)
    with pytest.raises(AppInputError, match="only applies to Hub repos"):
        svc.load(str(assets / "mad/hybrid"), "main", "", session="a")
    with pytest.raises(AppInputError, match="is an adapter: pick the base"):
        svc.load(str(assets / "language/lora"), "", "", session="a")
    info = svc.load(str(assets / "language/lora"), "", BASE, session="a")
    assert str(assets) not in info["name"]  # no server path in what the UI shows
    assert "shares its base" in info["kind"]
    svc.load(str(assets / "mad/hybrid"), "", "", session="a")
    with pytest.raises(AppInputError, match="limit is 2"):
        svc.load(str(assets / "mad/mamba"), "", "", session="a")
    # the same model again does not count twice; another session starts with none of them
    svc.load(str(assets / "mad/hybrid"), "", "", session="a")
    assert info["name"] in svc.model_names("a") and info["name"] not in svc.model_names("b")
    assert svc.hybrid_names("a")[-1].startswith("loaded: ")
    assert not any(n.startswith("loaded: ") for n in svc.hybrid_names("b"))
    assert "Unknown model" in run(svc, "hi", [info["name"]], 2, session="b")[0]["error"]
    # a tab that passes no session acts inside the handler's session_scope: b cannot reach a's hybrid
    hybrid_name = svc.hybrid_names("a")[-1]
    with svc.session_scope("a"):
        assert svc.mixture(hybrid_name, 0.25)["weights"]
    with svc.session_scope("b"), pytest.raises(AppInputError, match="Unknown model"):
        svc.mixture(hybrid_name, 0.25)
    line_a, line_b = svc.cache_line("a"), svc.cache_line("b")
    assert str(assets) not in line_a and str(assets) not in line_b and "/" not in line_b.split("·")[0][13:]
    assert info["name"] in line_a and info["name"] not in line_b and "other sessions" in line_b
    # the session ends (tab closed or reloaded): its models leave the server
    svc.forget_session("a")
    assert svc.model_names("a") == list(svc.registry.entries)
    assert not [k for k in svc.cache.names() if k.startswith("loaded: ")]

    public = AppService(Registry.from_dir(assets), public=True)
    for source in (str(assets / "mad/hybrid"), "./mad/hybrid", "/etc", "~/x", "not a repo id"):
        with pytest.raises(AppInputError, match="public Space: Load takes Hub repo ids"):
            public.load(source, "", "", session="p")


def test_closing_the_stream_stops_generate(svc):
    """What the Stop button does: gradio closes the generator; generate must stop, not run on."""
    import time

    model = svc.get("mad/attention").model
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        gen = stream_generate_rows(model, [[1, 2, 3]], 256, stop_at_eos=False)
        next(gen)
        next(gen)
        gen.close()
        time.sleep(1.0)
        n = len(calls)
        time.sleep(0.5)
        assert len(calls) == n < 256  # stopped, long before 256 steps
    finally:
        handle.remove()


@pytest.mark.parametrize("quant", ["4bit", "8bit"])
def test_adapter_host_on_a_quantized_base(quant, assets):
    """The 4/8-bit base path (bitsandbytes runs on CPU here): adapters share the quantized base and mix
    in one batch; each row equals that PeftModel alone on the same quantized base."""
    from app_backend.shared import AdapterHost, adapter_rows, sharing_copy
    from hub_tools import pull
    from mad_models.loading import load_causal_lm

    base = load_causal_lm(assets / "language/base", device="cpu", quantization=quant)
    host = AdapterHost(base)
    ids = torch.randint(0, 128, (3, 7))
    alone = {}
    for sub in ["lora", "more"]:
        peft_model = pull(str(assets / "language" / sub), base_model=sharing_copy(base))
        alone[host.add(peft_model)] = peft_model
    names = [*alone, "__base__"]
    # references after every add (wrapping a bnb layer re-packs its quantization state, which moves
    # logits by ~1e-3), in the same batch shape (quantized kernels round differently per shape)
    with torch.no_grad():
        refs = [alone[n](ids).logits[row] for row, n in enumerate(names[:2])] + [base(ids).logits[2]]
    with host.reading(), adapter_rows(names), torch.no_grad():
        mixed = host.model(ids).logits
    for row, ref in enumerate(refs):
        torch.testing.assert_close(mixed[row], ref, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(mixed[0], base(ids).logits[0], atol=1e-3)


def test_agreement_marks_and_export(svc):
    import csv
    import io

    from app_backend.results import agreement_html, compare_json, is_right, reference_answer, results_csv

    cols = run(svc, "Hello there", [BASE, "tiny-base + LoRA (zero)", "tiny-base + LoRA"], 6)
    cols[0]["text"] = cols[1]["text"] = "It is 19."
    cols[2]["text"] = "It is 190."
    md = agreement_html(cols, answer="19")
    assert "2 of 3 columns say the same as #1" in md and "2 of 3 right" in md
    assert md.count("✓") == 2 and md.count("✗") == 1
    assert is_right("19", "19") and not is_right("190", "19") and not is_right("1.19", "19")
    assert reference_answer(svc.registry, "Hello there", [BASE]) is None  # no presets: no marks
    result = compare_json("Hello there", cols, "19")
    assert [r["correct"] for r in result["results"]] == [True, True, False]
    rows = list(csv.DictReader(io.StringIO(results_csv(result))))
    assert [r["name"] for r in rows] == [c["name"] for c in cols]
    assert {"new_tokens", "seconds", "tokens_per_s", "text", "settings"} <= set(rows[0])


def test_compare_can_run_every_column_to_max_new_tokens(svc):
    """A column stops at its EOS (the UI's behaviour); stop_at_eos=False gives every column the full
    max_new_tokens (the throughput bench's equal work per column), and the settings say which."""
    names = [BASE, *ADAPTERS]
    cols = run(svc, "hello", names, max_new=6, stop_at_eos=False)
    assert [c["new_tokens"] for c in cols] == [6] * 4
    assert all(c["settings"]["stop_at_eos"] is False for c in cols)
    host = svc.get(ADAPTERS[0]).host
    first = cols[0]["token_ids"][0]  # the base column's first greedy token becomes its EOS
    old = host.model.generation_config.eos_token_id
    host.model.generation_config.eos_token_id = first
    try:
        stopped = run(svc, "hello", names, max_new=6)
        full = run(svc, "hello", names, max_new=6, stop_at_eos=False)
    finally:
        host.model.generation_config.eos_token_id = old
    assert stopped[0]["new_tokens"] < 6 and stopped[0]["settings"]["stop_at_eos"] is True
    assert [c["new_tokens"] for c in full] == [6] * 4
    assert full[0]["token_ids"] == cols[0]["token_ids"]


def test_an_adapter_view_is_built_on_first_use_not_at_load(svc, assets):
    base = svc.get("tiny-base")
    item = svc.get("tiny-base + MoRe")
    assert item.__dict__["_model"] is None  # loading built no view: Compare runs the host's rows
    assert item.config is base.host.model.config  # Compare reads the vocabulary without one
    *_, cols = svc.compare("Hello", ["tiny-base", "tiny-base + MoRe"], 4, chat=False)
    assert all(c["error"] is None and c["new_tokens"] == 4 for c in cols)
    assert item.__dict__["_model"] is None
    view = item.model  # asked for: built now, once, over the host's tensors
    assert item.model is view and item.__dict__["_model"] is view
    base_ptrs = {p.data_ptr() for p in base.model.parameters()}
    shared = [p for n, p in view.named_parameters() if "more_" not in n]
    assert shared and all(p.data_ptr() in base_ptrs for p in shared)
    ref = PeftModel.from_pretrained(copy.deepcopy(base.model), assets / "language" / "more").eval()
    ids = torch.randint(0, 128, (2, 9))
    with torch.no_grad():  # the view is that adapter alone
        torch.testing.assert_close(view(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-5)


def test_a_view_asked_for_after_its_adapter_left_the_host_says_so(svc):
    item = svc.get("tiny-base + LoRA")
    svc.cache.discard("tiny-base + LoRA")  # evicted (its host keeps serving the other adapters)
    with pytest.raises(KeyError, match="no longer on this host"):
        item.model  # noqa: B018


def test_models_are_built_one_at_a_time(svc):
    """transformers' from_pretrained patches class-wide functions while it runs (tie_weights among them):
    the loader builds behind BUILD_LOCK, so a load waits while another model is being built."""
    from app_backend.runtime import BUILD_LOCK

    done: list[object] = []
    with BUILD_LOCK:  # another model being built
        worker = threading.Thread(target=lambda: done.append(svc.get("mad/hybrid")))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and not done and "mad/hybrid" not in svc.cache.names()
    worker.join(timeout=120)
    assert done and done[0].model.config.model_type == "manticore"
