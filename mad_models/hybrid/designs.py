"""Hybrids designed by hand: fixed one-hot mixtures over the blocks of a two-component hybrid.

Manticore's claim is that searched mixtures beat the hybrids people design by hand. The designs here
are the usual ones, as one-hot weights (n_blocks x 2) for components ``first`` and ``second`` (e.g.
attention and Mamba):
- ``striped``: first in even blocks, second in odd blocks; ``striped-reversed``: the reverse;
- ``second-heavy``: one block of ``first`` in the middle, ``second`` elsewhere (Jamba-style: about one
  attention block in eight, scaled to the blocks there are);
- ``first-then-second``: the first half of the blocks ``first``, the rest ``second``; and the reverse.

A one-hot mixture makes the projectors drop out; ``hybrid.set_mixture(w, mode="fixed")`` then
``hybrid.discretize()`` gives a model that runs (and costs) only the kept blocks.

Example:
    >>> hand_designs(4)["striped"]
    [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    >>> pattern(hand_designs(4)["second-heavy"], "AM")
    'MMAM'
"""

from __future__ import annotations

DESIGNS = ("striped", "striped-reversed", "second-heavy", "first-then-second", "second-then-first")


def hand_designs(n_blocks: int) -> dict[str, list[list[float]]]:
    """Name -> one-hot mixture (n_blocks x 2) of every design in ``DESIGNS``.

    Needs ``n_blocks >= 2``; with 2 blocks the striped designs equal the first/second-first ones
    (their names still say what they are).
    """
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 2:
        raise ValueError(f"hand-designed hybrids need n_blocks >= 2 (an int), got {n_blocks!r}")
    half = n_blocks // 2
    chosen = {  # per block, the index of the component that runs there
        "striped": [i % 2 for i in range(n_blocks)],
        "striped-reversed": [1 - i % 2 for i in range(n_blocks)],
        "second-heavy": [0 if i == half else 1 for i in range(n_blocks)],
        "first-then-second": [0 if i < half else 1 for i in range(n_blocks)],
        "second-then-first": [1 if i < half else 0 for i in range(n_blocks)],
    }
    return {name: [[1.0 - m, float(m)] for m in chosen[name]] for name in DESIGNS}


def pattern(weights, letters: str = "AM") -> str:
    """One letter per block: the component with the largest weight (``letters[m]`` for component m)."""
    rows = weights.tolist() if hasattr(weights, "tolist") else weights
    return "".join(letters[max(range(len(row)), key=lambda m: row[m])] for row in rows)
