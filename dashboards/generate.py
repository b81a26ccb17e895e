"""Generate llmload's Grafana dashboards (the JSON files next to this script).

    python dashboards/generate.py          # rewrite the JSON files
    python dashboards/generate.py --check  # exit 1 if a file differs from what this script makes

The JSON files are the product; this script keeps their conventions in one
place: a stable ``uid``, ``id: null``, an ``__inputs`` entry and a
``DS_PROMETHEUS`` datasource variable used by every panel and target,
multi-select ``backend``/``model``/``user_class`` variables,
``$__rate_interval`` in every rate, and ``sum by (le, ...)`` inside every
``histogram_quantile``. tests/unit/test_dashboards.py checks the same rules on
the files, and tests/integration/test_prometheus.py runs every query against
a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
RATE = "$__rate_interval"
CLIENT = 'backend=~"$backend", model=~"$model", user_class=~"$user_class"'
SERVER = 'instance=~"$instance"'
TOKENS_PER_S = "suffix: tok/s"

# -- building blocks ----------------------------------------------------------------------------------


def quantile(q: float, metric: str, selector: str, by: str = "") -> str:
    """``histogram_quantile`` of a rate of ``metric``'s buckets, summed by ``le`` (and ``by``)."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket{{{selector}}}[{RATE}])))"


def rate_sum(metric: str, selector: str, by: str = "") -> str:
    """Sum of the per-second rate of a counter."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{selector}}}[{RATE}]))"


def mean(metric: str, selector: str, by: str = "") -> str:
    """Mean of a histogram over the rate window: rate of ``_sum`` over rate of ``_count``."""
    return f"{rate_sum(metric + '_sum', selector, by)} / {rate_sum(metric + '_count', selector, by)}"


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "range": True, "refId": ref}


class Layout:
    """Place panels left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = self.row_h = 0

    def add(self, panel: dict[str, Any], *, w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel = {"id": len(self.panels) + 1, **panel, "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y}}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def timeseries(
        self,
        title: str,
        description: str,
        targets: list[tuple[str, str]],
        *,
        unit: str,
        w: int = 12,
        h: int = 8,
        min_value: float | None = 0,
        max_value: float | None = None,
        thresholds: list[tuple[float, str]] | None = None,
    ) -> None:
        defaults: dict[str, Any] = {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10, "spanNulls": True}}
        if min_value is not None:
            defaults["min"] = min_value
        if max_value is not None:
            defaults["max"] = max_value
        if thresholds:
            defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
            defaults["thresholds"] = {
                "mode": "absolute",
                "steps": [
                    {"color": "green", "value": None},
                    *({"color": color, "value": v} for v, color in thresholds),
                ],
            }
        self.add(
            {
                "type": "timeseries",
                "title": title,
                "description": description,
                "datasource": DS,
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"},
                },
                "targets": [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
            },
            w=w,
            h=h,
        )

    def stat(self, title: str, description: str, expr: str, *, unit: str, w: int = 4, h: int = 4) -> None:
        self.add(
            {
                "type": "stat",
                "title": title,
                "description": description,
                "datasource": DS,
                "fieldConfig": {"defaults": {"unit": unit, "decimals": 2}, "overrides": []},
                "options": {
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value",
                    "graphMode": "area",
                    "textMode": "auto",
                },
                "targets": [target(expr, title, "A")],
            },
            w=w,
            h=h,
        )


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "DS_PROMETHEUS",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    }


def client_variables() -> list[dict[str, Any]]:
    return [
        query_variable("backend", "Backend", "label_values(llmload_requests_total, backend)"),
        query_variable("model", "Model", 'label_values(llmload_requests_total{backend=~"$backend"}, model)'),
        query_variable(
            "user_class",
            "User class",
            'label_values(llmload_requests_total{backend=~"$backend", model=~"$model"}, user_class)',
        ),
    ]


