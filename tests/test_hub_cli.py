"""``mad-models push / pull / space push`` come from hub_tools through the ``mad_models.commands`` entry
point: the library's CLI never imports hub_tools, yet the commands and their errors work as before."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from peft import get_peft_model

import mad_models  # noqa: F401  (registers MORE with peft)
from hub_tools import commit_folder, push_adapter
from mad_models.cli import build_parser, main
from mad_models.more import MoReConfig
from tests.hub_server import WRITE_TOKEN, hub_fixture  # noqa: F401  (the "hub" fixture)
from tests.tiny import tiny_llama

ROOT = Path(__file__).resolve().parents[1]


def test_hub_commands_are_registered_as_an_entry_point_plugin():
    eps = importlib.metadata.entry_points(group="mad_models.commands")
    assert {(ep.name, ep.value) for ep in eps} >= {("hub", "hub_tools.cli:add_commands")}
    groups = next(a for a in build_parser()._actions if a.dest == "group")
    assert list(groups.choices) == ["mad", "hybrid", "more", "push", "pull", "space"]


def test_python_dash_m_pull_help_shows_base_revision():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "mad_models", "pull", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--base-revision" in out.stdout and "mad-models pull me/neox-mamba-manticore" in out.stdout


def test_pull_base_revision_pins_the_base_and_a_bad_one_is_a_one_line_hub_error(
    hub, tmp_path, capsys, caplog, monkeypatch
):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    tiny_llama(seed=5).save_pretrained(tmp_path / "b1")
    tiny_llama(seed=6).save_pretrained(tmp_path / "b2")
    v1 = commit_folder(tmp_path / "b1", "org/moving-base", commit_message="v1")
    commit_folder(tmp_path / "b2", "org/moving-base", commit_message="v2")
    cfg = MoReConfig(nblocks=4, block_rank=1, target_modules=["q_proj", "v_proj"])
    push_adapter(get_peft_model(tiny_llama(seed=5), cfg), "me/on-moving-base", base_model="org/moving-base")

    with caplog.at_level(logging.INFO, logger="hub_tools"):
        code = main(["pull", "me/on-moving-base", "--base-revision", v1.oid, "--out", str(tmp_path / "out")])
    assert code == 0 and (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert f"base model org/moving-base at revision {v1.oid}" in caplog.text
    capsys.readouterr()

    # HubRevisionNotFoundError is a plain HubError (a RuntimeError): reported through the plugin's
    # user_errors, on one line, exit code 1, no traceback
    with pytest.raises(SystemExit) as exit_:
        main(["pull", "me/on-moving-base", "--base-revision", "no-such-rev", "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # after the download's progress bars
    assert exit_.value.code == 1 and err.endswith(last + "\n")
    assert last.startswith("mad-models: error: ") and "no-such-rev" in last
    assert "Traceback" not in err
