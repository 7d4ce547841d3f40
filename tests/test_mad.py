"""Structure of the generated MAD data, determinism, validation, Dataset and evaluate."""

import pytest
import torch

from mad_models.mad import (
    DEFAULTS,
    HARDER,
    IGNORE,
    TASKS,
    MADDataset,
    evaluate,
    make_task,
    memorization_map,
)


def _runs(seq: list[int], is_key) -> list[tuple[int, int, bool]]:
    """Split a sequence into maximal runs of key / value tokens: (start, end, is_key)."""
    runs, start = [], 0
    for t in range(1, len(seq) + 1):
        if t == len(seq) or is_key(seq[t]) != is_key(seq[start]):
            runs.append((start, t, is_key(seq[start])))
            start = t
    return runs


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_shapes_dtypes_and_determinism(name, split):
    x, y = make_task(name, split=split, seed=3, num_examples=7)
    assert x.dtype == y.dtype == torch.long
    assert x.shape == y.shape == (7, DEFAULTS[name]["seq_len"])
    assert 0 <= int(x.min()) and int(x.max()) < DEFAULTS[name]["vocab_size"]
    scored = y[y != IGNORE]
    assert scored.numel() > 0 and int(scored.min()) >= 0 and int(scored.max()) < DEFAULTS[name]["vocab_size"]
    x2, y2 = make_task(name, split=split, seed=3, num_examples=7)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = make_task(name, split=split, seed=4, num_examples=7)
    assert not torch.equal(x, x3)


def test_default_sizes_and_seeds():
    x, _ = make_task("in_context_recall")
    assert x.shape == (12_800, 128)
    xt, _ = make_task("memorization", split="test")
    assert xt.shape[0] == 1_280
    assert make_task("memorization")[0].shape[0] == 256
    # the test split has its own fixed seed and stream, distinct from train's
    assert not torch.equal(make_task("compression", split="test")[0][:5], make_task("compression")[0][:5])
    assert torch.equal(make_task("compression", split="test")[0], make_task("compression", "test", 12345)[0])


@pytest.mark.parametrize("name,kw", [("in_context_recall", {}), ("noisy_recall", {"frac_noise": 0.4})])
def test_recall_scored_values_are_bound_earlier(name, kw):
    x, y = make_task(name, split="test", num_examples=40, seq_len=64, **kw)
    vocab = DEFAULTS[name]["vocab_size"]
    kv_vocab = vocab - DEFAULTS[name].get("noise_vocab_size", 0)
    nk = kv_vocab // 2
    n_scored = 0
    for seq, tgt in zip(x.tolist(), y.tolist(), strict=True):
        stream = seq + [None]
        bound: dict[int, int] = {}
        for t in range(0, len(seq), 2):  # pairs sit at even offsets
            k, v = stream[t], stream[t + 1]
            if k < nk:  # a real pair (noise pairs come from the top of the vocab)
                assert v is None or nk <= v < kv_vocab
                if v is not None and t < len(seq) - 1:
                    # the target at the key position is the value; scored iff the key was bound earlier
                    if k in bound:
                        assert tgt[t] == v == bound[k]
                        n_scored += 1
                    else:
                        assert tgt[t] == IGNORE
                if v is not None:
                    bound.setdefault(k, v)
            else:
                assert k >= kv_vocab and tgt[t] == IGNORE
            if t + 1 < len(seq):
                assert tgt[t + 1] == IGNORE  # keys are never scored
    assert n_scored > 100


def test_noisy_recall_noise_fraction_and_vocab():
    x, _ = make_task("noisy_recall", split="train", num_examples=200, frac_noise=0.6)
    noise = (x >= 16).float().mean().item()
    assert 0.55 < noise < 0.65
    x, _ = make_task("noisy_recall", split="train", num_examples=50, frac_noise=0.0)
    assert int(x.max()) < 16