def dashboard(
    *, uid: str, title: str, description: str, variables: list[dict[str, Any]], layout: Layout
) -> dict[str, Any]:
    panel_types = sorted({p["type"] for p in layout.panels})
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "Prometheus that scrapes llmload",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *({"type": "panel", "id": t, "name": t, "version": ""} for t in panel_types),
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "type": "dashboards",
                "tags": ["llmload"],
                "asDropdown": True,
                "title": "llmload",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": layout.panels,
        "refresh": "5s",
        "schemaVersion": 39,
        "tags": ["llmload"],
        "templating": {"list": [datasource_variable(), *variables]},
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
    }


# -- the dashboards -----------------------------------------------------------------------------------


def load_test() -> dict[str, Any]:
    c = CLIENT
    ok = f'{c}, outcome="ok"'
    failed = f'{c}, outcome="failed"'
    g = Layout()
    g.stat("Users", "Running Locust users.", "sum(llmload_users)", unit="short")
    g.stat("Load generators", "Connected workers (1 in a local run).", "sum(llmload_workers)", unit="short")
    g.stat("Requests/s", "Finished requests per second.", rate_sum("llmload_requests_total", c), unit="reqps")
    g.stat(
        "Output tokens/s",
        "Output tokens received per second.",
        rate_sum("llmload_output_tokens_total", c),
        unit=TOKENS_PER_S,
    )
    g.stat(
        "Error ratio",
        "Failed requests / all finished requests.",
        f"{rate_sum('llmload_requests_total', failed)} / {rate_sum('llmload_requests_total', c)}",
        unit="percentunit",
    )
    g.stat(
        "SLO attainment",
        "Successful requests meeting every SLO / successful requests.",
        f"{rate_sum('llmload_slo_met_requests_total', c)} / {rate_sum('llmload_requests_total', ok)}",
        unit="percentunit",
    )
    g.timeseries(
        "Users and requests in flight",
        "Locust users, and requests in flight on the load generators.",
        [("sum(llmload_users)", "users"), ("sum(llmload_in_flight_requests)", "in flight")],
        unit="short",
    )
    g.timeseries(
        "Requests/s by user class and outcome",
        "Finished requests per second.",
        [(rate_sum("llmload_requests_total", c, "user_class, outcome"), "{{user_class}} {{outcome}}")],
        unit="reqps",
    )
    g.timeseries(
        "Errors/s by user class and kind",
        "Failed requests per second by error kind (http_429, http_5xx, timeout, disconnect, ...).",
        [(rate_sum("llmload_requests_total", failed, "user_class, error"), "{{user_class}} {{error}}")],
        unit="reqps",
    )
    g.timeseries(
        "Tokens/s by user class",
        "Output tokens received and prompt tokens sent per second.",
        [
            (rate_sum("llmload_output_tokens_total", c, "user_class"), "{{user_class}} output"),
            (rate_sum("llmload_prompt_tokens_total", c, "user_class"), "{{user_class}} prompt"),
        ],
        unit=TOKENS_PER_S,
    )
    g.timeseries(
        "Time to first token",
        "TTFT quantiles over the rate window; the dashed line is the TTFT SLO if set.",
        [
            (quantile(0.5, "llmload_ttft_seconds", c), "p50"),
            (quantile(0.9, "llmload_ttft_seconds", c), "p90"),
            (quantile(0.99, "llmload_ttft_seconds", c), "p99"),
            ("max(llmload_slo_ttft_seconds)", "SLO"),
        ],
        unit="s",
    )
    g.timeseries(
        "Inter-token latency",
        "Gaps between consecutive token-carrying events.",
        [
            (quantile(0.5, "llmload_itl_seconds", c), "p50"),
            (quantile(0.9, "llmload_itl_seconds", c), "p90"),
            (quantile(0.99, "llmload_itl_seconds", c), "p99"),
        ],
        unit="s",
    )
    g.timeseries(
        "Stream rate per request",
        "Output tokens / E2E per request: what a reader sees. p10 is the slowest tenth; "
        "the line is the stream-rate SLO.",
        [
            (quantile(0.1, "llmload_stream_rate_tokens_per_second", c), "p10"),
            (quantile(0.5, "llmload_stream_rate_tokens_per_second", c), "p50"),
            ("max(llmload_slo_stream_rate_tokens_per_second)", "SLO"),
        ],
        unit=TOKENS_PER_S,
    )
    g.timeseries(
        "TPOT and E2E",
        "Time per output token after the first, and end-to-end latency.",
        [
            (quantile(0.5, "llmload_tpot_seconds", c), "TPOT p50"),
            (quantile(0.9, "llmload_tpot_seconds", c), "TPOT p90"),
            (quantile(0.5, "llmload_e2e_seconds", c), "E2E p50"),
            (quantile(0.9, "llmload_e2e_seconds", c), "E2E p90"),
        ],
        unit="s",
    )
    g.timeseries(
        "TTFT by user class",
        "Mean and p90 time to first token per user class.",
        [
            (mean("llmload_ttft_seconds", c, "user_class"), "{{user_class}} mean"),
            (quantile(0.9, "llmload_ttft_seconds", c, "user_class"), "{{user_class}} p90"),
        ],
        unit="s",
    )
    g.timeseries(
        "SLO attainment by user class",
        "Share of successful requests meeting every SLO, per user class.",
        [
            (
                f"{rate_sum('llmload_slo_met_requests_total', c, 'user_class')} / "
                f"{rate_sum('llmload_requests_total', ok, 'user_class')}",
                "{{user_class}} attainment",
            )
        ],
        unit="percentunit",
        max_value=1,
    )
    g.timeseries(
        "Goodput",
        "Requests per second meeting every SLO.",
        [(rate_sum("llmload_slo_met_requests_total", c, "user_class"), "{{user_class}}")],
        unit="reqps",
    )
    g.timeseries(
        "Load-generator CPU",
        "CPU of each Locust process, percent of one core. Above about 90% the generator inflates TTFT and ITL.",
        [("max by (worker) (llmload_generator_cpu_percent)", "{{worker}}")],
        unit="percent",
        thresholds=[(90, "red")],
    )
    g.timeseries(
        "In flight by load generator",
        "Requests in flight on each Locust process.",
        [("sum by (worker) (llmload_in_flight_requests)", "{{worker}}")],
        unit="short",
    )
    return dashboard(
        uid="llmload-load-test",
        title="LLM load test",
        description="llmload: users, throughput, errors, token latencies and SLOs of a Locust run.",
        variables=client_variables(),
        layout=g,
    )


