"""What a model is, in a few lines of markdown: shown under each Compare column and in each tab.

Everything comes from the registry entry (its ``meta``, filled by the asset build) and the
checkpoint's own files (config, safetensors header, README), so the card never says more than the
files do. ``meta`` fields are optional; the card shows those present:

- ``trained_on`` (text), ``lr``, ``steps``, ``seeds``: how the model was trained;
- ``exact_match``, ``base_exact_match``, ``per_module`` ({module or subset: exact match}): adapter evals;
- ``accuracy`` or ``mad_accuracy`` ({task: accuracy, "mean": ...}), ``heuristic`` and ``chance``
  ({task: accuracy}): MAD evals, side by side;
- ``trainable_params``; ``hub_repo`` (or ``repo_id``): where the model lives on the Hub.

Example:
    >>> print(model_card_md(registry["SmolLM2 + MoRe"]))  # doctest: +SKIP
    **SmolLM2 + MoRe**: MoRe nblocks=4 block_rank=1 on q_proj, k_proj, v_proj, trained on ...
"""

from __future__ import annotations

import html
import json
import re
import struct
from math import prod
from pathlib import Path
from typing import Any

from app_backend import formatting as fmt
from app_backend.registry import ModelEntry
from app_backend.render import md_escape

HUB_URL = "https://huggingface.co"
MAX_HEADER_BYTES = 100 * 2**20  # a safetensors header larger than this is not read


def method_line(config: dict[str, Any]) -> str | None:
    """An adapter's method and shape, e.g. 'MoRe k=4, r=1: rank up to 16 (LoRA r=4 has the same count)'."""
    kind = config.get("peft_type")
    if kind == "MORE":
        k, r = int(config.get("nblocks", 0)), int(config.get("block_rank", 0))
        return (
            f"MoRe nblocks k={k}, block_rank r={r}: rank up to k²r = {k * k * r} "
            f"with the trainable count of LoRA r = k·r = {k * r}"
        )
    if kind == "LORA":
        r = config.get("r")
        return f"LoRA r={r}, alpha={config.get('lora_alpha')}: rank up to {r}"
    if config.get("model_type") == "manticore":
        return hybrid_line(config)
    return f"architecture: {config['model_type']}" if config.get("model_type") else None


def hybrid_line(config: dict[str, Any]) -> str:
    """A Manticore hybrid's shape: components, blocks, and what pruning kept."""
    names = config.get("component_names") or []
    k = config.get("num_components", len(names) or "?")
    line = f"Manticore hybrid of {k} components"
    if names:
        line += f" ({', '.join(str(n) for n in names)})"
    n_blocks = config.get("n_blocks") or config.get("num_blocks")
    if n_blocks:
        line += f", {n_blocks} blocks"
    kept = config.get("block_components")
    if isinstance(kept, list) and kept and all(isinstance(b, list) for b in kept):
        line += "; pruned, components per block: " + ", ".join(
            f"{b}: {{{', '.join(str(c) for c in comps)}}}" for b, comps in enumerate(kept)
        )
    return line


def safetensors_params(path: Path | None) -> int | None:
    """Parameters stored in a checkpoint dir's ``*.safetensors``, read from the headers only (no torch)."""
    if path is None or not path.is_dir():
        return None
    total, found = 0, False
    for f in sorted(path.glob("*.safetensors")):
        try:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                if n > MAX_HEADER_BYTES:
                    return None
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        for key, t in header.items():
            if key != "__metadata__" and isinstance(t, dict) and isinstance(t.get("shape"), list):
                total += prod(int(d) for d in t["shape"])
                found = True
    return total if found else None


def readme_training(path: Path | None) -> dict[str, str]:
    """What a model card's training section says: its ``| setting | value |`` rows, or its first line.

    Fallback for registry entries whose ``meta`` lacks ``trained_on``/``lr``/``steps`` (older builds).
    """
    if path is None or not (path / "README.md").is_file():
        return {}
    try:
        text = (path / "README.md").read_text(errors="replace")[:50_000]
    except OSError:
        return {}
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = section.partition("\n")
        if not re.search(r"train|made", heading, re.IGNORECASE):
            continue
        rows = {}
        for k, v in re.findall(r"^\|\s*([^|\n]+?)\s*\|\s*([^|\n]+?)\s*\|\s*$", body, re.MULTILINE):
            if k not in ("setting", "") and not k.startswith("---"):
                rows[k] = v
        if rows:
            return rows
        prose = (
            line.strip()
            for line in body.splitlines()
            if line.strip() and line.strip()[0] not in "#<[|-*!`" and "More Information Needed" not in line
        )
        first = next(prose, "")
        return {"summary": first[:240]} if first else {}
    return {}


