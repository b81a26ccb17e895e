"""The end-of-run console table of token metrics, one row per group plus the total."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("group", "<"),
    ("ok", ">"),
    ("fail", ">"),
    ("TTFT p50", ">"),
    ("p90", ">"),
    ("p99", ">"),
    ("ITL p50", ">"),
    ("p99", ">"),
    ("TPOT p50", ">"),
    ("rate p50", ">"),
    ("p10*", ">"),
    ("out tok/s", ">"),
    ("SLO", ">"),
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(label: str, body: dict[str, Any]) -> list[str]:
    ttft, itl = body["ttft_s"], body["itl_s"]
    attainment = body["slo"]["attainment"]
    return [
        label,
        str(body["requests"]["ok"]),
        str(body["requests"]["failed"]),
        _ms(ttft["p50"]),
        _ms(ttft["p90"]),
        _ms(ttft["p99"]),
        _ms(itl["p50"]),
        _ms(itl["p99"]),
        _ms(body["tpot_s"]["p50"]),
        _num(body["stream_rate_tps"]["p50"]),
        _num(body["stream_rate_tps"]["p10"]),
        _num(body["throughput"]["output_tokens_per_s"]),
        "-" if attainment is None else f"{attainment * 100:.1f}%",
    ]


def format_table(doc: dict[str, Any]) -> str:
    """Render a results document as a fixed-width table (times in ms, rates in tokens/s)."""
    rows = []
    for group in doc["groups"]:
        label = f"{group['backend']} {group['model']} {group['user_class']}"
        rows.append(_row(label, group))
    rows.append(_row("Total", doc["total"]))
    header = [name for name, _ in COLUMNS]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{c:{align}{w}}" for c, (_, align), w in zip(cells, COLUMNS, widths))

    slo = doc["total"]["slo"]
    slo_text = f"stream rate >= {slo['stream_rate_tps']:g} tok/s" if slo["stream_rate_tps"] is not None else ""
    if slo["ttft_s"] is not None:
        slo_text += f"{' and ' if slo_text else ''}TTFT <= {slo['ttft_s']:g} s"
    title = "LLM token metrics (times in ms, rates in tokens/s; p10* = 10th percentile stream rate"
    title += f"; SLO: {slo_text or 'none'})"
    out = [title, line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    estimated = doc["total"]["tokens"]["estimated_requests"]
    if estimated:
        out.append(f"Note: output tokens of {estimated} requests were estimated by counting events (no server usage).")
    out += format_server_ttft(doc)
    return "\n".join(out)


def format_server_ttft(doc: dict[str, Any]) -> list[str]:
    """Render client TTFT next to the server's own (from its /metrics), one line per group; [] without server data."""
    server = doc.get("server") or {}
    rows = []
    for group in doc["groups"]:
        body = server.get(group["backend"])
        if not body or not body.get("ttft_s"):
            continue
        client, srv, queue = group["ttft_s"], body["ttft_s"], body.get("queue_time_s") or {}
        label = f"{group['backend']} {group['model']} {group['user_class']}"
        rows.append(
            [label, _ms(client["mean"]), _ms(client["p50"]), _ms(srv["mean"]), _ms(srv["p50"]), _ms(queue.get("p50"))]
        )
    if not rows:
        return []
    header = ["group", "client mean", "p50", "server mean", "p50", "queue p50"]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    fmt = lambda cells: "  ".join(f"{c:{'<' if i == 0 else '>'}{w}}" for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    title = "Client vs server TTFT (ms; server figures from the backend's /metrics over the run)"
    return ["", title, fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]