def backend_comparison() -> dict[str, Any]:
    c = CLIENT
    ok = f'{c}, outcome="ok"'
    failed = f'{c}, outcome="failed"'
    g = Layout()
    g.timeseries(
        "Output tokens/s by backend",
        "Aggregate output tokens received per second.",
        [(rate_sum("llmload_output_tokens_total", c, "backend"), "{{backend}}")],
        unit=TOKENS_PER_S,
    )
    g.timeseries(
        "Cost per million output tokens",
        "$price_per_hour (a dashboard variable: set it to the backend's hourly price) / output tokens per hour x 1e6.",
        [(f"$price_per_hour * 1e6 / (3600 * {rate_sum('llmload_output_tokens_total', c, 'backend')})", "{{backend}}")],
        unit="currencyUSD",
    )
    g.timeseries(
        "Requests/s by backend",
        "Finished requests per second.",
        [(rate_sum("llmload_requests_total", c, "backend"), "{{backend}}")],
        unit="reqps",
    )
    g.timeseries(
        "Error ratio by backend",
        "Failed requests / all finished requests.",
        [
            (
                f"{rate_sum('llmload_requests_total', failed, 'backend')} / "
                f"{rate_sum('llmload_requests_total', c, 'backend')}",
                "{{backend}}",
            )
        ],
        unit="percentunit",
    )
    g.timeseries(
        "TTFT p50 by backend",
        "Median time to first token.",
        [(quantile(0.5, "llmload_ttft_seconds", c, "backend"), "{{backend}}")],
        unit="s",
    )
    g.timeseries(
        "TTFT p99 by backend",
        "99th percentile time to first token.",
        [(quantile(0.99, "llmload_ttft_seconds", c, "backend"), "{{backend}}")],
        unit="s",
    )
    g.timeseries(
        "ITL p50 by backend",
        "Median inter-token latency.",
        [(quantile(0.5, "llmload_itl_seconds", c, "backend"), "{{backend}}")],
        unit="s",
    )
    g.timeseries(
        "ITL p99 by backend",
        "99th percentile inter-token latency.",
        [(quantile(0.99, "llmload_itl_seconds", c, "backend"), "{{backend}}")],
        unit="s",
    )
    g.timeseries(
        "Stream rate p50 by backend",
        "Median per-request stream rate (tokens / E2E).",
        [
            (quantile(0.5, "llmload_stream_rate_tokens_per_second", c, "backend"), "{{backend}}"),
            ("max(llmload_slo_stream_rate_tokens_per_second)", "SLO"),
        ],
        unit=TOKENS_PER_S,
    )
    g.timeseries(
        "Stream rate p10 by backend",
        "The slowest tenth of requests: the users who give up first.",
        [
            (quantile(0.1, "llmload_stream_rate_tokens_per_second", c, "backend"), "{{backend}}"),
            ("max(llmload_slo_stream_rate_tokens_per_second)", "SLO"),
        ],
        unit=TOKENS_PER_S,
    )
    g.timeseries(
        "SLO attainment by backend",
        "Successful requests meeting every SLO / successful requests.",
        [
            (
                f"{rate_sum('llmload_slo_met_requests_total', c, 'backend')} / "
                f"{rate_sum('llmload_requests_total', ok, 'backend')}",
                "{{backend}}",
            )
        ],
        unit="percentunit",
        max_value=1,
    )
    g.timeseries(
        "Users and requests in flight",
        "Load on all backends together.",
        [("sum(llmload_users)", "users"), ("sum(llmload_in_flight_requests)", "in flight")],
        unit="short",
    )
    price = {
        "name": "price_per_hour",
        "label": "Price per hour (USD)",
        "type": "textbox",
        "description": "Hourly price of the backend under test, used by the cost panel. Set it per dashboard.",
        "query": "1.0",
        "current": {"selected": False, "text": "1.0", "value": "1.0"},
        "options": [{"selected": True, "text": "1.0", "value": "1.0"}],
        "hide": 0,
    }
    return dashboard(
        uid="llmload-backend-comparison",
        title="GPU backend comparison",
        description="llmload: the same load on several backends, side by side, with cost per million tokens.",
        variables=[*client_variables(), price],
        layout=g,
    )


