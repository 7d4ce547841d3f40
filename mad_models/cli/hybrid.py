"""``mad-models hybrid build|pretrain-projectors|search|prune|eval``: hybrids of pretrained models."""

from __future__ import annotations

import argparse
from pathlib import Path

from mad_models.cli.common import (
    TASK_NAMES,
    CLIError,
    add_command,
    add_group,
    add_preset,
    add_train_args,
    load_model,
    load_tokenizer,
    mad_settings,
    positive_float,
    positive_int,
    print_json,
    require_saved,
    train_args,
    write_results,
)

EXAMPLES = {
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
    "hybrid eval": """examples:
  mad-models hybrid eval --model assets/text/hybrid --text data/shakespeare/val/*.txt
  mad-models hybrid eval --model runs/search/final --text a.txt b.txt --context 256 --out scores.json
Prints JSON: bits_per_char, n_chars, n_tokens (all files together), context, stride, and the same per
file. Any causal LM folder (a hybrid or a plain model) with its tokenizer; each file is scored whole, in
windows of --context tokens (default: the tokenizer's model_max_length).""",
}


def _text_data(a, model_dir: str | None):
    """Training data for the text jobs: --data JSONL or --text-file (one document per line)."""
    from mad_models.training.text import load_jsonl, text_blocks

    if bool(a.data) == bool(a.text_file):
        raise CLIError("give exactly one of --data (JSONL) or --text-file")
    if a.text_file:
        tok = load_tokenizer(a.tokenizer, model_dir)
        if tok is None:
            raise CLIError(
                "--text-file needs a tokenizer: pass --tokenizer (none was found next to the model)"
            )
        path = Path(a.text_file)
        if not path.is_file():
            raise CLIError(f"--text-file {path} does not exist")
        docs = [ln for ln in path.read_text().splitlines() if ln.strip()]
        return text_blocks(docs, tok, a.block_size)
    return load_jsonl(a.data, load_tokenizer(a.tokenizer, model_dir), block_size=a.block_size)


def _add_text_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("text data")
    g.add_argument("--data", help="JSONL: input_ids(+labels) rows, prompt/answer rows, or text rows")
    g.add_argument("--text-file", help="plain text, one document per line")
    g.add_argument("--tokenizer", help="tokenizer dir (default: the model's dir)")
    g.add_argument("--block-size", type=positive_int, default=256, help="tokens per block for text")


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


def _check_components(components: list[str]) -> None:
    """Two or more components, each a folder here or a Hub id (CLIError naming the first that is neither)."""
    from mad_models.adapter_base import is_hub_repo_id

    if len(components) < 2:
        raise CLIError(
            f"a hybrid needs 2 or more --components, got {len(components)}: {' '.join(components)}"
        )
    for c in components:
        path = Path(c).expanduser()
        if path.exists() and not path.is_dir():
            raise CLIError(f"--components {c} is a file, not a folder saved by save_pretrained")
        if not path.exists() and not is_hub_repo_id(c):
            raise CLIError(
                f"--components {c}: no such folder (nor a Hub repo id such as 'EleutherAI/pythia-70m'); "
                "train or save the component there first"
            )


def cmd_hybrid_build(a) -> None:
    _check_components(a.components)
    from mad_models.hybrid import ManticoreForCausalLM

    kwargs = {"n_blocks": a.n_blocks}
    if a.fresh_embeddings:
        kwargs["fresh_embeddings"] = True
    hybrid = ManticoreForCausalLM.from_components(a.components, **kwargs)
    mix = _mixture(a.mixture)
    if mix is not None:
        hybrid.set_mixture(mix)
    hybrid.save_pretrained(a.out)
    tok = load_tokenizer(None, a.components[0])
    if tok is not None:
        tok.save_pretrained(a.out)
    print_json({"saved": a.out, "mixture": hybrid.mixture_weights().tolist(), **_cost(hybrid)})


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
    require_saved(out)
    tok = load_tokenizer(None, model_dir)
    if tok is not None:
        tok.save_pretrained(out)


