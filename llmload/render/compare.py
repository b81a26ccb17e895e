"""The comparison of ``llmload compare``: one table across runs and backends, in Markdown and CSV.

Each results file gives rows: a capacity-search run gives one row, with the
figures of its answer step (the largest load that met the SLO); any other run
gives one row per group (backend, model, user class) with its whole-run
figures, and its backend's soak verdict when the run had a full soak window
(a "Soak" column appears when any row has one). Backend details (GPU, engine, quantization, price per hour) come
from the run's ``run.backends`` (written when the run used ``--llm-backends``)
or from ``--backends FILE``, matched by backend name.

    cost per million output tokens = price_per_hour / (output tokens/s * 3600) * 1e6
    users per dollar-hour          = users at SLO / price_per_hour

Groups of embeddings, score and rerank requests (no token stream) get rows of their own, in a
second table: latency, requests, inputs and prompt tokens per second, and

    cost per million prompt tokens = price_per_hour / (prompt tokens/s * 3600) * 1e6
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from typing import Any

from llmload.render.pooled import is_streamed
from llmload.render.soak import backend_soak, verdict_text
from llmload.render.text import slo_conditions, slo_sentence


@dataclass
class Row:
    """One line of the comparison."""

    source: str
    backend: str
    model: str = ""
    gpu: str = ""
    engine: str = ""
    quantization: str = ""
    price_per_hour: float | None = None
    users_at_slo: int | None = None
    users_limit_reached: bool = False
    users: int | None = None  # users of the measured step or run
    output_tokens_per_s: float | None = None
    ttft_p50_s: float | None = None
    ttft_p99_s: float | None = None
    stream_rate_p50_tps: float | None = None
    stream_rate_p10_tps: float | None = None
    slo_attainment: float | None = None
    slo: str = ""
    window: str = ""
    soak: str = ""
    """The backend's soak verdict and SLO breaches in words ('' without a shown soak section)."""
    soak_verdict: str = ""
    soak_breaches: int | None = None
    soak_longest_recovery_s: float | None = None
    server_ttft_p50_s: float | None = None
    """The backend's own TTFT p50 from its /metrics (``--llm-server-metrics``), next to the client's."""
    server_restarts: int | None = None
    kind: str = "stream"
    """``stream``, or the pooling kind of the group (embeddings, score, rerank): its own table."""
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    requests_per_s: float | None = None
    inputs_per_s: float | None = None
    prompt_tokens_per_s: float | None = None

    @property
    def cost_per_million_prompt_tokens(self) -> float | None:
        """USD per million prompt tokens at the measured throughput (pooling rows)."""
        if self.price_per_hour is None or not self.prompt_tokens_per_s:
            return None
        return self.price_per_hour / (self.prompt_tokens_per_s * 3600.0) * 1e6

    @property
    def cost_per_million_output_tokens(self) -> float | None:
        """USD per million output tokens at the measured throughput."""
        if self.price_per_hour is None or not self.output_tokens_per_s:
            return None
        return self.price_per_hour / (self.output_tokens_per_s * 3600.0) * 1e6

    @property
    def users_per_dollar_hour(self) -> float | None:
        """Users served within the SLO per USD per hour."""
        if self.price_per_hour is None or not self.price_per_hour or self.users_at_slo is None:
            return None
        return self.users_at_slo / self.price_per_hour


def _slo_text(slo: dict[str, Any] | None) -> str:
    if not slo_conditions(slo):
        return ""
    assert slo is not None
    share = slo.get("attainment")
    return slo_sentence(slo, share=share if isinstance(share, (int, float)) else None)


