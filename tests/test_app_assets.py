"""The asset build (smoke profile, tiny base) is reproducible and re-runnable; the bundled assets are sane."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from tiny import tiny_char_tokenizer, tiny_llama

from app_backend.registry import Registry
from build_assets.builder import (
    LM_DEV_PER_MODULE,
    LR_LORA_R4,
    LR_LORA_R16,
    LR_MORE_K4_R1,
    MAD_MIX,
    PROFILES,
    build,
    language_adapters,
    language_rows,
    main,
    pick_presets,
)

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "assets"


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_base():
    return tiny_llama(seed=0, vocab=128), tiny_char_tokenizer()


def smoke(out: Path, work: Path) -> dict:
    base, tok = tiny_base()
    base.save_pretrained(out / "language/base")
    tok.save_pretrained(out / "language/base")
    entry = {"name": "tiny-base", "kind": "causal_lm", "path": "language/base", "group": "language"}
    return build(out, work, profile="smoke", base_loader=tiny_base, base_entry=entry)


def digests(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def test_build_is_reproducible_and_safe_to_rerun(tmp_path, capsys):
    reg = smoke(tmp_path / "a", tmp_path / "work-a")
    names = [m["name"] for m in reg["models"]]
    assert names == [
        "tiny-base",
        "SmolLM2 + MoRe",
        "SmolLM2 + LoRA r=4 (MoRe's count)",
        "SmolLM2 + LoRA r=16",
        "mad/attention",
        "mad/mamba",
        "mad/hybrid",
        "mad/hybrid-pruned",
    ]
    smoke(tmp_path / "b", tmp_path / "work-b")
    first = digests(tmp_path / "a")
    assert first == digests(tmp_path / "b")  # same seeds, same bytes (weights, configs, cards, registry)
    assert not [f for f in first if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    # re-running on a finished dir rebuilds nothing and changes nothing
    capsys.readouterr()
    smoke(tmp_path / "a", tmp_path / "work-a")
    out = capsys.readouterr().out
    assert "up to date" in out and "training" not in out and "fine-tuning" not in out
    assert digests(tmp_path / "a") == first
    # the app reads what the build wrote; every asset has a card
    app_reg = Registry.from_dir(tmp_path / "a")
    assert app_reg.problem is None and set(app_reg.entries) == set(names)
    assert app_reg.names(hybrids_only=True) == ["mad/hybrid", "mad/hybrid-pruned"]
    for e in app_reg.entries.values():
        if e.name != "tiny-base":
            assert (e.path / "README.md").read_text().startswith("---\n")
    pruned = json.loads((tmp_path / "a/mad/hybrid-pruned/config.json").read_text())
    assert pruned["pruning"] is not None and sum(map(len, pruned["block_components"])) == 2
    # the language set: each adapter at its own lr, on the mathematics data, with presets from val
    by = {m["name"]: m for m in reg["models"]}
    assert [by[a.label]["meta"]["lr"] for a in language_adapters().values()] == [1e-2, 1e-2, 1e-3]
    for a in language_adapters().values():
        meta = by[a.label]["meta"]
        assert meta["steps"] == 2 and meta["batch"] == 4 and meta["targets"] == ["q_proj", "k_proj", "v_proj"]
        assert meta["n"] == 9 and len(meta["per_module"]) == 9 and 0.0 <= meta["exact_match"] <= 1.0
        assert (
            meta["heuristic_per_module"].keys() == meta["per_module"].keys() == meta["base_per_module"].keys()
        )
        assert [sorted(x) for x in meta["presets"]] == [["answer", "module", "prompt"]] * 9
    assert by["SmolLM2 + MoRe"]["meta"]["nblocks"] == 4 and by["SmolLM2 + LoRA r=16"]["meta"]["r"] == 16
    assert by["tiny-base"]["meta"]["n"] == 9  # the base's own val figures, kept across re-runs
    assert "| SmolLM2 + LoRA r=16 | " in (tmp_path / "a/language/results.md").read_text()


def test_language_build_key_follows_the_settings(tmp_path, capsys, monkeypatch):
    """Other language settings rebuild the adapters (never mixed) and leave the MAD set alone."""
    import build_assets.builder as assets

    smoke(tmp_path / "a", tmp_path / "work")
    before = digests(tmp_path / "a")
    monkeypatch.setitem(assets.PROFILES, "smoke", replace(assets.PROFILES["smoke"], lm_steps=3))
    # an adapter the set no longer has (an older build's) goes with its folder
    reg = json.loads((tmp_path / "a/registry.json").read_text())
    old = {"name": "SmolLM2 + LoRA r=8", "kind": "adapter", "path": "language/lora-r8", "group": "language"}
    reg["models"].append({**old, "base": "tiny-base", "meta": {"build_key": "0"}})
    (tmp_path / "a/registry.json").write_text(json.dumps(reg))
    shutil.copytree(tmp_path / "a/language/more", tmp_path / "a/language/lora-r8")
    capsys.readouterr()
    reg = smoke(tmp_path / "a", tmp_path / "work")
    out = capsys.readouterr().out
    assert out.count("fine-tuning 3 steps") == 3 and "mad/attention: up to date" in out
    assert {m["meta"]["steps"] for m in reg["models"] if m["kind"] == "adapter"} == {3}
    assert "SmolLM2 + LoRA r=8" not in {m["name"] for m in reg["models"]}
    assert not (tmp_path / "a/language/lora-r8").exists()
    after = digests(tmp_path / "a")
    assert "3 steps of batch 4" in (tmp_path / "a/language/results.md").read_text()
    assert (
        after["language/more/adapter_model.safetensors"] != before["language/more/adapter_model.safetensors"]
    )
    assert {k: v for k, v in after.items() if k.startswith("mad/")} == {
        k: v for k, v in before.items() if k.startswith("mad/")
    }


def test_language_settings_are_the_experiments():
    """The lrs are the ones bench/reproduce_more.py chose on dev (its results table), and the dev rows it
    chose them on are never trained on."""
    import re

    from bench import reproduce_more as rm

    table = (ROOT / "bench/results/more-quick.md").read_text()
    chosen = {
        m: float(lr)
        for m, lr in re.findall(r"^\| ((?:LoRA|MoRe) [^|]+?) \| [\d,]+ \| ([\d.e-]+) \|", table, re.M)
    }
    assert LR_MORE_K4_R1 == chosen["MoRe k=4 r=1"] and LR_LORA_R4 == chosen["LoRA r=4"]
    assert LR_LORA_R16 == chosen["LoRA r=16"]
    assert LM_DEV_PER_MODULE == max(s["dev_per_module"] for s in rm.SETTINGS.values())
    train, dev, val = language_rows(PROFILES["full"])
    assert len(train) == 4500 - 9 * LM_DEV_PER_MODULE and len(val) == 360
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in dev}
    by_module: dict[str, list[dict]] = {}
    for r in val:
        by_module.setdefault(r["module"], []).append(r)
    assert (
        pick_presets(val)
        == [  # the first two val questions of each module, as typed, with the answer
            {"prompt": r["prompt"], "answer": r["answer"], "module": m}
            for m in sorted(by_module)
            for r in by_module[m][:2]
        ]
    )


def test_build_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--profile", "enormous"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="only must be 'mad', 'language' or 'text'"):
        build("/tmp/unused", profile="smoke", only="vision")


def test_bundled_assets_are_small_safetensors_with_cards():
    files = [f for f in BUNDLED.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 40 * 2**20
    weights = [f for f in files if f.suffix in (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    assert weights and all(f.suffix == ".safetensors" for f in weights)
    reg = Registry.from_dir(BUNDLED)
    assert reg.problem is None
    assert {"mad/attention", "mad/mamba", "mad/hybrid", "mad/hybrid-pruned"} <= set(reg.entries)
    assert len(reg.adapters()) == 3 and reg["SmolLM2-135M-Instruct"].kind == "smollm2"
    val = language_rows(PROFILES["full"])[2]
    params = {}
    for a in language_adapters().values():
        meta = reg[a.label].meta
        params[a.label] = meta["trainable_params"]
        assert meta["lr"] == a.lr and meta["n"] == 360 and len(meta["per_module"]) == 9
        assert meta["steps"] == PROFILES["full"].lm_steps and meta["batch"] == PROFILES["full"].lm_batch
        assert meta["presets"] == pick_presets(val)
    assert params["SmolLM2 + MoRe"] == params["SmolLM2 + LoRA r=4 (MoRe's count)"] == 322_560
    assert params["SmolLM2 + LoRA r=16"] == 4 * 322_560
    # the results page shows the figures the build wrote (one command regenerates both)
    lines = (BUNDLED / "language/results.md").read_text().splitlines()
    table = "\n".join(x for x in lines if x.startswith("|"))
    assert table.startswith("| model |") and table in (ROOT / "bench/RESULTS.md").read_text()
    for e in reg.entries.values():
        if e.path is not None:
            assert (e.path / "README.md").is_file(), e.name
        if e.group == "mad":
            assert e.meta["mad_tasks"] == json.loads(json.dumps(MAD_MIX))
            assert 0.0 <= e.meta["accuracy"]["mean"] <= 1.0


def test_bundled_build_keys_are_current_in_every_process():
    """A re-run of the full build finds every bundled asset up to date: the keys it computes match the
    registry's, whatever PYTHONHASHSEED (PEFT keeps target_modules as a set, whose order it changes)."""
    import os
    import subprocess
    import sys

    code = (
        "import json, build_assets.builder as A; p = A.PROFILES['full']; "
        "base, lang = A.language_keys(p, 'SmolLM2-135M-Instruct'); "
        "print(json.dumps({**A.mad_keys(p), **{'language/' + d.split('/')[-1]: k for d, k in lang.items()}, "
        "'base': base}))"
    )
    runs = []
    for seed in ("0", "1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert all(r == runs[0] for r in runs), runs
    models = json.loads((ROOT / "assets/registry.json").read_text())["models"]
    reg = {m.get("path", "base"): m["meta"]["build_key"] for m in models if m.get("meta")}
    assert len(runs[0]) == 8 and {d: reg[d] for d in runs[0]} == runs[0]


def test_a_new_prune_threshold_only_re_prunes(tmp_path, capsys, monkeypatch):
    """Each MAD asset's key holds only what makes it: a new threshold trains nothing again."""
    import build_assets.builder as assets

    smoke(tmp_path / "a", tmp_path / "work")
    before = digests(tmp_path / "a")
    monkeypatch.setitem(assets.PROFILES, "smoke", replace(assets.PROFILES["smoke"], prune_threshold=0.9))
    capsys.readouterr()
    smoke(tmp_path / "a", tmp_path / "work")
    out = capsys.readouterr().out
    for name in ("mad/attention", "mad/mamba", "mad/hybrid"):
        assert f"{name}: up to date" in out
    assert "mad/hybrid-pruned: pruning the hybrid at threshold 0.9" in out

    def trained(d: dict) -> dict:
        return {k: v for k, v in d.items() if k.startswith(("mad/attention/", "mad/mamba/", "mad/hybrid/"))}

    after = digests(tmp_path / "a")
    assert trained(after) and trained(after) == trained(before)
