"""Bits per character of a causal LM on text files, whatever its tokenizer; and the unigram no-learning row.

bits/char = (sum over scored tokens of -ln p(token | context)) / (ln 2 x characters those tokens cover).
With a character tokenizer tokens are characters and it is the mean loss in bits.

Each text is scored whole: its tokens are prefixed with the tokenizer's BOS (else EOS) token as context, so
every character is predicted (without either, the first token is context and its characters are not
counted). Long texts are cut into windows of ``context`` input tokens moved by ``stride``; each token is
scored once, in the first window that predicts it after ``context - stride`` tokens of context
(``stride = context``: back-to-back windows, as the models were trained on blocks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

LN2 = math.log(2.0)


def default_context(model, tokenizer) -> int:
    """The window: the tokenizer's ``model_max_length`` when it is a real limit, else the model's
    position limit, else 1024."""
    n = getattr(tokenizer, "model_max_length", None)
    if isinstance(n, int) and 1 < n < 100_000:
        return n
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and 1 < v < 100_000:
            return v
    return 1024


def _tokens_and_chars(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """Token ids of ``text`` (no special tokens) and the characters each one covers."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        chars, end = [], 0
        for i, (_, stop) in enumerate(offsets):
            stop = len(text) if i == len(offsets) - 1 else stop  # trailing characters go to the last token
            chars.append(max(0, stop - end))
            end = max(end, stop)
        return ids, chars
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return ids, [len(tokenizer.decode([i])) for i in ids]


def _windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, first new target, end) over a stream of ``n`` tokens: inputs [start, end - 1) predict
    targets [start + 1, end), of which those from ``first`` on are scored in this window."""
    out, scored, end = [], 1, min(context + 1, n)
    while scored < n:
        out.append((max(0, end - context - 1), scored, end))
        scored, end = end, min(end + stride, n)
    return out


@torch.no_grad()
def bits_per_char(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 16,
    chunk_chars: int | None = None,
) -> dict:
    """Score ``texts`` with a causal LM: ``{"bits_per_char", "n_chars", "n_tokens", "context", "stride",
    "per_text"}`` (``per_text``: the first three for each text).

    ``chunk_chars``: also return ``"chunks"``, ``[bits, chars]`` of consecutive pieces of about that many
    characters (for a bootstrap over the text). Works for any model whose forward takes ``input_ids`` and
    returns ``logits`` (transformers causal LMs, Manticore hybrids).

    Example:
        >>> from mad_models.training.char_tokenizer import train_char_tokenizer
        >>> from mad_models.training import build_model
        >>> tok = train_char_tokenizer(["abc"], max_length=8)
        >>> model = build_model("gpt_neox", len(tok), width=16, layers=1, heads=2)
        >>> res = bits_per_char(model, tok, ["abcabc"])
        >>> res["n_chars"], res["n_tokens"], res["bits_per_char"] > 0
        (6, 6, True)
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    context = context or default_context(model, tokenizer)
    stride = stride or context
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in [1, context={context}], got {stride}")
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # (ids, chars per target, first scored, end, text index)
    jobs: list[tuple[list[int], list[int], int, int, int]] = []
    streams = []
    for t, text in enumerate(texts):
        ids, chars = _tokens_and_chars(tokenizer, text)
        if prefix is not None:
            ids, chars = [prefix, *ids], [0, *chars]
        streams.append((ids, chars))
        for start, first, end in _windows(len(ids), context, stride):
            jobs.append((ids[start:end], chars[start:end], first - start, end - start, t))
    total_bits, total_chars, total_tokens = 0.0, 0, 0
    per_target: list[list[tuple[float, int]]] = [[] for _ in texts]
    try:
        for b in range(0, len(jobs), batch_size):
            group = jobs[b : b + batch_size]
            width = max(len(j[0]) for j in group) - 1
            inputs = torch.zeros(len(group), width, dtype=torch.long)
            for r, (ids, *_rest) in enumerate(group):
                inputs[r, : len(ids) - 1] = torch.tensor(ids[:-1])
            logits = model(input_ids=inputs.to(device), use_cache=False).logits.float()  # (B, T, V)
            logp = torch.log_softmax(logits, dim=-1).cpu().double()
            for r, (ids, chars, first, end, t) in enumerate(group):
                targets = torch.tensor(ids[first:end])
                nats = -logp[r, first - 1 : end - 1].gather(-1, targets[:, None]).squeeze(-1)
                bits = (nats / LN2).tolist()
                per_target[t].extend(zip(bits, chars[first:end], strict=True))
                total_bits += sum(bits)
                total_chars += sum(chars[first:end])
                total_tokens += len(bits)
    finally:
        model.train(was_training)
    if total_chars == 0:
        raise ValueError("nothing to score: the texts are empty (or one token each with no BOS/EOS token)")
    per_text = []
    for scored in per_target:
        bits, chars = sum(x for x, _ in scored), sum(c for _, c in scored)
        per_text.append(
            {"bits_per_char": bits / chars if chars else None, "n_chars": chars, "n_tokens": len(scored)}
        )
    out = {
        "bits_per_char": total_bits / total_chars,
        "n_chars": total_chars,
        "n_tokens": total_tokens,
        "context": context,
        "stride": stride,
        "per_text": per_text,
    }
    if chunk_chars:
        chunks = []
        for scored in per_target:
            bits = chars = 0.0
            for x, c in scored:
                bits, chars = bits + x, chars + c
                if chars >= chunk_chars:
                    chunks.append([bits, int(chars)])
                    bits = chars = 0.0
            if chars:
                chunks.append([bits, int(chars)])
        out["chunks"] = chunks
    return out


