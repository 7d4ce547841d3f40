"""Training jobs on one Accelerate-based loop (see ``loop.py``).

Jobs: ``train_mad`` (from scratch on a MAD task), ``pretrain_projectors`` (hybrid projectors on
text, components frozen), ``search_mixtures`` (DARTS alternating / simultaneous, DASH, GAEA),
``retrain`` (searched mixture frozen), ``finetune_adapter`` (MoRe or LoRA, causal LM or
classification). Every job logs to ``<output_dir>/log.jsonl`` and resumes from
``<output_dir>/checkpoints``.
"""

from mad_models.training.loop import TrainArgs, Trainer, loss_and_counts, read_log
from mad_models.training.mad import train_mad
from mad_models.training.models import ARCHS, build_model, count_parameters

__all__ = [
    "ARCHS",
    "TrainArgs",
    "Trainer",
    "build_model",
    "count_parameters",
    "loss_and_counts",
    "read_log",
    "train_mad",
]
