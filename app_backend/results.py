"""Compare results as data: the raw JSON (also the ``compare`` API's answer), its CSV, and the
agreement view across columns with right/wrong marks where the registry knows the answer.

Example:
    >>> res = compare_json("What is 2+2?", cols)
    >>> res["results"][0]["name"], res["results"][0]["tokens_per_s"]
    >>> print(agreement_html(cols, answer="4"))
"""

from __future__ import annotations

import csv
import datetime
import html
import io
import json
import re
from typing import Any

from app_backend.registry import Registry

# prefill_s: start to first token; decode_tokens_per_s: the tokens after the first over their time;
# seconds and tokens_per_s: the whole run (prefill included). All timed when the model made the tokens.
RESULT_FIELDS = (
    "name",
    "new_tokens",
    "prefill_s",
    "decode_tokens_per_s",
    "seconds",
    "tokens_per_s",
    "stopped",
    "error",
    "text",
)


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the second (``2025-01-31T12:00:00Z``)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def compare_json(
    prompt: str, cols: list[dict[str, Any]], answer: str | None = None, time_utc: str | None = None
) -> dict[str, Any]:
    """One record per model and run: name, new tokens, prefill and decode speed, the text and the settings;
    the prompt, the reference answer and the run's UTC time (``time_utc``, default now) beside them."""
    settings = cols[0]["settings"] if cols else {}
    return {
        "time_utc": time_utc or utc_now(),
        "prompt": prompt,
        "reference_answer": answer,
        "settings": settings,
        "results": [
            {
                **{k: c.get(k) for k in RESULT_FIELDS},
                "token_ids": list(c.get("token_ids", [])),
                "correct": is_right(c.get("text", ""), answer) if answer and not c.get("error") else None,
                "settings": c.get("settings", settings),
            }
            for c in cols
        ],
    }


def results_csv(result: dict[str, Any]) -> str:
    """The same records as CSV, one row per model, each with the run's UTC time, prompt and reference
    answer (settings as one JSON cell, token ids space-separated)."""
    buf = io.StringIO()
    run = ("time_utc", "prompt", "reference_answer")
    fields = [*run, *RESULT_FIELDS, "correct", "token_ids", "settings"]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in result["results"]:
        w.writerow(
            {
                **{k: result.get(k) for k in run},
                **{k: r.get(k) for k in RESULT_FIELDS},
                "correct": r.get("correct"),
                "token_ids": " ".join(map(str, r["token_ids"])),
                "settings": json.dumps(r["settings"], sort_keys=True),
            }
        )
    return buf.getvalue()


def reference_answer(registry: Registry, prompt: str, names: list[str]) -> str | None:
    """The answer a registry preset gives for this exact prompt (``meta.presets: [{prompt, answer}]``)."""
    want = (prompt or "").strip()
    entries = [registry.entries[n] for n in names if n in registry.entries]
    entries += [registry.entries[e.base] for e in entries if e.base in registry.entries]
    entries += list(registry.entries.values())
    for e in entries:
        for p in (e.meta or {}).get("presets") or []:
            if (
                isinstance(p, dict)
                and str(p.get("prompt", "")).strip() == want
                and p.get("answer") is not None
            ):
                return str(p["answer"])
    return None


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip().lower()


def is_right(text: str, answer: str) -> bool:
    """The answer appears in the output as a whole word/number (e.g. '19' in 'It is 19.', not in '190')."""
    a = re.escape(_norm(answer))
    return re.search(rf"(?<![\w.]){a}(?![\w]|\.\d)", _norm(text)) is not None


def clip(text: str, limit: int = 240) -> str:
    """``text`` on one line, at most ``limit`` characters, cut at a word boundary (never mid-word) with "…".

    Example:
        >>> clip("the adapter does not fit base tiny-base: names differ", 30)
        'the adapter does not fit base…'
    """
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rsplit(" ", 1)[0] if " " in text[: limit + 1] else text[:limit]
    return cut.rstrip(" ,;:") + "…"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _mark(c: dict[str, Any], answer: str | None) -> str | None:
    """ "right", "wrong", or None (no reference answer, or no output to judge)."""
    if answer is None or c.get("error") or not c.get("token_ids"):
        return None
    return "right" if is_right(c.get("text", ""), answer) else "wrong"


