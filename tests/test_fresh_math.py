"""The committed fresh mathematics questions (bench/data/fresh_math.jsonl) are what bench/fresh_math.py
claims: 9 modules x 40 valid rows from the generator's limits, none of them in train or val, and the
script's distribution check runs on them without a model."""

import json
from collections import Counter
from pathlib import Path

import pytest

from bench import fresh_math as fm
from mad_models.training.exact_match import load_qa_rows

ROOT = Path(__file__).resolve().parents[1]
FRESH = ROOT / "bench" / "data" / "fresh_math.jsonl"
ALL_FRESH = sorted((ROOT / "bench" / "data").glob("fresh_math*.jsonl"))  # the default file and other seeds


def _rows(name):
    return load_qa_rows(ROOT / "data" / "mathematics" / name)


@pytest.mark.parametrize("path", ALL_FRESH, ids=lambda p: p.name)
def test_fresh_file_has_val_modules_40_each_and_generator_limits(path):
    fresh = load_qa_rows(path)
    counts = Counter(r["module"] for r in fresh)
    assert set(counts) == {r["module"] for r in _rows("val.jsonl")}
    assert set(counts.values()) == {40} and len(fresh) == 360
    # mathematics_dataset's generate_settings: questions <= 160 chars, answers <= 30
    assert all(0 < len(r["prompt"]) <= 160 and 0 < len(r["answer"]) <= 30 for r in fresh)
    assert {r["answer"] for r in fresh if r["module"] == "numbers__is_prime"} <= {"True", "False"}


def test_no_fresh_prompt_is_in_train_or_val_or_another_fresh_file_or_repeated():
    assert FRESH in ALL_FRESH and len(ALL_FRESH) >= 2
    seen = {r["prompt"] for r in _rows("train.jsonl") + _rows("val.jsonl")}
    for path in ALL_FRESH:
        fresh = [r["prompt"] for r in load_qa_rows(path)]
        assert len(set(fresh)) == len(fresh), path.name
        assert not set(fresh) & seen, path.name
        seen |= set(fresh)


@pytest.mark.parametrize("path", ALL_FRESH, ids=lambda p: p.name)
def test_generation_record_matches_the_file(path):
    meta = json.loads(Path(str(path) + ".meta.json").read_text())
    assert meta["rows"] == len(load_qa_rows(path)) == 360 and meta["per_module"] == 40
    assert meta["seed"] == 20261203 if path == FRESH else meta["seed"] != 20261203
    assert meta["duplicates_dropped_total"] == sum(meta["duplicates_dropped"].values())
    assert sorted(meta["duplicates_dropped"]) == sorted({r["module"] for r in load_qa_rows(path)})


@pytest.mark.parametrize(
    "answer,kind",
    [
        ("True", "bool"),
        ("c", "letter"),
        ("-12", "int"),
        ("0.5", "decimal"),
        ("-3/7", "fraction"),
        ("2, 3", "other"),
    ],
)
def test_answer_kind(answer, kind):
    assert fm.answer_kind(answer) == kind


def test_stats_only_report_without_models(tmp_path):
    out = tmp_path / "fresh.md"
    out.write_text("old\n<!-- notes -->\nmy paragraph\n")
    assert fm.main(["--stats-only", "--out", str(out)]) == 0
    text = out.read_text()
    assert "No-learning heuristic exact match: val 0.131, fresh 0.139" in text
    assert "| numbers__gcd |" in text and text.endswith("<!-- notes -->\nmy paragraph\n")
    assert "old" not in text.split("<!-- notes -->")[0]


def test_a_fresh_file_overlapping_val_is_refused(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(FRESH.read_text() + json.dumps(_rows("val.jsonl")[0]) + "\n")
    with pytest.raises(SystemExit, match="also in train/val"):
        fm.main(["--stats-only", "--data", str(bad), "--out", str(tmp_path / "o.md")])


def test_mcnemar_p_is_the_exact_two_sided_binomial():
    assert fm.mcnemar_p(0, 0) == 1.0
    assert fm.mcnemar_p(10, 0) == fm.mcnemar_p(0, 10) == 2 / 2**10
    assert fm.mcnemar_p(5, 5) == 1.0
    assert abs(fm.mcnemar_p(26, 17) - 0.2221) < 1e-3  # 2 * P(Bin(43, 1/2) <= 17)