def cmd_hybrid_pretrain(a) -> None:
    from mad_models.training.projectors import pretrain_projectors

    hybrid = load_model(a.model, hybrid_for="hybrid pretrain-projectors")
    data = _text_data(a, a.model)
    res = pretrain_projectors(hybrid, data, train_args(a), train_mixture=not a.freeze_mixture)
    if res["step"] and (Path(a.out) / "final").is_dir():
        _save_with_tokenizer(hybrid, a.model, str(Path(a.out) / "final"))
    print_json(res)


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
    hybrid = load_model(a.model, hybrid_for="hybrid search")
    eval_fn, settings = None, {}
    if a.task:
        if a.data or a.text_file:
            raise CLIError("give either --task (a MAD task) or text data (--data / --text-file), not both")
        settings = mad_settings(a)
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
        train_args(a),
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
    tok = load_tokenizer(None, a.model)
    out = {"search": res}
    final = Path(a.out) / "final"
    if res["finished"]:
        if tok is not None:
            tok.save_pretrained(final)
        write_results(a.out, {**source, "settings": settings_out, "source_model": a.model, **res})
        out["saved"] = [str(final)]
    else:
        out["saved"] = []
        out["note"] = f"search stopped at step {res['step']} of {res['total_steps']}; run again to resume"
    # retrain only after a finished search (a stopped one would retrain a partial mixture)
    if a.retrain_steps and res["finished"]:
        args = train_args(a)
        args.output_dir, args.max_steps, args.stop_after = str(Path(a.out) / "retrain"), a.retrain_steps, None
        out["retrain"] = rres = retrain(
            hybrid, data, args, eval_fn=eval_fn, collate_fn=collate, run_key={**run_key, "from": "search"}
        )
        if rres["step"] == rres["total_steps"]:
            if tok is not None:
                tok.save_pretrained(Path(a.out) / "retrain" / "final")
            write_results(
                Path(a.out) / "retrain",
                {**source, "settings": {**settings_out, "retrain_steps": a.retrain_steps},
                 "source_model": str(final), **rres},
            )  # fmt: skip
            out["saved"].append(str(Path(a.out) / "retrain" / "final"))
    print_json(out)


def cmd_hybrid_prune(a) -> None:
    if a.argmax == (a.threshold is not None):
        raise CLIError("give exactly one of --threshold T or --argmax")
    if a.retrain_steps and not a.task:
        raise CLIError("--retrain-steps retrains on a MAD task: give --task too")
    _no_compression(a.task, "hybrid prune")
    hybrid = load_model(a.model, hybrid_for="hybrid prune")
    report: dict = {"source_model": a.model}
    eval_fn = None
    if a.task:
        settings = mad_settings(a)
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

        args = train_args(a)
        args.output_dir, args.max_steps = str(Path(a.out) / "retrain"), a.retrain_steps
        rres = retrain(
            small, data, args, eval_fn=eval_fn, run_key={"task": a.task, "source_model": str(Path(a.out))}
        )
        report["retrain"] = rres
        if rres["step"] == rres["total_steps"]:
            report["accuracy_after_retrain"] = eval_fn(small)
            tok = load_tokenizer(None, a.model)
            if tok is not None:
                tok.save_pretrained(Path(a.out) / "retrain" / "final")
            saved.append(str(Path(a.out) / "retrain" / "final"))
        else:
            report["note"] = f"retrain stopped at step {rres['step']}; run again to resume"
    report.update(mixture=small.mixture_weights().tolist(), **_cost(small))
    write_results(a.out, report)
    print_json({**report, "saved": saved})


def cmd_hybrid_eval(a) -> None:
    import json

    from mad_models.training.bits_per_char import score_files

    res = score_files(a.model, a.text, context=a.context, stride=a.stride, batch_size=a.batch_size)
    if a.out_file:
        out = Path(a.out_file)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1) + "\n")
        tmp.replace(out)  # never a half-written file
    print_json(res)


