"""The self-contained HTML report of a results document (``--llm-html PATH`` and ``llmload report``).

``build_html(doc)`` turns a results document (``llmload.results/2``, see
docs/results.md) into one HTML file that opens offline: inline CSS, charts as
inline SVG (``llmload.render.charts`` chooses them, ``llmload.render.svg`` draws them), no script, no external resource.
Sections: run metadata (versions, options without secrets, backends,
duration, workers), the summary table per group, the reasoning figures (groups whose model
thought, ``llmload.render.reasoning``), TTFT and ITL percentile
curves, stream rate per user against the SLO, users / output tokens/s / SLO
attainment / latency over time (from ``timeline``), the soak verdict with its
windows and SLO-breach episodes (``soak``, once the run had a full soak window),
the capacity-search curve (``capacity``, when present) and client-vs-server
TTFT (``server``, when present).

``llmload.report`` writes it: at the end of a run (``--llm-html``) and from a
saved results file (``llmload report results.json -o report.html``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from llmload.render import answers, charts, pooled, reasoning
from llmload.render import soak as soak_text
from llmload.render.cells import cell, fmt, kv_table, text_of, value_at
from llmload.render.text import slo_sentence

MIN_MASKED_SECRET = 8

# (column title, path in a group body, format)
SUMMARY_COLUMNS: tuple[tuple[str, tuple[str, str], str], ...] = (
    ("ok", ("requests", "ok"), "int"),
    ("failed", ("requests", "failed"), "int"),
    ("TTFT p50 (ms)", ("ttft_s", "p50"), "ms"),
    ("TTFT p90 (ms)", ("ttft_s", "p90"), "ms"),
    ("TTFT p99 (ms)", ("ttft_s", "p99"), "ms"),
    ("ITL p50 (ms)", ("itl_s", "p50"), "ms"),
    ("ITL p99 (ms)", ("itl_s", "p99"), "ms"),
    ("TPOT p50 (ms)", ("tpot_s", "p50"), "ms"),
    ("E2E p50 (s)", ("e2e_s", "p50"), "s"),
    ("stream rate p50 (tok/s)", ("stream_rate_tps", "p50"), "num"),
    ("stream rate p10 (tok/s)", ("stream_rate_tps", "p10"), "num"),
    ("output tokens", ("tokens", "output"), "int"),
    ("output tok/s", ("throughput", "output_tokens_per_s"), "num"),
    ("requests/s", ("throughput", "requests_per_s"), "num2"),
    ("SLO attainment", ("slo", "attainment"), "pct"),
    ("goodput (req/s)", ("slo", "goodput_rps"), "num2"),
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
main{max-width:1500px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:32px 0 10px;border-bottom:2px solid #dde1e6;padding-bottom:4px}
h3{font-size:15px;margin:14px 0 6px}.sub{color:#5b6570;margin:0 0 16px}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #dde1e6;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#eef1f4;font-weight:600}
td.text,th.text{text-align:left}table.kv td:first-child{text-align:left;color:#5b6570}table.kv td{text-align:left}
tr.total td{font-weight:600;background:#f3f5f7}
.grid{display:flex;flex-wrap:wrap;gap:16px}
figure{background:#fff;border:1px solid #dde1e6;border-radius:6px;margin:0;padding:10px 12px;
flex:1 1 640px;max-width:740px}
figcaption{font-weight:600;margin-bottom:4px}figure p{color:#5b6570;margin:4px 0 0;font-size:12.5px}
svg.chart{width:100%;height:auto;display:block;font-family:system-ui,sans-serif}
svg .grid{stroke:#e6e9ed}svg .axis{stroke:#5b6570}svg .tick{font-size:11px;fill:#5b6570}
svg .axis-label{font-size:12px;fill:#1d232a}svg .legend{font-size:11px;fill:#1d232a}
svg .ref-label{font-size:11px;fill:#C0392B}svg .bar-value{font-size:10px;fill:#1d232a}
svg .empty{fill:#5b6570;font-size:14px}
.answer{font-size:16px;font-weight:600}
.note{color:#8a5a00;background:#fff7e0;border:1px solid #f0d890;padding:6px 10px;border-radius:4px}
dl.options{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:0 16px;margin:6px 0;
background:#fff;border:1px solid #dde1e6;padding:6px 10px}
dl.options div{display:flex;gap:8px;border-bottom:1px solid #eef1f4;padding:2px 0}
dl.options dt{color:#5b6570}dl.options dd{margin:0}
td.label{min-width:260px}
details{margin:8px 0}summary{cursor:pointer;color:#0b5cad}
footer{color:#5b6570;margin-top:32px;font-size:12px}
"""


