"""Job: retrain a hybrid end to end with its (searched) mixture frozen."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from mad_models.training._hybrid import check_hybrid, data_digest, expected_mixture, model_fingerprint
from mad_models.training.loop import TrainArgs, adamw, train_with


def retrain(
    hybrid: torch.nn.Module,
    train_data: Dataset,
    args: TrainArgs,
    *,
    weights: torch.Tensor | Sequence | None = None,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    collate_fn: Callable | None = None,
    run_key: dict | None = None,
) -> dict:
    """Fix the mixture (``weights``, or the current expected weights) and train every other weight.

    Components frozen earlier (``pretrain_projectors`` freezes them) are unfrozen first.

    Example:
        >>> search_mixtures(hybrid, data, TrainArgs("runs/search"))  # doctest: +SKIP
        >>> retrain(hybrid, data, TrainArgs("runs/retrain"))  # doctest: +SKIP
    """
    check_hybrid(hybrid)
    start = model_fingerprint(hybrid)
    if weights is None:
        weights = expected_mixture(hybrid)
    hybrid.set_mixture(weights, mode="fixed")
    # End to end (spec): components frozen by projector pretraining in this process train again.
    hybrid.freeze_components(False)
    for p in hybrid.mixture_parameters():
        p.requires_grad_(False)
    opt = adamw(hybrid.parameters(), args.lr, args.weight_decay)
    config = {"model": start, "data": data_digest(train_data), **(run_key or {})}
    return train_with(
        hybrid, train_data, args, opt, job="retrain", eval_fn=eval_fn, collate_fn=collate_fn, config=config
    )
