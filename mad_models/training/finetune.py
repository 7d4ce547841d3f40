"""Job: fine-tune MoRe or LoRA adapters (any PEFT model) on a causal-LM or classification dataset."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from mad_models.training.loop import TrainArgs, adamw, loss_and_counts, train_with
from mad_models.training.text import pad_collate


@torch.no_grad()
def dataset_metrics(model, data: Dataset, batch_size: int = 16, collate_fn=None) -> dict[str, float]:
    """Mean loss and accuracy (tokens for causal LM, examples for classification) over ``data``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = correct = total = batches = 0.0
    try:
        for batch in DataLoader(data, batch_size=batch_size, collate_fn=collate_fn or pad_collate()):
            batch = {k: v.to(device) for k, v in batch.items()}
            loss, c, t = loss_and_counts(model, batch)
            loss_sum, correct, total, batches = (
                loss_sum + loss.item(),
                correct + c.item(),
                total + t.item(),
                batches + 1,
            )
    finally:
        model.train(was_training)
    return {"loss": loss_sum / max(1, batches), "accuracy": correct / max(1, total)}


def finetune_adapter(
    model: torch.nn.Module,
    train_data: Dataset,
    args: TrainArgs,
    *,
    eval_data: Dataset | None = None,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    collate_fn: Callable | None = None,
    pad_id: int = 0,
) -> dict:
    """Train the trainable parameters of ``model`` (a PeftModel: MoRe, LoRA, ...) with AdamW + cosine.

    Data items are dicts of 1-D tensors with ``input_ids`` and ``labels`` (token labels for a causal
    LM, -100 where unscored; one class id for classification); they are right-padded per batch.
    ``eval_data`` adds ``eval_loss`` / ``eval_accuracy`` at the end (and every ``args.eval_every``).

    Example:
        >>> import peft, mad_models
        >>> from mad_models.more import MoReConfig
        >>> pm = peft.get_peft_model(base, MoReConfig(target_modules=["q_proj", "v_proj"]))  # doctest: +SKIP
        >>> finetune_adapter(pm, train, TrainArgs("out", max_steps=300), eval_data=val)  # doctest: +SKIP
    """
    collate = collate_fn or pad_collate(pad_id)
    opt = adamw(model.parameters(), args.lr, args.weight_decay)
    if eval_fn is None and eval_data is not None:

        def eval_fn(m):
            return dataset_metrics(m, eval_data, args.batch_size, collate)

    return train_with(
        model, train_data, args, opt, job="finetune", name="adapter", eval_fn=eval_fn, collate_fn=collate
    )
