"""MAD synthetic tasks (Poli et al., 2024): generators, datasets and evaluation.

Example:
    >>> from mad_models.mad import make_task, MADDataset, evaluate
    >>> x, y = make_task("fuzzy_recall", split="test", num_examples=16)
    >>> x.shape
    torch.Size([16, 128])
"""

from mad_models.mad.baselines import chance_accuracy, heuristic_accuracy, heuristic_predictions, target_tokens
from mad_models.mad.compression import CompressionAutoEncoder
from mad_models.mad.data import Accuracy, MADDataset, evaluate, evaluate_metrics, logits_of, scored_counts
from mad_models.mad.tasks import (
    DEFAULTS,
    HARDER,
    IGNORE,
    PRESETS,
    SPLITS,
    TASKS,
    make_task,
    memorization_map,
    task_settings,
    vocab_size,
)

__all__ = [
    "Accuracy",
    "CompressionAutoEncoder",
    "PRESETS",
    "SPLITS",
    "evaluate_metrics",
    "chance_accuracy",
    "heuristic_accuracy",
    "heuristic_predictions",
    "target_tokens",
    "DEFAULTS",
    "HARDER",
    "IGNORE",
    "TASKS",
    "MADDataset",
    "evaluate",
    "logits_of",
    "make_task",
    "memorization_map",
    "scored_counts",
    "task_settings",
    "vocab_size",
]