def test_recall_train_scores_every_value_test_only_probed():
    from mad_models.mad.tasks import recall

    xtr, ytr = recall(20, test=False, generator=torch.Generator().manual_seed(1))
    xte, yte = recall(20, test=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(xtr, xte)  # same data, different scoring
    values = torch.zeros_like(xtr, dtype=torch.bool)
    values[:, :-1] = xtr[:, 1:] >= 8
    assert torch.equal(ytr != IGNORE, values)
    assert ((yte != IGNORE) & ~(ytr != IGNORE)).sum() == 0
    assert (yte != IGNORE).sum() < (ytr != IGNORE).sum()


def _fuzzy_pairs(seq: list[int], nk: int, pad: int) -> list[tuple[tuple, tuple, int]]:
    """(key motif, value motif, start of the value) for each pair of a fuzzy-recall sequence."""
    t = 0
    while seq[t] == pad:
        t += 1
    runs = _runs(seq[t:], lambda tok: tok < nk)
    pairs = []
    for i in range(0, len(runs) - 1, 2):
        (ks, ke, is_key), (vs, ve, _) = runs[i], runs[i + 1]
        assert is_key
        pairs.append((tuple(seq[t + ks : t + ke]), tuple(seq[t + vs : t + ve]), t + vs))
    return pairs


def test_fuzzy_recall_follows_mad_lab():
    """MAD-lab's multi-query fuzzy recall: pad token, distinct tokens within a motif, held-out keys of
    size k, and only repeated keys' values (plus the final probe) scored: ~4.6 positions per test
    sequence, not 34."""
    x, y = make_task("fuzzy_recall", split="test", num_examples=200)
    pad, nk = 15, 7  # last id pads; keys 0..6, values 7..14
    n_scored = []
    for seq, tgt in zip(x.tolist(), y.tolist(), strict=True):
        assert seq[0] == pad or seq[0] < nk  # left-padded
        assert tgt[-1] != IGNORE  # the probe's last value token, the one token past the inputs
        stream = seq + [tgt[-1]]  # the full sequence: targets are shifted by one
        ps = _fuzzy_pairs(stream, nk, pad)
        seen: dict[tuple, tuple] = {}
        expected = {}
        for k, v, vs in ps:
            assert len(k) == 3 and len(set(k)) == len(k)  # held-out keys are 3 distinct tokens
            assert 1 <= len(v) <= 3 and len(set(v)) == len(v) and all(nk <= tok < pad for tok in v)
            if k in seen:
                assert v == seen[k]  # a repeated key maps to its first value
                expected.update({vs + o - 1: tok for o, tok in enumerate(v)})
            seen.setdefault(k, v)
        assert ps[-1][0] in {k for k, _, _ in ps[:-1]}  # the final probe repeats an earlier key
        assert {t: tok for t, tok in enumerate(tgt) if tok != IGNORE} == expected
        n_scored.append(len(expected))
    mean = sum(n_scored) / len(n_scored)
    assert 3.5 < mean < 6.0, mean  # MAD-lab: about 4.6
    assert min(n_scored) >= 1
    # train keys vary in size 1..3 and every value token is scored
    xtr, ytr = make_task("fuzzy_recall", split="train", num_examples=50)
    sizes = {len(k) for seq in xtr.tolist() for k, _, _ in _fuzzy_pairs(seq, nk, pad)}
    assert sizes == {1, 2, 3}
    assert ((ytr != IGNORE).sum(1) > 30).all()


@pytest.mark.parametrize("k,seq_len,vocab", [(16, 256, 16), (4, 24, 8), (32, 128, 32), (96, 256, 16)])
def test_selective_copying_targets_are_nonblank_tokens_in_order(k, seq_len, vocab):
    x, y = make_task(
        "selective_copying",
        split="test",
        num_examples=10,
        num_tokens_to_copy=k,
        seq_len=seq_len,
        vocab_size=vocab,
    )
    blank, copy = vocab - 2, vocab - 1
    assert x.shape == (10, seq_len)
    for seq, tgt in zip(x.tolist(), y.tolist(), strict=True):
        c = seq.index(copy)
        assert c == seq_len - k - 1 and seq.count(copy) == 1
        content = [t for t in seq[:c] if t != blank]
        assert len(content) == k  # the setting is honoured (reference bug: always 16)
        assert [t for t in tgt if t != IGNORE] == content
        assert all(t == IGNORE for t in tgt[: c + 1]) and all(t == blank for t in seq[c + 1 :])


def test_compression_is_an_auto_encoder_target():
    x, y = make_task("compression", split="test", num_examples=10, seq_len=20, vocab_size=32)
    assert (x[:, -1] == 31).all() and int(x[:, :-1].max()) < 31
    assert torch.equal(y[:, :-1], x[:, :-1]) and (y[:, -1] == IGNORE).all()


def test_memorization_map_is_global_and_seeded():
    kv = memorization_map(256, 12345)
    assert kv.shape == (127,) and len(set(kv.tolist())) == 127 and int(kv.min()) >= 127
    assert int(kv.max()) < 255
    for seed in (0, 1):
        for split in ("train", "test"):
            x, y = make_task("memorization", split=split, seed=seed, num_examples=20)
            assert (x[:, 1::2] == 255).all() and (y[:, ::2] == IGNORE).all()
            assert torch.equal(y[:, 1::2], kv[x[:, ::2]])  # the same map in every sequence and split
    assert not torch.equal(memorization_map(256, 1), kv)
    x, y = make_task("memorization", num_examples=5, kv_map_seed=1)
    assert torch.equal(y[:, 1::2], memorization_map(256, 1)[x[:, ::2]])


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("nope", {}, "unknown MAD task"),
        ("in_context_recall", {"vocab": 3}, "unknown setting"),
        ("in_context_recall", {"seq_len": 2}, "seq_len must be >= 4"),
        ("in_context_recall", {"vocab_size": 1}, "vocab_size must be >= 2"),
        ("noisy_recall", {"frac_noise": 1.0}, r"frac_noise must be in \[0, 1\)"),
        ("noisy_recall", {"noise_vocab_size": 31}, "must leave >= 2 tokens"),
        ("in_context_recall", {"frac_noise": 0.1}, "unknown setting"),
        ("selective_copying", {"num_tokens_to_copy": 200}, "seq_len .* must be >= 2 \\* num_tokens_to_copy"),
        ("selective_copying", {"num_tokens_to_copy": 0}, "num_tokens_to_copy must be >= 1"),
        ("fuzzy_recall", {"seq_len": 8}, "must hold a pair and its probe"),
        ("fuzzy_recall", {"vocab_size": 6}, "motifs have distinct tokens"),
        ("memorization", {"seq_len": 33}, "seq_len must be even"),
    ],
)
def test_bad_settings_are_refused(name, kw, match):
    with pytest.raises(ValueError, match=match):
        make_task(name, num_examples=2, **kw)


