"""Text pieces shared by every rendering: the SLO sentence, fixed-width tables, labels, redaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def slo_conditions(slo: Mapping[str, Any] | None) -> str:
    """``stream rate >= 10 tok/s and TTFT <= 2 s`` ('' when no objective is set)."""
    if not slo:
        return ""
    parts = []
    if slo.get("stream_rate_tps") is not None:
        parts.append(f"stream rate >= {slo['stream_rate_tps']:g} tok/s")
    if slo.get("ttft_s") is not None:
        first = "TTFA (first answer token)" if slo.get("ttft_of") == "answer" else "TTFT"
        parts.append(f"{first} <= {slo['ttft_s']:g} s")
    return " and ".join(parts)


def slo_sentence(slo: Mapping[str, Any] | None, *, share: float | None = None, empty: str = "") -> str:
    """The SLO in words, with the required share when given: ``95% of requests with stream rate >= ...``."""
    conditions = slo_conditions(slo)
    if share is None:
        return conditions or empty
    return f"{share * 100:g}% of requests with {conditions or 'success'}"


def fixed_width(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[bool]) -> list[str]:
    """Lay out a header, a rule and rows in columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if align else cell.ljust(width)
            for cell, width, align in zip(cells, widths, right, strict=True)
        )

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def ms(value: float | None, digits: int = 1) -> str:
    """Seconds as milliseconds ('-' for no value)."""
    return "-" if value is None else f"{value * 1000:.{digits}f}"


def num(value: float | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals ('-' for no value)."""
    return "-" if value is None else f"{value:.{digits}f}"


def redact_url(value: str) -> str:
    """Drop any ``user:password@`` from a URL-like label value."""
    if "@" not in value or "://" not in value:
        return value
    parts = urlsplit(value)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def group_label(group: Mapping[str, Any], *, separator: str = " · ") -> str:
    """``backend · model · user class`` of a results group (credentials in a URL label removed)."""
    return separator.join((redact_url(str(group["backend"])), str(group["model"]), str(group["user_class"])))


def sections_of(doc: Mapping[str, Any], key: str) -> list[tuple[str, Any]]:
    """(label, section ``key``) of every group that has one, then the total's when several groups do."""
    rows = [(group_label(g), g[key]) for g in doc.get("groups", []) if g.get(key)]
    total = (doc.get("total") or {}).get(key)
    if total and len(rows) > 1:
        rows.append(("Total", total))
    return rows
