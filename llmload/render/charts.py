"""The report's charts: which figures it draws, and from which part of a results document.

Each ``*_figures(doc)`` function returns the HTML of its figures (an inline
SVG from ``llmload.render.svg`` with a caption), or "" when the document has no such
data. Chart ids (``data-chart``): ``ttft``, ``itl``, ``stream-rate``
(percentile curves per group); ``users``, ``throughput``, ``slo-attainment``,
``latency-over-time``, ``stream-rate-over-time`` (from ``timeline``);
``capacity-stream-rate``, ``capacity-ttft``, ``capacity-throughput``,
``capacity-attainment`` (from ``capacity``); ``client-vs-server-ttft-<i>``
(from ``server``, one per group whose backend has server figures);
``soak-ttft``, ``soak-goodput`` (from ``soak``, breach episodes shaded).
"""

from __future__ import annotations

import datetime as dt
import functools
from html import escape
from typing import Any, TypeGuard

from llmload.figures import attainment
from llmload.render import svg
from llmload.render.soak import seconds, shown
from llmload.render.svg import Band, Bars, RefLine, Series
from llmload.render.text import group_label, redact_url

PERCENTILE_POINTS = ("min", "p10", "p50", "p90", "p99")
MAX_CHART_GROUPS = len(svg.PALETTE)


def redact(url: Any) -> Any:
    """Drop any ``user:password@`` from a URL (backend labels may be URLs); other values pass."""
    return redact_url(url) if isinstance(url, str) else url


def figure(chart: str, caption: str, note: str = "") -> str:
    """Wrap one chart in a captioned figure."""
    return (
        f"<figure><figcaption>{escape(caption)}</figcaption>{chart}{f'<p>{escape(note)}</p>' if note else ''}</figure>"
    )


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _slo_lines(slo: dict[str, Any]) -> tuple[list[RefLine], list[RefLine]]:
    """The stream-rate SLO (tokens/s) and TTFT SLO (ms) as reference lines, where set."""
    rate, ttft = slo.get("stream_rate_tps"), slo.get("ttft_s")
    rate_refs = [RefLine(rate, f"SLO {rate:g} tok/s")] if _number(rate) else []
    ttft_refs = [RefLine(ttft * 1000, f"SLO {ttft * 1000:g} ms")] if _number(ttft) else []
    return rate_refs, ttft_refs


# -- distributions -------------------------------------------------------------------------------


def _percentile_series(doc: dict[str, Any], metric: str, scale: float) -> list[Series]:
    out = []
    for group in doc.get("groups", [])[:MAX_CHART_GROUPS]:
        summary = group.get(metric) or {}
        points = [(i, None if summary.get(k) is None else summary[k] * scale) for i, k in enumerate(PERCENTILE_POINTS)]
        out.append(Series(group_label(group), points))
    return out


def distribution_figures(doc: dict[str, Any]) -> str:
    """TTFT, ITL and stream rate per user: percentile curves per group, against the SLOs."""
    extra = len(doc.get("groups", [])) - MAX_CHART_GROUPS
    note = (
        f"Only the first {MAX_CHART_GROUPS} groups are drawn; {extra} more are in the summary table."
        if extra > 0
        else ""
    )
    rate_refs, ttft_refs = _slo_lines(doc["total"]["slo"])
    curve = functools.partial(svg.line_chart, x_label="percentile", x_categories=PERCENTILE_POINTS)
    return "".join(
        [
            figure(
                curve(
                    chart_id="ttft",
                    title="TTFT percentiles",
                    y_label="time to first token (ms)",
                    series=_percentile_series(doc, "ttft_s", 1000),
                    refs=ttft_refs,
                ),
                "Time to first token by percentile",
                note or "Per request; p99 = 99% of requests got their first token sooner.",
            ),
            figure(
                curve(
                    chart_id="itl",
                    title="ITL percentiles",
                    y_label="inter-token latency (ms)",
                    series=_percentile_series(doc, "itl_s", 1000),
                ),
                "Inter-token latency by percentile",
                note or "One sample per gap between token-carrying events.",
            ),
            figure(
                curve(
                    chart_id="stream-rate",
                    title="Stream rate per user",
                    y_label="stream rate per request (tokens/s)",
                    series=_percentile_series(doc, "stream_rate_tps", 1.0),
                    refs=rate_refs,
                ),
                "Stream rate per user (output tokens / E2E) against the SLO",
                note
                or "Low percentiles are the slowest streams: min and p10 below the SLO line are users served "
                "too slowly.",
            ),
        ]
    )