def unigram_bits_per_char(train_texts: Sequence[str], texts: Sequence[str], tokenizer) -> dict:
    """The no-learning row: token frequencies of ``train_texts`` (add-one over the tokenizer's vocabulary)
    scored on ``texts``. With a character tokenizer, the entropy of character frequencies.

    Example:
        >>> from mad_models.training.char_tokenizer import train_char_tokenizer
        >>> tok = train_char_tokenizer(["ab"])
        >>> round(unigram_bits_per_char(["aaab"], ["ab"], tok)["bits_per_char"], 3)  # p(a)=4/8, p(b)=2/8
        1.5
    """
    counts = torch.ones(len(tokenizer), dtype=torch.float64)
    for text in train_texts:
        ids, _ = _tokens_and_chars(tokenizer, text)
        counts += torch.bincount(torch.tensor(ids, dtype=torch.long), minlength=len(counts)).double()
    logp = torch.log2(counts / counts.sum())
    bits = chars = tokens = 0
    for text in texts:
        ids, per = _tokens_and_chars(tokenizer, text)
        bits += float(-logp[torch.tensor(ids, dtype=torch.long)].sum())
        chars, tokens = chars + sum(per), tokens + len(ids)
    return {"bits_per_char": bits / chars, "n_chars": chars, "n_tokens": tokens}


def score_files(
    model_dir: str | Path,
    files: Sequence[str | Path],
    *,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 16,
) -> dict:
    """Bits per character of the causal LM saved in ``model_dir`` (a plain transformers model or a Manticore
    hybrid, safetensors only, with its tokenizer) on UTF-8 text files; what ``mad-models hybrid eval`` prints.

    Returns ``{"bits_per_char", "n_chars", "n_tokens", "context", "stride", "model", "files": [{"file",
    "bits_per_char", "n_chars", "n_tokens"}, ...]}``.

    Example:
        >>> val = ["data/shakespeare/val/julius_caesar.txt"]
        >>> res = score_files("assets/text/hybrid", val)  # doctest: +SKIP
        >>> round(res["bits_per_char"], 2), res["n_chars"]  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import mad_models.hybrid  # noqa: F401  (registers the "manticore" model type)
    from mad_models.validation import check_causal_lm_folder

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a model folder saved by save_pretrained (no config.json)"
        )
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("give at least one text file")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"text file {path} does not exist")
    texts = [path.read_text(encoding="utf-8") for path in paths]
    if not any(
        tokenizer_file.exists()
        for tokenizer_file in (model_dir / "tokenizer.json", model_dir / "tokenizer_config.json")
    ):
        raise FileNotFoundError(
            f"{model_dir} has no tokenizer (tokenizer.json): save the tokenizer with the model "
            "(tokenizer.save_pretrained(folder))"
        )
    check_causal_lm_folder(model_dir)  # config against the weight headers before allocating
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False)
    res = bits_per_char(model, tokenizer, texts, context=context, stride=stride, batch_size=batch_size)
    per = res.pop("per_text")
    return {
        **res,
        "model": str(model_dir),
        "files": [{"file": str(p), **r} for p, r in zip(paths, per, strict=True)],
    }
