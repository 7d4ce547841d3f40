"""Shakespeare's plays and poems (``data/shakespeare``) split for the pretrained-hybrid experiment.

The train texts are split by genre, so fine-tuning meets a real shift from pretraining:

- ``pretrain``: the tragedies and histories (19 texts, 2.76 MB), minus the last 2% of each (``pretrain_dev``,
  for the pretraining curve only);
- ``finetune``: the comedies, romances and poems (17 texts, 1.59 MB), minus their last 15%: the 5% before
  the last 10% is ``arch`` (held-out batches for DARTS's architecture steps) and the last 10% is ``dev``
  (every choice: lr, arch lr);
- ``val``: the three val plays (julius_caesar, twelfth_night, winters_tale), never used for a choice.

Cuts fall on line boundaries. A test split of three more plays is kept outside the project.

Example:
    >>> texts = load_split("finetune")
    >>> len(texts), sorted(texts)[0]
    (17, 'alls_well_that_ends_well')
    >>> set(load_split("dev")) == set(texts)  # dev holds the tail of each fine-tuning text
    True
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "shakespeare"

TRAGEDIES = (
    "antony_and_cleopatra",
    "coriolanus",
    "hamlet",
    "lear",
    "othello",
    "romeo_and_juliet",
    "timon_of_athens",
    "tragedy_of_titus_andronicus",
    "troilus_and_cressida",
)
HISTORIES = (
    "henry_iv_part_1",
    "henry_iv_part_2",
    "henry_v",
    "henry_vi_part_1",
    "henry_vi_part_2",
    "henry_vi_part_3",
    "henry_viii",
    "john",
    "richard_ii",
    "richard_iii",
)
COMEDIES = (
    "alls_well_that_ends_well",
    "as_you_like_it",
    "comedy_of_errors",
    "loves_labours_lost",
    "measure_for_measure",
    "merchant_of_venice",
    "merry_wives_of_windsor",
    "midsummer_nights_dream",
    "taming_of_the_shrew",
    "two_gentlemen_of_verona",
)
ROMANCES = ("cymbeline", "pericles")
POEMS = ("lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets")
PRETRAIN_TEXTS = TRAGEDIES + HISTORIES
FINETUNE_TEXTS = COMEDIES + ROMANCES + POEMS
VAL_TEXTS = ("julius_caesar", "twelfth_night", "winters_tale")

PRETRAIN_DEV_FRACTION = 0.02
ARCH_FRACTION = 0.05
DEV_FRACTION = 0.10
SPLITS = ("pretrain", "pretrain_dev", "finetune", "arch", "dev", "val", "train")


def _read(folder: str, name: str, data_dir: Path) -> str:
    path = data_dir / folder / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: data/shakespeare must hold the train/ and val/ texts")
    return path.read_text(encoding="utf-8")


def _cut(text: str, fraction: float) -> int:
    """Where the tail of ``text`` starts: past the first line break at or after ``(1 - fraction) * len``."""
    at = int(len(text) * (1 - fraction))
    nl = text.find("\n", at)
    return len(text) if nl < 0 else nl + 1


def load_split(split: str, data_dir: str | Path | None = None) -> dict[str, str]:
    """``{text name: text}`` of one split (see the module docstring); ``"train"``: every train text whole."""
    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "val":
        return {n: _read("val", n, data_dir) for n in VAL_TEXTS}
    if split == "train":
        return {n: _read("train", n, data_dir) for n in sorted(PRETRAIN_TEXTS + FINETUNE_TEXTS)}
    out = {}
    if split in ("pretrain", "pretrain_dev"):
        for n in PRETRAIN_TEXTS:
            text = _read("train", n, data_dir)
            cut = _cut(text, PRETRAIN_DEV_FRACTION)
            out[n] = text[:cut] if split == "pretrain" else text[cut:]
        return out
    for n in FINETUNE_TEXTS:
        text = _read("train", n, data_dir)
        dev_at = _cut(text, DEV_FRACTION)
        arch_at = _cut(text[:dev_at], ARCH_FRACTION / (1 - DEV_FRACTION))
        out[n] = {"finetune": text[:arch_at], "arch": text[arch_at:dev_at], "dev": text[dev_at:]}[split]
    return out


def data_digest(data_dir: str | Path | None = None) -> str:
    """sha256 over every train and val file (names and bytes): a run key part."""
    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    h = hashlib.sha256()
    for path in sorted((data_dir / "train").glob("*.txt")) + sorted((data_dir / "val").glob("*.txt")):
        h.update(f"{path.parent.name}/{path.name}".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
