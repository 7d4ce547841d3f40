"""Loaders facing untrusted checkpoints (issue 12): configs are checked against the safetensors headers
before anything is allocated, broken JSON gets an error naming the file, no remote code runs, dtypes match.

Hub cases go through `pull` against the local test Hub (tests/hub_server.py); the library's own loaders
(ManticoreForCausalLM.from_pretrained, AutoModelForCausalLM.from_pretrained) are tested on local dirs.
Memory is measured as the growth of the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs), which counts torch's allocations too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import mad_models  # noqa: F401  (registers MORE and "manticore")
from hub_tools import RepoContentError, commit_folder, pull
from mad_models.hybrid import ManticoreForCausalLM
from mad_models.more import MoReConfig
from mad_models.validation import CheckpointError
from tests.hub_server import WRITE_TOKEN, hub_fixture  # noqa: F401  (the "hub" fixture)
from tests.tiny import tiny_llama, tiny_mamba, tiny_neox

BIG_MB = 50  # every bad config below would grow the peak RSS by 150 MB to 700 MB if it were built


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def peak_growth_mb(fn, error=Exception, match: str | None = None) -> float:
    """Run `fn`, which must raise `error` matching `match`; return how much the peak RSS grew (MB)."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = peak_rss_mb()
    with pytest.raises(error, match=match):
        fn()
    return peak_rss_mb() - before


