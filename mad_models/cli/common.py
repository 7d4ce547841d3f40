"""What every ``mad-models`` command group shares: argument types, the training options, output
checks, the JSON printer, and loading a saved model or tokenizer.

Plugins that add commands (hub_tools' ``push`` / ``pull``) use these public names too, never the
command modules' private helpers.

Example:
    >>> from mad_models.cli.common import parse_settings, positive_int
    >>> parse_settings(["seq_len=64", "noise=0.5", "shuffle=true"])
    {'seq_len': 64, 'noise': 0.5, 'shuffle': True}
    >>> positive_int("3")
    3
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Every command's help keeps its examples' line breaks.
HELP_FORMAT = argparse.RawDescriptionHelpFormatter
# The choices of --task and --arch, named here so that building the parser imports no torch
# (tests/test_cli.py checks them against mad_models.mad.TASKS and mad_models.training.ARCHS).
TASK_NAMES = (
    "in_context_recall",
    "fuzzy_recall",
    "noisy_recall",
    "selective_copying",
    "compression",
    "memorization",
)
ARCH_NAMES = ("gpt_neox", "mamba", "llama")


class CLIError(Exception):
    """A user error with a message worth showing as is (``mad-models: error: ...``, exit code 2)."""


# ---------------------------------------------------------------- argument types


def parse_number(text: str) -> int | float:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5; ValueError for anything else."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_value(text: str) -> int | float | bool | str:
    """A ``--set`` value: a number, ``true`` / ``false`` (any case), else the text itself."""
    try:
        return parse_number(text)
    except ValueError:
        return {"true": True, "false": False}.get(text.lower(), text)


def parse_settings(pairs: list[str] | None) -> dict:
    """``["seq_len=64", "vocab_size=32"]`` -> {"seq_len": 64, "vocab_size": 32}; CLIError without ``=``."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise CLIError(f"--set expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out


def mad_settings(a: argparse.Namespace) -> dict:
    """``--set`` pairs and ``--preset`` of a MAD task command as the task's keyword arguments, each name and
    type checked against the task's own settings (CLIError naming the one that is wrong).

    Example:
        >>> mad_settings(argparse.Namespace(task="in_context_recall", set=["seq_len=64"], preset="easy"))
        {'seq_len': 64, 'preset': 'easy'}
    """
    from mad_models.mad import task_settings

    given = parse_settings(a.set)
    defaults = task_settings(a.task, a.preset)  # ValueError for an unknown task or preset
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise CLIError(f"--set {key}: unknown setting for task {a.task}; it has {known}")
        want = type(defaults[key])
        ok = isinstance(value, (int, float) if want is float else want) and not isinstance(value, bool)
        if not ok:
            raise CLIError(f"--set {key}={value}: expected {'a number' if want is float else 'an integer'}")
    return {**given, "preset": a.preset}


def int_list(text: str) -> list[int]:
    """argparse type: ``"1,2,4"`` -> [1, 2, 4], positive integers only."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def float_list(text: str) -> list[float]:
    """argparse type: ``"1e-4,1e-3"`` -> [0.0001, 0.001], positive numbers only."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def positive(cast: Callable[[str], Any], bad: str, not_positive: str) -> Callable[[str], Any]:
    """An argparse type: ``cast(text)`` that must be > 0. ``bad`` starts the message when ``cast``
    fails, ``not_positive`` the one when the value is <= 0 (both end with what was given)."""

    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{bad}, got {text!r}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{not_positive}, got {v}")
        return v

    return parse


def finite_float(text: str) -> float:
    """``float(text)``, refusing inf and nan (ValueError)."""
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(text)
    return v


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


positive_int = positive(int, "expected an integer", "expected an integer > 0")
positive_float = positive(finite_float, "expected a finite number", "expected a number > 0")
# An int is a parameter count; a number with a point (0.5) a fraction of LoRA at --lora-rank.
parameter_budget = positive(parse_number, "budget must be a number", "budget must be > 0")


# ---------------------------------------------------------------- parser building blocks


