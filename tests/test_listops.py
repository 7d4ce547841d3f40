"""ListOps generator (mad_models.listops): labels against an independent evaluator, bounds, disjoint splits,
determinism, clear errors."""

from __future__ import annotations

import pytest
import torch

from mad_models.listops import (
    END,
    NUM_CLASSES,
    PAD,
    SPLIT_SEEDS,
    ListOpsDataset,
    decode,
    encode,
    listops_splits,
    majority_class,
    make_listops,
)


def evaluate(text: str) -> tuple[int, int, list[int]]:
    """An independent recursive evaluator over the printed expression: (value, depth, argument counts)."""
    words = text.split()
    assert words[-1] == "END"
    pos = 0

    def expr() -> tuple[int, int, list[int]]:
        nonlocal pos
        w = words[pos]
        pos += 1
        if w.isdigit():
            return int(w), 1, []
        assert w.startswith("[")
        args, depth, counts = [], 0, []
        while words[pos] != "]":
            v, d, c = expr()
            args.append(v)
            depth = max(depth, d)
            counts += c
        pos += 1
        if w == "[MAX":
            v = max(args)
        elif w == "[MIN":
            v = min(args)
        elif w == "[SM":
            v = sum(args) % 10
        else:
            assert w == "[MED"
            s = sorted(args)
            n = len(s)
            v = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2
        return v, depth + 1, counts + [len(args)]

    value, depth, counts = expr()
    assert words[pos] == "END" and pos == len(words) - 1, "trailing tokens after the expression"
    return value, depth, counts


def test_the_evaluator_on_the_lra_paper_example():
    assert evaluate("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ] END")[0] == 5
    assert evaluate("[MED 1 2 4 9 ] END")[0] == 3  # (2 + 4) // 2: the median rounded down
    assert evaluate("[SM 9 8 [MAX 1 7 ] ] END")[0] == 4


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"max_depth": 5, "max_args": 4, "min_length": 30, "max_length": 200},
        {"max_depth": 2, "max_args": 9, "min_length": 5},
    ],
)
def test_labels_lengths_depth_and_arguments_match_an_independent_evaluator(settings):
    tokens, lengths, labels = make_listops(600, seed=7, **settings)
    s = {"max_depth": 4, "max_args": 5, "min_length": 16, "max_length": 128, **settings}
    assert tokens.shape == (600, s["max_length"])
    assert int(lengths.min()) >= s["min_length"] and int(lengths.max()) <= s["max_length"]
    depths = set()
    for row, n, y in zip(tokens, lengths, labels, strict=True):
        assert (row[n:] == PAD).all() and (row[:n] != PAD).all() and row[n - 1] == END
        value, depth, counts = evaluate(decode(row))
        assert value == int(y)
        assert depth <= s["max_depth"]
        assert all(2 <= c <= s["max_args"] for c in counts)
        depths.add(depth)
    assert max(depths) == s["max_depth"]  # the deepest trees are reached
    freq = torch.bincount(labels, minlength=NUM_CLASSES).float() / len(labels)
    assert (freq > 0.03).all()  # every class occurs


def test_generation_is_deterministic_per_seed_and_unique_within_a_split():
    a = make_listops(300, seed=3)
    b = make_listops(300, seed=3)
    c = make_listops(300, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    ds = ListOpsDataset("val", num_examples=300, max_length=48)
    assert len(ds.keys()) == 300 and ds.seed == SPLIT_SEEDS["val"]


def test_splits_are_disjoint_and_an_earlier_split_ignores_a_later_ones_size():
    # short trees collide often, so dedupe across splits really has work to do here
    # [OP d d] END and [OP d d d] END only: 4 x 10^2 + 4 x 10^3 = 4,400 distinct sequences
    settings = {"max_depth": 2, "max_args": 3, "min_length": 5, "max_length": 7}
    splits = listops_splits({"train": 2000, "val": 300, "test": 300, "arch": 200}, **settings)
    keys = {name: ds.keys() for name, ds in splits.items()}
    assert {name: len(k) for name, k in keys.items()} == {"train": 2000, "val": 300, "test": 300, "arch": 200}
    names = list(keys)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            assert keys[x].isdisjoint(keys[y]), (x, y)
    # without the exclusion, the train seed draws sequences that test holds: the dedupe is what separates them
    plain = ListOpsDataset("train", 2000, **settings)
    assert plain.keys() & keys["test"]
    again = listops_splits({"test": 300, "train": 10}, **settings)
    assert torch.equal(again["test"].tokens, splits["test"].tokens)


def test_dataset_items_collate_and_decode():
    from mad_models.training.text import pad_collate

    ds = ListOpsDataset("train", num_examples=4, max_length=40)
    batch = pad_collate(PAD)([ds[i] for i in range(4)])
    assert batch["input_ids"].shape[1] == int(ds.lengths.max())
    assert batch["labels"].tolist() == ds.labels.tolist()
    assert torch.equal(batch["attention_mask"].sum(1), ds.lengths)
    assert torch.equal(encode(decode(ds[0]["input_ids"])), ds[0]["input_ids"])
    assert majority_class(torch.tensor([3, 1, 3, 1, 2])) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_depth": 1}, "max_depth must be an int >= 2"),
        ({"max_args": 1}, "max_args must be an int >= 2"),
        ({"min_length": 40, "max_length": 20}, "max_length must be an int >= min_length"),
        ({"value_p": 1.0}, "value_p must be a probability"),
        ({"max_depth": 2, "max_args": 3, "min_length": 10}, "longer than any tree"),
        ({"depth": 3}, "unknown ListOps setting"),
        ({"max_depth": 2.5}, "max_depth must be an int"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_listops(10, seed=0, **kwargs)


def test_bad_sizes_seeds_splits_and_too_few_distinct_trees_are_refused():
    with pytest.raises(ValueError, match="num_examples must be an int >= 1"):
        make_listops(0, seed=0)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        make_listops(5, seed=-1)
    with pytest.raises(ValueError, match="split must be one of"):
        ListOpsDataset("dev")
    with pytest.raises(ValueError, match="unknown split"):
        listops_splits({"dev": 10})
    # [OP d d] END is the only shape of length 5: 4 x 10 x 10 = 400 distinct sequences
    with pytest.raises(ValueError, match="only 400 distinct ListOps sequences of the 500"):
        make_listops(500, seed=0, max_depth=2, max_args=2, min_length=5, max_length=5)
    with pytest.raises(ValueError, match="unknown ListOps token"):
        encode("[MAX 1 2 ) END")