def _edit_json(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


@pytest.fixture
def lora_dir(tmp_path) -> Path:
    folder = tmp_path / "lora"
    lora = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(folder, save_embedding_layers=False)
    return folder


@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hybrid") / "hybrid"
    ManticoreForCausalLM.from_components([tiny_neox(), tiny_mamba()], n_blocks=2).save_pretrained(folder)
    return folder


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


# ------------------------------------------------------------------------ hole 3: allocate before check


def test_lora_rank_pattern_is_checked_before_allocating(hub, lora_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    _edit_json(lora_dir / "adapter_config.json", rank_pattern={"q_proj": 200_000})
    commit_folder(lora_dir, "me/huge-rank", commit_message="rank 2e5 next to a rank-4 file")
    base = tiny_llama()
    grew = peak_growth_mb(
        lambda: pull("me/huge-rank", base_model=base), RepoContentError, r"'me/huge-rank'.*rank_pattern"
    )
    assert grew < BIG_MB, f"peak RSS grew {grew:.0f} MB before the config was refused"


def test_lora_default_rank_larger_than_the_file_is_refused_on_a_meta_base(tmp_path):
    folder = tmp_path / "lora"
    # r=4 everywhere except q_proj; the file only has q_proj: an r of 2e5 for v_proj would be built
    lora = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"]))
    lora.save_pretrained(folder, save_embedding_layers=False)
    _edit_json(
        folder / "adapter_config.json",
        r=200_000,
        rank_pattern={"q_proj": 4},
        target_modules=["q_proj", "v_proj"],
    )
    base = tiny_llama()
    grew = peak_growth_mb(lambda: pull(folder, base_model=base), RepoContentError, r"missing .*v_proj")
    assert grew < BIG_MB, f"peak RSS grew {grew:.0f} MB before the config was refused"


def test_more_shapes_are_checked_before_allocating(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    folder = tmp_path / "more"
    model = get_peft_model(
        tiny_llama(), MoReConfig(nblocks=4, block_rank=1, target_modules=["q_proj", "v_proj"])
    )
    model.save_pretrained(folder, save_embedding_layers=False)
    _edit_json(folder / "adapter_config.json", block_rank=20_000)
    commit_folder(folder, "me/huge-more", commit_message="block_rank 2e4 next to a block_rank-1 file")
    base = tiny_llama()
    grew = peak_growth_mb(
        lambda: pull("me/huge-more", base_model=base),
        RepoContentError,
        r"block_rank=20000\) disagrees with its saved tensors: MoRe factor",
    )
    assert grew < BIG_MB, f"peak RSS grew {grew:.0f} MB before the config was refused"


@pytest.mark.parametrize(
    "loader", [ManticoreForCausalLM.from_pretrained, AutoModelForCausalLM.from_pretrained]
)
def test_direct_loaders_check_a_huge_vocab_against_the_file_first(hybrid_dir, tmp_path, loader):
    folder = _copy(hybrid_dir, tmp_path / "huge-vocab")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vocab_size"] = 1_000_000
    for comp in cfg["components"]:
        comp["vocab_size"] = 1_000_000
    (folder / "config.json").write_text(json.dumps(cfg))
    grew = peak_growth_mb(
        lambda: loader(folder),
        ValueError,
        r"huge-vocab.*model.safetensors does not match config.json.*1000000",
    )
    assert grew < BIG_MB, f"peak RSS grew {grew:.0f} MB before the config was refused"


def test_load_causal_lm_checks_a_local_dir_first(tmp_path):
    from mad_models.loading import load_causal_lm

    folder = tmp_path / "huge-llama"
    tiny_llama().save_pretrained(folder)
    _edit_json(folder / "config.json", vocab_size=1_000_000)
    grew = peak_growth_mb(
        lambda: load_causal_lm(folder), ValueError, r"model.safetensors does not match config.json.*1000000"
    )
    assert grew < BIG_MB, f"peak RSS grew {grew:.0f} MB before the config was refused"


def test_direct_loader_checks_a_hub_checkpoint_before_building(hub, hybrid_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(
        constants, "ENDPOINT", hub.url
    )  # read at import: point the plain client at the test Hub
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    folder = _copy(hybrid_dir, tmp_path / "huge-vocab")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vocab_size"] = 1_000_000
    for comp in cfg["components"]:
        comp["vocab_size"] = 1_000_000
    (folder / "config.json").write_text(json.dumps(cfg))
    commit_folder(
        folder, "me/huge-vocab", commit_message="1M vocab next to 128-row weights", token=WRITE_TOKEN
    )
    grew = peak_growth_mb(
        lambda: AutoModelForCausalLM.from_pretrained("me/huge-vocab", token=WRITE_TOKEN),
        ValueError,
        r"me/huge-vocab: model.safetensors does not match config.json",
    )
    assert grew < BIG_MB, f"peak RSS grew {grew:.0f} MB before the config was refused"


# ---------------------------------------------------------------- bad JSON and configs: clear errors


@pytest.mark.parametrize(
    "text, match",
    [
        ("{bad", r"adapter_config.json is not valid JSON \(Expecting property name"),
        ("[1, 2]", r"adapter_config.json must hold a JSON object, but holds a list"),
        ("[" * 100_000 + "]" * 100_000, r"adapter_config.json is nested too deeply"),
        ('{"a": ' * 40 + "1" + "}" * 40, r"adapter_config.json is nested more than 32 levels"),
    ],
    ids=["json-syntax", "list", "deep-recursion", "deep"],
)
def test_broken_adapter_config_json_is_a_repo_content_error(hub, lora_dir, monkeypatch, text, match):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    (lora_dir / "adapter_config.json").write_text(text)
    commit_folder(lora_dir, "me/broken-json", commit_message="broken")
    with pytest.raises(RepoContentError, match=rf"'me/broken-json': {match}"):
        pull("me/broken-json", base_model=tiny_llama())


def test_lora_config_without_r_is_a_repo_content_error(hub, lora_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    cfg = json.loads((lora_dir / "adapter_config.json").read_text())
    del cfg["r"]
    cfg["rank_pattern"] = {}
    (lora_dir / "adapter_config.json").write_text(json.dumps(cfg))
    commit_folder(lora_dir, "me/no-r", commit_message="no r")
    with pytest.raises(
        RepoContentError, match=r"'me/no-r': adapter_config.json: LoRA rank r must be a positive"
    ):
        pull("me/no-r", base_model=tiny_llama())


def test_config_json_symlink_leaving_the_folder_is_refused(tmp_path):
    folder = tmp_path / "plain"
    tiny_llama().save_pretrained(folder)
    (folder / "config.json").unlink()
    os.symlink("/etc/passwd", folder / "config.json")
    with pytest.raises(RepoContentError, match=r"config.json is a link that leads outside") as err:
        pull(folder)
    assert "passwd" not in str(err.value)
    with pytest.raises(ValueError, match=r"config.json is a link that leads outside"):
        ManticoreForCausalLM.from_pretrained(folder)


def test_bad_config_json_names_the_file_in_pull_over_the_hub(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    folder = tmp_path / "plain"
    tiny_llama().save_pretrained(folder)
    (folder / "config.json").write_text('{"model_type": "llama",')
    commit_folder(folder, "me/bad-config", commit_message="truncated config")
    with pytest.raises(RepoContentError, match=r"'me/bad-config': config.json is not valid JSON"):
        pull("me/bad-config")
    with pytest.raises(ValueError, match=r"plain: config.json is not valid JSON"):
        ManticoreForCausalLM.from_pretrained(folder)


def test_unknown_component_type(hub, hybrid_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    folder = _copy(hybrid_dir, tmp_path / "evil-component")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["components"][1]["model_type"] = "evil"
    (folder / "config.json").write_text(json.dumps(cfg))
    commit_folder(folder, "me/evil-component", commit_message="unknown component")
    with pytest.raises(
        RepoContentError, match=r"'me/evil-component': config.json: component 1 has type 'evil'"
    ):
        pull("me/evil-component")
    with pytest.raises(CheckpointError, match=r"evil-component: config.json: component 1 has type 'evil'"):
        ManticoreForCausalLM.from_pretrained(folder)


# ------------------------------------------------------------------------------------------- dtypes


def _relabel(src: Path, dst: Path, stem: str, pick, change) -> str:
    """Copy `src` to `dst` with one tensor (the first name `pick` accepts) replaced by `change(tensor)`."""
    folder = _copy(src, dst)
    tensors = load_file(folder / f"{stem}.safetensors")
    name = next(k for k in sorted(tensors) if pick(k))
    tensors[name] = change(tensors[name])
    save_file(tensors, folder / f"{stem}.safetensors", metadata={"format": "pt"})
    return name


@pytest.mark.parametrize(
    "change, found",
    [(lambda t: t.view(torch.int32), "I32"), (lambda t: t.half(), "F16")],
    ids=["int32-relabelled", "float16"],
)
def test_hybrid_tensor_dtype_must_match_the_config(hub, hybrid_dir, tmp_path, monkeypatch, change, found):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    folder = tmp_path / "hybrid-dtype"
    name = _relabel(hybrid_dir, folder, "model", lambda k: "proj_in" in k, change)
    commit_folder(folder, "me/hybrid-dtype", commit_message="relabelled")
    want = rf"dtype mismatches \['{name}: file {found} vs config F32'\]"
    with pytest.raises(RepoContentError, match=rf"'me/hybrid-dtype'.*{want}"):
        pull("me/hybrid-dtype")
    with pytest.raises(CheckpointError, match=want):
        ManticoreForCausalLM.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=want):
        AutoModelForCausalLM.from_pretrained(folder)


def test_adapter_tensor_must_be_floating_point(hub, lora_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    folder = tmp_path / "lora-int"
    _relabel(lora_dir, folder, "adapter_model", lambda k: "lora_A" in k, lambda t: t.view(torch.int32))
    commit_folder(folder, "me/lora-int", commit_message="int32 adapter")
    with pytest.raises(RepoContentError, match=r"'me/lora-int'.*lora_A.weight has dtype I32"):
        pull("me/lora-int", base_model=tiny_llama())


def test_more_adapter_direct_load_checks_shapes_and_dtypes(tmp_path):
    from peft import PeftModel

    folder = tmp_path / "more"
    model = get_peft_model(tiny_llama(), MoReConfig(nblocks=4, block_rank=1, target_modules=["q_proj"]))
    model.save_pretrained(folder, save_embedding_layers=False)
    relabelled = tmp_path / "more-int"
    _relabel(folder, relabelled, "adapter_model", lambda k: "blkdiag1" in k, lambda t: t.view(torch.int32))
    with pytest.raises(ValueError, match=r"adapter_model.safetensors: tensor .*blkdiag1.* has dtype I32"):
        PeftModel.from_pretrained(tiny_llama(), relabelled)
    _edit_json(folder / "adapter_config.json", block_rank=20_000)
    base = tiny_llama()
    grew = peak_growth_mb(
        lambda: PeftModel.from_pretrained(base, folder),
        ValueError,
        r"nblocks=4, block_rank=20000\) disagrees with its saved tensors",
    )
    assert grew < BIG_MB, f"peak RSS grew {grew:.0f} MB before the config was refused"


# --------------------------------------------------------------------------------- hole 7: remote code


def test_no_remote_code_runs_even_when_a_terminal_would_say_yes(tmp_path, monkeypatch):
    """A dir whose tokenizer and config point at code in the dir: the library never runs it, even if a
    user at a terminal would answer transformers' trust prompt with "y"."""
    from mad_models.cli.common import load_tokenizer
    from mad_models.loading import load_causal_lm
    from tests.tiny import tiny_char_tokenizer

    marker = tmp_path / "remote-code-ran"
    evil = f"open({str(marker)!r}, 'w').write('ran')\n"
    folders = []
    for name in ("neox", "mamba"):
        folder = tmp_path / name
        (tiny_neox() if name == "neox" else tiny_mamba()).save_pretrained(folder)
        tiny_char_tokenizer().save_pretrained(folder)
        tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
        del tok_cfg["tokenizer_class"]  # without a local class, transformers asks whether to trust the code
        tok_cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTok", None]}
        (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
        _edit_json(folder / "config.json", auto_map={"AutoModelForCausalLM": "modeling_evil.EvilLM"})
        (folder / "tokenization_evil.py").write_text(evil)
        (folder / "modeling_evil.py").write_text(evil)
        folders.append(folder)
    tok_dir = tmp_path / "tokenizer"  # a tokenizer alone: nothing local tells transformers its class
    tiny_char_tokenizer().save_pretrained(tok_dir)
    shutil.copy(folders[0] / "tokenizer_config.json", tok_dir / "tokenizer_config.json")
    (tok_dir / "tokenization_evil.py").write_text(evil)
    monkeypatch.setattr("builtins.input", lambda *a, **k: "y")  # the terminal's answer to the trust prompt

    attempts = [
        lambda: ManticoreForCausalLM.from_components([str(f) for f in folders], n_blocks=2),
        lambda: load_tokenizer(str(tok_dir), None),
        lambda: load_tokenizer(None, str(tok_dir)),
        lambda: ManticoreForCausalLM.from_components(
            [tiny_neox(), tiny_mamba()], n_blocks=2, tokenizers=[str(tok_dir), str(tok_dir)]
        ),
        lambda: load_causal_lm(str(folders[0])),
        lambda: pull(folders[0]),
    ]
    hybrid_dir = tmp_path / "hybrid"
    ManticoreForCausalLM.from_components([tiny_neox(), tiny_mamba()], n_blocks=2).save_pretrained(hybrid_dir)
    _edit_json(hybrid_dir / "config.json", auto_map={"AutoModelForCausalLM": "modeling_evil.EvilLM"})
    (hybrid_dir / "modeling_evil.py").write_text(evil)
    attempts += [
        lambda: ManticoreForCausalLM.from_pretrained(hybrid_dir),
        lambda: pull(hybrid_dir),
    ]
    from transformers import AutoTokenizer

    with pytest.raises(AttributeError, match="EvilTok"):  # the set-up is live: a trusting call runs it
        AutoTokenizer.from_pretrained(tok_dir)
    assert marker.exists()
    marker.unlink()
    for attempt in attempts:
        for module in [m for m in sys.modules if m.endswith("_evil")]:  # imported once per process otherwise
            del sys.modules[module]
        try:
            attempt()
        except Exception:  # refusing is fine; running the code is not
            pass
        assert not marker.exists()