def test_bad_types_and_split():
    with pytest.raises(TypeError, match="seq_len must be an int"):
        make_task("compression", seq_len=32.0, num_examples=2)
    with pytest.raises(ValueError, match="split must be"):
        make_task("compression", split="val")
    with pytest.raises(ValueError, match="unknown preset"):
        make_task("compression", preset="hard")
    with pytest.raises(ValueError, match="num_examples must be >= 1"):
        make_task("compression", num_examples=0)


def test_harder_settings_generate():
    for name, grid in HARDER.items():
        for key, values in grid.items():
            if key == "num_train_examples":
                continue
            x, y = make_task(name, split="test", num_examples=2, **{key: values[-1]})
            assert x.shape[1] == (values[-1] if key == "seq_len" else DEFAULTS[name]["seq_len"])
            assert (y != IGNORE).any()


def test_dataset_and_evaluate_with_oracle_and_uniform_model():
    ds = MADDataset("memorization", split="test", num_examples=12)
    assert len(ds) == 12 and set(ds[0]) == {"input_ids", "targets"}
    kv = memorization_map()

    class Oracle(torch.nn.Module):
        """Knows the map: predicts kv[key] after every insert token; wrong after keys."""

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids):
            b, t = input_ids.shape
            logits = torch.zeros(b, t, 256)
            pred = torch.zeros(b, t, dtype=torch.long)
            pred[:, 1::2] = kv[input_ids[:, ::2]]
            return logits.scatter(2, pred.unsqueeze(-1), 1.0)

    assert evaluate(Oracle(), data=(ds.inputs, ds.targets), batch_size=5) == 1.0
    assert evaluate(Oracle(), "memorization", num_examples=9) == 1.0

    class Wrong(Oracle):
        def forward(self, input_ids):
            return -super().forward(input_ids)

    assert evaluate(Wrong(), "memorization", num_examples=9) < 0.05
    with pytest.raises(ValueError, match="task name or data"):
        evaluate(Oracle())


@pytest.mark.parametrize("name", TASKS)
def test_splits_are_disjoint_for_every_seed(name):
    """Each split draws from its own stream seeded from (seed, split): the train split never repeats
    a test (or valid) row, whatever the seed, the MAD test seed 12345 included."""
    kw = {"seq_len": 16} if name in ("compression", "memorization") else {}
    test = MADDataset(name, split="test", num_examples=256, **kw).rows()
    for seed in [0, 1, 2, 7, 42, 12344, 12345, 12346, 99999, *range(100, 110)]:
        train = MADDataset(name, split="train", seed=seed, num_examples=256, **kw).rows()
        valid = MADDataset(name, split="valid", seed=seed, num_examples=64, **kw).rows()
        assert not train & test, seed
        assert not valid & test and not valid & train, seed
    # the default train set, at the MAD test seed, holds none of the default test set
    full = MADDataset(name, split="train", seed=12345, num_examples=2048).rows()
    assert not full & MADDataset(name, split="test").rows()


def test_manticore_preset_next_to_the_easy_defaults():
    from mad_models.mad import PRESETS, task_settings

    assert set(PRESETS) == {"easy", "manticore"}
    for name in TASKS:
        assert task_settings(name) == DEFAULTS[name]  # the easy defaults are unchanged
    m = {name: task_settings(name, preset="manticore") for name in TASKS}
    assert m["in_context_recall"]["vocab_size"] == 128 and m["in_context_recall"]["num_train_examples"] == 800
    assert m["fuzzy_recall"]["vocab_size"] == 128 and m["fuzzy_recall"]["num_train_examples"] == 800
    assert m["noisy_recall"]["frac_noise"] == 0.8 and m["noisy_recall"]["num_train_examples"] == 800
    assert m["noisy_recall"]["vocab_size"] - m["noisy_recall"]["noise_vocab_size"] == 128
    assert m["memorization"]["vocab_size"] == 8192
    x, _ = make_task("in_context_recall", preset="manticore")
    assert x.shape == (800, 128) and int(x.max()) >= 64
    assert task_settings("noisy_recall", preset="manticore", frac_noise=0.4)["frac_noise"] == 0.4
