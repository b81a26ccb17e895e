"""HTML table cells of the report: how each kind of figure is formatted (one place for every section)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from llmload.render import svg

# Cell formats: counts, seconds shown as ms or s, rates with one or two decimals, ratios as percent.
FORMATS: dict[str, Callable[[Any], str]] = {
    "int": lambda v: f"{int(v):,}",
    "ms": lambda v: f"{v * 1000:.1f}",
    "s": lambda v: f"{v:.3f}",
    "num": lambda v: f"{v:.1f}",
    "num2": lambda v: f"{v:.2f}",
    "pct": lambda v: f"{v * 100:.1f}%",
}


def fmt(value: Any, kind: str) -> str:
    """Format a value for a table cell (``kind`` from ``FORMATS``, else escaped text); None is '-'."""
    if value is None:
        return "-"
    format_ = FORMATS.get(kind)
    return format_(value) if format_ else escape(str(value))


def value_at(body: dict[str, Any], path: Sequence[str]) -> Any:
    """The value at a key path of nested dicts (None where a key is missing)."""
    value: Any = body
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def cell(value: Any, kind: str, key: str) -> str:
    """A ``<td>`` showing ``value`` formatted, with its raw value and key as data attributes."""
    raw = "" if value is None else repr(value)
    return f'<td data-key="{key}" data-value="{escape(raw)}">{fmt(value, kind)}</td>'


def kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><td>{escape(k)}</td><td>{escape(text_of(v))}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cells}</table>'


def text_of(value: Any) -> str:
    """A value as table text: '-' for none, yes/no, short numbers, lists joined."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return svg.format_number(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(text_of(v) for v in value) if value else "-"
    return str(value)
