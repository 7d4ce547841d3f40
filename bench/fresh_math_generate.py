"""Fresh mathematics questions from the generator behind data/mathematics (an unseen test for the adapters).

Runs in its OWN venv: DeepMind's ``mathematics_dataset`` 1.0.1 needs ``sympy==1.5.1``, which cannot share a
venv with torch. It imports nothing from mad_models. One-time setup, then the run (from the repo root):

    python3.11 -m venv /tmp/mathgen && /tmp/mathgen/bin/pip install -q mathematics-dataset==1.0.1 sympy==1.5.1
    /tmp/mathgen/bin/python bench/fresh_math_generate.py --out bench/data/fresh_math.jsonl
    /tmp/mathgen/bin/python bench/fresh_math_generate.py --compare-entropy   # why the easier half (a table)

What it reproduces (data/mathematics/README.md): the nine short-answer modules, sampled from the easier half
of the generator's *training* entropy range. ``generate.py`` builds its train modules with
``modules.train(_make_entropy_fn(level, num_levels))``; the easier half is ``_make_entropy_fn(0, 2)``, which
maps each module's train range [a, b] to [a, (a + b) / 2]. A question or answer longer than the generator's
own limits (``generate_settings.MAX_QUESTION_LENGTH`` / ``MAX_ANSWER_LENGTH``) is re-drawn, as in
``generate.sample_from_module``.

Fresh means: drawn with a fixed seed (default 20261203) unrelated to the original files, and every question
whose prompt appears in data/mathematics/train.jsonl or val.jsonl (or earlier in this file) is dropped and
re-drawn; the counts of those drops are printed and written to ``<out>.meta.json``. Deterministic: the same
seed gives the same file (per module, ``random`` and ``numpy.random`` are seeded from the seed and the
module's name; the script re-executes itself with ``PYTHONHASHSEED=0`` so set orders inside sympy cannot
vary between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import zlib
from pathlib import Path

MODULES = (  # data/mathematics's module names: <generator module>__<function>
    "arithmetic__add_or_sub",
    "arithmetic__mul",
    "comparison__closest",
    "comparison__pair",
    "measurement__conversion",
    "numbers__gcd",
    "numbers__is_prime",
    "numbers__place_value",
    "numbers__round_number",
)
SEED = 20261203
PER_MODULE = 40
ROOT = Path(__file__).resolve().parent.parent


def _read_prompts(paths: list[Path]) -> set[str]:
    prompts: set[str] = set()
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                prompts.add(json.loads(line)["prompt"])
    return prompts


def generate(seed: int, per_module: int, seen: set[str]) -> tuple[list[dict], dict]:
    """``per_module`` rows per module whose prompts are not in ``seen``, and counts of what was re-drawn."""
    import numpy as np
    from mathematics_dataset import generate as ds_generate
    from mathematics_dataset import generate_settings
    from mathematics_dataset.modules import modules as ds_modules

    train_modules = ds_modules.train(ds_generate._make_entropy_fn(0, 2))  # the easier half of train entropy
    rows: list[dict] = []
    stats: dict = {"duplicates_dropped": {}, "too_long_dropped": {}}
    for name in MODULES:
        group, function = name.split("__")
        module_fn = train_modules[group][function]
        module_seed = (seed + zlib.crc32(name.encode())) % 2**32
        random.seed(module_seed)
        np.random.seed(module_seed)
        kept, dup, too_long = 0, 0, 0
        while kept < per_module:
            problem = module_fn()
            question, answer = str(problem.question), str(problem.answer)
            if (
                len(question) > generate_settings.MAX_QUESTION_LENGTH
                or len(answer) > generate_settings.MAX_ANSWER_LENGTH
            ):
                too_long += 1
                continue
            if question in seen:
                dup += 1
                continue
            seen.add(question)  # no question twice in the fresh file either
            rows.append({"module": name, "prompt": question, "answer": answer})
            kept += 1
        stats["duplicates_dropped"][name] = dup
        stats["too_long_dropped"][name] = too_long
    return rows, stats


def compare_entropy(per_module: int, train_path: Path) -> None:
    """Why the easier half: mean digits per prompt for draws from the whole train range, its easier half
    and its easier third, next to data/mathematics/train.jsonl (prints a table; writes nothing)."""
    import numpy as np
    from mathematics_dataset import generate as ds_generate
    from mathematics_dataset.modules import modules as ds_modules

    train: dict[str, list[str]] = {}
    for line in train_path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            train.setdefault(row["module"], []).append(row["prompt"])
    levels = {"whole (0,1)": (0, 1), "easier half (0,2)": (0, 2), "easier third (0,3)": (0, 3)}

    def digits(prompts: list[str]) -> float:
        return sum(sum(ch.isdigit() for ch in q) for q in prompts) / len(prompts)

    print(f"mean digits per prompt, {per_module} draws per module | train.jsonl")
    print(f"{'module':26s} " + " ".join(f"{k:>18s}" for k in levels) + f" {'train.jsonl':>12s}")
    for name in MODULES:
        group, function = name.split("__")
        cells = []
        for level, num_levels in levels.values():
            module_fn = ds_modules.train(ds_generate._make_entropy_fn(level, num_levels))[group][function]
            random.seed(7)
            np.random.seed(7)
            cells.append(digits([str(module_fn().question) for _ in range(per_module)]))
        print(f"{name:26s} " + " ".join(f"{c:18.2f}" for c in cells) + f" {digits(train[name]):12.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "data" / "fresh_math.jsonl"))
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--per-module", type=int, default=PER_MODULE)
    p.add_argument(
        "--exclude",
        nargs="+",
        default=[str(ROOT / "data" / "mathematics" / f) for f in ("train.jsonl", "val.jsonl")],
        help="JSONL files whose prompts must not appear in the output",
    )
    p.add_argument(
        "--compare-entropy",
        action="store_true",
        help="only print the entropy-range check against train.jsonl (500 draws per module and range)",
    )
    a = p.parse_args(argv)
    if a.compare_entropy:
        compare_entropy(500, ROOT / "data" / "mathematics" / "train.jsonl")
        return 0
    if a.per_module < 1:
        p.error(f"--per-module must be >= 1, got {a.per_module}")
    exclude = [Path(x) for x in a.exclude]
    for path in exclude:
        if not path.is_file():
            p.error(f"--exclude: {path} does not exist")
    seen = _read_prompts(exclude)
    n_seen = len(seen)
    rows, stats = generate(a.seed, a.per_module, seen)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")  # never a half-written file
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(out)
    meta = {
        "generator": "mathematics_dataset 1.0.1 (sympy 1.5.1), train modules, entropy _make_entropy_fn(0, 2)",
        "seed": a.seed,
        "per_module": a.per_module,
        "rows": len(rows),
        "excluded_files": [os.path.relpath(x, ROOT) for x in exclude],
        "excluded_prompts": n_seen,
        **stats,
        "duplicates_dropped_total": sum(stats["duplicates_dropped"].values()),
    }
    Path(str(out) + ".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") != "0":  # sympy's set orders must not depend on the hash seed
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    sys.exit(main())
