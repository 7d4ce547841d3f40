"""Prompt checks and token streaming on top of ``model.generate``.

Sampling draws from a private ``torch.Generator`` seeded per request (inside a logits processor),
not from torch's global RNG, so a seed repeats its output even while other users generate.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app_backend.registry import AppInputError

MAX_NEW_TOKENS = 256
MAX_PROMPT_TOKENS = 512


class PromptTooLongError(AppInputError):
    """The prompt alone passes the limit: the whole request is refused, not one column."""


@dataclass
class GenStats:
    n_tokens: int = 0
    first_token_s: float = 0.0
    total_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.total_s if self.total_s > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.n_tokens} tokens · {self.tokens_per_s:.1f} tok/s · "
            f"first token {1000 * self.first_token_s:.0f} ms · total {self.total_s:.2f} s"
        )


def check_max_new_tokens(n: Any, limit: int = MAX_NEW_TOKENS) -> int:
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise AppInputError(f"max new tokens must be a whole number, got {n!r}.") from None
    if n < 1:
        raise AppInputError(f"max new tokens must be at least 1, got {n}.")
    if n > limit:
        raise AppInputError(f"Too many new tokens: {n} asked, the limit is {limit}.")
    return n


def encode_prompt(
    prompt: str,
    tokenizer: Any,
    vocab_size: int,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    chat: bool = True,
) -> list[int]:
    """Token ids for a prompt; models without a tokenizer take space- or comma-separated ids.

    Example:
        >>> encode_prompt("3 1, 4", None, vocab_size=16)
        [3, 1, 4]
    """
    if not prompt or not prompt.strip():
        raise AppInputError("The prompt is empty.")
    if tokenizer is None:
        parts = [p for p in re.split(r"[\s,]+", prompt.strip()) if p]
        if not all(p.isdigit() for p in parts):
            raise AppInputError(
                f"This model has no tokenizer: write the prompt as token ids 0..{vocab_size - 1} "
                "separated by spaces, e.g. '3 9 4 12'."
            )
        ids = [int(p) for p in parts]
        bad = [i for i in ids if i >= vocab_size]
        if bad:
            raise AppInputError(
                f"Token id {bad[0]} is out of range: this model's vocabulary is 0..{vocab_size - 1}."
            )
    elif chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    else:
        ids = tokenizer(prompt)["input_ids"]
    if len(ids) > max_prompt_tokens:
        raise PromptTooLongError(
            f"The prompt is too long: {len(ids)} tokens, the limit is {max_prompt_tokens}."
        )
    return ids


def decode(ids: list[int], tokenizer: Any) -> str:
    if tokenizer is None:
        return " ".join(str(i) for i in ids)
    return tokenizer.decode(ids, skip_special_tokens=True)


class _SeededSampler:
    """A logits processor that samples with its own generator and leaves only the drawn token.

    ``generate`` then runs greedy (argmax) decoding over a one-hot score, so it picks the token we drew.
    """

    def __init__(self, seed: int, temperature: float, top_k: int):
        import torch

        self.gen = torch.Generator().manual_seed(int(seed))
        self.temperature = max(float(temperature), 1e-5)
        self.top_k = int(top_k)

    def __call__(self, input_ids, scores):  # scores: (B, V)
        import torch

        logits = scores.float() / self.temperature
        if 0 < self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1).cpu()
        tok = torch.multinomial(probs, 1, generator=self.gen).to(scores.device)  # (B, 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, tok, 0.0)


class _QueueStreamer:
    """Gets new token ids from ``generate`` (running in a worker thread) into a queue."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate first puts the prompt itself
            self.prompt_seen = True
            return
        for t in value.reshape(-1).tolist():
            self.q.put(int(t))

    def end(self) -> None:
        self.q.put(None)


def stream_generate(
    model: Any,
    ids: list[int],
    max_new_tokens: int,
    sample: bool = False,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    stats: GenStats | None = None,
    stop_at_eos: bool = True,
) -> Iterator[int]:
    """Yield new token ids one at a time as ``model.generate`` produces them.

    Example:
        >>> list(stream_generate(model, [1, 2, 3], max_new_tokens=4))   # greedy
        [17, 5, 5, 9]
    """
    import torch
    from transformers import LogitsProcessorList
    from transformers.generation.streamers import BaseStreamer

    class Streamer(_QueueStreamer, BaseStreamer):
        pass

    stats = stats if stats is not None else GenStats()
    streamer = Streamer()
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    eos = getattr(model.generation_config, "eos_token_id", None) if stop_at_eos else None
    kwargs = dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        streamer=streamer,
        eos_token_id=eos,
        pad_token_id=eos if isinstance(eos, int) else (eos[0] if eos else 0),
        logits_processor=LogitsProcessorList([_SeededSampler(seed, temperature, top_k)]) if sample else None,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)
            streamer.end()

    t0 = time.perf_counter()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while True:
        tok = streamer.q.get()
        if tok is None:
            break
        stats.n_tokens += 1
        if stats.n_tokens == 1:
            stats.first_token_s = time.perf_counter() - t0
        stats.total_s = time.perf_counter() - t0
        yield tok
    worker.join()
    stats.total_s = time.perf_counter() - t0
    if errors:
        raise errors[0]
