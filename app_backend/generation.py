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
    """One column's timing. Every time is taken when the model made the token (in ``generate``'s thread),
    never when a reader took it off the queue, and counts from the start of generation (the prompt).

    ``prefill_s``: until the first token (the prompt's forward pass makes it). ``decode_tokens_per_s``: the
    tokens after the first over the time between the first and the last, so prefill does not dilute it.

    Example:
        >>> GenStats(n_tokens=11, first_token_s=0.05, last_token_s=0.15).decode_tokens_per_s
        100.0
    """

    n_tokens: int = 0
    first_token_s: float = 0.0
    last_token_s: float = 0.0

    @property
    def prefill_s(self) -> float:
        return self.first_token_s

    @property
    def total_s(self) -> float:
        return self.last_token_s

    @property
    def decode_tokens_per_s(self) -> float | None:
        """None until there are two tokens (one token has no decode time)."""
        span = self.last_token_s - self.first_token_s
        return (self.n_tokens - 1) / span if self.n_tokens > 1 and span > 0 else None

    @property
    def tokens_per_s(self) -> float:
        """All new tokens over the whole time, prefill included."""
        return self.n_tokens / self.total_s if self.total_s > 0 else 0.0

    def add(self, at: float) -> None:
        """One more token, made ``at`` seconds after generation started."""
        self.n_tokens += 1
        if self.n_tokens == 1:
            self.first_token_s = at
        self.last_token_s = at

    def fields(self) -> dict[str, Any]:
        """The figures a Compare column (and its JSON/CSV export) records."""
        decode = self.decode_tokens_per_s
        return {
            "new_tokens": self.n_tokens,
            "prefill_s": round(self.prefill_s, 4),
            "decode_tokens_per_s": round(decode, 2) if decode is not None else None,
            "seconds": round(self.total_s, 4),
            "tokens_per_s": round(self.tokens_per_s, 2),
        }

    def line(self) -> str:
        decode = self.decode_tokens_per_s
        return (
            f"{self.n_tokens} tokens · prefill {1000 * self.prefill_s:.0f} ms · decode "
            f"{f'{decode:.1f} tok/s' if decode is not None else '–'} · total {self.total_s:.2f} s"
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
        # here, not at module level: mad_models.training imports torch and transformers, which the page
        # does not need to render (see tests/test_app_startup.py)
        from mad_models.training.exact_match import chat_prompt

        # the prompt format the language adapters were trained and scored with (system turn included),
        # so a column answers as its card's exact match says it does
        ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
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
    """A logits processor that samples with its own generator per row and leaves only the drawn token.

    ``generate`` then runs greedy (argmax) decoding over a one-hot score, so it picks the token we drew.
    Each row has its own generator seeded alike, so a row of a batch draws what it would draw alone.
    """

    def __init__(self, seed: int, temperature: float, top_k: int, rows: int = 1):
        import torch

        self.gens = [torch.Generator().manual_seed(int(seed)) for _ in range(rows)]
        self.temperature = max(float(temperature), 1e-5)
        self.top_k = int(top_k)

    def __call__(self, input_ids, scores):  # scores: (B, V)
        import torch

        logits = scores.float() / self.temperature
        if 0 < self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1).cpu()
        tok = torch.cat(
            [torch.multinomial(probs[i : i + 1], 1, generator=g) for i, g in enumerate(self.gens)]
        ).to(scores.device)  # (B, 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, tok, 0.0)


