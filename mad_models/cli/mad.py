"""``mad-models mad train|eval``: MAD synthetic tasks, a model from scratch or a saved one."""

from __future__ import annotations

from pathlib import Path

from mad_models.cli.common import (
    ARCH_NAMES,
    TASK_NAMES,
    CLIError,
    add_command,
    add_group,
    add_preset,
    add_train_args,
    load_model,
    mad_settings,
    positive_int,
    print_json,
    train_args,
    write_results,
)

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
}


def cmd_mad_train(a) -> None:
    from mad_models.mad import vocab_size
    from mad_models.training import build_model, count_parameters, train_mad

    settings = mad_settings(a)
    if a.model:
        model = load_model(a.model)
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
        train_args(a),
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
    write_results(a.out, result)
    print_json({**result, **_saved(final, res)})


def cmd_mad_eval(a) -> None:
    from mad_models.mad import evaluate_metrics
    from mad_models.mad.compression import DECODER_FILE, CompressionAutoEncoder

    model = load_model(a.model)
    if a.task == "compression":
        if not (Path(a.model) / DECODER_FILE).is_file():
            raise CLIError(
                f"{a.model} has no compression decoder ({DECODER_FILE}): compression is MAD's auto-encoder "
                "task; train the model on it with 'mad train --task compression'"
            )
        model = CompressionAutoEncoder.from_pretrained(a.model, model)
    settings = mad_settings(a)
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
    print_json({**result, "accuracy": acc["micro"], "macro_accuracy": acc["macro"]})


def _saved(final: Path, res: dict) -> dict:
    """``{"saved": dir}`` only when the run finished and wrote ``final/``; else where to resume."""
    if final.is_dir() and res.get("step") and res.get("step") == res.get("total_steps", res.get("step")):
        return {"saved": str(final)}
    return {"saved": None, "note": f"stopped at step {res.get('step')}; run again to resume"}


def add_commands(groups) -> None:
    """Add the ``mad`` group (``train``, ``eval``) to the ``mad-models`` subcommands ``groups``."""
    mad = add_group(groups, "mad", "MAD synthetic tasks: train and evaluate")
    p = add_command(
        mad,
        "train",
        "train a model from scratch (or a saved one) on a MAD task",
        EXAMPLES["mad train"],
        cmd_mad_train,
    )
    p.add_argument("--task", required=True, choices=TASK_NAMES)
    p.add_argument("--arch", choices=ARCH_NAMES, default="gpt_neox", help="architecture built from scratch")
    p.add_argument("--model", help="train this saved model instead of building one")
    p.add_argument("--width", type=positive_int, default=128)
    p.add_argument("--layers", type=positive_int, default=2)
    p.add_argument("--heads", type=positive_int, default=None, help="default: heads of 8 dims")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="task setting, e.g. seq_len=256")
    p.add_argument("--num-train", type=positive_int, help="training sequences (default: the task's)")
    p.add_argument("--num-test", type=positive_int, help="test sequences (default 1280)")
    add_preset(p)
    add_train_args(p, lr=5e-4, batch_size=128)

    p = add_command(
        mad,
        "eval",
        "accuracy of a saved model on a MAD task's scored positions",
        EXAMPLES["mad eval"],
        cmd_mad_eval,
    )
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True, choices=TASK_NAMES)
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--seed", type=int, default=None, help="data seed (default: 12345 for test)")
    p.add_argument("--num-examples", type=positive_int)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    add_preset(p)
