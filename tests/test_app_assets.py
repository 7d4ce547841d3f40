"""The asset build (smoke profile, tiny base) is reproducible and re-runnable; the bundled assets are sane."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from tiny import tiny_char_tokenizer, tiny_llama

from app_backend.registry import Registry
from mad_models.assets import MAD_MIX, build, main

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "assets"


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models gain nothing from a second thread, and lose a lot when the cores are busy
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
        "SmolLM2 + LoRA r=8",
        "SmolLM2 + LoRA r=4 (MoRe's count)",
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


def test_build_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--profile", "enormous"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="only must be 'mad' or 'language'"):
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
    for e in reg.entries.values():
        if e.path is not None:
            assert (e.path / "README.md").is_file(), e.name
        if e.group == "mad":
            assert e.meta["mad_tasks"] == json.loads(json.dumps(MAD_MIX))
            assert 0.0 <= e.meta["accuracy"]["mean"] <= 1.0
