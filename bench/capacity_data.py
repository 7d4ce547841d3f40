"""The capacity testbeds of ``bench/reproduce_more_capacity.py``, every split generated from a seed.

    PYTHONPATH=$PWD .venv/bin/python bench/capacity_data.py --facts 800 --seed 0 --out /tmp/facts

The testbeds, rows ``{"prompt", "answer", "module"}`` as ``data/mathematics`` has them, asked in the chat
format of :mod:`mad_models.training.exact_match`:

- ``facts`` (:func:`generate`): many-fact memorisation. ``n_facts`` facts about invented people ("Where
  does Belkano Dupri live?" -> "Lima"), each answer drawn uniformly from the relation's 20 values, so
  nothing but memory answers them (chance 1/20). Each relation has 6 question templates: 3 are trained on
  (the ``train`` split: every fact in every train template), 1 asks the ``dev`` split (held-out
  paraphrases: lr choice and the gate), 2 ask the ``test`` split (held-out paraphrases used only for the
  final table). The ``facts`` split is one trained question per fact: memorisation, scored on what was
  trained.
- ``math-cipher`` (:func:`digit_cipher`): the mathematics data with every digit of every answer rewritten
  through one fixed permutation of 0-9 drawn from the seed (the questions unchanged).

Deterministic: the same (n_facts, seed) gives the same rows (``random.Random(seed)`` only; no hash-ordered
sets). ``--out`` writes ``{split}.jsonl`` files to look at; the benchmark generates them in memory.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

# relation -> (answers, train templates (3), dev template (1), test templates (2)); "{x}" is the person
RELATIONS: dict[str, tuple[list[str], list[str], list[str], list[str]]] = {
    "city": (
        "Paris London Tokyo Cairo Lima Oslo Rome Delhi Sydney Toronto Berlin Madrid Dublin Vienna Prague "
        "Lisbon Athens Moscow Seoul Nairobi".split(),
        ["Where does {x} live?", "In which city does {x} live?", "{x} lives in which city?"],
        ["Which city is home to {x}?"],
        ["What city does {x} call home?", "Name the city where {x} lives."],
    ),
    "job": (
        "teacher doctor farmer pilot baker lawyer nurse painter writer chef singer dentist plumber "
        "engineer sailor judge banker tailor miner poet".split(),
        ["What is the job of {x}?", "What does {x} do for a living?", "{x} works as what?"],
        ["What is {x}'s profession?"],
        ["Which occupation does {x} have?", "Name the job that {x} has."],
    ),
    "colour": (
        "red blue green yellow purple orange pink brown black white gray gold silver teal violet beige "
        "navy maroon olive cyan".split(),
        [
            "What is the favourite colour of {x}?",
            "Which colour does {x} like best?",
            "{x}'s favourite colour is what?",
        ],
        ["What colour does {x} prefer?"],
        ["Name {x}'s favourite colour.", "Which colour is {x}'s favourite?"],
    ),
    "pet": (
        "cat dog horse rabbit parrot turtle goat hamster snake lizard goose duck pig cow sheep fox owl "
        "frog mouse crow".split(),
        ["What pet does {x} have?", "Which animal does {x} keep as a pet?", "{x} owns which pet?"],
        ["What kind of pet does {x} own?"],
        ["Name the pet that {x} keeps.", "Which pet belongs to {x}?"],
    ),
}
FIRST = "ba be bo da de di ka ke ko la le lo ma me mi na ne no ra re ri sa se so ta te to va ve zo".split()
SECOND = "lan dor mir sel tak vin pro rus gal bek fen lim dun kas tor vel".split()
SPLITS = ("train", "facts", "dev", "test")


def person_names(n: int, rng: random.Random) -> list[str]:
    """``n`` distinct invented full names ("Belkano Dupri"), capitalised, in a seeded order."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        first = "".join(rng.choice(FIRST) for _ in range(2)) + rng.choice(SECOND)[:2]
        last = rng.choice(FIRST) + rng.choice(SECOND) + rng.choice(FIRST)[0]
        name = f"{first.capitalize()} {last.capitalize()}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def digit_cipher(splits: dict[str, list[dict]], seed: int) -> dict[str, list[dict]]:
    """``splits`` with every digit of every answer rewritten through one permutation of 0-9 from ``seed``."""
    digits = list("0123456789")
    random.Random(f"digits-{seed}").shuffle(digits)
    table = str.maketrans("0123456789", "".join(digits))
    return {k: [{**r, "answer": r["answer"].translate(table)} for r in v] for k, v in splits.items()}


def generate(n_facts: int, seed: int) -> dict[str, list[dict]]:
    """``{"train", "facts", "dev", "test"}`` rows of the facts testbed: ``n_facts`` facts (a multiple of 4).

    ``train`` asks every fact in each of its relation's 3 train templates (3 * n_facts rows, shuffled);
    ``facts`` is one of those rows per fact (a random train template);
    ``dev`` asks every fact once, ``test`` twice, in held-out templates. ``module`` is the relation.
    """
    if n_facts < len(RELATIONS) or n_facts % len(RELATIONS):
        raise ValueError(f"n_facts must be a positive multiple of {len(RELATIONS)}, got {n_facts}")
    rng = random.Random(seed)
    people = person_names(n_facts // len(RELATIONS), rng)
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for person in people:
        for rel, (answers, train_t, dev_t, test_t) in RELATIONS.items():
            answer = rng.choice(answers)
            asked = [{"prompt": t.format(x=person), "answer": answer, "module": rel} for t in train_t]
            out["train"] += asked
            out["facts"].append(rng.choice(asked))
            out["dev"] += [{"prompt": t.format(x=person), "answer": answer, "module": rel} for t in dev_t]
            out["test"] += [{"prompt": t.format(x=person), "answer": answer, "module": rel} for t in test_t]
    rng.shuffle(out["train"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--facts", type=int, default=1200, help="number of facts (a multiple of 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="folder for {train,facts,dev,test}.jsonl")
    a = ap.parse_args(argv)
    try:
        splits = generate(a.facts, a.seed)
    except ValueError as err:
        ap.error(str(err))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{out / name}.jsonl: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