class _RowsStreamer:
    """Gets each step's new tokens (one per row) from ``generate`` (in a worker thread) into a queue, with
    the time the model made them: a slow reader (the UI) delays what it shows, never the figures."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()
        self.started: float | None = None  # when generate put the prompt: the start of prefill

    def put(self, value) -> None:
        now = time.perf_counter()
        if self.started is None:  # generate first puts the prompt itself
            self.started = now
            return
        self.q.put((now - self.started, [int(t) for t in value.reshape(-1).tolist()]))

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
    stats = stats if stats is not None else GenStats()
    for _, tok in stream_generate_rows(
        model,
        [ids],
        max_new_tokens,
        sample=sample,
        seed=seed,
        temperature=temperature,
        top_k=top_k,
        stats=[stats],
        stop_at_eos=stop_at_eos,
    ):
        yield tok


def stream_generate_rows(model: Any, rows: list[list[int]], max_new_tokens: int, **kwargs: Any):
    """Like :func:`stream_generate_steps`, one ``(row, token id)`` at a time."""
    for step in stream_generate_steps(model, rows, max_new_tokens, **kwargs):
        yield from step


def stream_generate_steps(
    model: Any,
    rows: list[list[int]],
    max_new_tokens: int,
    *,
    adapter_names: list[str] | None = None,
    hold: Any = None,
    sample: bool = False,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    stats: list[GenStats] | None = None,
    stop_at_eos: bool = True,
    stop: threading.Event | None = None,
) -> Iterator[tuple[int, int]]:
    """One batched ``generate`` over several prompts; yields, after each decoding step, the list of
    ``(row, token id)`` it produced (rows that reached EOS drop out).

    Prompts of unequal length are padded on the left (attention mask 0 there), so each row's tokens
    are the ones it gets alone. ``adapter_names`` (an ``AdapterHost`` model) runs row ``i`` with adapter
    ``adapter_names[i]`` ("__base__": none); ``hold`` is a context manager held around the generation
    (the host's read lock). A row stops at its EOS; the others go on. ``stop``: an event that ends
    generation at the next token when set (the app's Stop button); closing this generator early does too.

    Example:
        >>> for step in stream_generate_steps(host.model, [ids, ids], 8, adapter_names=["__base__", "a0"]):
        ...     for row, tok in step:
        ...         cols[row].append(tok)
    """
    import contextlib

    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    from app_backend.shared import adapter_rows

    class Streamer(_RowsStreamer, BaseStreamer):
        pass

    n = len(rows)
    stats = stats if stats is not None else [GenStats() for _ in rows]
    streamer = Streamer()
    device = next(model.parameters()).device
    eos = getattr(model.generation_config, "eos_token_id", None) if stop_at_eos else None
    eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
    pad = eos if isinstance(eos, int) else (eos[0] if eos else 0)
    width = max(len(r) for r in rows)
    input_ids = torch.tensor(
        [[pad] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device
    )
    attention_mask = torch.tensor(
        [[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device
    )
    kwargs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        streamer=streamer,
        eos_token_id=eos,
        pad_token_id=pad,
        logits_processor=(
            LogitsProcessorList([_SeededSampler(seed, temperature, top_k, rows=n)]) if sample else None
        ),
        temperature=None,
        top_p=None,
        top_k=None,
    )
    closed = threading.Event()  # set when the caller stops reading (closes this generator)

    def stop_requested(input_ids, scores, **kwargs):  # a StoppingCriteria: (B,) bools
        end = closed.is_set() or (stop is not None and stop.is_set())
        return torch.full((input_ids.shape[0],), end, dtype=torch.bool, device=input_ids.device)

    kwargs["stopping_criteria"] = StoppingCriteriaList([stop_requested])
    errors: list[BaseException] = []

    def run() -> None:
        try:
            rows_ctx = adapter_rows(adapter_names) if adapter_names is not None else contextlib.nullcontext()
            with hold or contextlib.nullcontext(), rows_ctx, torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)
        finally:
            streamer.end()

    done = [False] * n
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        while True:
            item = streamer.q.get()
            if item is None:
                break
            made_at, step = item
            out = []
            for i, tok in enumerate(step):
                if done[i]:
                    continue
                stats[i].add(made_at)
                if tok in eos_ids:
                    done[i] = True
                out.append((i, tok))
            if out:
                yield out
    finally:  # also when the consumer closes this generator early: generate stops at the next token
        closed.set()
    worker.join()
    if errors:
        raise errors[0]


def decode_speed(model: Any, ids: list[int], tokens: int = 32, repeats: int = 3) -> list[float]:
    """Decode tok/s of plain ``model.generate`` in this process, one figure per repeat: greedy runs of 1 and
    of ``tokens`` new tokens, timed around the call; decode = ``tokens - 1`` over the difference (prefill
    and set-up cancel out). What the app's figure is checked against.

    Example:
        >>> max(decode_speed(model, [1, 9, 2], tokens=32))  # doctest: +SKIP
        131.0
    """
    import torch

    x = torch.tensor([ids], device=next(model.parameters()).device)
    kw = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    speeds = []
    with torch.inference_mode():
        model.generate(x, max_new_tokens=4, **kw)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            model.generate(x, max_new_tokens=1, **kw)
            one = time.perf_counter() - t
            t = time.perf_counter()
            model.generate(x, max_new_tokens=tokens, min_new_tokens=tokens, **kw)
            speeds.append((tokens - 1) / max(1e-6, time.perf_counter() - t - one))
    return speeds
