"""How the app writes numbers: thousands separators, bytes in KiB/MiB, accuracies to 3 digits.

Example:
    >>> count(1874728), size(1874728), accuracy(0.71875)
    ('1,874,728', '1.79 MiB', '0.719')
"""

from __future__ import annotations

from typing import Any


def count(n: Any) -> str:
    """A whole number with thousands separators: 460800 -> '460,800'."""
    return f"{int(n):,}"


def size(nbytes: Any) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1: '512 B', '3.50 KiB', '1.79 MiB'."""
    n = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{int(n):,} B" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def accuracy(x: Any) -> str:
    """An accuracy (or any fraction) to 3 digits: 0.71875 -> '0.719'; None -> '—'."""
    return "—" if x is None else f"{float(x):.3f}"


def percent(x: Any, digits: int = 3) -> str:
    """A percentage given in percent: 0.34257 -> '0.343 %'."""
    return f"{float(x):.{digits}f} %"


def number(v: Any) -> str:
    """Any figure for a table: ints with separators, floats to 4 significant digits, the rest as text."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return count(v)
    if isinstance(v, float):
        return f"{v:,.4g}"
    return str(v)


METHOD_NAMES = {"MORE": "MoRe", "LORA": "LoRA"}


def method_name(peft_type: Any) -> str:
    """How an adapter method is written on screen: PEFT's "MORE" is "MoRe", "LORA" is "LoRA"."""
    value = str(getattr(peft_type, "value", peft_type))
    return METHOD_NAMES.get(value.upper(), value)
