"""The app's pieces without a server: LRU cache, registry, prompt checks, seeded sampling, runtime."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch
from tiny import tiny_char_tokenizer, tiny_llama

from app_backend.cache import ModelCache
from app_backend.generation import (
    AppInputError,
    PromptTooLongError,
    check_max_new_tokens,
    encode_prompt,
    stream_generate,
)
from app_backend.registry import Registry
from app_backend.runtime import pick_runtime


def linear_loader(sizes: dict[str, int], calls: list[str]):
    def load(name, get_base):
        calls.append(name)
        time.sleep(0.05)  # long enough for concurrent callers to pile up
        return torch.nn.Linear(sizes[name], 256, bias=False), None  # sizes[name] * 256 * 4 bytes

    return load


def test_cache_evicts_least_recently_used_past_the_memory_bound():
    calls: list[str] = []
    mib = 2**20
    cache = ModelCache(max_bytes=3 * mib, load=linear_loader({"a": 1024, "b": 1024, "c": 1024}, calls))
    progress: list[str] = []
    cache.get("a", lambda f, d: progress.append(d))
    cache.get("b")
    assert progress[0] == "loading a" and progress[-1].startswith("loaded a in")
    cache.get("a")  # a is now the most recent
    cache.get("c")  # each is exactly 1 MiB: all three fit the 3 MiB bound
    assert cache.names() == ["b", "a", "c"] and cache.total_bytes == 3 * mib
    cache.max_bytes = 2 * mib
    cache.get("b")  # hit: order a, c, b
    cache.put("d", torch.nn.Linear(1024, 256, bias=False), None)  # 4 MiB: evicts a, then c
    assert cache.names() == ["b", "d"] and cache.total_bytes == 2 * mib
    assert cache.stats()["evictions"] == 2 and cache.stats()["hits"] == 2 and calls == ["a", "b", "c"]


def test_cache_loads_once_under_concurrent_users():
    calls: list[str] = []
    cache = ModelCache(max_bytes=2**30, load=linear_loader({"m": 8}, calls))
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("m").model)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["m"] and len(got) == 8 and all(g is got[0] for g in got)
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        ModelCache(0, load=lambda n, g: None)


def test_registry_explains_what_is_missing(tmp_path):
    assert "No demo assets" in Registry.from_dir(tmp_path / "nothing").problem
    (tmp_path / "registry.json").write_text("{not json")
    assert "not a valid model registry" in Registry.from_dir(tmp_path).problem
    (tmp_path / "here").mkdir()
    (tmp_path / "registry.json").write_text(
        json.dumps(
            {
                "models": [
                    {"name": "ok", "kind": "causal_lm", "path": "here"},
                    {"name": "gone", "kind": "causal_lm", "path": "gone"},
                ]
            }
        )
    )
    reg = Registry.from_dir(tmp_path)
    assert list(reg.entries) == ["ok"] and "gone" in reg.problem
    with pytest.raises(AppInputError, match="Unknown model 'nope'. Known models: ok"):
        reg["nope"]
    (tmp_path / "registry.json").write_text(json.dumps({"models": [{"name": "x", "kind": "weird"}]}))
    assert "kind must be one of" in Registry.from_dir(tmp_path).problem


def test_prompt_and_token_limits():
    tok = tiny_char_tokenizer()
    assert encode_prompt("3 1, 4", None, vocab_size=16) == [3, 1, 4]
    assert encode_prompt("ab", tok, vocab_size=128, chat=False) == tok("ab")["input_ids"]
    with pytest.raises(PromptTooLongError, match="too long: 20 tokens, the limit is 10"):
        encode_prompt("x" * 20, tok, vocab_size=128, max_prompt_tokens=10)
    with pytest.raises(AppInputError, match="no tokenizer"):
        encode_prompt("hello", None, vocab_size=16)
    with pytest.raises(AppInputError, match="Token id 16 is out of range"):
        encode_prompt("1 16", None, vocab_size=16)
    assert check_max_new_tokens("12") == 12
    with pytest.raises(AppInputError, match="Too many new tokens: 300 asked, the limit is 256"):
        check_max_new_tokens(300)
    with pytest.raises(AppInputError, match="whole number"):
        check_max_new_tokens("lots")


def test_stream_generate_matches_generate_and_seeds_repeat():
    model = tiny_llama()
    ref = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=10, do_sample=False)[0, 3:].tolist()
    assert list(stream_generate(model, [5, 6, 7], 10, stop_at_eos=False)) == ref
    a = list(stream_generate(model, [5, 6, 7], 12, sample=True, seed=1, top_k=20, stop_at_eos=False))
    torch.manual_seed(123)  # the global RNG must not matter
    b = list(stream_generate(model, [5, 6, 7], 12, sample=True, seed=1, top_k=20, stop_at_eos=False))
    c = list(stream_generate(model, [5, 6, 7], 12, sample=True, seed=2, top_k=20, stop_at_eos=False))
    assert a == b and a != c


def test_runtime_reports_device_and_rejects_bad_settings(monkeypatch):
    rt = pick_runtime()
    assert rt.device in ("cpu", "cuda") and "Device:" in rt.describe() and "precision:" in rt.describe()
    if rt.device == "cpu":
        assert rt.dtype == torch.float32 and rt.quant == "none"
    monkeypatch.setenv("MAD_MODELS_QUANT", "3bit")
    with pytest.raises(ValueError, match="MAD_MODELS_QUANT must be one of"):
        pick_runtime()