def agreement_html(cols: list[dict[str, Any]], answer: str | None = None) -> str:
    """A table: each column's mark against the reference answer, which columns say the same thing,
    and the first word where it departs from the first column. Names and outputs are escaped, so a
    ``|`` or an ``<img>`` in them is text."""
    done = [c for c in cols if not c.get("error") and c.get("token_ids")]
    if not done:
        return ""
    words = {id(c): (c.get("text") or "").split() for c in done}
    ref = done[0]
    rows = []
    for i, c in enumerate(cols, start=1):
        if c.get("error") or not c.get("token_ids"):
            rows.append((i, c["name"], "–", "–", "(no output)"))
            continue
        mark = {"right": "✓", "wrong": "✗", None: "–"}[_mark(c, answer)]
        same = [
            str(j)
            for j, o in enumerate(cols, start=1)
            if o is not c and o in done and _norm(o["text"]) == _norm(c["text"])
        ]
        if c is ref:
            diff = "(reference)"
        else:
            a, b = words[id(ref)], words[id(c)]
            k = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), None)
            if k is None and len(a) == len(b):
                diff = "identical"
            else:
                k = k if k is not None else min(len(a), len(b))
                diff = f"word {k + 1}: " + (clip(b[k], 24) if k < len(b) else "(ends)")
        rows.append((i, c["name"], mark, ", ".join(same) or "–", diff))
    agree = sum(1 for c in done if _norm(c["text"]) == _norm(ref["text"]))
    head = f"<b>Agreement:</b> {agree} of {len(done)} columns say the same as #1"
    if answer is not None:
        right = sum(1 for c in done if is_right(c["text"], answer))
        head += f" · reference answer <code>{_esc(answer)}</code>: {right} of {len(done)} right"
    cells = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    return (
        f"<p class='agreement-head'>{head}</p><div class='table-scroll'><table class='agreement'>"
        "<tr><th>#</th><th>model</th><th>answer</th><th>same text as</th>"
        f"<th>first difference from #1</th></tr>{cells}</table></div>"
    )


def answer_strip_html(cols: list[dict[str, Any]], answer: str | None = None) -> str:
    """One chip per column right under Run: ✓ (green) / ✗ (red) against the reference answer, – when
    there is none to judge by, with the column's number, name and the start of its answer (all escaped).

    Example:
        >>> answer_strip_html([{"name": "a", "text": "4", "token_ids": [1]}], "4")  # doctest: +ELLIPSIS
        "<div class='answer-strip'>...✓ 1 · a...</div>"
    """
    if not cols:
        return ""
    chips = []
    for i, c in enumerate(cols, start=1):
        mark = _mark(c, answer)
        symbol = {"right": "✓", "wrong": "✗", None: "–"}[mark]
        said = "failed" if c.get("error") else (clip(c.get("text") or "", 40) or "(no output)")
        chips.append(
            f"<span class='answer-chip {mark or 'none'}' title='{_esc(c['name'])}'>"
            f"<b>{symbol} {i} · {_esc(c['name'])}</b> <span class='said'>{_esc(said)}</span></span>"
        )
    lead = (
        f"<span class='answer-ref'>reference answer <code>{_esc(answer)}</code></span>"
        if answer is not None
        else "<span class='answer-ref'>no reference answer for this prompt</span>"
    )
    return f"<div class='answer-strip'>{lead}{''.join(chips)}</div>"


def column_errors(cols: list[dict[str, Any]]) -> list[str]:
    """The columns' errors, one line per distinct message naming the columns it came from (the same
    error from four columns is one line).

    Example:
        >>> column_errors([{"name": "a", "error": "boom"}, {"name": "b", "error": "boom"}])
        ['boom (columns 1 a, 2 b)']
    """
    by_message: dict[str, list[str]] = {}
    for i, c in enumerate(cols, start=1):
        if c.get("error"):
            by_message.setdefault(clip(c["error"]), []).append(f"{i} {c['name']}")
    return [
        f"{msg} ({'column' if len(where) == 1 else 'columns'} {', '.join(where)})"
        for msg, where in by_message.items()
    ]


def mark_stopped(cols: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """After Stop: every column that had not finished says so, in place, and keeps what it made.

    A column that was generating reads "stopped after N tokens"; one still waiting or loading reads
    "not run: stopped before it started". Finished and failed columns stay as they are.
    """
    for c in cols:
        if c.get("error") or c.get("state") == "done":
            continue
        n = len(c.get("token_ids") or [])
        c["stopped"] = True
        if n or c.get("state") == "generating":
            c["state"] = "stopped"
            decode = c.get("decode_tokens_per_s")
            speed = f" · decode {decode:.1f} tok/s" if decode else ""
            c["stats"] = f"stopped after {n} token{'s' if n != 1 else ''}{speed}"
        else:
            c["state"] = "not run"
            c["stats"] = "not run: stopped before it started"
    return cols
