"""The reasoning figures of groups whose model thought: the console lines and the report's section.

Both read the results' ``reasoning`` section of each group body (``llmload.figures``; definitions
in docs/metrics.md, "Reasoning models"); a run with no thinking model shows neither.
"""

from __future__ import annotations

from html import escape
from typing import Any

from llmload.render.cells import cell
from llmload.render.text import fixed_width, ms, num, sections_of

# (title, path in the reasoning section, format)
COLUMNS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("requests that thought", ("requests",), "int"),
    ("TTFA p50 (ms)", ("ttfa_s", "p50"), "ms"),
    ("TTFA p90 (ms)", ("ttfa_s", "p90"), "ms"),
    ("TTFA p99 (ms)", ("ttfa_s", "p99"), "ms"),
    ("reasoning time p50 (ms)", ("reasoning_s", "p50"), "ms"),
    ("reasoning tokens", ("tokens", "reasoning"), "int"),
    ("answer tokens", ("tokens", "answer"), "int"),
    ("answer stream rate p50 (tok/s)", ("answer_stream_rate_tps", "p50"), "num"),
    ("answer stream rate p10 (tok/s)", ("answer_stream_rate_tps", "p10"), "num"),
    ("tokens from", ("tokens", "source"), "text"),
)


def _value(section: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = section
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def text_lines(doc: dict[str, Any]) -> list[str]:
    """The console's reasoning table ([] when no model thought)."""
    rows = []
    for label, section in sections_of(doc, "reasoning"):
        tokens, thought = section["tokens"], section["requests"] or 1
        rows.append(
            [
                label,
                str(section["requests"]),
                ms(_value(section, ("ttfa_s", "p50"))),
                ms(_value(section, ("ttfa_s", "p99"))),
                ms(_value(section, ("reasoning_s", "p50"))),
                num(tokens["reasoning"] / thought),
                num(tokens["answer"] / thought),
                num(_value(section, ("answer_stream_rate_tps", "p50"))),
                tokens["source"],
            ]
        )
    if not rows:
        return []
    header = ["group", "thought", "TTFA p50", "p99", "reasoning p50", "think tok", "answer tok", "ans rate", "tokens"]
    title = (
        "Reasoning (times in ms; TTFA = time to first answer token; think/answer tok = mean per request; "
        "ans rate = answer tokens / E2E, p50)"
    )
    return ["", title, *fixed_width(header, rows, right=[False] + [True] * 7 + [False])]


def html_section(doc: dict[str, Any]) -> str:
    """The report's reasoning section ('' when no model thought)."""
    rows = sections_of(doc, "reasoning")
    if not rows:
        return ""
    head = '<th class="text">group</th>' + "".join(f"<th>{escape(title)}</th>" for title, _, _ in COLUMNS)
    body = "".join(
        f'<tr class="{"total" if label == "Total" else "group"}"><td class="text label">{escape(label)}</td>'
        + "".join(cell(_value(section, path), kind, "reasoning." + ".".join(path)) for _, path, kind in COLUMNS)
        + "</tr>"
        for label, section in rows
    )
    estimated = sum(section["tokens"]["estimated_requests"] for label, section in rows if label != "Total")
    note = (
        f'<p class="note">The split of {estimated} requests into reasoning and answer tokens was estimated '
        "(no per-event usage, or an event carrying both texts).</p>"
        if estimated
        else ""
    )
    return (
        '<section id="reasoning"><h2>Reasoning</h2>'
        "<p>TTFA is the time to the first answer token, the wait a reader sees; TTFT counts the first "
        "thinking token. The answer stream rate is answer tokens over E2E (docs/metrics.md).</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}</section>"
    )