def _fraction(v: Any) -> str:
    return fmt.accuracy(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _mad_table(meta: dict[str, Any]) -> list[str]:
    """Per-task accuracy next to the no-learning heuristic and chance, as a markdown table."""
    acc = meta.get("mad_accuracy") or meta.get("accuracy")
    if not isinstance(acc, dict) or not acc:
        return []
    heur = meta.get("heuristic") if isinstance(meta.get("heuristic"), dict) else {}
    chance = meta.get("chance") if isinstance(meta.get("chance"), dict) else {}
    cols = ["task", "accuracy"] + (["heuristic"] if heur else []) + (["chance"] if chance else [])
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for task, a in acc.items():
        cells = [task.replace("_", " "), _fraction(a)]
        if heur:
            cells.append(_fraction(heur[task]) if task in heur else "—")
        if chance:
            cells.append(_fraction(chance[task]) if task in chance else "—")
        rows.append("| " + " | ".join(cells) + " |")
    return ["MAD test accuracy (asset build):", "", *rows, ""]


def card_link(entry: ModelEntry, root: Path | None = None) -> str | None:
    """A Hub link when the entry names its repo, else the local model card's path (relative to the assets)."""
    meta = entry.meta or {}
    repo = meta.get("hub_repo") or meta.get("repo_id")
    if isinstance(repo, str) and repo.count("/") == 1 and " " not in repo:
        return f"Hub: [{repo}]({HUB_URL}/{repo})"
    if entry.kind == "smollm2":
        from mad_models.loading import SMOLLM2_HUB_ID

        return f"Hub: [{SMOLLM2_HUB_ID}]({HUB_URL}/{SMOLLM2_HUB_ID})"
    if entry.path is not None and (entry.path / "README.md").is_file():
        rel = entry.path.name
        if root is not None:
            try:
                rel = entry.path.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                pass
        return f"model card: `{rel}/README.md` in the assets"
    return None


def model_card_md(entry: ModelEntry, root: Path | None = None) -> str:
    """A short card: description, training, method/config, trainable parameters, eval figures, link.

    ``root``: the asset dir, so the model card's path is shown relative to it.
    """
    meta = entry.meta or {}
    config = entry.config
    lines = [f"**{md_escape(entry.name)}**: {md_escape(entry.description or entry.kind)}"]
    card = readme_training(entry.path)
    trained_on = meta.get("trained_on") or card.get("task") or card.get("components")
    if trained_on:
        lines.append(f"trained on: {trained_on}")
    elif card.get("summary"):
        lines.append(f"how it was made: {card['summary']}")
    training = []
    lr = meta.get("lr", card.get("lr") or card.get("weights lr"))
    if lr is not None:
        training.append(f"lr {lr:.3g}" if isinstance(lr, float) else f"lr {lr}")
    steps = meta.get("steps", card.get("steps"))
    if steps is not None:
        training.append(f"{fmt.count(steps)} steps" if str(steps).isdigit() else f"steps {steps}")
    if meta.get("seeds") is not None:
        training.append(f"seeds {meta['seeds']}")
    if training:
        lines.append("training: " + ", ".join(training))
    method = method_line(config)
    if method:
        lines.append(method)
    if entry.kind == "adapter" and config.get("target_modules"):
        targets = config["target_modules"]
        lines.append("targets: " + (", ".join(targets) if isinstance(targets, list) else str(targets)))
        if entry.base:
            lines.append(f"base: {entry.base}")
    if meta.get("trainable_params"):
        lines.append(f"trainable parameters: {fmt.count(meta['trainable_params'])}")
    elif entry.kind == "causal_lm":
        n = safetensors_params(entry.path)
        if n:
            lines.append(f"parameters (all trained): {fmt.count(n)}")
    evals = []
    if isinstance(meta.get("exact_match"), (int, float)):
        evals.append(f"exact match {fmt.accuracy(meta['exact_match'])}")
    if isinstance(meta.get("base_exact_match"), (int, float)):
        evals.append(f"base alone {fmt.accuracy(meta['base_exact_match'])}")
    if evals:
        lines.append("eval: " + ", ".join(evals))
    per_module = meta.get("per_module")
    if isinstance(per_module, dict) and per_module:
        lines.append(
            "exact match per module: " + ", ".join(f"{k} {_fraction(v)}" for k, v in per_module.items())
        )
    link = card_link(entry, root)
    if link:
        lines.append(link)
    text = "  \n".join(lines)
    table = _mad_table(meta)
    if table:
        text += "\n\n" + "\n".join(table)
    return text


def cards_md(entries: list[ModelEntry | str], root: Path | None = None) -> str:
    """Cards of several models, one after another; a plain name (a model from the Load tab) gets one line."""
    parts = []
    for e in entries:
        if isinstance(e, ModelEntry):
            parts.append(model_card_md(e, root))
        else:
            parts.append(f"**{md_escape(e)}**: loaded in this app from the Load tab (no registry card)")
    return "\n\n---\n\n".join(parts) if parts else "No model picked."


def _score_table(title: str, rows: list[str], columns: list[tuple[str, dict[str, Any]]]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in columns)
    body = "".join(
        f"<tr><th class='row'>{html.escape(r.replace('__', ': ').replace('_', ' '))}</th>"
        + "".join(
            f"<td class='num'>{html.escape(_fraction(v[r]) if r in v else '—')}</td>" for _, v in columns
        )
        + "</tr>"
        for r in rows
    )
    return (
        f"<p class='scores-title'>{html.escape(title)}</p><div class='table-scroll'>"
        f"<table class='scores'><tr><th></th>{head}</tr>{body}</table></div>"
    )


def modules_table_html(entries: list[ModelEntry]) -> str:
    """One table per kind of eval for the picked models: modules (or MAD tasks) as rows, the models as
    columns, with the base alone and the no-learning heuristic (and chance, for MAD) beside them; names
    escaped, numbers never wrapped. Models without eval figures (e.g. loaded ones) are left out.

    Example:
        >>> modules_table_html([registry["SmolLM2 + MoRe"], registry["mad/mamba"]])  # doctest: +SKIP
    """
    parts = []
    language = [e for e in entries if isinstance((e.meta or {}).get("per_module"), dict)]
    if language:
        cols = [(e.name, e.meta["per_module"]) for e in language]
        bases = {e.base for e in language if e.base} - {e.name for e in language}
        with_base = next((e.meta for e in language if isinstance(e.meta.get("base_per_module"), dict)), None)
        if bases and with_base:
            cols.append((f"base alone ({', '.join(sorted(bases))})", with_base["base_per_module"]))
        heuristic = next(
            (e.meta for e in language if isinstance(e.meta.get("heuristic_per_module"), dict)), None
        )
        if heuristic:
            cols.append(("no-learning heuristic", heuristic["heuristic_per_module"]))
        rows = list(dict.fromkeys(k for _, v in cols for k in v))
        evals = {str(e.meta.get("eval")) for e in language if e.meta.get("eval")}
        title = "Exact match per module" + (f" on {', '.join(sorted(evals))}" if evals else "")
        parts.append(_score_table(title, rows, cols))
    mad = [
        e
        for e in entries
        if isinstance((e.meta or {}).get("mad_accuracy") or (e.meta or {}).get("accuracy"), dict)
    ]
    if mad:
        cols = [(e.name, e.meta.get("mad_accuracy") or e.meta["accuracy"]) for e in mad]
        for key, label in (("heuristic", "no-learning heuristic"), ("chance", "chance")):
            ref = next((e.meta[key] for e in mad if isinstance(e.meta.get(key), dict)), None)
            if ref:
                cols.append((label, ref))
        rows = list(dict.fromkeys(k for _, v in cols for k in v))
        parts.append(_score_table("MAD test accuracy per task (asset build)", rows, cols))
    return "".join(parts)
