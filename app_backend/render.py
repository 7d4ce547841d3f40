"""HTML and table renderings that several tabs use (no plotting library needed).

A rendering only one tab uses lives in that tab's module (``app_backend/tabs/``).
"""

from __future__ import annotations

import html
import re
from typing import Any

import pandas as pd

from app_backend import formatting as fmt
from app_backend.runtime import import_model_stack


def md_escape(text: Any) -> str:
    r"""Text to put into Markdown as text: HTML escaped (an ``<img onerror=...>`` shows as written) and
    Markdown's own punctuation backslash-escaped (a ``|`` cannot open a table column, ``*`` no emphasis).

    Example:
        >>> md_escape("a|b <img src=x>")
        'a\\|b &lt;img src=x&gt;'
    """
    return re.sub(r"([\\`*_{}\[\]()#+!|~>-])", r"\\\1", html.escape(str(text), quote=False))


def cost_rows(cost: Any) -> list[dict[str, Any]]:
    """A hybrid cost report (dict, or object with to_dict) as table rows."""
    import_model_stack()  # mad_models.hybrid imports transformers
    from mad_models.hybrid.cost import flatten_report

    d = cost.to_dict() if hasattr(cost, "to_dict") else dict(cost)
    return [{"item": k, "value": _fmt(v)} for k, v in flatten_report(d).items()]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def styled(rows: list[dict[str, Any]], formats: dict[str, Any] | None = None) -> Any:
    """A table for ``gr.Dataframe``: raw numbers underneath (the API returns them), formatted on screen.

    ints get thousands separators, floats 3 digits, unless ``formats`` names a column's formatter.
    """
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    formats = dict(formats or {})
    for col in df.columns:
        if col in formats:
            continue
        if pd.api.types.is_integer_dtype(df[col]):
            formats[col] = fmt.count
        elif pd.api.types.is_float_dtype(df[col]):
            formats[col] = fmt.accuracy
    return df.style.format(formats)
