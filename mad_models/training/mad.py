"""Job: train a model from scratch on a MAD task and report test accuracy over scored positions."""

from __future__ import annotations

import torch

from mad_models.mad import MADDataset, evaluate_metrics
from mad_models.mad.compression import for_task
from mad_models.training._hybrid import data_digest, model_fingerprint, refuse_simplex_with_adamw
from mad_models.training.loop import TrainArgs, adamw, train_with


def train_mad(
    model: torch.nn.Module,
    task: str,
    args: TrainArgs,
    *,
    num_train: int | None = None,
    num_test: int | None = None,
    data_seed: int = 0,
    eval_split: str = "test",
    preset: str = "easy",
    **settings,
) -> dict:
    """Train ``model`` on MAD ``task`` (AdamW, cosine to ``args.min_lr``) and evaluate on a held-out split.

    Returns the final metrics, including ``eval_accuracy`` (micro) and ``eval_macro_accuracy`` on
    ``eval_split`` ("test", or "valid" when the result is used for a choice such as the lr). For
    compression the model is wrapped in MAD's auto-encoder (``CompressionAutoEncoder``, saved with the
    model in ``final/``); pass ``mad_models.mad.compression.for_task(model, "compression", vocab)`` to
    keep a handle on the wrapper.

    Example:
        >>> from mad_models.training import TrainArgs, build_model, train_mad
        >>> m = build_model("gpt_neox", vocab_size=16)
        >>> res = train_mad(m, "in_context_recall", TrainArgs("runs/icr", max_steps=200),
        ...                 num_train=1024, seq_len=64)  # doctest: +SKIP
    """
    if eval_split not in ("valid", "test"):
        raise ValueError(f"eval_split must be 'valid' or 'test', got {eval_split!r}")
    refuse_simplex_with_adamw(model, "train_mad")
    # every tensor of a trained-from-scratch model comes back from the checkpoint on resume, so only the
    # architecture must match (a resume may start from another init); the searches also key on values
    start = model_fingerprint(model, values=False)
    # every split has its own random stream (seeded from (seed, split)): no seed repeats the test set
    train = MADDataset(task, split="train", seed=data_seed, num_examples=num_train, preset=preset, **settings)
    held = MADDataset(task, split=eval_split, num_examples=num_test, preset=preset, **settings)
    vocab = model.get_input_embeddings().num_embeddings if hasattr(model, "get_input_embeddings") else None
    if vocab is not None and int(train.inputs.max()) >= vocab:
        raise ValueError(
            f"task {task!r} uses token ids up to {int(train.inputs.max())}, model vocab is {vocab}"
        )
    model = for_task(model, task, vocab or int(train.inputs.max()) + 1, max_len=train.inputs.shape[1])
    opt = adamw(model.parameters(), args.lr, args.weight_decay)

    def eval_fn(m):
        acc = evaluate_metrics(m, data=(held.inputs, held.targets), batch_size=args.batch_size)
        return {"accuracy": acc["micro"], "macro_accuracy": acc["macro"]}

    config = {
        "task": task,
        "preset": preset,
        "settings": settings,
        "num_train": len(train),
        "data_seed": data_seed,
        "eval_split": eval_split,
        "num_eval": len(held),
        "model": start,
        "data": data_digest(train),
    }
    return train_with(model, train, args, opt, job="mad", eval_fn=eval_fn, config=config)
