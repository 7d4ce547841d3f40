"""bench/reproduce_pretrained_hybrids.py at tiny widths: every row runs, the report holds what the issues ask
for, records resume on a fresh work dir, and other settings are refused."""

import json
from pathlib import Path

import pytest

from bench import reproduce_pretrained_hybrids as bench

TINY = {
    "max_chars": 2000,  # the first lines of each pretraining and fine-tuning text
    "context": 32,
    "batch_size": 4,
    "gpt": {"width": 16, "layers": 4, "heads": 2},
    "mamba": {"width": 16, "layers": 4, "state_size": 2},
    "n_blocks": 4,
    "pretrain": {"steps": 4, "lr": 3e-3, "warmup": 1, "eval_every": 2, "eval_blocks": 4},
    "projectors": {"steps": 2, "lr": 1e-3},
    "finetune": {"steps": 2, "lrs": [3e-3], "min_resource": 2, "reduction_factor": 2},
    "arch_lrs": [0.05],
    "dev_blocks": 4,
    "seeds": [0, 1],
    "val_chars": 100,
    "chunk_chars": 32,
    "weight_decay": 0.0,
    "bootstrap": 50,
}


def test_hand_designed_layouts_follow_issue_25():
    layouts = bench.hand_designs(4)
    assert {k: "".join("AM"[c] for c in v) for k, v in layouts.items()} == {
        "hand-striped-AMAM": "AMAM",
        "hand-striped-mamba-first-MAMA": "MAMA",
        "hand-mamba-heavy-MMAM": "MMAM",
        "hand-attention-first-AAMM": "AAMM",
        "hand-mamba-first-MMAA": "MMAA",
    }
    assert sum(c == bench.A for c in bench.hand_designs(8)["hand-mamba-heavy-MMMMAMMM"]) == 1
    assert [k for k in (1, 2, 3, 4, 8, 9, 12) if bench.is_rung(k, 2)] == [1, 2, 4, 8]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("bench")
    old = bench.SETTINGS["quick"]
    bench.SETTINGS["quick"] = TINY
    threads = torch.get_num_threads()
    try:
        argv = ["--quick", "--threads", "1", "--work", str(root / "work"), "--records", str(root / "records"),
                "--out", str(root / "out")]  # fmt: skip
        assert bench.main(argv) == 0
    finally:
        bench.SETTINGS["quick"] = old
        torch.set_num_threads(threads)
    return root


def test_tiny_run_reports_every_row(tiny_run):
    doc = json.loads((tiny_run / "out" / "pretrained-hybrids-quick.json").read_text())
    rows = bench.row_names(TINY)
    assert set(doc["rows"]) == set(rows) and not doc["unfinished"]
    for row, st in doc["rows"].items():
        assert st["n"] == 2 and st["lo"] <= st["mean"] <= st["hi"], row
        assert st["params"][0] > 0 and st["flops_per_token"][0] > 0, row
        assert st["lr"] in TINY["finetune"]["lrs"], row
    # the hand-designed rows are one-hot and pruned: cheaper than the full hybrid
    full = doc["rows"]["hybrid-uniform"]
    for row in bench.hand_designs(4):
        st = doc["rows"][row]
        assert st["layouts"] == [row.rsplit("-", 1)[1]] * 2
        assert st["params"][0] < full["params"][0] and st["flops_per_token"][0] < full["flops_per_token"][0]
    assert doc["rows"]["hybrid-searched"]["layouts"][0] == "A+M/A+M/A+M/A+M"
    for seed in ("0", "1"):
        mix = doc["searched_mixtures"][seed]
        assert len(mix) == 4 and all(abs(sum(w) - 1) < 1e-3 for w in mix)
    assert doc["lm_selection"]["favoured"] in ("attention", "mamba")
    assert {(p["a"], p["b"]) for p in doc["pairs"]} >= {("hybrid-searched", "hybrid-uniform")}
    assert doc["unigram"]["bits_per_char"] > 3
    assert set(doc["pretraining"]) == {"gpt-neox", "mamba", "gpt-neox-wide"}
    md = (tiny_run / "out" / "pretrained-hybrids-quick.md").read_text()
    assert "hand-designed: striped (AMAM), pruned" in md and "LM selection:" in md
    assert (tiny_run / "out" / "pretrained-hybrids-quick.png").stat().st_size > 10_000
    records = tiny_run / "records"
    assert {p.name for p in records.iterdir()} >= {
        "results.jsonl",
        "settings.json",
        "tokenizer",
        "pretrained",
    }


def test_fresh_work_dir_resumes_from_the_records_and_other_settings_are_refused(
    tiny_run, tmp_path, one_thread
):
    records = tiny_run / "records"
    before = (records / "results.jsonl").read_text()
    b = bench.Bench("quick", TINY, tmp_path / "work", records, tmp_path / "out", progress=False)
    assert (tmp_path / "work" / "results.jsonl").read_text() == before
    b.run()  # everything is recorded: nothing trains, nothing is added
    assert (tmp_path / "work" / "results.jsonl").read_text() == before
    # the bundled models: the best hybrid on dev, fine-tuned again from the records (this work dir has no
    # models), score what the benchmark recorded for seed 0
    from mad_models.training.bits_per_char import score_files

    best = b.best_hybrid()
    assert best.startswith(("hybrid-", "hand-")) and best != "hybrid-random-init"
    record = b.export(best, tmp_path / "exported")
    files = [_write(tmp_path / f"val{i}.txt", text) for i, text in enumerate(b.texts("val"))]
    assert score_files(tmp_path / "exported", files)["bits_per_char"] == pytest.approx(
        record["val_bits"], rel=1e-4
    )
    other = {**TINY, "seeds": [0, 1, 2]}
    with pytest.raises(SystemExit, match="other settings.*seeds"):
        bench.Bench("quick", other, tmp_path / "work2", records, tmp_path / "out", progress=False)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
