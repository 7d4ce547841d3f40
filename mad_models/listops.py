"""ListOps, the Long Range Arena task (Tay et al. 2021), in a shorter setting: generator and Dataset.

An example is a nested prefix expression over the digits 0-9 with four operators, each yielding a digit:
``[MAX`` and ``[MIN``, ``[MED`` (the median, rounded down), ``[SM`` (the sum mod 10), each closed by ``]``.
Its label (10 classes) is the value of the whole expression. Every sequence ends with an ``END`` token,
so a causal model classifies on its last position. Example (``decode``)::

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ] END   ->   5

The trees are drawn as LRA's generator draws them (``lra_benchmarks/data/listops.py``): below the maximum
depth a node is a digit with probability ``value_p`` (0.25) and otherwise an operator with 2 to
``max_args`` arguments, the operator and digits uniform; at the maximum depth every node is a digit.
The root is always an operator (LRA rejects the single-digit trees by length), and trees are kept when
their length (``END`` included) lies in ``[min_length, max_length]``. Within a split every sequence is
unique (LRA keeps a set), and :func:`listops_splits` makes the splits disjoint.

LRA's setting (depth 10, up to 10 arguments, 500 to 2,000 tokens) is far beyond what two CPU cores train
in hours; the default here (:data:`DEFAULTS`: depth <= 4, <= 5 arguments, 16 to 128 tokens) keeps the
task's nesting (three operator levels) at a length Mamba's CPU scan trains on.

Generation is vectorised with numpy level by level over a batch of trees (values bottom-up with
``ufunc.reduceat``, token positions top-down), so 100,000 examples take about a second.

Example:
    >>> from mad_models.listops import ListOpsDataset, decode
    >>> ds = ListOpsDataset("train", num_examples=4, seed=0)
    >>> item = ds[0]
    >>> decode(item["input_ids"]).endswith("] END"), 0 <= int(item["labels"]) <= 9
    (True, True)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

# ---- vocabulary: ids 0-9 are the digits themselves
OPERATORS = ("MAX", "MIN", "MED", "SM")
OP0 = 10  # "[MAX" = 10, "[MIN" = 11, "[MED" = 12, "[SM" = 13
CLOSE = 14  # "]"
END = 15  # the last token of every sequence: the position a causal model classifies on
PAD = 16
VOCAB_SIZE = 17
NUM_CLASSES = 10
TOKENS = tuple(str(d) for d in range(10)) + tuple(f"[{op}" for op in OPERATORS) + ("]", "END", "PAD")

DEFAULTS = {"max_depth": 4, "max_args": 5, "min_length": 16, "max_length": 128, "value_p": 0.25}
# each split its own fixed seed; listops_splits builds them in this order, each disjoint from the earlier
SPLIT_SEEDS = {"test": 1_000_003, "val": 2_000_003, "arch": 3_000_003, "train": 4_000_003}


def check_settings(max_depth: int, max_args: int, min_length: int, max_length: int, value_p: float) -> None:
    """Raise ValueError naming the first bad setting."""
    for name, v, low in (
        ("max_depth", max_depth, 2),
        ("max_args", max_args, 2),
        ("min_length", min_length, 4),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    if (
        isinstance(max_length, bool)
        or not isinstance(max_length, (int, np.integer))
        or max_length < min_length
    ):
        raise ValueError(f"max_length must be an int >= min_length ({min_length}), got {max_length!r}")
    if not isinstance(value_p, (int, float)) or not 0.0 <= value_p < 1.0:
        raise ValueError(f"value_p must be a probability in [0, 1), got {value_p!r}")
    # the longest tree the depth and arity allow: every node below the maximum depth an operator
    longest = 1 + sum(2 * max_args**d for d in range(max_depth - 1)) + max_args ** (max_depth - 1)
    if longest < min_length:
        raise ValueError(
            f"min_length {min_length} is longer than any tree of depth {max_depth} with {max_args} arguments "
            f"(at most {longest} tokens)"
        )


def _reduce(op: np.ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return op.reduceat(values, starts) if len(starts) else np.zeros(0, dtype=values.dtype)


def _medians(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Median (rounded down) of each consecutive segment of ``values`` with lengths ``counts``."""
    seg = np.repeat(np.arange(len(counts)), counts)
    ordered = values[np.lexsort((values, seg))]
    start = np.cumsum(counts) - counts
    hi = ordered[start + counts // 2]
    lo = ordered[start + (counts - 1) // 2]
    return (lo + hi) // 2


def _sample(rng: np.random.Generator, n: int, s: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` random trees -> (tokens (n, max_length) padded with PAD, lengths (n,), labels (n,)), only the
    trees whose length is within bounds are returned."""
    depth, max_args, value_p = s["max_depth"], s["max_args"], s["value_p"]
    levels = []  # per depth: is_op, op, nargs, digit, tree index of each node
    tree = np.arange(n)
    for d in range(depth):
        m = len(tree)
        if d == 0:
            is_op = np.ones(m, dtype=bool)
        elif d == depth - 1:
            is_op = np.zeros(m, dtype=bool)
        else:
            is_op = rng.random(m) >= value_p
        op = rng.integers(0, len(OPERATORS), m)
        nargs = np.where(is_op, rng.integers(2, max_args + 1, m), 0)
        digit = rng.integers(0, 10, m)
        levels.append({"is_op": is_op, "op": op, "nargs": nargs, "digit": digit, "tree": tree})
        tree = np.repeat(tree, nargs)  # children laid out in their parents' order

    # bottom-up: value and token count of every node (children of op nodes are consecutive segments)
    child_value = child_len = None
    for lv in reversed(levels):
        value, length = lv["digit"].copy(), np.ones(len(lv["digit"]), dtype=np.int64)
        ops = np.flatnonzero(lv["is_op"])
        if len(ops):
            counts = lv["nargs"][ops]
            starts = np.cumsum(counts) - counts
            results = np.stack([
                _reduce(np.maximum, child_value, starts),
                _reduce(np.minimum, child_value, starts),
                _medians(child_value, counts),
                _reduce(np.add, child_value, starts) % 10,
            ])  # fmt: skip
            value[ops] = results[lv["op"][ops], np.arange(len(ops))]
            length[ops] = 2 + _reduce(np.add, child_len, starts)
        lv["value"], lv["len"] = value, length
        child_value, child_len = value, length

    total = levels[0]["len"] + 1  # + END
    keep = (total >= s["min_length"]) & (total <= s["max_length"])
    # top-down: each node's first token position within its tree
    start = np.zeros(n, dtype=np.int64)
    tokens = np.full((n, s["max_length"]), PAD, dtype=np.int64)
    for d, lv in enumerate(levels):
        lv["start"] = start
        kept = keep[lv["tree"]]
        rows, pos = lv["tree"][kept], start[kept]
        is_op = lv["is_op"][kept]
        tokens[rows, pos] = np.where(is_op, OP0 + lv["op"][kept], lv["digit"][kept])
        tokens[rows[is_op], (pos + lv["len"][kept] - 1)[is_op]] = CLOSE
        if d + 1 < len(levels):
            nargs = lv["nargs"]
            parent = np.repeat(np.arange(len(nargs)), nargs)
            clen = levels[d + 1]["len"]
            before = np.cumsum(clen) - clen  # exclusive cumsum over all children ...
            first_child = (np.cumsum(nargs) - nargs)[nargs > 0]
            first = np.repeat(before[first_child], nargs[nargs > 0])
            start = start[parent] + 1 + before - first  # ... minus that of the segment's first child
    rows = np.flatnonzero(keep)
    tokens[rows, total[rows] - 1] = END
    return tokens[rows], total[rows], levels[0]["value"][rows]


def make_listops(
    num_examples: int,
    *,
    seed: int,
    exclude: Iterable[bytes] = (),
    **settings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_examples`` distinct ListOps examples, none of whose sequences is in ``exclude``.

    Returns ``(tokens, lengths, labels)``: tokens (N, max_length) int64 padded on the right with
    :data:`PAD`, lengths (N,) (``END`` included), labels (N,) in 0-9. Deterministic in (seed, settings,
    exclude). ``exclude`` holds sequences as :func:`sequence_key` gives them.

    Example:
        >>> tokens, lengths, labels = make_listops(8, seed=0, max_length=64)
        >>> tokens.shape, int(lengths.max()) <= 64
        (torch.Size([8, 64]), True)
    """
    s = {**DEFAULTS, **settings}
    unknown = set(s) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown ListOps setting(s) {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
    check_settings(**s)
    if isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)) or num_examples < 1:
        raise ValueError(f"num_examples must be an int >= 1, got {num_examples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    exclude = set(exclude)
    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()
    out_tokens, out_lengths, out_labels = [], [], []
    batch, drawn, found, stale = 4096, 0, 0, 0
    while found < num_examples:
        tokens, lengths, labels = _sample(rng, batch, s)
        drawn, before = drawn + batch, found
        for row, length, label in zip(tokens, lengths, labels, strict=True):
            key = row[:length].astype(np.uint8).tobytes()
            if key in seen or key in exclude:
                continue
            seen.add(key)
            out_tokens.append(row)
            out_lengths.append(length)
            out_labels.append(label)
            found += 1
            if found == num_examples:
                break
        stale = stale + 1 if found == before else 0
        if found < num_examples and stale >= 20:
            raise ValueError(
                f"only {found} distinct ListOps sequences of the {num_examples} asked for in {drawn:,} draws "
                f"with {s}: the setting has too few distinct trees of those lengths (widen the length range, "
                "or allow more depth or arguments)"
            )
    return (
        torch.from_numpy(np.stack(out_tokens)),
        torch.from_numpy(np.asarray(out_lengths, dtype=np.int64)),
        torch.from_numpy(np.asarray(out_labels, dtype=np.int64)),
    )


def sequence_key(tokens: torch.Tensor | np.ndarray, length: int) -> bytes:
    """A sequence as the bytes :func:`make_listops` dedupes and excludes on."""
    return np.asarray(tokens[:length]).astype(np.uint8).tobytes()


class ListOpsDataset(Dataset):
    """One split of ListOps in memory. Items: ``{"input_ids": (length,), "labels": ()}`` (no padding;
    collate with ``mad_models.training.text.pad_collate(PAD)``, which right-pads and adds the mask).

    ``seed`` defaults to the split's :data:`SPLIT_SEEDS` entry; ``exclude``: sequences other splits hold.

    Example:
        >>> ds = ListOpsDataset("val", num_examples=16)
        >>> len(ds), ds.labels.shape
        (16, torch.Size([16]))
    """

    def __init__(
        self,
        split: str = "train",
        num_examples: int = 1000,
        seed: int | None = None,
        exclude: Iterable[bytes] = (),
        **settings,
    ):
        if split not in SPLIT_SEEDS:
            raise ValueError(f"split must be one of {', '.join(SPLIT_SEEDS)}, got {split!r}")
        self.split = split
        self.settings = {**DEFAULTS, **settings}
        self.seed = SPLIT_SEEDS[split] if seed is None else seed
        self.tokens, self.lengths, self.labels = make_listops(
            num_examples, seed=self.seed, exclude=exclude, **settings
        )

    def keys(self) -> set[bytes]:
        """The split's sequences (to exclude them from another split, or check disjointness)."""
        return {sequence_key(t, int(n)) for t, n in zip(self.tokens, self.lengths, strict=True)}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[i, : self.lengths[i]], "labels": self.labels[i]}


def listops_splits(sizes: dict[str, int], **settings) -> dict[str, ListOpsDataset]:
    """Disjoint splits, e.g. ``{"train": 20000, "val": 1000, "test": 1000}``, each from its fixed seed.

    Built in the order test, val, arch, train; each excludes every sequence of the splits built before
    it, so a split does not change when a later one is resized.

    Example:
        >>> splits = listops_splits({"train": 64, "test": 16}, max_length=64)
        >>> splits["train"].keys().isdisjoint(splits["test"].keys())
        True
    """
    unknown = set(sizes) - set(SPLIT_SEEDS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; choose from {', '.join(SPLIT_SEEDS)}")
    out: dict[str, ListOpsDataset] = {}
    taken: set[bytes] = set()
    for split in SPLIT_SEEDS:
        if split in sizes:
            out[split] = ListOpsDataset(split, sizes[split], exclude=taken, **settings)
            taken |= out[split].keys()
    return {split: out[split] for split in sizes}


def decode(tokens: torch.Tensor | Iterable[int]) -> str:
    """Token ids as text, padding dropped: ``"[MAX 4 [SM 3 9 ] ] END"``."""
    return " ".join(TOKENS[int(t)] for t in tokens if int(t) != PAD)


def encode(text: str) -> torch.Tensor:
    """The inverse of :func:`decode` (``END`` is not added)."""
    ids = {tok: i for i, tok in enumerate(TOKENS)}
    try:
        return torch.tensor([ids[w] for w in text.split()], dtype=torch.long)
    except KeyError as err:
        raise ValueError(f"unknown ListOps token {err.args[0]!r}; tokens are {' '.join(TOKENS)}") from None


def majority_class(labels: torch.Tensor) -> int:
    """The most frequent label (the smallest on a tie): the no-learning row's constant answer."""
    return int(torch.bincount(labels, minlength=NUM_CLASSES).argmax())
