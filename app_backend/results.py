"""Compare results as data: the raw JSON (also the ``compare`` API's answer), its CSV, and the
agreement view across columns with right/wrong marks where the registry knows the answer.

Example:
    >>> res = compare_json("What is 2+2?", cols)
    >>> res["results"][0]["name"], res["results"][0]["tokens_per_s"]
    >>> print(agreement_md(cols, answer="4"))
"""

from __future__ import annotations

import csv
import datetime
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


def agreement_md(cols: list[dict[str, Any]], answer: str | None = None) -> str:
    """A table: each column's mark against the reference answer, which columns say the same thing,
    and the first word where it departs from the first column."""
    done = [c for c in cols if not c.get("error") and c.get("token_ids")]
    if not done:
        return ""
    words = {id(c): (c.get("text") or "").split() for c in done}
    ref = done[0]
    header = "| # | model | answer | same text as | first difference from #1 |\n|---|---|---|---|---|"
    rows = []
    for i, c in enumerate(cols, start=1):
        if c.get("error") or not c.get("token_ids"):
            rows.append(f"| {i} | {c['name']} | – | – | (no output) |")
            continue
        mark = "–" if answer is None else ("✓" if is_right(c["text"], answer) else "✗")
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
                word = b[k] if k < len(b) else "(ends)"
                diff = f"word {k + 1}: `{word[:24]}`"
        rows.append(f"| {i} | {c['name']} | {mark} | {', '.join(same) or '–'} | {diff} |")
    agree = sum(1 for c in done if _norm(c["text"]) == _norm(ref["text"]))
    head = f"**Agreement:** {agree} of {len(done)} columns say the same as #1"
    if answer is not None:
        right = sum(1 for c in done if is_right(c["text"], answer))
        head += f" · reference answer `{answer}`: {right} of {len(done)} right"
    return head + "\n\n" + header + "\n" + "\n".join(rows)
