"""Exact match of short answers: the one evaluation behind ``more eval``, the MoRe reproduction, the
bundled language adapters and the app.

A question is shown to the model in the same format it was trained on (the tokenizer's chat template with
the question as the user turn, as ``prompt_answer_examples(..., chat=True)`` builds it); the reply is
generated greedily, in batches with left padding, up to EOS; it counts as right when it equals the answer
after stripping whitespace on both sides.

Example:
    >>> from mad_models.loading import load_smollm2
    >>> model, tok = load_smollm2()  # doctest: +SKIP
    >>> rows = load_qa_rows("data/mathematics/val.jsonl")  # doctest: +SKIP
    >>> evaluate_exact_match(model, tok, rows)["exact_match"]  # doctest: +SKIP
    0.0
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

MAX_ROW_CHARS = 4096  # a question or answer longer than this is not a short-answer benchmark row


# A short system turn instead of SmolLM2's default one ("You are a helpful AI assistant named SmolLM, ..."):
# it asks for the bare answer (fair to the untuned base model) and keeps prompts ~10 tokens shorter, which
# matters for CPU training.
SYSTEM_PROMPT = "Reply with the answer only."


def chat_prompt(tokenizer, question: str) -> str:
    """The text the model sees for ``question``: the tokenizer's chat template with :data:`SYSTEM_PROMPT`
    as the system turn, ``question`` as the user turn and the assistant header (SmolLM2:
    ``<|im_start|>system ...<|im_end|> <|im_start|>user ...<|im_end|> <|im_start|>assistant``), or
    ``question`` plus a newline for a tokenizer without a chat template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
            add_generation_prompt=True,
            tokenize=False,
        )
    return question + "\n"


def load_qa_rows(path: str | Path) -> list[dict]:
    """Rows ``{"prompt": str, "answer": str, "module"?: str}`` of a JSONL file, checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{path}:{i}: not valid JSON ({err})") from err
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i}: each line must be a JSON object, got {type(row).__name__}")
        for key in ("prompt", "answer") + (("module",) if "module" in row else ()):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{path}:{i}: '{key}' must be a string, got {row.get(key)!r}")
            if len(row[key]) > MAX_ROW_CHARS:
                raise ValueError(
                    f"{path}:{i}: '{key}' is {len(row[key])} characters (at most {MAX_ROW_CHARS})"
                )
        rows.append(row)
    if not rows:
        raise ValueError(f"data file {path} has no rows")
    return rows


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return 0


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    questions: Sequence[str],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 16,
    progress: bool = False,
) -> list[str]:
    """Greedy replies to ``questions`` (formatted by :func:`chat_prompt`), decoded up to EOS, unstripped.

    Batches are built from questions of similar length (less padding); padding is on the left so every
    row's last prompt token sits at the same position.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = [tokenizer(chat_prompt(tokenizer, q), add_special_tokens=False)["input_ids"] for q in questions]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad = _pad_id(tokenizer)
    eos = tokenizer.eos_token_id
    replies: list[str] = [""] * len(encoded)
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="exact match", disable=not progress):
            idx = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]) :] = 1
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            for row, i in enumerate(idx):
                new = out[row, width:].tolist()
                if eos is not None and eos in new:
                    new = new[: new.index(eos)]
                replies[i] = tokenizer.decode(new, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return replies


def score(replies: Sequence[str], rows: Sequence[dict]) -> dict:
    """``{"exact_match", "n", "per_module"?}`` of replies against ``rows``' answers (whitespace-stripped)."""
    if len(replies) != len(rows) or not rows:
        raise ValueError(f"{len(replies)} replies for {len(rows)} rows (need as many, at least one)")
    hits = [r.strip() == row["answer"].strip() for r, row in zip(replies, rows, strict=True)]
    result: dict = {"exact_match": sum(hits) / len(hits), "n": len(hits)}
    if any("module" in row for row in rows):
        by: dict[str, list[bool]] = defaultdict(list)
        for hit, row in zip(hits, rows, strict=True):
            by[row.get("module", "(none)")].append(hit)
        result["per_module"] = {m: sum(v) / len(v) for m, v in sorted(by.items())}
    return result


def evaluate_exact_match(
    model,
    tokenizer,
    rows: Sequence[dict],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 16,
    progress: bool = False,
) -> dict:
    """Exact match of ``model`` on ``rows`` (``prompt`` / ``answer`` / optional ``module``).

    Returns ``{"exact_match": float, "n": int, "per_module": {module: float}, "predictions": [str]}``
    (``per_module`` only when rows carry ``module``).
    """
    replies = generate_answers(
        model,
        tokenizer,
        [r["prompt"] for r in rows],
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        progress=progress,
    )
    return {**score(replies, rows), "predictions": replies}


def most_frequent_answers(train_rows: Sequence[dict]) -> dict[str, str]:
    """The no-learning heuristic: per module, the answer seen most often in training (ties: first seen)."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for row in train_rows:
        c = counts[row.get("module", "(none)")]
        c[row["answer"]] = c.get(row["answer"], 0) + 1
    return {m: max(c, key=c.get) for m, c in counts.items()}


def heuristic_exact_match(train_rows: Sequence[dict], rows: Sequence[dict]) -> dict:
    """Exact match of answering every question with its module's most frequent training answer."""
    best = most_frequent_answers(train_rows)
    return score([best.get(r.get("module", "(none)"), "") for r in rows], rows)
