"""The Compare tab: one prompt through several models side by side (:func:`compare`), and the presets,
prompts from the language adapters' training tasks read from the registry.

An adapter entry may list ``meta.presets: [{"prompt": str, "answer": str, "module": str}]`` (the asset
build writes held-out questions of the task modules it trained on). The Compare tab offers them in a
dropdown; the answer is what ``app_backend.results.reference_answer`` marks the columns against.

Example:
    >>> presets = compare_presets(Registry.from_dir("assets"))  # doctest: +SKIP
    >>> preset_choices(presets)[0]  # doctest: +SKIP
    ('[algebra__linear_1d] Solve 3*x = 9 for x.', 'Solve 3*x = 9 for x.')
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app_backend.cache import ProgressFn
from app_backend.generation import (
    GenStats,
    check_max_new_tokens,
    decode,
    encode_prompt,
    stream_generate_steps,
)
from app_backend.registry import AppInputError, Loaded, Registry
from app_backend.results import clip

if TYPE_CHECKING:
    from app_backend.service import AppService

log = logging.getLogger("mad-models-app")
MAX_COMPARE = 8  # output columns on the Compare tab

MAX_PRESETS = 300  # a dropdown longer than this helps nobody; the rest are left out (and logged)
LABEL_CHARS = 90  # a label shows the module and the question's start, on one line


@dataclass
class Run:
    """One Compare run as the Stop button sees it: ``stop`` ends it, ``guard`` is held while its columns
    change, ``cols`` are the columns (filled by :func:`compare`), ``drawn`` is set once the run's last
    state has been handed to the page."""

    stop: threading.Event = field(default_factory=threading.Event)
    drawn: threading.Event = field(default_factory=threading.Event)
    guard: threading.Lock = field(default_factory=threading.Lock)
    cols: list[dict[str, Any]] = field(default_factory=list)
    prompt: str = ""
    answer: str | None = None

    def snapshot(self) -> list[dict[str, Any]]:
        """A copy of the columns as they are now (never half-way through a step)."""
        with self.guard:
            return copy.deepcopy(self.cols)


@dataclass(frozen=True)
class Preset:
    """One preset prompt; ``models``: the adapters whose registry entry lists it."""

    prompt: str
    answer: str | None
    module: str
    models: tuple[str, ...]

    @property
    def label(self) -> str:
        """``[module] question...`` on one line, cut to ``LABEL_CHARS``."""
        text = re.sub(r"\s+", " ", self.prompt).strip()
        if self.module:
            text = f"[{self.module}] {text}"
        return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1].rstrip() + "…"


def _read(item: object, owner: str) -> tuple[str, str | None, str] | None:
    """(prompt, answer, module) of one ``meta.presets`` item, or None (logged) when it is malformed."""
    if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
        log.warning("registry entry %r: skipping a preset without a text prompt: %.120r", owner, item)
        return None
    answer = item.get("answer")
    if answer is not None and not isinstance(answer, (str, int, float)):
        log.warning("registry entry %r: skipping a preset whose answer is not text: %.120r", owner, item)
        return None
    module = item.get("module")
    return item["prompt"].strip(), None if answer is None else str(answer), str(module or "").strip()


def compare_presets(registry: Registry, group: str = "language") -> list[Preset]:
    """The presets of the registry's adapters in ``group``, in registry order, one per prompt.

    A prompt listed by several adapters (LoRA and MoRe trained on the same task) appears once, with the
    first entry's answer and module and every adapter that lists it. Entries without presets add none;
    malformed items are skipped (and logged), never an error: the app must start.
    """
    by_prompt: dict[str, Preset] = {}
    for entry in registry.entries.values():
        if entry.kind != "adapter" or entry.group != group:
            continue
        items = (entry.meta or {}).get("presets") or []
        if not isinstance(items, list):
            log.warning("registry entry %r: meta.presets is not a list; ignored", entry.name)
            continue
        for item in items:
            read = _read(item, entry.name)
            if read is None:
                continue
            prompt, answer, module = read
            seen = by_prompt.get(prompt)
            if seen is None:
                if len(by_prompt) >= MAX_PRESETS:
                    log.warning("more than %d presets in the registry: the rest are not offered", MAX_PRESETS)
                    return list(by_prompt.values())
                by_prompt[prompt] = Preset(prompt, answer, module, (entry.name,))
            elif entry.name not in seen.models:
                by_prompt[prompt] = Preset(seen.prompt, seen.answer, seen.module, (*seen.models, entry.name))
    return list(by_prompt.values())


def preset_choices(presets: list[Preset]) -> list[tuple[str, str]]:
    """Dropdown choices ``(label, prompt)``; labels that collide after cutting get ``(2)``, ``(3)``, ..."""
    seen: dict[str, int] = {}
    choices = []
    for p in presets:
        label = p.label
        seen[label] = seen.get(label, 0) + 1
        choices.append((label if seen[label] == 1 else f"{label} ({seen[label]})", p.prompt))
    return choices


def preset_note(preset: Preset) -> str:
    """One markdown line under the dropdown: where the prompt comes from and the answer it expects."""
    where = f"**{preset.module}**, " if preset.module else ""
    line = f"Preset from {where}a training task of {', '.join(preset.models)}"
    if preset.answer is None:
        return line + " (no reference answer)."
    answer = preset.answer.replace("`", "'")
    return f"{line}: expected answer `{answer}`. After Run, the agreement view marks each column ✓ or ✗."


# ---------------------------------------------------------------- outputs


def compare(
    svc: AppService,
    prompt: str,
    names: list[str],
    max_new_tokens: int = 32,
    sample: bool = False,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    chat: bool = True,
    progress: ProgressFn | None = None,
    session: str | None = None,
    stop_at_eos: bool = True,
    run: Run | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Run one prompt through several models, yielding all columns after every new token.

    Columns on one base (the base itself and its adapters) generate in ONE batched ``generate``
    with a mixed-adapter batch (the base's row is "__base__"); other models run one after another.
    A column is ``{"name", "model", "text", "token_ids", "new_tokens", "prefill_s", "decode_tokens_per_s",
    "seconds", "tokens_per_s", "stats", "error", "settings"}`` (times as the model made the tokens). A
    column that fails (cannot load, cannot take this prompt, breaks while generating) gets its error in
    its own column; the others still run.
    Bad settings for the whole request raise ``AppInputError`` before anything runs.
    ``stop_at_eos=False`` makes every column generate ``max_new_tokens`` (equal work per column, for
    throughput measurements); the UI always stops a column at its EOS.

    ``run`` (a :class:`Run`): its ``stop`` event ends the run at the next token or column, and its
    ``guard`` lock is held while the columns change, so another thread (the Stop button) can read them
    whole. Each column also has a ``state``: waiting, loading, ready, generating, done or error.
    """
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    names = [n for n in (names or []) if n]
    if not names:
        raise AppInputError("Pick at least one model to compare.")
    if len(names) > MAX_COMPARE:
        raise AppInputError(f"At most {MAX_COMPARE} models at once; {len(names)} were picked.")
    if not prompt or not prompt.strip():
        raise AppInputError("The prompt is empty.")
    settings = dict(
        max_new_tokens=max_new_tokens,
        decoding="sample" if sample else "greedy",
        seed=int(seed),
        temperature=float(temperature),
        top_k=int(top_k),
        chat=bool(chat),
        stop_at_eos=bool(stop_at_eos),
    )
    cols = [
        dict(
            name=n,
            model=n,
            text="",
            token_ids=[],
            new_tokens=0,
            seconds=0.0,
            tokens_per_s=0.0,
            prefill_s=0.0,
            decode_tokens_per_s=None,
            stopped=False,
            state="waiting",
            stats="waiting…",
            error=None,
            settings=settings,
        )
        for n in names
    ]
    run = run if run is not None else Run()
    run.cols = cols
    yield cols
    loaded: dict[int, Loaded] = {}
    prompts: dict[int, list[int]] = {}
    for i, col in enumerate(cols):
        if run.stop.is_set():
            return
        with run.guard:
            col["state"], col["stats"] = "loading", f"loading {col['model']}…"
        yield cols
        try:
            item = svc.get(col["model"], None, session)
            vocab = item.config.get_text_config().vocab_size  # an adapter's view is not built
            ids = encode_prompt(prompt, item.tokenizer, vocab, chat=chat)
            with run.guard:
                prompts[i], loaded[i] = ids, item
                col["state"], col["stats"] = "ready", "ready"
        except Exception as e:  # noqa: BLE001  (one column's failure stops only that column)
            with run.guard:
                _fail(col, e)
        yield cols
    # one batch per shared base: the base's own column joins as "__base__"
    groups: dict[int, list[int]] = {}
    for i, item in loaded.items():
        if item.host is not None and item.adapter is not None:
            groups.setdefault(id(item.host), []).append(i)
    for i, item in loaded.items():
        if item.host is not None and item.adapter is None and id(item.host) in groups:
            groups[id(item.host)].append(i)
    batches: list[list[int]] = []
    grouped = {i for g in groups.values() for i in g}
    for i in loaded:
        if i in grouped:
            g = groups[id(loaded[i].host)]
            if g not in batches:
                batches.append(g)
        else:
            batches.append([i])
    for batch in batches:
        if run.stop.is_set():
            return
        yield from _generate(batch, cols, loaded, prompts, settings, run)


