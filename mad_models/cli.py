"""Command line: ``mad-models`` / ``python -m mad_models``.

Subcommands: ``mad train|eval``, ``hybrid build|pretrain-projectors|search|prune``,
``more train|search|eval``, and those of installed plugins (hub_tools' ``push``, ``pull``,
``space push``, through the ``mad_models.commands`` entry point). Every one has ``--help`` with
examples. Training commands resume from ``<out>/checkpoints`` when run again with the same ``--out``
(``--no-resume`` starts over).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

FMT = argparse.RawDescriptionHelpFormatter


class CLIError(Exception):
    """A user error with a message worth showing as is."""


# ---------------------------------------------------------------- argument helpers


def _number(text: str) -> int | float:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5; ValueError for anything else."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _value(text: str):
    try:
        return _number(text)
    except ValueError:
        return {"true": True, "false": False}.get(text.lower(), text)


def _settings(pairs: list[str] | None) -> dict:
    """``["seq_len=64", "vocab_size=32"]`` -> {"seq_len": 64, "vocab_size": 32}."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise CLIError(f"--set expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = _value(v.strip())
    return out


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _float_list(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _positive(cast, bad: str, not_positive: str):
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


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(text)
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


_positive_int = _positive(int, "expected an integer", "expected an integer > 0")
_positive_float = _positive(_finite_float, "expected a finite number", "expected a number > 0")
# An int is a parameter count; a number with a point (0.5) a fraction of LoRA at --lora-rank.
_budget = _positive(_number, "budget must be a number", "budget must be > 0")


def _add_train(
    p: argparse.ArgumentParser,
    *,
    lr: float,
    batch_size: int,
    wd: float = 0.0,
    steps: int | None = None,
    with_out: bool = True,
):
    g = p.add_argument_group("training")
    if with_out:
        g.add_argument("--out", required=True, help="output directory (log.jsonl, checkpoints/, final/)")
    g.add_argument("--steps", type=_positive_int, default=steps, help="optimiser steps (wins over --epochs)")
    g.add_argument("--epochs", type=_positive_float, default=1.0, help="epochs when --steps is not given")
    g.add_argument("--batch-size", type=_positive_int, default=batch_size)
    g.add_argument("--lr", type=_positive_float, default=lr)
    g.add_argument("--weight-decay", type=float, default=wd)
    g.add_argument("--warmup-steps", type=_non_negative_int, default=0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--log-every", type=_positive_int, default=10)
    g.add_argument("--save-every", type=_positive_int, default=100, help="checkpoint every N steps")
    g.add_argument(
        "--stop-after", type=_positive_int, default=None, help="stop (with a checkpoint) after N steps"
    )
    g.add_argument("--no-resume", action="store_true", help="start over instead of resuming from --out")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_preset(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset", choices=("easy", "manticore"), default="easy", help="MAD task settings (before --set)"
    )


def _train_args(a: argparse.Namespace, **extra):
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


def _check_out(out: str) -> None:
    """Refuse an --out that is a file or lies in a folder we cannot write, before any work is done."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise CLIError(f"--out {out} is a file; give a directory (nothing was saved)")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise CLIError(f"--out {out}: {existing} is not a writable directory (nothing was saved)")


def _require_saved(out: str) -> None:
    """Saving to a file path only logs a warning in transformers: make "nothing saved" an error."""
    if not any((Path(out) / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise CLIError(f"nothing was saved to {out}")


def _check_ids(rows, vocab: int, path: str) -> None:
    """Pre-tokenised JSONL rows must use ids the model has (else an IndexError deep in the embedding)."""
    for i in range(len(rows)):
        ids = rows[i]["input_ids"]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            bad = int(ids.max()) if int(ids.max()) >= vocab else int(ids.min())
            raise CLIError(
                f"{path}: row {i + 1} has token id {bad}, outside the model's vocabulary of {vocab} ids"
            )


def _print(obj) -> None:
    print(json.dumps(obj, indent=1, default=str))


def _load_model(path: str):
    """A saved causal LM or hybrid (safetensors only, no remote code)."""
    from transformers import AutoModelForCausalLM

    import mad_models  # noqa: F401  (registers "manticore" with transformers)

    if not Path(path).is_dir():
        raise CLIError(f"--model {path!r} is not a directory saved by save_pretrained")
    if (Path(path) / "config.json").is_file():
        from mad_models.validation import check_causal_lm_folder

        check_causal_lm_folder(Path(path))  # config against the weight headers before allocating
    return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False)


def _load_base(name: str, task_type: str = "causal_lm", num_labels: int = 2):
    """``smollm2`` (offline SmolLM2-135M-Instruct) or a local dir / cached hub id -> (model, tokenizer)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if name.lower() == "smollm2":
        if task_type != "causal_lm":
            raise CLIError(
                "--base-model smollm2 is a causal LM; use a local classifier dir for classification"
            )
        from mad_models.loading import load_smollm2

        return load_smollm2()
    if task_type == "classification":
        model = AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=num_labels, use_safetensors=True, trust_remote_code=False
        )
    else:
        from mad_models.loading import load_causal_lm

        model = load_causal_lm(name)
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError, TypeError):
        tok = None  # pre-tokenised data needs none
    return model, tok


