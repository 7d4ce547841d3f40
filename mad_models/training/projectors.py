"""Job: pretrain a hybrid's projectors on text with the components frozen (causal-LM loss)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from mad_models.training._hybrid import (
    check_hybrid,
    data_digest,
    mixture_ids,
    mixture_log,
    model_fingerprint,
    refuse_simplex_with_adamw,
)
from mad_models.training.finetune import dataset_metrics
from mad_models.training.loop import TrainArgs, train_with
from mad_models.training.text import pad_collate


def pretrain_projectors(
    hybrid: torch.nn.Module,
    train_data: Dataset,
    args: TrainArgs,
    *,
    train_mixture: bool = True,
    eval_data: Dataset | None = None,
    collate_fn: Callable | None = None,
) -> dict:
    """Freeze the components, then train projectors (+ mixture logits, + any fresh embeddings).

    Reference settings: lr 2e-4, weight decay 0.01, one epoch of 1024-token blocks of general text
    (``text_blocks`` makes them). Data items are ``{"input_ids", "labels"}``.

    Example:
        >>> from mad_models.training.text import text_blocks
        >>> data = text_blocks(texts, tokenizer, 1024)  # doctest: +SKIP
        >>> pretrain_projectors(hybrid, data, TrainArgs("proj", lr=2e-4, weight_decay=0.01))  # doctest: +SKIP
    """
    check_hybrid(hybrid)
    start = model_fingerprint(hybrid)  # a run key part: another starting model is refused on resume
    hybrid.freeze_components()
    mix = mixture_ids(hybrid)
    if not train_mixture:
        for p in hybrid.mixture_parameters():
            p.requires_grad_(False)
    refuse_simplex_with_adamw(hybrid, "pretrain_projectors")
    proj = {id(p) for p in hybrid.projector_parameters()}
    params = [p for p in hybrid.parameters() if p.requires_grad]
    if not any(id(p) in proj for p in params):
        raise ValueError("the hybrid has no trainable projectors (built without projectors, or all frozen?)")
    # mixture logits get no weight decay: decay would pull them towards the uniform mixture
    groups = [
        {"params": [p for p in params if id(p) not in mix], "weight_decay": args.weight_decay},
        {"params": [p for p in params if id(p) in mix], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr)
    collate = collate_fn or pad_collate()
    return train_with(
        hybrid,
        train_data,
        args,
        opt,
        job="pretrain_projectors",
        name="projectors",
        eval_fn=(lambda m: dataset_metrics(m, eval_data, args.batch_size, collate)) if eval_data else None,
        collate_fn=collate,
        log_extra=mixture_log,
        config={"model": start, "data": data_digest(train_data), "train_mixture": train_mixture},
    )