def add_commands(groups) -> None:
    """Add the ``hybrid`` group (``build``, ``pretrain-projectors``, ``search``, ``prune``, ``eval``)."""
    hyb = add_group(groups, "hybrid", "Manticore hybrids: build, pretrain projectors, search, prune, eval")
    p = add_command(
        hyb, "build", "stitch pretrained components into a hybrid", EXAMPLES["hybrid build"], cmd_hybrid_build
    )
    p.add_argument("--components", nargs="+", required=True, help="model dirs or hub ids (2 or more)")
    p.add_argument("--n-blocks", type=positive_int, required=True)
    p.add_argument("--mixture", help="fixed weights per block, e.g. '0.7,0.3;0.2,0.8' (default: learnable)")
    p.add_argument("--fresh-embeddings", action="store_true", help="new embeddings if tokenizers differ")
    p.add_argument("--out", required=True)

    p = add_command(
        hyb,
        "pretrain-projectors",
        "train projectors on text, components frozen",
        EXAMPLES["hybrid pretrain-projectors"],
        cmd_hybrid_pretrain,
    )
    p.add_argument("--model", required=True, help="a saved hybrid")
    p.add_argument("--freeze-mixture", action="store_true", help="keep the mixture weights fixed")
    _add_text_data(p)
    add_train_args(p, lr=2e-4, batch_size=8, wd=0.01)

    p = add_command(
        hyb,
        "search",
        "search mixture weights (DARTS / DASH / GAEA)",
        EXAMPLES["hybrid search"],
        cmd_hybrid_search,
    )
    p.add_argument("--model", required=True, help="a saved hybrid")
    p.add_argument("--task", choices=TASK_NAMES, help="search on a MAD task ...")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="MAD task setting")
    p.add_argument("--num-train", type=positive_int)
    p.add_argument("--num-test", type=positive_int, help="valid (arch steps) and test sequences")
    add_preset(p)
    _add_text_data(p)
    p.add_argument("--arch-lr", type=positive_float, default=0.01)
    p.add_argument("--mode", choices=("alternating", "simultaneous"), default="alternating")
    p.add_argument("--method", choices=("darts", "dash", "gaea"), default="darts")
    p.add_argument("--tau", type=positive_float, default=None, help="Gumbel temperature (dash)")
    p.add_argument(
        "--retrain-steps", type=int, default=0, help="then retrain N steps with the mixture frozen"
    )
    add_train_args(p, lr=2e-4, batch_size=32)

    p = add_command(
        hyb, "prune", "drop components whose weight is small", EXAMPLES["hybrid prune"], cmd_hybrid_prune
    )
    p.add_argument("--model", required=True)
    p.add_argument("--threshold", type=float, help="drop a component from a block below this weight")
    p.add_argument("--argmax", action="store_true", help="keep only the top component per block")
    p.add_argument("--task", choices=TASK_NAMES, help="report MAD test accuracy before / after the prune")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="MAD task setting")
    p.add_argument("--num-train", type=positive_int)
    p.add_argument("--num-test", type=positive_int)
    add_preset(p)
    p.add_argument("--retrain-steps", type=int, default=0, help="then retrain N steps on --task")
    p.add_argument("--out", required=True)
    add_train_args(p, lr=2e-4, batch_size=32, with_out=False)

    p = add_command(
        hyb,
        "eval",
        "bits per character of a causal LM on text files",
        EXAMPLES["hybrid eval"],
        cmd_hybrid_eval,
    )
    p.add_argument("--model", required=True, help="a saved causal LM or hybrid, with its tokenizer")
    p.add_argument("--text", nargs="+", required=True, metavar="FILE", help="UTF-8 text files")
    p.add_argument("--out", dest="out_file", help="also write the JSON to this file")
    p.add_argument("--context", type=positive_int, help="window in tokens (default: the tokenizer's)")
    p.add_argument("--stride", type=positive_int, help="tokens between windows (default: --context)")
    p.add_argument("--batch-size", type=positive_int, default=16)