def _tokenizer(path: str | None, fallback: str | None):
    from transformers import AutoTokenizer

    for p in (path, fallback):
        if p is None:
            continue
        try:
            return AutoTokenizer.from_pretrained(p, trust_remote_code=False)
        except (OSError, ValueError, TypeError) as err:
            if p == path:
                raise CLIError(f"cannot load a tokenizer from {p!r}: {err}") from err
    return None


def _text_data(a, model_dir: str | None):
    """Training data for the text jobs: --data JSONL or --text-file (one document per line)."""
    from mad_models.training.text import load_jsonl, text_blocks

    if bool(a.data) == bool(a.text_file):
        raise CLIError("give exactly one of --data (JSONL) or --text-file")
    if a.text_file:
        tok = _tokenizer(a.tokenizer, model_dir)
        if tok is None:
            raise CLIError(
                "--text-file needs a tokenizer: pass --tokenizer (none was found next to the model)"
            )
        path = Path(a.text_file)
        if not path.is_file():
            raise CLIError(f"--text-file {path} does not exist")
        docs = [ln for ln in path.read_text().splitlines() if ln.strip()]
        return text_blocks(docs, tok, a.block_size)
    return load_jsonl(a.data, _tokenizer(a.tokenizer, model_dir), block_size=a.block_size)


def _adapter_data(a, *base_args):
    """Base model, tokenizer, train and validation rows (None without --eval-data) for ``more`` jobs."""
    from mad_models.training.text import load_jsonl

    base, tok = _load_base(a.base_model, *base_args)
    if a.tokenizer:
        tok = _tokenizer(a.tokenizer, None)
    train = load_jsonl(a.data, tok, block_size=a.block_size)
    val = load_jsonl(a.eval_data, tok, block_size=a.block_size) if a.eval_data else None
    vocab = base.get_input_embeddings().num_embeddings
    _check_ids(train, vocab, a.data)
    if val is not None:
        _check_ids(val, vocab, a.eval_data)
    return base, tok, train, val


def _add_adapter_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, help="training JSONL")
    g.add_argument("--eval-data", help="validation JSONL")
    g.add_argument("--tokenizer", help="tokenizer dir (default: the base model's)")
    g.add_argument("--block-size", type=_positive_int, default=256, help="tokens per block for text rows")


def _add_text_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("text data")
    g.add_argument("--data", help="JSONL: input_ids(+labels) rows, prompt/answer rows, or text rows")
    g.add_argument("--text-file", help="plain text, one document per line")
    g.add_argument("--tokenizer", help="tokenizer dir (default: the model's dir)")
    g.add_argument("--block-size", type=_positive_int, default=256, help="tokens per block for text")


# ---------------------------------------------------------------- mad


def cmd_mad_train(a) -> None:
    from mad_models.mad import vocab_size
    from mad_models.training import build_model, count_parameters, train_mad

    settings = {**_settings(a.set), "preset": a.preset}
    if a.model:
        model = _load_model(a.model)
    else:
        model = build_model(
            a.arch,
            vocab_size(a.task, **settings),
            width=a.width,
            layers=a.layers,
            heads=a.heads,
            max_len=max(1024, settings.get("seq_len", 0)),
            seed=a.seed,
        )
    res = train_mad(
        model,
        a.task,
        _train_args(a),
        num_train=a.num_train,
        num_test=a.num_test,
        data_seed=a.seed,
        **settings,
    )
    final = Path(a.out) / "final"
    result = {
        "task": a.task,
        "settings": settings,
        "source_model": a.model or f"{a.arch} from scratch (width {a.width}, {a.layers} layers)",
        "params": count_parameters(model),
        **res,
    }
    _write_results(a.out, result)
    _print({**result, **_saved(final, res)})


def cmd_mad_eval(a) -> None:
    from mad_models.mad import evaluate_metrics
    from mad_models.mad.compression import DECODER_FILE, CompressionAutoEncoder

    model = _load_model(a.model)
    if a.task == "compression":
        if not (Path(a.model) / DECODER_FILE).is_file():
            raise CLIError(
                f"{a.model} has no compression decoder ({DECODER_FILE}): compression is MAD's auto-encoder "
                "task; train the model on it with 'mad train --task compression'"
            )
        model = CompressionAutoEncoder.from_pretrained(a.model, model)
    settings = {**_settings(a.set), "preset": a.preset}
    acc = evaluate_metrics(
        model,
        a.task,
        split=a.split,
        seed=a.seed,
        num_examples=a.num_examples,
        batch_size=a.batch_size,
        **settings,
    )
    result = {"task": a.task, "split": a.split, "settings": settings}
    _print({**result, "accuracy": acc["micro"], "macro_accuracy": acc["macro"]})


def _saved(final: Path, res: dict) -> dict:
    """``{"saved": dir}`` only when the run finished and wrote ``final/``; else where to resume."""
    if final.is_dir() and res.get("step") and res.get("step") == res.get("total_steps", res.get("step")):
        return {"saved": str(final)}
    return {"saved": None, "note": f"stopped at step {res.get('step')}; run again to resume"}