# -- formatting ------------------------------------------------------------------------------------


# -- sections -------------------------------------------------------------------------------------


def _run_section(doc: dict[str, Any]) -> str:
    run = doc.get("run") or {}
    total_slo = (doc.get("total") or {}).get("slo") or {}
    backends = sorted({charts.redact(g["backend"]) for g in doc.get("groups", [])})
    missing = ", ".join(f"{m.get('id')} at {m.get('at')}" for m in run.get("missing_workers") or []) or "none"
    meta = [
        ("started", run.get("started_at")),
        ("ended", run.get("ended_at") or "still running"),
        ("duration (s)", run.get("duration_s")),
        ("load-generator processes", run.get("workers")),
        ("missing workers", missing),
        ("peak users", run.get("peak_users")),
        ("host", charts.redact(run.get("host") or "") or None),
        ("backends", backends),
        ("SLO", slo_sentence(total_slo, empty="none")),
        ("llmload version", run.get("llmload_version")),
        ("Locust version", run.get("locust_version")),
    ]
    described = run.get("backends") if isinstance(run.get("backends"), list) else []
    columns = ("name", "base_url", "model", "gpu", "engine", "quantization", "price_per_hour", "api_key_set")
    backends_table = (
        ""
        if not described
        else (
            "<h3>Backends (from the backends file)</h3><table><thead><tr>"
            + "".join(f'<th class="text">{c}</th>' for c in columns)
            + "</tr></thead><tbody>"
            + "".join(
                "<tr>"
                + "".join(f'<td class="text">{escape(text_of(charts.redact(b.get(c))))}</td>' for c in columns)
                + "</tr>"
                for b in described
                if isinstance(b, dict)
            )
            + "</tbody></table>"
        )
    )
    # The results never hold the API key (only api_key_set); drop it anyway should a foreign file carry one.
    options = "".join(
        f"<div><dt>{escape(k)}</dt><dd>{escape(text_of(v))}</dd></div>"
        for k, v in sorted((run.get("options") or {}).items())
        if k != "api_key"
    )
    return (
        f'<section id="run"><h2>Run</h2>{kv_table(meta)}{backends_table}'
        f'<h3>Options (as in the results JSON)</h3><dl class="options">{options}</dl></section>'
    )


def _summary_row(label: str, body: dict[str, Any], *, css: str = "") -> str:
    cells = "".join(cell(value_at(body, path), kind, ".".join(path)) for _, path, kind in SUMMARY_COLUMNS)
    return f'<tr class="{css}"><td class="text label">{escape(label)}</td>{cells}</tr>'


def _summary_section(doc: dict[str, Any]) -> str:
    head = '<th class="text">group (backend · model · user class)</th>'
    head += "".join(f"<th>{escape(t)}</th>" for t, _, _ in SUMMARY_COLUMNS)
    rows = [_summary_row(charts.group_label(g), g, css="group") for g in doc.get("groups", [])]
    rows.append(_summary_row("Total", doc["total"], css="total"))
    notes = []
    for g in doc.get("groups", []):
        errors = g["requests"].get("errors") or {}
        if errors:
            text = ", ".join(f"{kind} {n}" for kind, n in sorted(errors.items()))
            notes.append(f"<li>{escape(charts.group_label(g))}: {escape(text)}</li>")
    error_list = f"<h3>Failed requests by error class</h3><ul>{''.join(notes)}</ul>" if notes else ""
    estimated = doc["total"]["tokens"].get("estimated_requests") or 0
    estimated_note = (
        f'<p class="note">Output tokens of {estimated} requests were estimated by counting events '
        "(no server usage).</p>"
        if estimated
        else ""
    )
    return (
        '<section id="summary"><h2>Summary</h2>'
        f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f"{estimated_note}{error_list}</section>"
    )


def _phases_section(doc: dict[str, Any]) -> str:
    """The spans between steering changes (``phases``), each with its own figures."""
    phases = [p for p in doc.get("phases") or [] if isinstance(p, dict)]
    if not phases:
        return ""
    head = '<th class="text">phase / group</th>' + "".join(f"<th>{escape(t)}</th>" for t, _, _ in SUMMARY_COLUMNS)
    rows = []
    for number, phase in enumerate(phases, start=1):
        started, ended = phase.get("started") or 0.0, phase.get("ended") or 0.0
        label = f"{number}. {phase.get('name') or ''} ({max(ended - started, 0.0):.0f} s)"
        rows.append(_summary_row(label, phase.get("total") or {}, css="total"))
        rows.extend(_summary_row(charts.group_label(g), g, css="group") for g in phase.get("groups") or [])
    return (
        '<section id="phases"><h2>Phases (steered from the web UI)</h2>'
        "<p>Each change of rate, SLO or think time made while the test ran starts a new phase; "
        "the figures of each phase are its own (SLO-met is decided with the thresholds in force).</p>"
        f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></section>'
    )


