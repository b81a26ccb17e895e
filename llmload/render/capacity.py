"""The capacity search's console table and one-line answer, from the results' ``capacity`` section."""

from __future__ import annotations

from typing import Any

from llmload.render.text import fixed_width, slo_sentence


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def slo_text(slo: dict[str, Any]) -> str:
    """``95% of requests with stream rate >= 10 tok/s and TTFT <= 2 s``."""
    return slo_sentence(slo, share=slo["attainment"])


def level_unit(mode: str) -> str:
    return "users" if mode == "users" else "requests/s"


def answer_text(doc: dict[str, Any]) -> str:
    """One line: ``rtx3090: 137 users at >= 10 tok/s (...)``."""
    answer, slo, label = doc["answer"], doc["slo"], doc.get("label") or "backend"
    value = answer.get("users") if doc["mode"] == "users" else answer.get("rate_rps")
    rate = f" at >= {slo['stream_rate_tps']:g} tok/s" if slo.get("stream_rate_tps") is not None else ""
    if value is None:
        return f"{label}: no tested load met the SLO ({slo_text(slo)})"
    bound = ">= " if answer.get("limit_reached") else ""
    tail = " (the search's upper limit)" if answer.get("limit_reached") else ""
    partial = ""
    if not answer.get("complete"):
        stopped = answer.get("stopped_by")
        partial = f" [search incomplete: {stopped}]" if stopped else " [search incomplete]"
    return f"{label}: {bound}{value:g} {level_unit(doc['mode'])}{rate}{tail} ({slo_text(slo)}){partial}"


def step_line(step: dict[str, Any], mode: str) -> str:
    """One finished step, for the log."""
    return (
        f"{step['level']:g} {level_unit(mode)} -> stream rate p50 {_fmt(step['stream_rate_p50_tps'])} tok/s, "
        f"SLO met {_fmt(step['attainment'], 100)}% -> {'pass' if step['passed'] else 'FAIL'}"
    )


def format_table(doc: dict[str, Any]) -> str:
    """Render every step and the answer as a fixed-width table."""
    rate_mode = doc["mode"] == "rate"
    header = [
        "step",
        "req/s" if rate_mode else "users",
        "requests",
        "rate p50",
        "p10",
        "TTFT p50",
        "p99",
        "out tok/s",
        "SLO met",
        "result",
    ]
    rows = [
        [
            str(i),
            f"{st['level']:g}",
            str(st["requests"]),
            _fmt(st["stream_rate_p50_tps"]),
            _fmt(st["stream_rate_p10_tps"]),
            _fmt(st["ttft_p50_s"], 1000, 0),
            _fmt(st["ttft_p99_s"], 1000, 0),
            _fmt(st["output_tokens_per_s"], digits=0),
            _fmt(st["attainment"], 100) + ("%" if st["attainment"] is not None else ""),
            "pass" if st["passed"] else "FAIL",
        ]
        for i, st in enumerate(doc["steps"], start=1)
    ]
    title = f"Capacity search (rates in tok/s, TTFT in ms; SLO: {slo_text(doc['slo'])})"
    lines = fixed_width(header, rows, right=[False] + [True] * (len(header) - 1))
    return "\n".join([title, *lines, "", "Answer: " + answer_text(doc)])