def add_traceback_option(p: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    """``--traceback``: show the full trace of any error (as ``MAD_MODELS_DEBUG=1`` does). Every command
    takes it (``default`` SUPPRESS there, so the root parser's value stands when only it was given)."""
    p.add_argument(
        "--traceback", action="store_true", default=default, help="show the full trace of an error"
    )


def add_group(groups: argparse._SubParsersAction, name: str, help_: str) -> argparse._SubParsersAction:
    """Add command group ``name`` (``mad``, ``hybrid``, ...) and return its subcommands; the group alone
    (``mad-models mad``) prints its help."""
    p = groups.add_parser(name, help=help_, description=help_, formatter_class=HELP_FORMAT)
    p.set_defaults(func=lambda a: p.print_help())
    return p.add_subparsers(dest="cmd")


def add_command(
    parent: argparse._SubParsersAction, name: str, help_: str, examples: str, func: Callable
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` to ``parent``: ``help_`` as its help and description, ``examples`` as the
    epilog of its ``--help``, ``func(args)`` as what it runs."""
    p = parent.add_parser(name, help=help_, description=help_, epilog=examples, formatter_class=HELP_FORMAT)
    p.set_defaults(func=func)
    add_traceback_option(p)
    return p


def add_train_args(
    p: argparse.ArgumentParser,
    *,
    lr: float,
    batch_size: int,
    wd: float = 0.0,
    steps: int | None = None,
    with_out: bool = True,
) -> None:
    """The "training" option group of every training command (read back by :func:`train_args`)."""
    g = p.add_argument_group("training")
    if with_out:
        g.add_argument("--out", required=True, help="output directory (log.jsonl, checkpoints/, final/)")
    g.add_argument("--steps", type=positive_int, default=steps, help="optimiser steps (wins over --epochs)")
    g.add_argument("--epochs", type=positive_float, default=1.0, help="epochs when --steps is not given")
    g.add_argument("--batch-size", type=positive_int, default=batch_size)
    g.add_argument("--lr", type=positive_float, default=lr)
    g.add_argument("--weight-decay", type=float, default=wd)
    g.add_argument("--warmup-steps", type=non_negative_int, default=0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--log-every", type=positive_int, default=10)
    g.add_argument("--save-every", type=positive_int, default=100, help="checkpoint every N steps")
    g.add_argument(
        "--stop-after", type=positive_int, default=None, help="stop (with a checkpoint) after N steps"
    )
    g.add_argument("--no-resume", action="store_true", help="start over instead of resuming from --out")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_preset(p: argparse.ArgumentParser) -> None:
    """``--preset easy|manticore``: the MAD task settings ``--set`` starts from."""
    p.add_argument(
        "--preset", choices=("easy", "manticore"), default="easy", help="MAD task settings (before --set)"
    )


def train_args(a: argparse.Namespace, **extra):
    """The :class:`mad_models.training.TrainArgs` of the options :func:`add_train_args` added."""
    from mad_models.training import TrainArgs

    return TrainArgs(
        output_dir=a.out,
        max_steps=a.steps,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        weight_decay=a.weight_decay,
        warmup_steps=a.warmup_steps,
        seed=a.seed,
        log_every=a.log_every,
        save_every=a.save_every,
        stop_after=a.stop_after,
        resume=not a.no_resume,
        progress=not a.no_progress,
        **extra,
    )


# ---------------------------------------------------------------- outputs


def check_out(out: str) -> None:
    """Refuse an --out that is a file or lies in a folder we cannot write, before any work is done."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise CLIError(f"--out {out} is a file; give a directory (nothing was saved)")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise CLIError(f"--out {out}: {existing} is not a writable directory (nothing was saved)")


def require_saved(out: str) -> None:
    """Saving to a file path only logs a warning in transformers: make "nothing saved" an error.

    Example:
        >>> # save_pretrained(model, a.out); require_saved(a.out)  # CLIError if no config landed there
    """
    if not any((Path(out) / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise CLIError(f"nothing was saved to {out}")


def write_results(out: str | Path, result: dict) -> None:
    """``results.json`` in the output directory: task, settings, source model, test accuracy. Written by
    the main process only (under ``accelerate launch`` / torchrun every process runs this CLI)."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(out / "results.json")


def print_json(obj: Any) -> None:
    """What every command prints on success: ``obj`` as indented JSON (anything else as its ``str``).

    Example:
        >>> print_json({"saved": "runs/x"})
        {
         "saved": "runs/x"
        }
    """
    print(json.dumps(obj, indent=1, default=str))


# ---------------------------------------------------------------- models, tokenizers, data


def load_model(path: str, hybrid_for: str | None = None):
    """The causal LM or Manticore hybrid saved in folder ``path`` (:func:`mad_models.loading.load_pretrained`:
    safetensors only, checked against its config, no remote code). CLIError, naming the problem, when
    ``path`` is no folder, holds an adapter rather than a model, or (``hybrid_for``: the command that needs
    one) is not a Manticore hybrid."""
    folder = Path(path)
    if not folder.is_dir():
        what = "is not a directory saved by save_pretrained" + (
            "" if folder.exists() else " (no such folder)"
        )
        raise CLIError(f"--model {path!r} {what}")
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        raise CLIError(
            f"--model {path} is a PEFT adapter (adapter_config.json), not a whole model; this command "
            "needs a model saved by save_pretrained (score an adapter with 'mad-models more eval')"
        )
    from mad_models.loading import load_pretrained

    model = load_pretrained(path)[0]
    if hybrid_for is not None:
        from mad_models.hybrid import ManticoreForCausalLM

        if not isinstance(model, ManticoreForCausalLM):
            raise CLIError(
                f"--model {path} is a {type(model).__name__}, not a Manticore hybrid; {hybrid_for} needs one "
                "(build one with 'mad-models hybrid build')"
            )
    return model


def load_tokenizer(path: str | None, fallback: str | None):
    """The tokenizer at ``path`` (CLIError if it cannot be loaded), else the one saved in folder
    ``fallback``, else None. Never runs code from the folder (``trust_remote_code=False``)."""
    from mad_models import loading

    if path is not None:
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        except (OSError, ValueError) as err:
            raise CLIError(f"cannot load a tokenizer from {path!r}: {err}") from err
    if fallback is None or not Path(fallback).is_dir():
        return None
    return loading.load_tokenizer(fallback)


def check_token_ids(rows, vocab: int, path: str) -> None:
    """Pre-tokenised JSONL rows must use ids the model has (else an IndexError deep in the embedding)."""
    for i in range(len(rows)):
        ids = rows[i]["input_ids"]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            bad = int(ids.max()) if int(ids.max()) >= vocab else int(ids.min())
            raise CLIError(
                f"{path}: row {i + 1} has token id {bad}, outside the model's vocabulary of {vocab} ids"
            )