def _backend_info(doc: dict[str, Any], name: str, extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for info in (doc.get("run") or {}).get("backends") or []:
        if isinstance(info, dict) and info.get("name") == name:
            return dict(info)
    return extra.get(name, {})


def rows_from_results(doc: dict[str, Any], *, source: str, extra: dict[str, dict[str, Any]] | None = None) -> list[Row]:
    """Return the comparison rows of one results document."""
    extra = extra or {}
    capacity = doc.get("capacity")
    if capacity and capacity.get("answer"):
        answer = capacity["answer"]
        label = capacity.get("label") or ""
        known = (doc.get("run") or {}).get("backends") or []
        if label not in {b.get("name") for b in known} and len(known) == 1:
            label = known[0]["name"]
        info = _backend_info(doc, label, extra)
        models = sorted({g.get("model", "") for g in doc.get("groups", [])})
        users = answer.get("users")
        row = Row(
            source=source,
            backend=label,
            model=", ".join(models),
            users_at_slo=users if capacity.get("mode", "users") == "users" else None,
            users_limit_reached=bool(answer.get("limit_reached")),
            users=users,
            output_tokens_per_s=answer.get("output_tokens_per_s"),
            ttft_p50_s=answer.get("ttft_p50_s"),
            ttft_p99_s=answer.get("ttft_p99_s"),
            stream_rate_p50_tps=answer.get("stream_rate_p50_tps"),
            stream_rate_p10_tps=answer.get("stream_rate_p10_tps"),
            slo_attainment=answer.get("attainment"),
            slo=_slo_text(capacity.get("slo")),
            window="capacity search: " + (f"step at {users} users" if users is not None else "no step met the SLO"),
        )
        _fill(row, info)
        return [row]
    rows = []
    peak = (doc.get("run") or {}).get("peak_users")
    duration = (doc.get("run") or {}).get("duration_s")
    for group in doc.get("groups", []):
        if not is_streamed(group):
            rows.append(_pooled_row(doc, group, source=source, extra=extra))
            continue
        slo = group.get("slo") or {}
        row = Row(
            source=source,
            backend=group.get("backend", ""),
            model=group.get("model", ""),
            users=peak if len(doc.get("groups", [])) == 1 else None,
            output_tokens_per_s=(group.get("throughput") or {}).get("output_tokens_per_s"),
            ttft_p50_s=(group.get("ttft_s") or {}).get("p50"),
            ttft_p99_s=(group.get("ttft_s") or {}).get("p99"),
            stream_rate_p50_tps=(group.get("stream_rate_tps") or {}).get("p50"),
            stream_rate_p10_tps=(group.get("stream_rate_tps") or {}).get("p10"),
            slo_attainment=slo.get("attainment"),
            slo=_slo_text({**slo, "attainment": None}),
            window=f"whole run ({duration:.0f} s, {peak} users)" if duration and peak else "whole run",
        )
        server = (doc.get("server") or {}).get(row.backend)
        if isinstance(server, dict):
            row.server_ttft_p50_s = (server.get("ttft_s") or {}).get("p50")
            row.server_restarts = server.get("restarts")
        soak = backend_soak(doc, row.backend)
        if soak is not None:
            row.soak, row.soak_verdict = verdict_text(soak), str(soak.get("verdict") or "")
            row.soak_breaches = soak.get("breach_count")
            row.soak_longest_recovery_s = soak.get("longest_time_to_recover_s")
        if len({g.get("user_class") for g in doc.get("groups", []) if g.get("backend") == row.backend}) > 1:
            row.backend = f"{row.backend} ({group.get('user_class')})"
            _fill(row, _backend_info(doc, group.get("backend", ""), extra))
        else:
            _fill(row, _backend_info(doc, row.backend, extra))
        rows.append(row)
    return rows


def _pooled_row(doc: dict[str, Any], group: dict[str, Any], *, source: str, extra: dict[str, dict[str, Any]]) -> Row:
    """The row of an embeddings, score or rerank group: its latency and rates."""
    run = doc.get("run") or {}
    duration, peak = run.get("duration_s"), run.get("peak_users")
    latency, throughput = group.get("latency_s") or {}, group.get("throughput") or {}
    backend = group.get("backend", "")
    row = Row(
        source=source,
        backend=f"{backend} ({group.get('user_class')})",
        model=group.get("model", ""),
        kind=str(group.get("kind")),
        latency_p50_s=latency.get("p50"),
        latency_p99_s=latency.get("p99"),
        requests_per_s=throughput.get("requests_per_s"),
        inputs_per_s=throughput.get("inputs_per_s"),
        prompt_tokens_per_s=throughput.get("prompt_tokens_per_s"),
        window=f"whole run ({duration:.0f} s, {peak} users)" if duration and peak else "whole run",
    )
    _fill(row, _backend_info(doc, backend, extra))
    return row


def _fill(row: Row, info: dict[str, Any]) -> None:
    row.gpu = info.get("gpu", "") or ""
    row.engine = info.get("engine", "") or ""
    row.quantization = info.get("quantization", "") or ""
    row.price_per_hour = info.get("price_per_hour")
    if not row.model:
        row.model = info.get("model", "") or ""


# -- rendering ---------------------------------------------------------------------------------

COLUMNS = (
    "Backend",
    "GPU",
    "Engine",
    "Quant.",
    "Users at SLO",
    "Output tok/s",
    "TTFT p50 / p99 (ms)",
    "Stream rate p50 / p10 (tok/s)",
    "SLO met",
    "$/hour",
    "$ per 1M output tokens",
    "Users per $/hour",
    "Measured over",
    "Results file",
)
CSV_COLUMNS = (
    "backend",
    "model",
    "gpu",
    "engine",
    "quantization",
    "users_at_slo",
    "users_limit_reached",
    "users",
    "output_tokens_per_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "stream_rate_p50_tps",
    "stream_rate_p10_tps",
    "slo_attainment",
    "slo",
    "price_per_hour",
    "cost_per_million_output_tokens",
    "users_per_dollar_hour",
    "window",
    "source",
    "soak_verdict",
    "soak_breaches",
    "soak_longest_recovery_s",
    "server_ttft_p50_s",
    "server_restarts",
    "kind",
    "latency_p50_s",
    "latency_p99_s",
    "requests_per_s",
    "inputs_per_s",
    "prompt_tokens_per_s",
    "cost_per_million_prompt_tokens",
)
POOLED_COLUMNS = (
    "Backend",
    "Kind",
    "GPU",
    "Engine",
    "Latency p50 / p99 (ms)",
    "Requests/s",
    "Inputs/s",
    "Prompt tok/s",
    "$/hour",
    "$ per 1M prompt tokens",
    "Measured over",
    "Results file",
)


def _num(value: float | None, digits: int = 1, *, money: bool = False) -> str:
    if value is None:
        return "-"
    return f"${value:,.{digits}f}" if money else f"{value:,.{digits}f}"


def _server_cell(row: Row) -> str:
    if row.server_ttft_p50_s is None:
        return "-"
    restarts = (
        f", {row.server_restarts} restart{'s' if row.server_restarts != 1 else ''}" if row.server_restarts else ""
    )
    return f"{row.server_ttft_p50_s * 1000:,.0f}{restarts}"


def _cells(row: Row, *, soak: bool = False, server: bool = False) -> list[str]:
    users = "-" if row.users_at_slo is None else f"{'>= ' if row.users_limit_reached else ''}{row.users_at_slo}"
    ttft = (
        "-"
        if row.ttft_p50_s is None
        else f"{row.ttft_p50_s * 1000:,.0f} / {_num(None if row.ttft_p99_s is None else row.ttft_p99_s * 1000, 0)}"
    )
    rate = (
        "-" if row.stream_rate_p50_tps is None else f"{row.stream_rate_p50_tps:.1f} / {_num(row.stream_rate_p10_tps)}"
    )
    return [
        row.backend,
        row.gpu or "-",
        row.engine or "-",
        row.quantization or "-",
        users,
        _num(row.output_tokens_per_s, 0),
        ttft,
        *([_server_cell(row)] if server else []),
        rate,
        "-" if row.slo_attainment is None else f"{row.slo_attainment * 100:.1f}%",
        _num(row.price_per_hour, 2, money=True),
        _num(row.cost_per_million_output_tokens, 2, money=True),
        _num(row.users_per_dollar_hour, 1),
        *([row.soak or "-"] if soak else []),
        row.window,
        os.path.basename(row.source),
    ]


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _pooled_markdown(rows: list[Row]) -> list[str]:
    """The table of embeddings, score and rerank rows, with its formula."""
    out = ["## Embeddings, score and rerank", "", _line(list(POOLED_COLUMNS))]
    out.append("| " + " | ".join("---" if i < 4 or i >= 10 else "---:" for i in range(len(POOLED_COLUMNS))) + " |")
    for row in rows:
        p99_ms = None if row.latency_p99_s is None else row.latency_p99_s * 1000
        latency = "-" if row.latency_p50_s is None else f"{row.latency_p50_s * 1000:,.1f} / {_num(p99_ms)}"
        cells = [
            row.backend,
            row.kind,
            row.gpu or "-",
            row.engine or "-",
            latency,
            _num(row.requests_per_s, 2),
            _num(row.inputs_per_s, 1),
            _num(row.prompt_tokens_per_s, 0),
            _num(row.price_per_hour, 2, money=True),
            _num(row.cost_per_million_prompt_tokens, 3, money=True),
            row.window,
            os.path.basename(row.source),
        ]
        out.append(_line(cells))
    out += [
        "",
        "Latency: request sent to the answer's last byte. Inputs: texts embedded, query-document pairs scored, "
        "or documents ranked. Cost per million prompt tokens = price per hour / (prompt tokens/s x 3600) x 1,000,000.",
    ]
    return out


def to_markdown(rows: list[Row]) -> str:
    """Render the comparison as Markdown: the streamed rows' table, the SLO, the formulas and a one-line summary;
    then the embeddings, score and rerank rows' table, when there are any."""
    pooled = [row for row in rows if row.kind != "stream"]
    rows = [row for row in rows if row.kind == "stream"]
    if not rows:
        return "\n".join(_pooled_markdown(pooled)) + "\n"
    line = _line

    soak = any(row.soak for row in rows)
    server = any(row.server_ttft_p50_s is not None for row in rows)
    ttft_at = COLUMNS.index("TTFT p50 / p99 (ms)") + 1
    figures = [*COLUMNS[:ttft_at], *(["Server TTFT p50 (ms)"] if server else []), *COLUMNS[ttft_at:-2]]
    columns = [*figures, *(["Soak"] if soak else []), *COLUMNS[-2:]]
    align = ["---" if i < 4 else "---:" for i in range(len(figures))] + ["---"] * (len(columns) - len(figures))
    out = ["## Backend comparison", "", line(columns), "| " + " | ".join(align) + " |"]
    out += [line(_cells(row, soak=soak, server=server)) for row in rows]
    slos = sorted({row.slo for row in rows if row.slo})
    out += [""]
    if slos:
        out.append("SLO: " + "; ".join(slos) + ".")
    out.append(
        'Users at SLO: the largest load the capacity search found within the SLO (">=": the search\'s '
        "upper limit still passed). Figures of capacity runs are those of that step, after warm-up; "
        "other runs report the whole run."
    )
    out.append(
        "Cost per million output tokens = price per hour / (output tokens/s x 3600) x 1,000,000; "
        "users per $/hour = users at SLO / price per hour."
    )
    if server:
        out.append(
            "Server TTFT p50: the backend's own figure from its /metrics over the run (--llm-server-metrics; "
            "interpolated in the server's buckets), next to the client's; restarts: its counters went down."
        )
    if soak:
        out.append(
            "Soak: drift of the backend from the first to the last steady soak window (stable, degraded, "
            "improved, or too short) and its SLO-breach episodes (docs/soak.md)."
        )
    priced = [(cost, r) for r in rows if (cost := r.cost_per_million_output_tokens) is not None]
    if priced:
        cheapest_cost, cheapest = min(priced, key=lambda pair: pair[0])
        out.append("")
        out.append(
            f"Lowest cost per million output tokens: **{cheapest.backend}** ({_num(cheapest_cost, 2, money=True)})."
        )
        served = [(users, r) for r in rows if (users := r.users_per_dollar_hour) is not None]
        if served:
            best_users, best = max(served, key=lambda pair: pair[0])
            out.append(f"Most users within the SLO per dollar-hour: **{best.backend}** ({best_users:,.1f}).")
    if pooled:
        out += ["", *_pooled_markdown(pooled)]
    return "\n".join(out) + "\n"


def to_csv(rows: list[Row]) -> str:
    """Render the comparison as CSV with raw numbers (seconds, tokens/s, USD)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = []
        for name in CSV_COLUMNS:
            value = getattr(row, name)
            values.append("" if value is None else (f"{value:.6g}" if isinstance(value, float) else value))
        writer.writerow(values)
    return buffer.getvalue()
