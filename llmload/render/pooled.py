"""Embeddings, score and rerank groups: their console table and the report's section.

Their bodies (``llmload.figures.pooled_body``) have latency, inputs and prompt tokens instead of
the streaming figures; a run that mixes kinds shows streamed groups in the token table and
these here, each with its kind's total.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from llmload.render.cells import cell, value_at
from llmload.render.text import fixed_width, group_label, ms, num

STREAM = "stream"

# (title, key path, console format, report format)
COLUMNS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("kind", ("kind",), "text", "text"),
    ("ok", ("requests", "ok"), "int", "int"),
    ("fail", ("requests", "failed"), "int", "int"),
    ("latency p50", ("latency_s", "p50"), "ms", "ms"),
    ("p90", ("latency_s", "p90"), "ms", "ms"),
    ("p99", ("latency_s", "p99"), "ms", "ms"),
    ("inputs/req", ("inputs", "per_request"), "num", "num"),
    ("req/s", ("throughput", "requests_per_s"), "num2", "num2"),
    ("inputs/s", ("throughput", "inputs_per_s"), "num", "num"),
    ("prompt tok/s", ("throughput", "prompt_tokens_per_s"), "num", "num"),
)


def is_streamed(body: Mapping[str, Any]) -> bool:
    """Whether a group body is of streamed requests (bodies of files without kinds are)."""
    return bool(body.get("kind", STREAM) == STREAM)


def streamed_groups(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [g for g in doc.get("groups", []) if is_streamed(g)]


def pooled_groups(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [g for g in doc.get("groups", []) if not is_streamed(g)]


def kind_total(doc: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The total of one kind: from ``kind_totals`` in a mixed run, else ``total`` when it is of that kind."""
    totals = doc.get("kind_totals") or {}
    if kind in totals:
        return dict(totals[kind])
    total = doc.get("total") or {}
    return dict(total) if total.get("kind", STREAM) == kind else None


def streamed_view(doc: dict[str, Any]) -> dict[str, Any] | None:
    """``doc`` with its streamed groups and their total only (None when the run streamed nothing)."""
    groups = streamed_groups(doc)
    total = kind_total(doc, STREAM)
    if total is None:
        if groups or pooled_groups(doc):
            return None
        total = dict(doc.get("total") or {})
    return {**doc, "groups": groups, "total": total}


def _text(value: Any, form: str) -> str:
    if value is None:
        return "-"
    if form == "ms":
        return ms(value)
    if form == "num":
        return num(value)
    if form == "num2":
        return num(value, 2)
    return str(value)


def _rows(doc: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, body) of every pooled group, then each pooled kind's total when it has several groups."""
    groups = pooled_groups(doc)
    rows = [(group_label(g), g) for g in groups]
    for kind in dict.fromkeys(g["kind"] for g in groups):
        total = kind_total(doc, kind)
        if total is not None and sum(1 for g in groups if g["kind"] == kind) > 1:
            rows.append((f"Total {kind}", total))
    return rows


def text_lines(doc: Mapping[str, Any]) -> list[str]:
    """The console table of embeddings, score and rerank groups ([] when the run had none)."""
    rows = _rows(doc)
    if not rows:
        return []
    table = [[label, *(_text(value_at(body, path), form) for _, path, form, _ in COLUMNS)] for label, body in rows]
    header = ["group", *(title for title, *_ in COLUMNS)]
    title = (
        "Embeddings, score and rerank (no token stream; latency in ms: request sent to the answer's last byte; "
        "inputs: texts embedded, pairs scored or documents ranked)"
    )
    out = ["", title] if streamed_groups(doc) else [title]
    return out + fixed_width(header, table, right=[False, False] + [True] * (len(COLUMNS) - 1))


def html_section(doc: Mapping[str, Any]) -> str:
    """The report's section on embeddings, score and rerank groups ('' when the run had none)."""
    rows = _rows(doc)
    if not rows:
        return ""
    head = "".join(f"<th{' class=text' if form == 'text' else ''}>{escape(t)}</th>" for t, _, _, form in COLUMNS)
    body = "".join(
        f'<tr><td class="text label">{escape(label)}</td>'
        + "".join(cell(value_at(b, path), form, ".".join(path)) for _, path, _, form in COLUMNS)
        + "</tr>"
        for label, b in rows
    )
    return (
        '<section id="pooled"><h2>Embeddings, score and rerank</h2>'
        "<p>Requests without a token stream: latency is from the request sent to the last byte of its answer; "
        "inputs are the texts embedded, the query-document pairs scored or the documents ranked; prompt tokens "
        "are the server's <code>usage.prompt_tokens</code>.</p>"
        f'<table class="pooled"><thead><tr><th class="text">group</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></section>"
    )