def _write_results(out: str | Path, result: dict) -> None:
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


# ---------------------------------------------------------------- hybrid


def _mixture(text: str | None):
    """ "0.7,0.3;0.2,0.8" -> [[0.7, 0.3], [0.2, 0.8]]."""
    if text is None:
        return None
    try:
        return [[float(x) for x in row.split(",")] for row in text.split(";") if row.strip()]
    except ValueError:
        raise CLIError(
            f"--mixture must look like '0.7,0.3;0.2,0.8' (blocks separated by ';'), got {text!r}"
        ) from None


def cmd_hybrid_build(a) -> None:
    import mad_models  # noqa: F401
    from mad_models.hybrid import ManticoreForCausalLM

    kwargs = {"n_blocks": a.n_blocks}
    if a.fresh_embeddings:
        kwargs["fresh_embeddings"] = True
    hybrid = ManticoreForCausalLM.from_components(a.components, **kwargs)
    mix = _mixture(a.mixture)
    if mix is not None:
        hybrid.set_mixture(mix)
    hybrid.save_pretrained(a.out)
    tok = _tokenizer(None, a.components[0]) if Path(a.components[0]).is_dir() else None
    if tok is not None:
        tok.save_pretrained(a.out)
    _print({"saved": a.out, "mixture": hybrid.mixture_weights().tolist(), **_cost(hybrid)})


def _cost(hybrid) -> dict:
    if not hasattr(hybrid, "cost_report"):
        return {}
    rep = hybrid.cost_report()
    if hasattr(rep, "to_dict"):
        rep = rep.to_dict()
    return {"cost": rep}


def _save_with_tokenizer(model, model_dir: str, out: str) -> None:
    from mad_models.loading import save_pretrained

    save_pretrained(model, out)
    _require_saved(out)
    tok = _tokenizer(None, model_dir)
    if tok is not None:
        tok.save_pretrained(out)


def cmd_hybrid_pretrain(a) -> None:
    from mad_models.training.projectors import pretrain_projectors

    hybrid = _load_model(a.model)
    data = _text_data(a, a.model)
    res = pretrain_projectors(hybrid, data, _train_args(a), train_mixture=not a.freeze_mixture)
    if res["step"] and (Path(a.out) / "final").is_dir():
        _save_with_tokenizer(hybrid, a.model, str(Path(a.out) / "final"))
    _print(res)


def _mad_splits(a, settings: dict):
    """(train, valid, test) MADDatasets of ``a.task``: each split its own (seed, split) stream."""
    from mad_models.mad import MADDataset

    train = MADDataset(a.task, split="train", seed=a.seed, num_examples=a.num_train, **settings)
    valid = MADDataset(a.task, split="valid", seed=a.seed, num_examples=a.num_test, **settings)
    test = MADDataset(a.task, split="test", num_examples=a.num_test, **settings)
    return train, valid, test


def _mad_eval_fn(test, batch_size: int):
    from mad_models.mad import evaluate_metrics

    def eval_fn(m):
        acc = evaluate_metrics(m, data=(test.inputs, test.targets), batch_size=batch_size)
        return {"accuracy": acc["micro"], "macro_accuracy": acc["macro"]}

    return eval_fn


def _no_compression(task: str | None, cmd: str) -> None:
    if task == "compression":
        raise CLIError(
            f"{cmd} on compression is not supported: compression is MAD's auto-encoder task, whose decoder "
            "is not part of a hybrid; search on another task"
        )


