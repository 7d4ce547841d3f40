"""Job: train every weight of a causal LM on token blocks (pretraining from scratch, or full fine-tuning)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset, default_collate

from mad_models.training._hybrid import data_digest, model_fingerprint
from mad_models.training.loop import TrainArgs, adamw, train_with


def train_causal_lm(
    model: torch.nn.Module,
    train_data: Dataset,
    args: TrainArgs,
    *,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    collate_fn: Callable | None = None,
    run_key: dict | None = None,
) -> dict:
    """AdamW + cosine over every trainable weight of ``model`` on ``{"input_ids", "labels"}`` items.

    Items of one length are stacked as they are (``text_blocks`` makes them); pass ``collate_fn`` for
    others. The starting weights' fingerprint and the data are part of the run key: resuming in the same
    ``args.output_dir`` from another model or data is refused.

    Example:
        >>> from mad_models.training import TrainArgs, build_model
        >>> from mad_models.training.text import token_blocks
        >>> model = build_model("gpt_neox", 16, width=16, layers=1, heads=2)
        >>> data = token_blocks(list(range(16)) * 8, 16)
        >>> res = train_causal_lm(model, data, TrainArgs("runs/lm", max_steps=2, batch_size=4,
        ...                                               progress=False))  # doctest: +SKIP
    """
    config = {"model": model_fingerprint(model), "data": data_digest(train_data), **(run_key or {})}
    opt = adamw(model.parameters(), args.lr, args.weight_decay)
    return train_with(
        model,
        train_data,
        args,
        opt,
        job="causal_lm",
        eval_fn=eval_fn,
        collate_fn=collate_fn or default_collate,
        config=config,
    )
