"""Compare presets: prompts from the language adapters' training tasks, read from the registry.

An adapter entry may list ``meta.presets: [{"prompt": str, "answer": str, "module": str}]`` (the asset
build writes held-out questions of the task modules it trained on). The Compare tab offers them in a
dropdown; the answer is what ``app_backend.results.reference_answer`` marks the columns against.

Example:
    >>> presets = compare_presets(Registry.from_dir("assets"))  # doctest: +SKIP
    >>> preset_choices(presets)[0]  # doctest: +SKIP
    ('[algebra__linear_1d] Solve 3*x = 9 for x.', 'Solve 3*x = 9 for x.')
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from app_backend.registry import Registry

log = logging.getLogger("mad-models-app")

MAX_PRESETS = 300  # a dropdown longer than this helps nobody; the rest are left out (and logged)
LABEL_CHARS = 90  # a label shows the module and the question's start, on one line


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