def _generate(
    batch: list[int],
    cols: list[dict[str, Any]],
    loaded: dict[int, Loaded],
    prompts: dict[int, list[int]],
    settings: dict[str, Any],
    run: Run,
) -> Iterator[list[dict[str, Any]]]:
    first = loaded[batch[0]]
    shared = len(batch) > 1 or first.adapter is not None
    host = first.host
    stats = [GenStats() for _ in batch]
    with run.guard:
        for i in batch:
            cols[i]["state"] = "generating"
            cols[i]["stats"] = "generating…" + (f" (batched ×{len(batch)})" if len(batch) > 1 else "")
    yield cols
    try:
        for step in stream_generate_steps(
            host.model if shared else first.model,
            [prompts[i] for i in batch],
            settings["max_new_tokens"],
            adapter_names=[loaded[i].adapter or "__base__" for i in batch] if shared else None,
            hold=host.reading() if shared else None,
            sample=settings["decoding"] == "sample",
            seed=settings["seed"],
            temperature=settings["temperature"],
            top_k=settings["top_k"],
            stats=stats,
            stop_at_eos=settings["stop_at_eos"] and first.tokenizer is not None,
            stop=run.stop,
        ):
            with run.guard:
                for row, tok in step:
                    col, item = cols[batch[row]], loaded[batch[row]]
                    col["token_ids"].append(tok)
                    col["text"] = decode(col["token_ids"], item.tokenizer)
                    col["stats"] = f"generating · {stats[row].line()} (of {settings['max_new_tokens']})"
                    col.update(stats[row].fields())
            yield cols  # once per step: every column of the batch moved on
    except Exception as e:  # noqa: BLE001
        with run.guard:
            for i in batch:
                _fail(cols[i], e)
        yield cols
        return
    if run.stop.is_set():  # stopped mid-way: the Stop button says how far each column got
        return
    with run.guard:
        for row, i in enumerate(batch):
            st, col = stats[row], cols[i]
            col["state"] = "done"
            col["stats"] = "done · " + st.line() + (f" · batched ×{len(batch)}" if len(batch) > 1 else "")
            col.update(st.fields())
    yield cols


def _fail(col: dict[str, Any], e: Exception) -> None:
    """Put an error into its column, as a message cut at a word (unexpected errors are logged with
    their trace)."""
    if isinstance(e, AppInputError):
        msg = clip(str(e), 400)
    else:
        log.error("compare: %s failed:\n%s", col["model"], traceback.format_exc())
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        msg = clip(f"{type(e).__name__}: {first}", 300)
    col["error"], col["state"], col["stats"], col["text"] = msg, "error", "error", f"⚠ {msg}"
