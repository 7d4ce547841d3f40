"""MAD tasks as a torch Dataset, and accuracy over scored positions."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from mad_models.mad.tasks import IGNORE, make_task


class MADDataset(Dataset):
    """One split of one MAD task, generated once in memory.

    Items are dicts ``{"input_ids": (T,), "targets": (T,)}``; ``targets`` are already shifted (the
    token to predict at each position, -100 where unscored), so compute the loss on the logits
    directly instead of passing them to a Hugging Face model as ``labels``.

    Example:
        >>> ds = MADDataset("selective_copying", split="train", num_examples=8, seq_len=64)
        >>> len(ds), ds[0]["input_ids"].shape
        (8, torch.Size([64]))
    """

    def __init__(self, name: str, split: str = "train", seed: int | None = None, **settings):
        self.name, self.split = name, split
        self.inputs, self.targets = make_task(name, split=split, seed=seed, **settings)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.inputs[i], "targets": self.targets[i]}


def logits_of(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) from a Hugging Face causal LM (``.logits``) or a module returning a tensor."""
    out = model(input_ids=input_ids)
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if logits is None:
        raise TypeError(f"model output {type(out).__name__} has no logits")
    return logits


def scored_counts(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(correct, scored) argmax predictions over positions whose target is not -100."""
    mask = targets != IGNORE
    return int(((logits.argmax(-1) == targets) & mask).sum()), int(mask.sum())


@torch.no_grad()
def evaluate(
    model,
    name: str | None = None,
    *,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    split: str = "test",
    seed: int | None = None,
    num_examples: int | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    **settings,
) -> float:
    """Accuracy of ``model`` over the scored positions of a MAD task split.

    Pass a task ``name`` (+ settings; the test split with seed 12345 and 1,280 sequences by default),
    or ``data=(inputs, targets)`` already generated.

    Example:
        >>> acc = evaluate(model, "in_context_recall", num_examples=128, seq_len=64)  # doctest: +SKIP
    """
    if data is None:
        if name is None:
            raise ValueError("pass a task name or data=(inputs, targets)")
        data = make_task(name, split=split, seed=seed, num_examples=num_examples, **settings)
    inputs, targets = data
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} differ in shape")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for i in range(0, inputs.shape[0], batch_size):
            x = inputs[i : i + batch_size].to(device)
            c, t = scored_counts(logits_of(model, x).float().cpu(), targets[i : i + batch_size])
            correct, total = correct + c, total + t
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("no scored positions in the data (all targets are -100)")
    return correct / total