def _distribution_section(doc: dict[str, Any]) -> str:
    return (
        '<section id="distributions"><h2>Latency and stream rate</h2>'
        f'<div class="grid">{charts.distribution_figures(doc)}'
        f"</div>{_distribution_tables(doc)}</section>"
    )


def _distribution_tables(doc: dict[str, Any]) -> str:
    metrics = (
        ("ttft_s", "TTFT (ms)", "ms"),
        ("itl_s", "ITL (ms)", "ms"),
        ("tpot_s", "TPOT (ms)", "ms"),
        ("e2e_s", "E2E (s)", "s"),
        ("stream_rate_tps", "stream rate (tok/s)", "num"),
        ("decode_rate_tps", "decode rate (tok/s)", "num"),
    )
    keys = ("count", "mean", "min", "p10", "p50", "p90", "p99", "max")
    head = '<th class="text">group</th><th class="text">metric</th>' + "".join(f"<th>{k}</th>" for k in keys)
    rows = []
    for label, body in [(charts.group_label(g), g) for g in doc.get("groups", [])] + [("Total", doc["total"])]:
        for metric, title, kind in metrics:
            summary = body.get(metric) or {}
            cells = "".join(cell(summary.get(k), "int" if k == "count" else kind, f"{metric}.{k}") for k in keys)
            rows.append(f'<tr><td class="text">{escape(label)}</td><td class="text">{title}</td>{cells}</tr>')
    return (
        f"<details><summary>Every distribution (count, mean, min, percentiles, max)</summary>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
    )


def _timeline_section(doc: dict[str, Any]) -> str:
    return f'<section id="timeline"><h2>Over time</h2><div class="grid">{charts.timeline_figures(doc)}</div></section>'


# (drift figure, title, format)
SOAK_DRIFT = (
    ("ttft_p99_s", "TTFT p99 (ms)", "ms"),
    ("itl_p50_s", "ITL p50 (ms)", "ms"),
    ("stream_rate_p50_tps", "stream rate p50 (tok/s)", "num"),
    ("goodput_rps", "goodput (req/s)", "num2"),
)
# (column title, key in a window's backend summary, format)
SOAK_WINDOW_COLUMNS = (
    ("requests", "requests", "int"),
    ("error rate", "error_rate", "pct"),
    ("SLO attainment", "attainment", "pct"),
    ("goodput (req/s)", "goodput_rps", "num2"),
    ("output tok/s", "output_tokens_per_s", "num"),
    ("TTFT p50 (ms)", "ttft_p50_s", "ms"),
    ("TTFT p99 (ms)", "ttft_p99_s", "ms"),
    ("ITL p50 (ms)", "itl_p50_s", "ms"),
    ("ITL p99 (ms)", "itl_p99_s", "ms"),
    ("stream rate p50 (tok/s)", "stream_rate_p50_tps", "num"),
    ("stream rate p10 (tok/s)", "stream_rate_p10_tps", "num"),
)


