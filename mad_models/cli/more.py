"""``mad-models more train|search|eval``: MoRe (and LoRA) adapters on a pretrained base."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mad_models.cli.common import (
    CLIError,
    add_command,
    add_group,
    add_train_args,
    check_token_ids,
    float_list,
    int_list,
    load_tokenizer,
    parameter_budget,
    positive_int,
    print_json,
    train_args,
)

EXAMPLES = {
    "more train": """examples:
  mad-models more train --base-model smollm2 --data arith.jsonl --nblocks 4 --block-rank 1 \\
      --targets q_proj,v_proj --steps 300 --out runs/more-arith
  mad-models more train --base-model smollm2 --method lora --lora-rank 8 --data arith.jsonl \\
      --out runs/lora-arith
JSONL rows: {"prompt": ..., "answer": ...} | {"text": ...} | {"text": ..., "label": 1}
            | {"input_ids": [...], "labels": [...]}""",
    "more search": """examples:
  mad-models more search --base-model smollm2 --data arith.jsonl --eval-data arith-dev.jsonl \\
      --test-data arith-test.jsonl --metric exact_match --budget 0.5 --lora-rank 8 \\
      --lora-targets q_proj,v_proj --steps 60 --lrs 1e-4,1e-3,1e-2 --out runs/more-search
  mad-models more search --base-model ./my-model --data train.jsonl --budget 200000 --nblocks 2,4,8 \\
      --target-sets "q_proj,v_proj;q_proj,k_proj,v_proj,o_proj" --out runs/s2
  # workers on many machines, one study: the same command on each, one shared storage
  mad-models more search ... --storage postgresql://user@db/search --out runs/s3
  mad-models more search ... --storage /shared/search.journal --out runs/s4
--budget: an integer is a parameter count; a number with a point (0.5, 1.0) is that share of LoRA at
--lora-rank on --lora-targets. Budgets under one LoRA rank are refused. Each candidate gets its own lr
from --lrs (Optuna, successive halving from --min-resource steps on); the table has a LoRA baseline row
and the seed range. Choices are made on --eval-data (dev); --test-data is scored once at the end.""",
    "more eval": """examples:
  mad-models more eval --model smollm2 --data data/mathematics/val.jsonl
  mad-models more eval --model assets/language/more --data data/mathematics/val.jsonl --out preds.jsonl
  mad-models more eval --model me/smollm2-more-math --base-model smollm2 --data val.jsonl --batch-size 16
