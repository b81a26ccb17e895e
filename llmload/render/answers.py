"""Valid answers of runs that asked for tools or a JSON schema: the console lines and the report's section.

Both read the results' ``answers`` section of each group (``llmload.figures``; the judge is
``llmload.structured``); a run that asked for neither shows nothing.
"""

from __future__ import annotations

from html import escape
from typing import Any

from llmload.render.cells import cell
from llmload.render.text import sections_of


def text_lines(doc: dict[str, Any]) -> list[str]:
    """One line per group: valid answers of those judged ([] when none were)."""
    rows = sections_of(doc, "answers")
    if not rows:
        return []
    lines = ["", "Valid answers (a complete tool call, or JSON valid against the schema; invalid ones miss the SLO)"]
    for label, answers in rows:
        lines.append(f"  {label}: {answers['valid']} of {answers['checked']} ({answers['valid_share'] * 100:.1f}%)")
    return lines


def html_section(doc: dict[str, Any]) -> str:
    """The report's section on judged answers ('' when none were)."""
    rows = sections_of(doc, "answers")
    if not rows:
        return ""
    body = "".join(
        f'<tr><td class="text label">{escape(label)}</td>{cell(a["checked"], "int", "answers.checked")}'
        f"{cell(a['valid'], 'int', 'answers.valid')}{cell(a['valid_share'], 'pct', 'answers.valid_share')}</tr>"
        for label, a in rows
    )
    return (
        '<section id="answers"><h2>Valid answers</h2>'
        "<p>Requests that asked for tools or a JSON schema: a complete tool call (a known tool, arguments valid "
        "against its parameters) or JSON valid against the schema. An invalid answer is not a failure; it misses "
        "the SLO.</p>"
        '<table><thead><tr><th class="text">group</th><th>judged</th><th>valid</th><th>valid share</th></tr></thead>'
        f"<tbody>{body}</tbody></table></section>"
    )
