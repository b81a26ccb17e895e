"""The end-of-run console table of token metrics, one row per group plus the total.

Groups of embeddings, score and rerank requests have their own table (``llmload.render.pooled``).
Under it: the reasoning figures (``llmload.render.reasoning``), client vs server TTFT (with
server figures) and the soak verdict (``llmload.render.soak``, once the run had a full soak
window).
"""

from __future__ import annotations

from typing import Any

from llmload.render import answers, pooled, reasoning
from llmload.render.soak import format_soak
from llmload.render.text import fixed_width, ms, num, slo_sentence

# (title, right-aligned)
COLUMNS = (
    ("group", False),
    ("ok", True),
    ("fail", True),
    ("TTFT p50", True),
    ("p90", True),
    ("p99", True),
    ("ITL p50", True),
    ("p99", True),
    ("TPOT p50", True),
    ("rate p50", True),
    ("p10*", True),
    ("out tok/s", True),
    ("SLO", True),
)


def _label(group: dict[str, Any]) -> str:
    return f"{group['backend']} {group['model']} {group['user_class']}"


def _row(label: str, body: dict[str, Any]) -> list[str]:
    ttft, itl = body["ttft_s"], body["itl_s"]
    attainment = body["slo"]["attainment"]
    return [
        label,
        str(body["requests"]["ok"]),
        str(body["requests"]["failed"]),
        ms(ttft["p50"]),
        ms(ttft["p90"]),
        ms(ttft["p99"]),
        ms(itl["p50"]),
        ms(itl["p99"]),
        ms(body["tpot_s"]["p50"]),
        num(body["stream_rate_tps"]["p50"]),
        num(body["stream_rate_tps"]["p10"]),
        num(body["throughput"]["output_tokens_per_s"]),
        "-" if attainment is None else f"{attainment * 100:.1f}%",
    ]


def format_table(doc: dict[str, Any]) -> str:
    """Render a results document as a fixed-width table (times in ms, rates in tokens/s)."""
    streamed = pooled.streamed_groups(doc)
    total = pooled.kind_total(doc, pooled.STREAM)
    out: list[str] = []
    if streamed or not pooled.pooled_groups(doc):
        total = total or doc["total"]
        rows = [_row(_label(group), group) for group in streamed]
        rows.append(_row("Total", total))
        slo_text = slo_sentence(total["slo"], empty="none")
        title = (
            "LLM token metrics (times in ms, rates in tokens/s; p10* = 10th percentile stream rate"
            f"; SLO: {slo_text}; SLO = share of finished requests that met it)"
        )
        out += [title, *fixed_width([c for c, _ in COLUMNS], rows, right=[r for _, r in COLUMNS])]
        estimated = total["tokens"]["estimated_requests"]
        if estimated:
            out.append(
                f"Note: output tokens of {estimated} requests were estimated by counting events (no server usage)."
            )
    out += pooled.text_lines(doc)
    out += reasoning.text_lines(doc)
    out += answers.text_lines(doc)
    out += format_server_ttft(doc)
    out += format_soak(doc)
    return "\n".join(out)


def format_server_ttft(doc: dict[str, Any]) -> list[str]:
    """Render client TTFT next to the server's own (from its /metrics), one line per group; [] without server data."""
    server = doc.get("server") or {}
    rows = []
    for group in pooled.streamed_groups(doc):
        body = server.get(group["backend"])
        if not body or not body.get("ttft_s"):
            continue
        client, srv, queue = group["ttft_s"], body["ttft_s"], body.get("queue_time_s") or {}
        rows.append(
            [
                _label(group),
                ms(client["mean"]),
                ms(client["p50"]),
                ms(srv["mean"]),
                ms(srv["p50"]),
                ms(queue.get("p50")),
            ]
        )
    if not rows:
        return []
    header = ["group", "client mean", "p50", "server mean", "p50", "queue p50"]
    title = "Client vs server TTFT (ms; server figures from the backend's /metrics over the run)"
    return ["", title, *fixed_width(header, rows, right=[False] + [True] * 5)]