Prints JSON: exact_match, n, per_module (when rows carry "module"). Greedy, batched, chat-formatted;
a reply counts when it equals the answer after stripping whitespace.""",
}


def _adapter_data(a, *base_args):
    """Base model, tokenizer, train and validation rows (None without --eval-data) for ``more`` jobs."""
    from mad_models.loading import load_base
    from mad_models.training.text import load_jsonl

    if a.base_model.lower() == "smollm2" and base_args and base_args[0] != "causal_lm":
        raise CLIError("--base-model smollm2 is a causal LM; use a local classifier dir for classification")
    base, tok = load_base(a.base_model, *base_args)
    if a.tokenizer:
        tok = load_tokenizer(a.tokenizer, None)
    train = load_jsonl(a.data, tok, block_size=a.block_size)
    val = load_jsonl(a.eval_data, tok, block_size=a.block_size) if a.eval_data else None
    vocab = base.get_input_embeddings().num_embeddings
    check_token_ids(train, vocab, a.data)
    if val is not None:
        check_token_ids(val, vocab, a.eval_data)
    return base, tok, train, val


def _add_adapter_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, help="training JSONL")
    g.add_argument("--eval-data", help="validation JSONL")
    g.add_argument("--tokenizer", help="tokenizer dir (default: the base model's)")
    g.add_argument("--block-size", type=positive_int, default=256, help="tokens per block for text rows")


def adapter_config(a: argparse.Namespace):
    """The ``MoReConfig`` (or ``LoraConfig``, ``--method lora``) that ``more train``'s options give."""
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
    pm = peft.get_peft_model(base, adapter_config(a))
    rep = adapter_report(pm)
    pad = (tok.pad_token_id if tok is not None and tok.pad_token_id is not None else 0) if tok else 0
    res = finetune_adapter(pm, train, train_args(a), eval_data=val, pad_id=pad)
    print_json(
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
    from torch.utils.data import Subset

    from mad_models.more_search import search_more

    dev_rows = train_rows = test_rows = None
    if a.metric == "exact_match":  # prompt/answer rows, checked before anything loads
        if a.eval_data:
            dev_rows = _qa_rows(a.eval_data, "--eval-data")
        else:
            train_rows = _qa_rows(a.data, "--data")
        if a.test_data:
            test_rows = _qa_rows(a.test_data, "--test-data")
    base, tok, train, val = _adapter_data(a)
    if a.metric == "exact_match" and tok is None:
        raise CLIError("--metric exact_match generates answers: give a tokenizer (--tokenizer)")
    if val is None:  # no --eval-data: choose on held-out rows, never on rows the candidates trained on
        n = len(train)
        if n < 2:
            raise CLIError(f"--data has {n} row(s); give --eval-data, or at least 2 rows to hold some out")
        held = max(1, n // 10)
        train, val = Subset(train, range(n - held)), Subset(train, range(n - held, n))
        if train_rows is not None:
            if len(train_rows) != n:
                raise CLIError(
                    "--metric exact_match needs prompt/answer rows in --data (one example per row)"
                )
            dev_rows = train_rows[n - held :]
        print(
            f"no --eval-data: choosing on the last {held} of {n} rows, held out from training",
            file=sys.stderr,
        )
    test = None
    if a.test_data:
        from mad_models.training.text import load_jsonl

        test = load_jsonl(a.test_data, tok, block_size=a.block_size)
        check_token_ids(test, base.get_input_embeddings().num_embeddings, a.test_data)
    metric_fn = None
    if a.metric == "exact_match":
        from mad_models.training.exact_match import evaluate_exact_match

        rows = {"dev": dev_rows, "test": test_rows}

        def metric_fn(model, split: str) -> float:
            return evaluate_exact_match(model, tok, rows[split], batch_size=a.batch_size)["exact_match"]

    target_sets = (
        [[t for t in s.split(",") if t] for s in a.target_sets.split(";")] if a.target_sets else None
    )
    table = search_more(
        base,
        train,
        val,
        budget=a.budget,
        test=test,
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
        storage=a.storage,
        metric_fn=metric_fn,
        metric_name="exact_match" if metric_fn else None,
        seed=a.seed,
        progress=not a.no_progress,
    )
    md = table.to_markdown()
    Path(a.out, "table.md").write_text(md + "\n")
    print(md)


def _qa_rows(path: str, flag: str) -> list[dict]:
    """Prompt/answer rows of ``path`` for exact match; a bad file is a one-line error naming ``flag`` (exit
    code 1, as any unreadable data file)."""
    from mad_models.training.exact_match import load_qa_rows

    try:
        return load_qa_rows(path)
    except ValueError as err:
        raise ValueError(f"{flag} for --metric exact_match: {err}") from None


def _eval_model(a):
    """(model, tokenizer) for ``more eval``: :func:`mad_models.loading.load_pretrained` ('smollm2', a saved
    model folder, or an adapter folder or Hub id, on its base by the rules of :mod:`mad_models.adapter_base`
    that ``pull`` and the app apply too); ``--tokenizer`` wins over the model's own."""
    from mad_models.loading import load_pretrained

    model, tok = load_pretrained(a.model, revision=a.revision, base_model=a.base_model)
    if a.tokenizer:
        tok = load_tokenizer(a.tokenizer, None)
    if tok is None:
        raise CLIError(
            f"--model {a.model} has no tokenizer, so it cannot read the prompts (a MAD model works on token "
            "ids): pass --tokenizer DIR, or score it on a MAD task with 'mad-models mad eval'"
        )
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
    print_json(res)


def add_commands(groups) -> None:
    """Add the ``more`` group (``train``, ``search``, ``eval``) to the ``mad-models`` subcommands."""
    more = add_group(groups, "more", "MoRe adapters: fine-tune, search configurations, evaluate")
    p = add_command(
        more, "train", "fine-tune a MoRe (or LoRA) adapter", EXAMPLES["more train"], cmd_more_train
    )
    p.add_argument("--base-model", required=True, help="'smollm2' (offline) or a local model dir")
    p.add_argument("--method", choices=("more", "lora"), default="more")
    p.add_argument("--task-type", choices=("causal_lm", "classification"), default="causal_lm")
    p.add_argument("--num-labels", type=positive_int, default=2)
    p.add_argument("--nblocks", type=positive_int, default=4)
    p.add_argument("--block-rank", type=positive_int, default=1)
    p.add_argument("--lora-rank", type=positive_int, default=8)
    p.add_argument("--lora-alpha", type=positive_int, default=None)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument(
        "--dropout-position",
        choices=("input", "output"),
        default="input",
        help="MoRe: dropout on the adapter input (as LoRA) or output (as the MoRe reference)",
    )
    p.add_argument("--targets", help="comma-separated module names, e.g. q_proj,v_proj")
    _add_adapter_data(p)
    add_train_args(p, lr=1e-3, batch_size=8)

    p = add_command(
        more,
        "search",
        "rank MoRe configurations under a parameter budget",
        EXAMPLES["more search"],
        cmd_more_search,
    )
    p.add_argument("--base-model", required=True, help="'smollm2' (offline) or a local model dir")
    _add_adapter_data(p)
    p.add_argument("--budget", type=parameter_budget, required=True)
    p.add_argument("--lora-rank", type=positive_int, default=8)
    p.add_argument(
        "--test-data", help="test JSONL: scored once at the end, chooses nothing (choices use --eval-data)"
    )
    p.add_argument(
        "--metric",
        choices=("loss", "exact_match"),
        default="loss",
        help="what chooses and ranks: the loss, or greedy exact match on prompt/answer rows (higher better)",
    )
    p.add_argument(
        "--nblocks",
        type=int_list,
        default=[2, 4, 8, 16],
        help="MoRe block counts to try (1 is LoRA: the baseline row already covers it)",
    )
    p.add_argument("--block-ranks", type=int_list, default=[1, 2, 4, 8])
    p.add_argument("--target-sets", help="';'-separated sets of ','-separated names")
    p.add_argument(
        "--lora-targets", help="targets of the LoRA the budget and the baseline refer to (default: first set)"
    )
    p.add_argument(
        "--max-candidates",
        type=positive_int,
        default=3,
        help="per target set: one candidate per distinct --nblocks (its largest block rank), widest first",
    )
    p.add_argument("--steps", type=positive_int, default=50)
    p.add_argument("--lrs", type=float_list, default=[1e-4, 1e-3, 1e-2], help="lr grid, e.g. 1e-4,1e-3,1e-2")
    p.add_argument(
        "--min-resource",
        type=positive_int,
        help="the first successive-halving rung, in steps: no trial is pruned before it (default: a third of "
        "--steps)",
    )
    p.add_argument(
        "--storage",
        help="Optuna storage shared by workers: a journal file path, or an RDB URL (sqlite:///..., "
        "postgresql://...); default: SQLite in --out",
    )
    p.add_argument("--seeds", type=positive_int, default=2, help="seeds at each finished candidate's lr")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")

    p = add_command(
        more,
        "eval",
        "exact match of a model or adapter on prompt/answer JSONL",
        EXAMPLES["more eval"],
        cmd_more_eval,
    )
    p.add_argument("--model", required=True, help="an adapter dir, a Hub id, a saved model dir, or 'smollm2'")
    p.add_argument("--data", required=True, help='JSONL rows {"prompt", "answer", "module"?}')
    p.add_argument("--base-model", help="the adapter's base ('smollm2', a dir; default: the one it records)")
    p.add_argument("--revision", help="Hub branch / tag / commit of --model")
    p.add_argument("--tokenizer", help="tokenizer dir (default: the base model's)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-new-tokens", type=positive_int, default=16)
    p.add_argument("--out", help="write one JSONL row per question with its prediction and correctness")
    p.add_argument("--no-progress", action="store_true")
