"""How a hybrid's components split into blocks: the number of each component's layers in every block.

Its own module so that checking a saved config (``mad_models.validation``) needs no model code.

Example:
    >>> resolve_layer_map([4, 6], 2, None, ["neox", "mamba"])
    [[2, 2], [3, 3]]
"""

from __future__ import annotations

from collections.abc import Sequence


def resolve_layer_map(
    depths: Sequence[int], n_blocks: int, layer_map: Sequence[Sequence[int]] | None, names: Sequence[str]
) -> list[list[int]]:
    """Per component, the number of its layers in each block; a clear error when it can't be done."""
    if not isinstance(n_blocks, int) or n_blocks < 1:
        raise ValueError(f"n_blocks must be a positive integer, got {n_blocks!r}")
    if layer_map is None:
        out = []
        for depth, name in zip(depths, names, strict=True):
            if depth % n_blocks:
                divisors = [k for k in range(1, depth + 1) if depth % k == 0]
                raise ValueError(
                    f"n_blocks={n_blocks} does not divide the depth of component {name!r} ({depth} layers); "
                    f"use one of {divisors} or pass an explicit layer_map (layers per block, per component)"
                )
            out.append([depth // n_blocks] * n_blocks)
        return out
    layer_map = [list(map(int, row)) for row in layer_map]
    if len(layer_map) != len(depths):
        raise ValueError(f"layer_map must have one row per component ({len(depths)}), got {len(layer_map)}")
    for row, depth, name in zip(layer_map, depths, names, strict=True):
        if len(row) != n_blocks or any(k < 1 for k in row) or sum(row) != depth:
            raise ValueError(
                f"layer_map row for {name!r} must be {n_blocks} positive layer counts summing to its depth "
                f"{depth}, got {row}"
            )
    return layer_map