def _soak_section(doc: dict[str, Any]) -> str:
    soak = soak_text.shown(doc)
    if soak is None:
        return ""
    start = soak.get("started_at") or 0.0
    backends = {k: v for k, v in sorted((soak.get("backends") or {}).items()) if isinstance(v, dict)}
    head = '<th class="text">backend</th><th class="text">verdict</th>'
    head += "".join(f"<th>{escape(t)} first</th><th>last</th><th>change</th>" for _, t, _ in SOAK_DRIFT)
    head += '<th class="text">SLO breaches</th>'
    rows = []
    for name, body in backends.items():
        drift = body.get("drift") or {}
        cells = "".join(
            cell((drift.get(key) or {}).get("first"), kind, f"{key}.first")
            + cell((drift.get(key) or {}).get("last"), kind, f"{key}.last")
            + f"<td>{escape(soak_text.change(drift.get(key)))}</td>"
            for key, _, kind in SOAK_DRIFT
        )
        rows.append(
            f'<tr><td class="text">{escape(str(charts.redact(name)))}</td>'
            f'<td class="text">{escape(str(body.get("verdict")))}</td>{cells}'
            f'<td class="text">{escape(soak_text.breaches_text(body))}</td></tr>'
        )
    breach_head = "".join(
        f'<th class="{"text" if text else ""}">{t}</th>'
        for t, text in (
            ("backend", True),
            ("start (s since start)", False),
            ("end (s since start)", False),
            ("time to recover", False),
            ("cause", True),
            ("onset cause", True),
            ("worst attainment", False),
            ("requests", False),
            ("misses", False),
        )
    )
    breach_rows = []
    for name, body in backends.items():
        for e in body.get("breaches") or []:
            end = e.get("end")
            recovery = soak_text.seconds(e.get("time_to_recover_s")) if e.get("recovered") else "not recovered"
            breach_rows.append(
                f'<tr><td class="text">{escape(str(charts.redact(name)))}</td>'
                + cell(e["start"] - start, "num", "start")
                + cell(None if end is None else end - start, "num", "end")
                + f"<td>{escape(recovery)}</td>"
                + f'<td class="text">{escape(str(e.get("cause")))}</td>'
                + f'<td class="text">{escape(str(e.get("onset_cause")))}</td>'
                + cell(e.get("worst_attainment"), "pct", "worst_attainment")
                + cell(e.get("requests"), "int", "requests")
                + cell((e.get("misses") or {}).get("total"), "int", "misses")
                + "</tr>"
            )
    breaches = (
        f'<h3>SLO-breach episodes</h3><table class="soak-breaches"><thead><tr>{breach_head}</tr></thead>'
        f"<tbody>{''.join(breach_rows)}</tbody></table>"
        if breach_rows
        else "<p>No SLO-breach episode.</p>"
    )
    window_head = '<th>window</th><th>start (s since start)</th><th>length (s)</th><th class="text">kind</th>'
    window_head += '<th class="text">backend</th>' + "".join(f"<th>{escape(t)}</th>" for t, _, _ in SOAK_WINDOW_COLUMNS)
    window_rows = []
    for w in soak.get("windows") or []:
        kind = "partial" if w.get("partial") else "steady" if w.get("steady") else "unsteady"
        for name, figures in sorted((w.get("backends") or {}).items()):
            window_rows.append(
                "<tr>"
                + cell(w.get("index"), "int", "index")
                + cell(w["start"] - start, "num", "start")
                + cell(w.get("duration_s"), "num", "duration_s")
                + f'<td class="text">{kind}</td><td class="text">{escape(str(charts.redact(name)))}</td>'
                + "".join(cell(figures.get(key), fmt_kind, key) for _, key, fmt_kind in SOAK_WINDOW_COLUMNS)
                + "</tr>"
            )
    return (
        f'<section id="soak"><h2>Soak</h2><p class="answer">{escape(soak_text.title(soak))}</p>'
        f'<table class="soak"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f'{breaches}<div class="grid">{charts.soak_figures(doc)}</div>'
        f'<details><summary>Every soak window</summary><table class="soak-windows"><thead><tr>{window_head}'
        f"</tr></thead><tbody>{''.join(window_rows)}</tbody></table></details></section>"
    )


