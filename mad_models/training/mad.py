"""Job: train a model from scratch on a MAD task and report test accuracy over scored positions."""

from __future__ import annotations

import torch

from mad_models.mad import MADDataset, evaluate
from mad_models.mad.tasks import TEST_SEED
from mad_models.training.loop import TrainArgs, adamw, train_with


def train_mad(
    model: torch.nn.Module,
    task: str,
    args: TrainArgs,
    *,
    num_train: int | None = None,
    num_test: int | None = None,
    data_seed: int = 0,
    **settings,
) -> dict:
    """Train ``model`` on MAD ``task`` (AdamW, cosine to ``args.min_lr``) and evaluate on its test split.

    Returns the final metrics, including ``eval_accuracy`` on the test split.

    Example:
        >>> from mad_models.training import TrainArgs, build_model, train_mad
        >>> m = build_model("gpt_neox", vocab_size=16)
        >>> res = train_mad(m, "in_context_recall", TrainArgs("runs/icr", max_steps=200),
        ...                 num_train=1024, seq_len=64)  # doctest: +SKIP
    """
    if data_seed == TEST_SEED:
        # the generators draw the same stream for both splits, so the train set would hold the test set
        raise ValueError(
            f"data_seed {data_seed} is the MAD test seed; the training data would repeat the test "
            "sequences. Pick another seed."
        )
    train = MADDataset(task, split="train", seed=data_seed, num_examples=num_train, **settings)
    test = MADDataset(task, split="test", num_examples=num_test, **settings)
    vocab = model.get_input_embeddings().num_embeddings if hasattr(model, "get_input_embeddings") else None
    if vocab is not None and int(train.inputs.max()) >= vocab:
        raise ValueError(
            f"task {task!r} uses token ids up to {int(train.inputs.max())}, model vocab is {vocab}"
        )
    opt = adamw(model.parameters(), args.lr, args.weight_decay)

    def eval_fn(m):
        return {"accuracy": evaluate(m, data=(test.inputs, test.targets), batch_size=args.batch_size)}

    config = {"task": task, "settings": settings, "num_train": len(train)}
    return train_with(model, train, args, opt, job="mad", eval_fn=eval_fn, config=config)