# -- over time -----------------------------------------------------------------------------------


def _timestamp(iso: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(iso).timestamp() if isinstance(iso, str) else None
    except ValueError:
        return None


def timeline_series(doc: dict[str, Any]) -> dict[str, Any]:
    """Derive the over-time series from ``timeline``: x in seconds (minutes past 15 min) since the start.

    Rates are differences of the cumulative counts over the difference of ``t``
    (docs/results.md); attainment (``llmload.figures.attainment``) is SLO-met over
    finished requests of the interval (or of the run so far), None without any.
    """
    points = doc.get("timeline") or []
    start = _timestamp((doc.get("run") or {}).get("started_at")) or (points[0]["t"] if points else 0.0)
    span = (points[-1]["t"] - start) if points else 0.0
    unit, div = ("min", 60.0) if span > 900 else ("s", 1.0)
    x = [(p["t"] - start) / div for p in points]
    out: dict[str, Any] = {"unit": unit, "x": x, "span": (0.0, max(x[-1], 0.0) if x else 1.0)}
    out["users"] = [(xi, p.get("users")) for xi, p in zip(x, points, strict=True)]
    out["in_flight"] = [(xi, p.get("in_flight")) for xi, p in zip(x, points, strict=True)]
    rate, interval_att, cumulative_att = [], [], []

    def finished(point: dict[str, Any]) -> int:
        return int(point.get("requests_ok") or 0) + int(point.get("requests_failed") or 0)

    def percent(share: float | None) -> float | None:
        return None if share is None else share * 100

    for i, p in enumerate(points):
        cumulative_att.append((x[i], percent(attainment(p["slo_met"], finished(p)))))
        if i == 0:
            continue
        prev = points[i - 1]
        dt_s = p["t"] - prev["t"]
        # Tokens as they arrived when the file has them (a smooth flow), else as requests ended.
        key = (
            "output_tokens_arrived"
            if "output_tokens_arrived" in p and "output_tokens_arrived" in prev
            else "output_tokens"
        )
        rate.append((x[i], (p[key] - prev[key]) / dt_s if dt_s > 0 else None))
        d_finished = max(finished(p) - finished(prev), 0)
        interval_att.append((x[i], percent(attainment(p["slo_met"] - prev["slo_met"], d_finished))))
    out["output_tps"], out["attainment"], out["attainment_cumulative"] = rate, interval_att, cumulative_att
    for key, scale in (("ttft_p50_s", 1000), ("ttft_p99_s", 1000), ("itl_p50_s", 1000), ("stream_rate_p50_tps", 1)):
        out[key] = [(xi, None if p.get(key) is None else p[key] * scale) for xi, p in zip(x, points, strict=True)]
    return out


def timeline_figures(doc: dict[str, Any]) -> str:
    """Users, output tokens/s, SLO attainment, latency and stream rate over the run, on one time axis."""
    series = timeline_series(doc)
    rate_refs, _ = _slo_lines(doc["total"]["slo"])
    line = functools.partial(svg.line_chart, x_label=f"time since start ({series['unit']})", x_span=series["span"])
    return "".join(
        [
            figure(
                line(
                    chart_id="users",
                    title="Users over time",
                    y_label="users / requests in flight",
                    series=[
                        Series("users", series["users"]),
                        Series("requests in flight", series["in_flight"], dashed=True),
                    ],
                ),
                "Users and requests in flight",
            ),
            figure(
                line(
                    chart_id="throughput",
                    title="Output tokens/s over time",
                    y_label="output tokens/s",
                    series=[Series("output tokens/s (all groups)", series["output_tps"])],
                ),
                "Output tokens/s",
                "Difference of cumulative output tokens between samples (every 2 s; workers report every 3 s).",
            ),
            figure(
                line(
                    chart_id="slo-attainment",
                    title="SLO attainment over time",
                    y_label="SLO attainment (%)",
                    y_max=100.0,
                    series=[
                        Series("per interval", series["attainment"]),
                        Series("cumulative", series["attainment_cumulative"], dashed=True),
                    ],
                ),
                "SLO attainment",
                "Share of successful requests meeting every SLO.",
            ),
            figure(
                line(
                    chart_id="latency-over-time",
                    title="TTFT and ITL over time",
                    y_label="latency (ms)",
                    series=[
                        Series("TTFT p50", series["ttft_p50_s"]),
                        Series("TTFT p99", series["ttft_p99_s"], dashed=True),
                        Series("ITL p50", series["itl_p50_s"]),
                    ],
                ),
                "TTFT and ITL over time",
                "Percentiles of each interval between samples.",
            ),
            figure(
                line(
                    chart_id="stream-rate-over-time",
                    title="Stream rate over time",
                    y_label="stream rate p50 (tokens/s)",
                    refs=rate_refs,
                    series=[Series("stream rate p50", series["stream_rate_p50_tps"])],
                ),
                "Stream rate per user over time (median of each interval)",
            ),
        ]
    )


# -- capacity search -----------------------------------------------------------------------------


def capacity_axis(capacity: dict[str, Any]) -> tuple[str, str]:
    """The load a capacity search varied: (step key, axis label)."""
    if capacity.get("mode") == "rate":
        return "rate_rps", "offered load (requests/s)"
    return "users", "concurrent users"


def capacity_figures(doc: dict[str, Any]) -> str:
    """Stream rate, TTFT, output tokens/s and SLO attainment against the load of each step, with the answer."""
    capacity = doc.get("capacity")
    if not isinstance(capacity, dict) or not capacity.get("steps"):
        return ""
    key, x_label = capacity_axis(capacity)
    load = lambda step: step.get(key, step.get("level"))  # noqa: E731  (steps of older files have only "users")
    steps = sorted((s for s in capacity["steps"] if _number(load(s))), key=load)

    def curve(name: str, scale: float = 1.0) -> list[tuple[float, float | None]]:
        return [(load(s), None if s.get(name) is None else s[name] * scale) for s in steps]

    answer: dict[str, Any] = capacity["answer"] if isinstance(capacity.get("answer"), dict) else {}
    at = answer.get(key)
    vline = [RefLine(at, f"answer: {at:g}", axis="x")] if _number(at) else []
    slo: dict[str, Any] = capacity["slo"] if isinstance(capacity.get("slo"), dict) else doc["total"]["slo"]
    rate_refs, ttft_refs = _slo_lines(slo)
    target = slo.get("attainment")
    target_refs = [RefLine(target * 100, f"target {target * 100:g}%")] if _number(target) else []
    line = functools.partial(svg.line_chart, x_label=x_label)
    return "".join(
        [
            figure(
                line(
                    chart_id="capacity-stream-rate",
                    title="Capacity: stream rate per user",
                    y_label="stream rate per user (tokens/s)",
                    refs=vline + rate_refs,
                    series=[
                        Series("p50", curve("stream_rate_p50_tps")),
                        Series("p10", curve("stream_rate_p10_tps"), dashed=True),
                    ],
                ),
                f"Stream rate per user against {x_label}",
            ),
            figure(
                line(
                    chart_id="capacity-ttft",
                    title="Capacity: TTFT",
                    y_label="time to first token (ms)",
                    refs=vline + ttft_refs,
                    series=[
                        Series("p50", curve("ttft_p50_s", 1000)),
                        Series("p99", curve("ttft_p99_s", 1000), dashed=True),
                    ],
                ),
                f"TTFT against {x_label}",
            ),
            figure(
                line(
                    chart_id="capacity-throughput",
                    title="Capacity: output tokens/s",
                    y_label="output tokens/s",
                    refs=vline,
                    series=[Series("output tokens/s", curve("output_tokens_per_s"))],
                ),
                f"Output tokens/s against {x_label}",
            ),
            figure(
                line(
                    chart_id="capacity-attainment",
                    title="Capacity: SLO attainment",
                    y_label="SLO attainment (%)",
                    y_max=100.0,
                    refs=vline + target_refs,
                    series=[Series("attainment", curve("attainment", 100))],
                ),
                f"SLO attainment of each step against {x_label}",
                "A step passes when its attainment reaches the target.",
            ),
        ]
    )


# -- client vs server ----------------------------------------------------------------------------


def server_figures(doc: dict[str, Any]) -> str:
    """Client TTFT next to the server's own (from its /metrics): mean and percentiles per group."""
    server = doc.get("server")
    if not isinstance(server, dict):
        return ""
    stats = ("mean", "p50", "p90", "p99")
    out = []
    for index, group in enumerate(doc.get("groups", [])):
        body = server.get(group["backend"])
        srv = body.get("ttft_s") if isinstance(body, dict) else None
        if not srv:
            continue
        client = group.get("ttft_s") or {}
        ms = lambda d, k: None if d.get(k) is None else d[k] * 1000  # noqa: E731
        chart = svg.bar_chart(
            chart_id=f"client-vs-server-ttft-{index}",
            title="Client vs server TTFT",
            y_label="time to first token (ms)",
            categories=stats,
            bars=[
                Bars("client (llmload)", [ms(client, k) for k in stats]),
                Bars("server (/metrics)", [ms(srv, k) for k in stats]),
            ],
        )
        out.append(
            figure(
                chart,
                f"Client vs server TTFT: {group_label(group)}",
                "The gap between client and server is network, HTTP and client overhead; server quantiles "
                "are only as fine as its histogram buckets, so compare the means first.",
            )
        )
    return "".join(out)


# -- soak ------------------------------------------------------------------------------------------


def soak_figures(doc: dict[str, Any]) -> str:
    """TTFT p99 and goodput of each soak window per backend, with every SLO-breach episode shaded."""
    soak = shown(doc)
    if soak is None:
        return ""
    windows = [w for w in soak.get("windows") or [] if isinstance(w, dict)]
    start = _timestamp((doc.get("run") or {}).get("started_at")) or soak.get("started_at") or windows[0]["start"]
    end = soak.get("ended_at") or windows[-1]["end"]
    unit, div = ("min", 60.0) if end - start > 900 else ("s", 1.0)
    backends = soak.get("backends") or {}
    names = sorted(backends)[:MAX_CHART_GROUPS]

    def at(t: float) -> float:
        return (t - start) / div

    def series(key: str, scale: float) -> list[Series]:
        out = []
        for name in names:
            points = []
            for w in windows:
                value = (w.get("backends") or {}).get(name, {}).get(key)
                points.append((at((w["start"] + w["end"]) / 2), None if value is None else value * scale))
            out.append(Series(str(redact(name)), points))
        return out

    bands = []
    for index, name in enumerate(names):
        for episode in (backends[name] or {}).get("breaches") or []:
            until = episode.get("end") or end
            recovery = (
                f"recovered in {seconds(episode.get('time_to_recover_s'))}" if episode.get("recovered") else "open"
            )
            label = f"{redact(name)}: SLO breach ({episode.get('cause')}), {recovery}"
            bands.append(Band(at(episode["start"]), at(until), label, svg.PALETTE[index % len(svg.PALETTE)]))
    _, ttft_refs = _slo_lines(soak.get("slo") or {})
    line = functools.partial(
        svg.line_chart, x_label=f"time since start ({unit})", x_span=(0.0, max(at(end), 0.0)), bands=bands
    )
    note = "One point per soak window (at its middle); shaded: SLO-breach episodes, in the backend's colour."
    return "".join(
        [
            figure(
                line(
                    chart_id="soak-ttft",
                    title="Soak: TTFT p99 per window",
                    y_label="TTFT p99 (ms)",
                    refs=ttft_refs,
                    series=series("ttft_p99_s", 1000.0),
                ),
                "TTFT p99 of each soak window",
                note,
            ),
            figure(
                line(
                    chart_id="soak-goodput",
                    title="Soak: goodput per window",
                    y_label="goodput (SLO-met requests/s)",
                    series=series("goodput_rps", 1.0),
                ),
                "Goodput of each soak window",
                note,
            ),
        ]
    )