def client_vs_server() -> dict[str, Any]:
    c, s = 'backend=~"$backend"', SERVER
    g = Layout()
    for q in (0.5, 0.9):
        name = f"p{q * 100:g}"
        g.timeseries(
            f"TTFT {name}: client vs server",
            "Client: first token event minus send time. Server: vLLM's time_to_first_token "
            "(arrival to first token). The gap is network, HTTP and client overhead.",
            [
                (quantile(q, "llmload_ttft_seconds", c), f"client {name}"),
                (quantile(q, "vllm:time_to_first_token_seconds", s), f"server {name}"),
            ],
            unit="s",
        )
    g.timeseries(
        "Mean TTFT: client, server and the gap",
        "Means over the rate window.",
        [
            (mean("llmload_ttft_seconds", c), "client"),
            (mean("vllm:time_to_first_token_seconds", s), "server"),
            (f"({mean('llmload_ttft_seconds', c)}) - ({mean('vllm:time_to_first_token_seconds', s)})", "gap"),
        ],
        unit="s",
        min_value=None,
    )
    itl_server = (
        f"histogram_quantile(0.5, sum by (le) (rate(vllm:inter_token_latency_seconds_bucket{{{s}}}[{RATE}]) "
        f"or rate(vllm:time_per_output_token_seconds_bucket{{{s}}}[{RATE}])))"
    )
    g.timeseries(
        "ITL p50: client vs server",
        "Server: vllm:inter_token_latency_seconds (vllm:time_per_output_token_seconds before vLLM 0.9).",
        [(quantile(0.5, "llmload_itl_seconds", c), "client p50"), (itl_server, "server p50")],
        unit="s",
    )
    g.timeseries(
        "Server queue time",
        "Time requests wait in vLLM's queue before they are scheduled.",
        [
            (quantile(0.5, "vllm:request_queue_time_seconds", s), "p50"),
            (quantile(0.9, "vllm:request_queue_time_seconds", s), "p90"),
            (mean("vllm:request_queue_time_seconds", s), "mean"),
        ],
        unit="s",
    )
    g.timeseries(
        "KV-cache usage",
        "Share of the KV cache in use (vLLM or llama.cpp).",
        [
            (
                f"max by (instance) (vllm:kv_cache_usage_perc{{{s}}} or vllm:gpu_cache_usage_perc{{{s}}} "
                f"or llamacpp:kv_cache_usage_ratio{{{s}}})",
                "{{instance}}",
            )
        ],
        unit="percentunit",
        max_value=1,
    )
    g.timeseries(
        "Running, waiting and in flight",
        "Server: requests in the batch and in the queue. Client: requests llmload has in flight.",
        [
            (f"sum(vllm:num_requests_running{{{s}}} or llamacpp:requests_processing{{{s}}})", "server running"),
            (f"sum(vllm:num_requests_waiting{{{s}}} or llamacpp:requests_deferred{{{s}}})", "server waiting"),
            ("sum(llmload_in_flight_requests)", "client in flight"),
        ],
        unit="short",
    )
    g.timeseries(
        "Preemptions/s",
        "Requests vLLM preempted because the KV cache was full.",
        [(rate_sum("vllm:num_preemptions_total", s), "preemptions")],
        unit="short",
    )
    g.timeseries(
        "Output tokens/s: client vs server",
        "Tokens the client received vs tokens the server generated.",
        [
            (rate_sum("llmload_output_tokens_total", c), "client"),
            (
                f"sum(rate(vllm:generation_tokens_total{{{s}}}[{RATE}]) "
                f"or rate(llamacpp:tokens_predicted_total{{{s}}}[{RATE}]))",
                "server",
            ),
        ],
        unit=TOKENS_PER_S,
    )
    g.timeseries(
        "Prompt tokens/s: client vs server",
        "Prompt tokens the client sent vs tokens the server prefilled.",
        [
            (rate_sum("llmload_prompt_tokens_total", c), "client"),
            (
                f"sum(rate(vllm:prompt_tokens_total{{{s}}}[{RATE}]) "
                f"or rate(llamacpp:prompt_tokens_total{{{s}}}[{RATE}]))",
                "server",
            ),
        ],
        unit=TOKENS_PER_S,
    )
    variables = [
        query_variable("backend", "Backend (client)", "label_values(llmload_requests_total, backend)"),
        query_variable(
            "instance",
            "Server (Prometheus instance)",
            'label_values({__name__=~"vllm:num_requests_running|llamacpp:requests_processing"}, instance)',
        ),
    ]
    return dashboard(
        uid="llmload-client-vs-server",
        title="Client vs server",
        description="llmload's client-side timings next to the server's own /metrics (vLLM, llama.cpp).",
        variables=variables,
        layout=g,
    )


DASHBOARDS = {
    "llm-load-test.json": load_test,
    "gpu-backend-comparison.json": backend_comparison,
    "client-vs-server.json": client_vs_server,
}


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for filename, build in DASHBOARDS.items():
        path = HERE / filename
        text = render(build())
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(filename)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run python dashboards/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
