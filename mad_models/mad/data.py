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

    def rows(self) -> set[tuple[int, ...]]:
        """The input sequences as a set of tuples (to check that splits are disjoint)."""
        return {tuple(r) for r in self.inputs.tolist()}

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


class Accuracy:
    """Accumulated accuracy over scored positions (targets != -100): micro and macro.

    ``micro`` = correct / scored. ``macro`` = the mean over classes of per-class recall
    (correct / support), over classes that occur as a target or a prediction at a scored position:
    torchmetrics' ``MulticlassAccuracy(average="macro", ignore_index=-100)``, which MAD-lab reports
    (a class only ever predicted, never a target, counts as 0).

    Example:
        >>> acc = Accuracy(4)
        >>> acc.update(torch.tensor([[0, 1, 1, 3]]), torch.tensor([[0, 1, 2, -100]]))
        >>> acc.compute()
        {'micro': 0.6666666666666666, 'macro': 0.6666666666666666}
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.tp = torch.zeros(num_classes, dtype=torch.long)
        self.support = torch.zeros(num_classes, dtype=torch.long)
        self.predicted = torch.zeros(num_classes, dtype=torch.long)

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Add argmax predictions (N, T) (or logits (N, T, V)) against targets (N, T)."""
        if preds.dim() == targets.dim() + 1:
            preds = preds.argmax(-1)
        if preds.shape != targets.shape:
            raise ValueError(f"predictions {tuple(preds.shape)} and targets {tuple(targets.shape)} differ")
        mask = targets != IGNORE
        p, t = preds[mask].long().cpu(), targets[mask].long().cpu()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_classes):
            raise ValueError(f"a target lies outside [0, {self.num_classes})")
        p = p.clamp(0, self.num_classes - 1)
        self.tp += torch.bincount(t[p == t], minlength=self.num_classes)
        self.support += torch.bincount(t, minlength=self.num_classes)
        self.predicted += torch.bincount(p, minlength=self.num_classes)

    @property
    def scored(self) -> int:
        return int(self.support.sum())

    def compute(self) -> dict[str, float]:
        if self.scored == 0:
            raise ValueError("no scored positions in the data (all targets are -100)")
        fp, fn = self.predicted - self.tp, self.support - self.tp
        present = (self.tp + fp + fn) > 0
        per_class = self.tp.double() / self.support.clamp(min=1).double()
        return {
            "micro": int(self.tp.sum()) / self.scored,
            "macro": float(per_class[present].mean()),
        }


def scored_counts(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(correct, scored) argmax predictions over positions whose target is not -100."""
    mask = targets != IGNORE
    return int(((logits.argmax(-1) == targets) & mask).sum()), int(mask.sum())


def evaluate(model, name: str | None = None, **kwargs) -> float:
    """Micro accuracy of ``model`` over the scored positions of a MAD task split.

    Same arguments as ``evaluate_metrics`` (which also gives the macro accuracy MAD-lab reports).

    Example:
        >>> acc = evaluate(model, "in_context_recall", num_examples=128, seq_len=64)  # doctest: +SKIP
    """
    return evaluate_metrics(model, name, **kwargs)["micro"]


@torch.no_grad()
def evaluate_metrics(
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
) -> dict[str, float]:
    """``{"micro", "macro"}`` accuracy of ``model`` over the scored positions of a MAD task split.

    Pass a task ``name`` (+ settings; the test split with seed 12345 and 1,280 sequences by default),
    or ``data=(inputs, targets)`` already generated. Compression needs the model wrapped in
    ``mad_models.mad.compression.CompressionAutoEncoder`` (its targets are the tokens themselves).

    Example:
        >>> evaluate_metrics(model, "in_context_recall", num_examples=128)  # doctest: +SKIP
        {'micro': 0.98, 'macro': 0.97}
    """
    from mad_models.mad.compression import CompressionAutoEncoder

    if name == "compression" and not isinstance(model, CompressionAutoEncoder):
        raise ValueError(
            "compression is an auto-encoder task: wrap the model in "
            "mad_models.mad.compression.CompressionAutoEncoder (a causal LM alone can only copy)"
        )
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
    acc = None
    try:
        for i in range(0, inputs.shape[0], batch_size):
            x = inputs[i : i + batch_size].to(device)
            logits = logits_of(model, x).float().cpu()
            acc = acc or Accuracy(max(logits.shape[-1], int(targets.max()) + 1))
            acc.update(logits, targets[i : i + batch_size])
    finally:
        model.train(was_training)
    if acc is None:
        raise ValueError("the data is empty")
    return acc.compute()
