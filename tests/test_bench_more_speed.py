"""bench/more_vs_lora.py on a tiny layer: every row and ratio is written, rounds resume, other settings are
refused. (The timings themselves are the benchmark's business, not a test's.)"""

from __future__ import annotations

import json

import pytest

from bench import more_vs_lora

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--shapes", "256x256", "--tokens", "32", "--reps", "1", "--no-model"]


def test_rows_ratios_goals_and_resume(tmp_path):
    out = tmp_path / "speed"
    result = more_vs_lora.main([*TINY, "--rounds", "1", "--out", str(out)])
    names = {r["method"] for r in result["layers"]}
    assert {"LoRA r=4", "LoRA r=8", "LoRA r=16"} <= names
    for k, r in more_vs_lora.MORE_CONFIGS:  # each fits 256x256: the layer's path and the other one, forced
        assert f"MoRe k={k} r={r}" in names
        assert any(n.startswith(f"MoRe k={k} r={r} (") and "forced" in n for n in names)
    for row in result["layers"]:
        assert len(row["ms"]["rounds"]) == 1 and row["ms"]["median"] > 0
        if row["method"].startswith("MoRe"):
            assert (
                row["equal_lora"] == f"LoRA r={row['k'] * row['r']}"
                and row["params"] == row["k"] * row["r"] * 512
            )
            assert row["vs_equal_lora"]["median"] > 0
            wide = row["width"] > more_vs_lora.monarch_fold_limit("cpu")
            if "forced" not in row["method"] and "autograd" not in row["method"]:
                assert row["path"] == ("two-product" if wide else "folded")
    assert "k^2 r >= 64" in result["goals"]["adapter_text"]
    md = out.with_suffix(".md").read_text()
    assert "| 256x256 | MoRe k=8 r=2 | 128 | two-product |" in md and "LoRA r=16 is a row of its own" in md
    assert json.loads(out.with_suffix(".json").read_text())["goals"] == result["goals"]
    # a second round resumes after the kept one, which is not measured again
    first = (tmp_path / "speed-runs" / "round-0.json").read_text()
    result = more_vs_lora.main([*TINY, "--rounds", "2", "--out", str(out)])
    assert (tmp_path / "speed-runs" / "round-0.json").read_text() == first
    assert all(len(r["ms"]["rounds"]) == 2 for r in result["layers"])
    # other settings are refused, not mixed in
    with pytest.raises(SystemExit, match="other settings \\(tokens\\)"):
        more_vs_lora.main([*TINY[:3], "64", *TINY[4:], "--rounds", "2", "--out", str(out)])
