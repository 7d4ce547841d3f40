"""Reproduce, at our scale, the comparisons of the README: one command, resumable parts.

1. MAD (``bench/reproduce_mad.py``): attention, Mamba and their Manticore hybrids on the six MAD tasks,
   against chance and a no-learning heuristic.
2. MoRe vs LoRA (``bench/reproduce_more.py``): SmolLM2-135M-Instruct fine-tuned on DeepMind's
   mathematics questions, each method at its own tuned lr, exact match on val against parameters.
3. Pretrained hybrids on text (``bench/reproduce_pretrained_hybrids.py``): GPT-NeoX and Mamba pretrained
   on Shakespeare, joined, searched and fine-tuned, against each alone, hand-designed layouts and unigram.

    python bench/reproduce.py --quick                # every part, small settings
    python bench/reproduce.py --quick --part more    # one part only
    python bench/reproduce.py --work runs/repro      # the full setting; re-run the same line to resume

Each part writes its own markdown table into ``bench/results/`` (see the part's --help).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `bench` from the checkout

from bench import reproduce_mad, reproduce_more, reproduce_pretrained_hybrids  # noqa: E402

PARTS = {"mad": reproduce_mad.main, "more": reproduce_more.main, "text": reproduce_pretrained_hybrids.main}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small settings (each part: <= 30 min on 2 cores)")
    p.add_argument("--part", choices=("all", *PARTS), default="all")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--work", help="scratch dir for checkpoints; each part resumes from its own sub-dir")
    a = p.parse_args(argv)
    for name, run in PARTS.items():
        if a.part not in ("all", name):
            continue
        args = ["--threads", str(a.threads)] + (["--quick"] if a.quick else [])
        if a.work:
            args += ["--work", str(Path(a.work) / name)]
        code = run(args)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