def cmd_hybrid_search(a) -> None:
    from torch.utils.data import Subset

    from mad_models.training.mixture_search import search_mixtures
    from mad_models.training.retrain import retrain

    if a.tau is not None and a.method != "dash":
        raise CLIError(
            f"--tau is the Gumbel temperature of --method dash; --method {a.method} does not use it"
        )
    if a.retrain_steps < 0:
        raise CLIError(f"--retrain-steps must be >= 0, got {a.retrain_steps}")
    _no_compression(a.task, "hybrid search")
    hybrid = _load_model(a.model)
    eval_fn, settings = None, {}
    if a.task:
        if a.data or a.text_file:
            raise CLIError("give either --task (a MAD task) or text data (--data / --text-file), not both")
        settings = {**_settings(a.set), "preset": a.preset}
        data, arch_data, test = _mad_splits(a, settings)
        eval_fn, collate = _mad_eval_fn(test, a.batch_size), None
        source = {"task": a.task, "settings": settings}
    else:
        from mad_models.training.text import pad_collate

        text, collate = _text_data(a, a.model), pad_collate()
        if len(text) < 2:
            raise CLIError("the text data needs at least 2 blocks (the last 10% are held out for arch steps)")
        cut = len(text) - max(1, len(text) // 10)
        data, arch_data = Subset(text, range(cut)), Subset(text, range(cut, len(text)))
        source = {"data": a.data, "text_file": a.text_file}
    run_key = {**source, "source_model": str(Path(a.model).resolve())}
    res = search_mixtures(
        hybrid,
        data,
        _train_args(a),
        arch_data=arch_data,
        arch_lr=a.arch_lr,
        mode=a.mode,
        method=a.method,
        tau=a.tau,
        eval_fn=eval_fn,
        collate_fn=collate,
        run_key=run_key,
    )
    settings_out = {
        "arch_lr": a.arch_lr,
        "mode": a.mode,
        "method": a.method,
        "tau": hybrid.config.gumbel_tau if a.method == "dash" else None,
        "lr": a.lr,
        "steps": res["total_steps"],
        "batch_size": a.batch_size,
        "seed": a.seed,
    }
    tok = _tokenizer(None, a.model)
    out = {"search": res}
    final = Path(a.out) / "final"
    if res["finished"]:
        if tok is not None:
            tok.save_pretrained(final)
        _write_results(a.out, {**source, "settings": settings_out, "source_model": a.model, **res})
        out["saved"] = [str(final)]
    else:
        out["saved"] = []
        out["note"] = f"search stopped at step {res['step']} of {res['total_steps']}; run again to resume"
    # retrain only after a finished search (a stopped one would retrain a partial mixture)
    if a.retrain_steps and res["finished"]:
        args = _train_args(a)
        args.output_dir, args.max_steps, args.stop_after = str(Path(a.out) / "retrain"), a.retrain_steps, None
        out["retrain"] = rres = retrain(
            hybrid, data, args, eval_fn=eval_fn, collate_fn=collate, run_key={**run_key, "from": "search"}
        )
        if rres["step"] == rres["total_steps"]:
            if tok is not None:
                tok.save_pretrained(Path(a.out) / "retrain" / "final")
            _write_results(
                Path(a.out) / "retrain",
                {**source, "settings": {**settings_out, "retrain_steps": a.retrain_steps},
                 "source_model": str(final), **rres},
            )  # fmt: skip
            out["saved"].append(str(Path(a.out) / "retrain" / "final"))
    _print(out)


def cmd_hybrid_prune(a) -> None:
    if a.argmax == (a.threshold is not None):
        raise CLIError("give exactly one of --threshold T or --argmax")
    if a.retrain_steps and not a.task:
        raise CLIError("--retrain-steps retrains on a MAD task: give --task too")
    _no_compression(a.task, "hybrid prune")
    from mad_models.hybrid import ManticoreForCausalLM

    hybrid = _load_model(a.model)
    if not isinstance(hybrid, ManticoreForCausalLM):
        raise CLIError(
            f"--model {a.model} is a {type(hybrid).__name__}, not a Manticore hybrid; only hybrids can be "
            "pruned (build one with 'mad-models hybrid build')"
        )
    report: dict = {"source_model": a.model}
    eval_fn = None
    if a.task:
        settings = {**_settings(a.set), "preset": a.preset}
        data, _, test = _mad_splits(a, settings)
        eval_fn = _mad_eval_fn(test, a.batch_size)
        report.update(task=a.task, settings=settings, accuracy_before_prune=eval_fn(hybrid))
    small = hybrid.discretize() if a.argmax else hybrid.prune(threshold=a.threshold)
    report["pruning"] = {"argmax": True} if a.argmax else {"threshold": a.threshold}
    if eval_fn is not None:
        report["accuracy_after_prune"] = eval_fn(small)
    _save_with_tokenizer(small, a.model, a.out)
    saved = [a.out]
    if a.retrain_steps:
        from mad_models.training.retrain import retrain

        args = _train_args(a)
        args.output_dir, args.max_steps = str(Path(a.out) / "retrain"), a.retrain_steps
        rres = retrain(
            small, data, args, eval_fn=eval_fn, run_key={"task": a.task, "source_model": str(Path(a.out))}
        )
        report["retrain"] = rres
        if rres["step"] == rres["total_steps"]:
            report["accuracy_after_retrain"] = eval_fn(small)
            tok = _tokenizer(None, a.model)
            if tok is not None:
                tok.save_pretrained(Path(a.out) / "retrain" / "final")
            saved.append(str(Path(a.out) / "retrain" / "final"))
        else:
            report["note"] = f"retrain stopped at step {rres['step']}; run again to resume"
    report.update(mixture=small.mixture_weights().tolist(), **_cost(small))
    _write_results(a.out, report)
    _print({**report, "saved": saved})


# ---------------------------------------------------------------- more


def _adapter_config(a):
    from mad_models.more import MoReConfig

    targets = [t for t in a.targets.split(",") if t] if a.targets else None
    task_type = "SEQ_CLS" if a.task_type == "classification" else "CAUSAL_LM"
    if a.method == "more":
        return MoReConfig(
            nblocks=a.nblocks,
            block_rank=a.block_rank,
            target_modules=targets,
            dropout=a.dropout,
            dropout_position=a.dropout_position,
            task_type=task_type,
            modules_to_save=["classifier", "score"] if task_type == "SEQ_CLS" else None,
        )
    from peft import LoraConfig

    return LoraConfig(
        r=a.lora_rank,
        lora_alpha=a.lora_alpha or 2 * a.lora_rank,
        target_modules=targets,
        lora_dropout=a.dropout,
        task_type=task_type,
    )


def cmd_more_train(a) -> None:
    import peft

    from mad_models.more import adapter_report
    from mad_models.training.finetune import finetune_adapter

    base, tok, train, val = _adapter_data(a, a.task_type, a.num_labels)
    pm = peft.get_peft_model(base, _adapter_config(a))
    rep = adapter_report(pm)
    pad = (tok.pad_token_id if tok is not None and tok.pad_token_id is not None else 0) if tok else 0
    res = finetune_adapter(pm, train, _train_args(a), eval_data=val, pad_id=pad)
    _print(
        {
            "method": a.method,
            "trainable_params": rep.trainable_params,
            "percent_of_base": rep.percent_of_base,
            "lora_rank_equivalent": rep.lora_rank_equivalent,
            **res,
            "saved": str(Path(a.out) / "final"),
        }
    )


def cmd_more_search(a) -> None:
    from mad_models.more_search import search_more

    base, _, train, val = _adapter_data(a)
    if val is None:  # no --eval-data: rank on held-out rows, never on rows the candidates trained on
        from torch.utils.data import Subset

        n = len(train)
        if n < 2:
            raise CLIError(f"--data has {n} row(s); give --eval-data, or at least 2 rows to hold some out")
        held = max(1, n // 10)
        train, val = Subset(train, range(n - held)), Subset(train, range(n - held, n))
        print(
            f"no --eval-data: ranking on the last {held} of {n} rows, held out from training", file=sys.stderr
        )
    target_sets = (
        [[t for t in s.split(",") if t] for s in a.target_sets.split(";")] if a.target_sets else None
    )
    table = search_more(
        base,
        train,
        val,
        budget=a.budget,
        lora_rank=a.lora_rank,
        lora_targets=[t for t in a.lora_targets.split(",") if t] if a.lora_targets else None,
        nblocks=a.nblocks,
        block_ranks=a.block_ranks,
        target_sets=target_sets,
        max_candidates=a.max_candidates,
        steps=a.steps,
        lrs=a.lrs,
        min_resource=a.min_resource,
        seeds=a.seeds,
        batch_size=a.batch_size,
        output_dir=a.out,
        seed=a.seed,
        progress=not a.no_progress,
    )
    md = table.to_markdown()
    Path(a.out, "table.md").write_text(md + "\n")
    print(md)


def _smollm2_tokenizer():
    """SmolLM2's tokenizer alone (HF cache, else the GGUF's), for an adapter whose base was loaded by pull."""
    import os

    from transformers import AutoTokenizer

    from mad_models import loading

    try:
        return AutoTokenizer.from_pretrained(loading.SMOLLM2_HUB_ID, local_files_only=True)
    except OSError:
        gguf = loading.smollm2_gguf_path()
        if gguf is None:
            raise CLIError(f"SmolLM2 is not installed: {loading.SMOLLM2_INSTALL}") from None
        folder, name = os.path.split(gguf)
        return AutoTokenizer.from_pretrained(folder, gguf_file=name)


def _load_adapter(folder: Path, base):
    """A PEFT adapter dir on ``base``, its config and tensors checked against each other first."""
    from peft import PeftModel

    from mad_models.validation import check_adapter_folder

    check_adapter_folder(folder)
    return PeftModel.from_pretrained(base, str(folder)).eval()


def _eval_model(a):
    """(model, tokenizer) for ``more eval``: smollm2, a saved model dir, or an adapter (dir or Hub id)."""
    import os

    from mad_models import loading

    if a.model.lower() == "smollm2":
        return _load_base("smollm2")
    local, from_hub = Path(a.model), not Path(a.model).exists()
    if from_hub:  # a Hub id: its configs and safetensors only (never pickles, never code)
        from huggingface_hub import snapshot_download

        local = Path(
            snapshot_download(a.model, revision=a.revision, allow_patterns=["*.json", "*.safetensors"])
        )
    if not (local / "adapter_config.json").is_file():
        model = _load_model(str(local))  # a full causal LM saved by save_pretrained
        return model, _tokenizer(a.tokenizer, str(local))
    from mad_models.validation import check_adapter_folder

    base_name = a.base_model or check_adapter_folder(local).get("base_model_name_or_path")
    if not base_name:
        raise CLIError(f"{a.model} records no base model: pass --base-model")
    if from_hub and not a.base_model and os.path.isabs(base_name):
        raise CLIError(
            f"{a.model} names a local path as its base; pass --base-model ('smollm2', a dir or a Hub id)"
        )
    base, tok = (None, None)
    gguf = loading.smollm2_gguf_path()
    smollm2_names = {"smollm2", loading.SMOLLM2_HUB_ID.lower()} | (
        {os.path.dirname(gguf).lower()} if gguf else set()
    )
    if base_name and base_name.lower() in smollm2_names:  # incl. an adapter trained on the GGUF copy
        base, tok = _load_base("smollm2")
    elif base_name and Path(base_name).is_dir():
        base, tok = _load_base(base_name)
    model = _load_adapter(local, base if base is not None else _load_base(base_name)[0])  # checked first
    if tok is None:
        recorded = next(iter(model.peft_config.values())).base_model_name_or_path
        tok = (
            _smollm2_tokenizer()
            if recorded == loading.SMOLLM2_HUB_ID
            else _tokenizer(a.tokenizer, base_name or recorded)
        )
    if a.tokenizer:
        tok = _tokenizer(a.tokenizer, None)
    if tok is None:
        raise CLIError("no tokenizer found for this model: pass --tokenizer DIR")
    return model, tok


def cmd_more_eval(a) -> None:
    from mad_models.training.exact_match import evaluate_exact_match, load_qa_rows

    try:
        rows = load_qa_rows(a.data)
    except (OSError, ValueError) as err:
        raise CLIError(f"--data: {err}") from err
    model, tok = _eval_model(a)
    res = evaluate_exact_match(
        model, tok, rows, batch_size=a.batch_size, max_new_tokens=a.max_new_tokens, progress=not a.no_progress
    )
    preds = res.pop("predictions")
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")  # never a half-written predictions file
        with tmp.open("w") as f:
            for row, pred in zip(rows, preds, strict=True):
                hit = pred.strip() == row["answer"].strip()
                f.write(json.dumps({**row, "prediction": pred, "correct": hit}) + "\n")
        tmp.replace(out)
    _print(res)


# ---------------------------------------------------------------- parser

EXAMPLES = {
    "mad train": """examples:
  mad-models mad train --task in_context_recall --arch gpt_neox --width 128 --layers 2 \\
      --steps 2000 --out runs/icr-neox
  mad-models mad train --task selective_copying --arch mamba --set seq_len=512 \\
      --set num_tokens_to_copy=32 --out runs/sc
  mad-models mad train --task compression --model runs/hybrid --steps 500 --out runs/hybrid-comp""",
    "mad eval": """examples:
  mad-models mad eval --model runs/icr-neox/final --task in_context_recall
  mad-models mad eval --model runs/sc/final --task selective_copying --set seq_len=512 --num-examples 256""",
    "hybrid build": """examples:
  mad-models hybrid build --components runs/neox/final runs/mamba/final --n-blocks 2 --out runs/hybrid
  mad-models hybrid build --components EleutherAI/pythia-70m state-spaces/mamba-130m-hf --n-blocks 2 \\
      --mixture "0.7,0.3;0.2,0.8" --out runs/pythia-mamba""",
    "hybrid pretrain-projectors": """examples:
  mad-models hybrid pretrain-projectors --model runs/pythia-mamba --text-file corpus.txt --block-size 1024 \\
      --lr 2e-4 --weight-decay 0.01 --out runs/proj""",
    "hybrid search": """examples:
  mad-models hybrid search --model runs/hybrid --task in_context_recall --arch-lr 0.01 \\
      --steps 1000 --out runs/search
  mad-models hybrid search --model runs/proj/final --text-file corpus.txt --method gaea --arch-lr 0.1 \\
      --mode simultaneous --retrain-steps 500 --out runs/search-gaea""",
    "hybrid prune": """examples:
  mad-models hybrid prune --model runs/search/final --threshold 0.25 --out runs/pruned
  mad-models hybrid prune --model runs/search/final --argmax --out runs/pruned-argmax""",
    "more train": """examples:
  mad-models more train --base-model smollm2 --data arith.jsonl --nblocks 4 --block-rank 1 \\
      --targets q_proj,v_proj --steps 300 --out runs/more-arith
  mad-models more train --base-model smollm2 --method lora --lora-rank 8 --data arith.jsonl \\
      --out runs/lora-arith
JSONL rows: {"prompt": ..., "answer": ...} | {"text": ...} | {"text": ..., "label": 1}
            | {"input_ids": [...], "labels": [...]}""",
    "more search": """examples:
  mad-models more search --base-model smollm2 --data arith.jsonl --eval-data arith-val.jsonl --budget 0.5 \\
      --lora-rank 8 --lora-targets q_proj,v_proj --steps 50 --lrs 1e-4,1e-3,1e-2 --out runs/more-search
  mad-models more search --base-model ./my-model --data train.jsonl --budget 200000 --nblocks 2,4,8 \\
      --target-sets "q_proj,v_proj;q_proj,k_proj,v_proj,o_proj" --out runs/s2
--budget: an integer is a parameter count; a number with a point (0.5, 1.0) is that share of LoRA at
--lora-rank on --lora-targets. Budgets under one LoRA rank are refused. Each candidate gets its own lr
from --lrs (Optuna, successive halving); the table has a LoRA baseline row and the seed range.""",
    "more eval": """examples:
  mad-models more eval --model smollm2 --data data/mathematics/val.jsonl
  mad-models more eval --model assets/language/more --data data/mathematics/val.jsonl --out preds.jsonl
  mad-models more eval --model me/smollm2-more-math --base-model smollm2 --data val.jsonl --batch-size 16
Prints JSON: exact_match, n, per_module (when rows carry "module"). Greedy, batched, chat-formatted;
a reply counts when it equals the answer after stripping whitespace.""",
}


PLUGIN_GROUP = "mad_models.commands"


def _add_plugin_commands(groups) -> None:
    """Add the commands of installed plugins: entry points in the ``mad_models.commands`` group, each a
    function ``add_commands(groups)`` that adds subparsers to ``groups`` (hub_tools registers push, pull and
    space push this way, so the library never imports it). A plugin's subparser may set ``user_errors``
    (a tuple of exception types) as a default: main() reports those on one line, exit code 1."""
    seen = set()
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.value in seen:  # the same package found twice on sys.path (e.g. an in-tree egg-info)
            continue
        seen.add(ep.value)
        try:
            add_commands = ep.load()
        except Exception as err:  # a broken plugin must not take the library's commands down with it
            print(f"mad-models: warning: commands of plugin {ep.name!r} unavailable: {err}", file=sys.stderr)
            continue
        add_commands(groups)


def build_parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="mad-models",
        description="MAD tasks, Manticore hybrids and MoRe adapters: train, search, prune, push.",
        epilog="run 'mad-models <command> --help' for examples",
        formatter_class=FMT,
    )
    groups = root.add_subparsers(dest="group", required=True)

    def sub(parent, name, help_, key, func):
        p = parent.add_parser(name, help=help_, description=help_, epilog=EXAMPLES[key], formatter_class=FMT)
        p.set_defaults(func=func)
        return p

    from mad_models.mad import TASKS
    from mad_models.training.models import ARCHS

    # mad
    mad = groups.add_parser("mad", help="MAD synthetic tasks: train and evaluate").add_subparsers(
        dest="cmd", required=True
    )
    p = sub(
        mad, "train", "train a model from scratch (or a saved one) on a MAD task", "mad train", cmd_mad_train
    )
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--arch", choices=ARCHS, default="gpt_neox", help="architecture built from scratch")
    p.add_argument("--model", help="train this saved model instead of building one")
    p.add_argument("--width", type=_positive_int, default=128)
    p.add_argument("--layers", type=_positive_int, default=2)
    p.add_argument("--heads", type=_positive_int, default=4)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="task setting, e.g. seq_len=256")
    p.add_argument("--num-train", type=_positive_int, help="training sequences (default: the task's)")
    p.add_argument("--num-test", type=_positive_int, help="test sequences (default 1280)")
    _add_preset(p)
    _add_train(p, lr=5e-4, batch_size=128)

    p = sub(
        mad, "eval", "accuracy of a saved model on a MAD task's scored positions", "mad eval", cmd_mad_eval
    )
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--seed", type=int, default=None, help="data seed (default: 12345 for test)")
    p.add_argument("--num-examples", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    _add_preset(p)

    # hybrid
    hyb = groups.add_parser("hybrid", help="Manticore hybrids: build, pretrain projectors, search, prune")
    hyb = hyb.add_subparsers(dest="cmd", required=True)
    p = sub(hyb, "build", "stitch pretrained components into a hybrid", "hybrid build", cmd_hybrid_build)
    p.add_argument("--components", nargs="+", required=True, help="model dirs or hub ids (2 or more)")
    p.add_argument("--n-blocks", type=_positive_int, required=True)
    p.add_argument("--mixture", help="fixed weights per block, e.g. '0.7,0.3;0.2,0.8' (default: learnable)")
    p.add_argument("--fresh-embeddings", action="store_true", help="new embeddings if tokenizers differ")
    p.add_argument("--out", required=True)

    p = sub(
        hyb,
        "pretrain-projectors",
        "train projectors on text, components frozen",
        "hybrid pretrain-projectors",
        cmd_hybrid_pretrain,
    )
    p.add_argument("--model", required=True, help="a saved hybrid")
    p.add_argument("--freeze-mixture", action="store_true", help="keep the mixture weights fixed")
    _add_text_data(p)
    _add_train(p, lr=2e-4, batch_size=8, wd=0.01)

    p = sub(hyb, "search", "search mixture weights (DARTS / DASH / GAEA)", "hybrid search", cmd_hybrid_search)
    p.add_argument("--model", required=True, help="a saved hybrid")
    p.add_argument("--task", choices=TASKS, help="search on a MAD task ...")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="MAD task setting")
    p.add_argument("--num-train", type=_positive_int)
    p.add_argument("--num-test", type=_positive_int, help="valid (arch steps) and test sequences")
    _add_preset(p)
    _add_text_data(p)
    p.add_argument("--arch-lr", type=_positive_float, default=0.01)
    p.add_argument("--mode", choices=("alternating", "simultaneous"), default="alternating")
    p.add_argument("--method", choices=("darts", "dash", "gaea"), default="darts")
    p.add_argument("--tau", type=_positive_float, default=None, help="Gumbel temperature (dash)")
    p.add_argument(
        "--retrain-steps", type=int, default=0, help="then retrain N steps with the mixture frozen"
    )
    _add_train(p, lr=2e-4, batch_size=32)

    p = sub(hyb, "prune", "drop components whose weight is small", "hybrid prune", cmd_hybrid_prune)
    p.add_argument("--model", required=True)
    p.add_argument("--threshold", type=float, help="drop a component from a block below this weight")
    p.add_argument("--argmax", action="store_true", help="keep only the top component per block")
    p.add_argument("--task", choices=TASKS, help="report MAD test accuracy before / after the prune")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="MAD task setting")
    p.add_argument("--num-train", type=_positive_int)
    p.add_argument("--num-test", type=_positive_int)
    _add_preset(p)
    p.add_argument("--retrain-steps", type=int, default=0, help="then retrain N steps on --task")
    p.add_argument("--out", required=True)
    _add_train(p, lr=2e-4, batch_size=32, with_out=False)

    # more
    more = groups.add_parser("more", help="MoRe adapters: fine-tune and search configurations")
    more = more.add_subparsers(dest="cmd", required=True)
    p = sub(more, "train", "fine-tune a MoRe (or LoRA) adapter", "more train", cmd_more_train)
    p.add_argument("--base-model", required=True, help="'smollm2' (offline) or a local model dir")
    p.add_argument("--method", choices=("more", "lora"), default="more")
    p.add_argument("--task-type", choices=("causal_lm", "classification"), default="causal_lm")
    p.add_argument("--num-labels", type=_positive_int, default=2)
    p.add_argument("--nblocks", type=_positive_int, default=4)
    p.add_argument("--block-rank", type=_positive_int, default=1)
    p.add_argument("--lora-rank", type=_positive_int, default=8)
    p.add_argument("--lora-alpha", type=_positive_int, default=None)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument(
        "--dropout-position",
        choices=("input", "output"),
        default="input",
        help="MoRe: dropout on the adapter input (as LoRA) or output (as the MoRe reference)",
    )
    p.add_argument("--targets", help="comma-separated module names, e.g. q_proj,v_proj")
    _add_adapter_data(p)
    _add_train(p, lr=1e-3, batch_size=8)

    p = sub(
        more, "search", "rank MoRe configurations under a parameter budget", "more search", cmd_more_search
    )
    p.add_argument("--base-model", required=True, help="'smollm2' (offline) or a local model dir")
    _add_adapter_data(p)
    p.add_argument("--budget", type=_budget, required=True)
    p.add_argument("--lora-rank", type=_positive_int, default=8)
    p.add_argument("--nblocks", type=_int_list, default=[1, 2, 4, 8, 16])
    p.add_argument("--block-ranks", type=_int_list, default=[1, 2, 4, 8])
    p.add_argument("--target-sets", help="';'-separated sets of ','-separated names")
    p.add_argument(
        "--lora-targets", help="targets of the LoRA the budget and the baseline refer to (default: first set)"
    )
    p.add_argument("--max-candidates", type=_positive_int, default=3, help="largest few per target set")
    p.add_argument("--steps", type=_positive_int, default=50)
    p.add_argument("--lrs", type=_float_list, default=[1e-4, 1e-3, 1e-2], help="lr grid, e.g. 1e-4,1e-3,1e-2")
    p.add_argument("--min-resource", type=_positive_int, help="steps per successive-halving rung")
    p.add_argument("--seeds", type=_positive_int, default=2, help="seeds at each finished candidate's lr")
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")

    p = sub(
        more, "eval", "exact match of a model or adapter on prompt/answer JSONL", "more eval", cmd_more_eval
    )
    p.add_argument("--model", required=True, help="an adapter dir, a Hub id, a saved model dir, or 'smollm2'")
    p.add_argument("--data", required=True, help='JSONL rows {"prompt", "answer", "module"?}')
    p.add_argument("--base-model", help="the adapter's base ('smollm2', a dir; default: the one it records)")
    p.add_argument("--revision", help="Hub branch / tag / commit of --model")
    p.add_argument("--tokenizer", help="tokenizer dir (default: the base model's)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--max-new-tokens", type=_positive_int, default=16)
    p.add_argument("--out", help="write one JSONL row per question with its prediction and correctness")
    p.add_argument("--no-progress", action="store_true")

    # commands other packages add (hub_tools: push, pull, space push)
    _add_plugin_commands(groups)
    return root


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mad-models``; returns the exit code (0 ok, 2 usage error, 1 failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def fail(code: int, err: BaseException) -> None:  # one line, whatever the message holds
        parser.exit(code, f"mad-models: error: {' '.join(str(err).split()) or type(err).__name__}\n")

    try:
        if getattr(args, "out", None):
            _check_out(args.out)
        args.func(args)
    except CLIError as err:
        fail(2, err)
    # bad input surfaces as these: unreadable or unwritable paths (OSError: missing, pickle-only, read-only,
    # a file where a dir belongs), ids outside a vocabulary (IndexError), the wrong kind of model
    # (AttributeError), a diverged run (ArithmeticError)
    except (ValueError, TypeError, OSError, IndexError, AttributeError, KeyError, ArithmeticError) as err:
        fail(1, err)
    except Exception as err:
        if isinstance(err, getattr(args, "user_errors", ())):  # a plugin command's own user errors
            fail(1, err)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
