"""Baselines every MAD table carries: chance, and a rule that learns nothing.

- ``chance_accuracy``: 1 / (number of tokens that can be the target at a scored position).
- The no-learning heuristic: at each position, predict the candidate token (a token that can be a
  target of the task: a value token for the recall tasks, a content token for copying and
  compression, a value for memorization) that occurred most often so far in this sequence (inputs
  up to and including the position), ties going to the one seen most recently; when no candidate has
  been seen yet, the smallest candidate id. It needs no training and no parameters, so a model at or
  below it has learned nothing about the task.

  Per task this is: recall tasks, the most frequent value so far (a value repeats when its key
  does); selective copying, the most frequent content token; compression (an auto-encoder, see
  ``mad_models.mad.compression``), the sequence's most frequent token at every position (a one-token
  code, the smallest compression there is); memorization, values never appear in the inputs, so the
  rule falls back to a fixed value and scores about chance.

Both are scored exactly like the models (``mad_models.mad.data.Accuracy``: micro over scored
positions, macro over classes as torchmetrics' ``MulticlassAccuracy`` default).

Example:
    >>> from mad_models.mad import make_task, chance_accuracy, heuristic_accuracy
    >>> x, y = make_task("in_context_recall", split="test", num_examples=64)
    >>> round(chance_accuracy("in_context_recall"), 3)
    0.125
    >>> sorted(heuristic_accuracy("in_context_recall", x, y))
    ['macro', 'micro']
"""

from __future__ import annotations

import torch

from mad_models.mad.data import Accuracy
from mad_models.mad.tasks import task_settings


def target_tokens(task: str, preset: str = "easy", **task_kwargs) -> torch.Tensor:
    """The token ids that can be a target at a scored position of ``task`` (sorted LongTensor)."""
    cfg = task_settings(task, preset, **task_kwargs)
    v = cfg["vocab_size"]
    if task in ("in_context_recall", "noisy_recall"):
        kv = v - cfg.get("noise_vocab_size", 0)
        return torch.arange(kv // 2, kv)
    if task == "fuzzy_recall":
        kv = v - 1  # the last id is the pad token
        return torch.arange(kv // 2, kv)
    if task == "selective_copying":
        return torch.arange(0, v - 2)  # blank and copy tokens are never targets
    if task == "compression":
        return torch.arange(0, v - 1)  # the compression token is never a target
    if task == "memorization":
        from mad_models.mad.tasks import memorization_map

        return memorization_map(v, cfg["kv_map_seed"]).sort().values
    raise ValueError(f"unknown MAD task {task!r}")


def chance_accuracy(task: str, **task_kwargs) -> float:
    """1 / (number of possible targets at a scored position) for ``task`` with these settings.

    Example:
        >>> chance_accuracy("selective_copying")  # 14 content tokens
        0.07142857142857142
    """
    return 1.0 / target_tokens(task, **task_kwargs).numel()


@torch.no_grad()
def heuristic_predictions(
    inputs: torch.Tensor,
    candidates: torch.Tensor | None = None,
    *,
    whole_sequence: bool = False,
    chunk: int = 256,
) -> torch.Tensor:
    """(N, T) inputs -> (N, T) predictions: the most frequent candidate seen so far in the row.

    ``candidates``: token ids allowed as predictions (default: every id in ``inputs``'s range).
    ``whole_sequence``: count the whole row at every position (the compression rule) instead of the
    prefix up to the position. Ties go to the most recently seen candidate; a row with no candidate
    seen yet predicts the smallest candidate.

    Example:
        >>> heuristic_predictions(torch.tensor([[5, 1, 5, 2, 2, 2]]), torch.tensor([1, 2, 5]))
        tensor([[5, 1, 5, 5, 2, 2]])
    """
    if inputs.dim() != 2:
        raise ValueError(f"inputs must be (N, T), got shape {tuple(inputs.shape)}")
    if candidates is None:
        candidates = torch.arange(int(inputs.max()) + 1 if inputs.numel() else 1)
    candidates = torch.as_tensor(candidates, dtype=torch.long).flatten()
    if candidates.numel() == 0:
        raise ValueError("candidates is empty")
    n, t = inputs.shape
    out = torch.empty(n, t, dtype=torch.long)
    pos = torch.arange(t).view(1, t, 1)
    for i in range(0, n, chunk):
        x = inputs[i : i + chunk]
        hit = x.unsqueeze(-1) == candidates.view(1, 1, -1)  # (n, T, C)
        if whole_sequence:
            count = hit.sum(1, keepdim=True).expand_as(hit)
            last = torch.where(hit, pos, -1).amax(1, keepdim=True).expand_as(hit)
        else:
            count = hit.cumsum(1)
            last = torch.where(hit, pos, -1).cummax(1).values
        score = count * (t + 1) + last + 1  # frequency first, recency breaks ties; 0 = never seen
        out[i : i + chunk] = candidates[score.argmax(-1)]
    return out


def heuristic_accuracy(
    task: str,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    **task_kwargs,
) -> dict[str, float]:
    """Micro and macro accuracy of the no-learning heuristic on ``(inputs, targets)`` of ``task``.

    Scored like the models: over positions whose target is not -100.

    Example:
        >>> x, y = make_task("noisy_recall", split="test", num_examples=64)  # doctest: +SKIP
        >>> heuristic_accuracy("noisy_recall", x, y)  # doctest: +SKIP
        {'micro': 0.32..., 'macro': 0.32...}
    """
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} differ in shape")
    cand = target_tokens(task, **task_kwargs)
    pred = heuristic_predictions(inputs, cand, whole_sequence=task == "compression")
    acc = Accuracy(task_settings(task, **task_kwargs)["vocab_size"])
    acc.update(pred, targets)
    return acc.compute()