def _capacity_section(doc: dict[str, Any]) -> str:
    figures = charts.capacity_figures(doc)
    if not figures:
        return ""
    capacity = doc["capacity"]
    key, x_label = charts.capacity_axis(capacity)
    columns = (
        ("step", "step", "int"),
        (x_label, key, "int" if key == "users" else "num2"),
        ("requests", "requests", "int"),
        ("stream rate p50 (tok/s)", "stream_rate_p50_tps", "num"),
        ("stream rate p10 (tok/s)", "stream_rate_p10_tps", "num"),
        ("TTFT p50 (ms)", "ttft_p50_s", "ms"),
        ("TTFT p99 (ms)", "ttft_p99_s", "ms"),
        ("output tok/s", "output_tokens_per_s", "num"),
        ("SLO attainment", "attainment", "pct"),
    )
    head = "".join(f"<th>{escape(t)}</th>" for t, _, _ in columns) + "<th>result</th>"
    rows = []
    for number, step in enumerate(capacity["steps"], start=1):
        values = {**step, "step": number, key: step.get(key, step.get("level"))}
        passed = step.get("passed")
        result = "-" if passed is None else ("pass" if passed else "FAIL")
        rows.append(
            "<tr>" + "".join(cell(values.get(k), kind, k) for _, k, kind in columns) + f"<td>{result}</td></tr>"
        )
    answer = capacity.get("answer") if isinstance(capacity.get("answer"), dict) else {}
    text = answer.get("text") or ""
    details = kv_table(sorted((k, v) for k, v in answer.items() if k != "text")) if answer else ""
    return (
        f'<section id="capacity"><h2>Capacity search</h2>{f"<p class=answer>{escape(text)}</p>" if text else ""}'
        f'<div class="grid">{figures}</div><h3>Answer</h3>{details}'
        f'<h3>Steps (in search order)</h3><table class="capacity"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _server_section(doc: dict[str, Any]) -> str:
    server = doc.get("server")
    if not isinstance(server, dict):
        return ""
    rows = []
    for group in doc.get("groups", []):
        body = server.get(group["backend"])
        if not isinstance(body, dict):
            continue
        client, srv = group.get("ttft_s") or {}, body.get("ttft_s") or {}
        cells = [
            (body.get("engine"), "text"),
            (body.get("scrapes"), "int"),
            (group["tokens"]["output"], "int"),
            (body.get("generation_tokens"), "int"),
            (client.get("mean"), "ms"),
            (srv.get("mean"), "ms"),
            ((group.get("itl_s") or {}).get("mean"), "ms"),
            ((body.get("itl_s") or {}).get("mean"), "ms"),
            ((body.get("queue_time_s") or {}).get("mean"), "ms"),
            (body.get("peak_running"), "num"),
            (body.get("peak_waiting"), "num"),
            (body.get("peak_kv_cache_usage"), "pct"),
            (body.get("preemptions"), "int"),
        ]
        rows.append(
            f'<tr><td class="text label">{escape(charts.group_label(group))}</td>'
            + "".join(f"<td>{fmt(v, kind)}</td>" for v, kind in cells)
            + "</tr>"
        )
    if not rows:
        return ""
    head = (
        "engine",
        "scrapes",
        "client output tokens",
        "server generation tokens",
        "client TTFT mean (ms)",
        "server TTFT mean (ms)",
        "client ITL mean (ms)",
        "server ITL mean (ms)",
        "server queue mean (ms)",
        "peak running",
        "peak waiting",
        "peak KV cache",
        "preemptions",
    )
    head_html = '<th class="text">group</th>' + "".join(f"<th>{escape(h)}</th>" for h in head)
    return (
        f'<section id="server"><h2>Client vs server</h2><div class="grid">{charts.server_figures(doc)}</div>'
        f'<table class="server"><thead><tr>{head_html}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


# (section, whether it shows streamed groups only: it gets the document without pooled groups)
SECTIONS: tuple[tuple[Callable[[dict[str, Any]], str], bool], ...] = (
    (_run_section, False),
    (_summary_section, True),
    (pooled.html_section, False),
    (reasoning.html_section, True),
    (answers.html_section, True),
    (_phases_section, True),
    (_distribution_section, True),
    (_timeline_section, False),
    (_soak_section, False),
    (_capacity_section, False),
    (_server_section, True),
)


def build_html(doc: dict[str, Any], *, secrets: Sequence[str] = ()) -> str:
    """Render a results document as one self-contained HTML page.

    Results never hold a key; as a second guard, any of ``secrets`` (of at least
    ``MIN_MASKED_SECRET`` characters: a shorter one would mangle the markup) found is masked.
    """
    run = doc.get("run") or {}
    title = f"llmload report: {charts.redact(run.get('host') or '') or 'run'} {run.get('started_at') or ''}".strip()
    streamed = pooled.streamed_view(doc)
    parts = []
    for section, streamed_only in SECTIONS:
        if not streamed_only:
            parts.append(section(doc))
        elif streamed is not None:
            parts.append(section(streamed))
    body = "".join(parts)
    generated = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No fetch of any kind: the report must open offline and leak nothing.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>llmload report</h1><p class="sub">{escape(title)}</p>{body}'
        f"<footer>Generated by llmload {escape(str(run.get('llmload_version', '')))} at {generated} from "
        f"{escape(str(doc.get('schema')))} results. Times in ms unless marked, rates in tokens/s.</footer>"
        "</main></body></html>"
    )
    for secret in secrets:
        if secret and len(secret) >= MIN_MASKED_SECRET:
            page = page.replace(secret, "***")
    return page


def write(doc: dict[str, Any], path: str, *, secrets: Sequence[str] = ()) -> None:
    """Write the report of ``doc`` to ``path`` atomically (temporary file, then rename)."""
    page = build_html(doc, secrets=secrets)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(page)
    os.replace(tmp, path)
