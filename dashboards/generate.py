"""Generate llmload's Grafana dashboards (the JSON files next to this script) with Grafana's own builder.

    python dashboards/generate.py          # rewrite the JSON files
    python dashboards/generate.py --check  # exit 1 if a file differs from what this script makes

Needs ``grafana-foundation-sdk`` (PyPI; imported as ``grafana_foundation_sdk``): the dashboards,
panels, queries, variables and annotations are built with its builders and serialised with its
``JSONEncoder``. The JSON files are the product and are committed; the SDK's version is pinned
because its output is. Three things the SDK's schema has no place for are added to the encoded
dashboard: the ``__inputs``/``__requires`` import metadata, ``id: null``, and (removed) the
Grafana 12 ``placement`` of annotation queries, so their toggles stay on the dashboard.

Conventions, checked by tests/unit/test_dashboards.py: a stable ``uid``, ``id: null``, a
``DS_PROMETHEUS`` datasource variable used by every panel, target and annotation, multi-select
regex variables (``backend``, ``model``, ``user_class``), ``$__rate_interval`` in every rate,
``sum by (le, ...)`` inside every ``histogram_quantile``, only series of llmload's exporter
(docs/prometheus-grafana.md), and two annotations on every dashboard: run events and the
periods when the load generator was not trustworthy. tests/integration/test_prometheus.py runs
every query against a real Prometheus.

Percentiles are exact: every percentile panel reads the gauges the master computes from merged
HdrHistograms (``llmload_*_percentile_*``), ``window!="run"`` for the live sliding window (its
label value follows --llm-live-window, "60s" by default) and ``window="run"`` for whole-run
figures. Those gauges are per group (backend, model, user_class) and cannot be added up in
PromQL, so bucket histograms remain only for heatmaps and for figures across groups, and such
panels say so.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # builders.dashboard warns at import that Grafana 12's dashboard v2 schema exists; llmload ships the
    # classic JSON model, which every Grafana since 10 imports and provisions.
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import common as common_b
    from grafana_foundation_sdk.builders import dashboard as dashboard_b
    from grafana_foundation_sdk.builders import heatmap as heatmap_b
    from grafana_foundation_sdk.builders import prometheus as prometheus_b
    from grafana_foundation_sdk.builders import stat as stat_b
    from grafana_foundation_sdk.builders import statetimeline as statetimeline_b
    from grafana_foundation_sdk.builders import table as table_b
    from grafana_foundation_sdk.builders import timeseries as timeseries_b
    from grafana_foundation_sdk.cog import builder as cogbuilder
    from grafana_foundation_sdk.cog import variants as cogvariants
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common as common_m
    from grafana_foundation_sdk.models import dashboard as dashboard_m
    from grafana_foundation_sdk.models import heatmap as heatmap_m
    from grafana_foundation_sdk.models import prometheus as prometheus_m

HERE = Path(__file__).resolve().parent
DS = common_m.DataSourceRef(type_val="prometheus", uid="${DS_PROMETHEUS}")
RATE = "$__rate_interval"
CLIENT = 'backend=~"$backend", model=~"$model", user_class=~"$user_class"'
BACKEND = 'backend=~"$backend"'
TOKENS_PER_S = "suffix: tok/s"
LIVE = 'window!="run"'  # the sliding window: "60s" unless --llm-live-window says otherwise
RUN = 'window="run"'
GROUP = "{{backend}} {{model}} {{user_class}}"
LIMIT_STYLE = [
    dashboard_m.DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
    dashboard_m.DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"}),
    dashboard_m.DynamicConfigValue("custom.fillOpacity", 0),
]
"""How a self-check limit series (llmload_generator_limit) is drawn: a red dashed line."""

LIVE_NOTE = (
    " Exact percentiles of the sliding window (--llm-live-window, default 60 s), computed by llmload's master"
    " from merged HdrHistograms; one line per group (backend, model, user class)."
)
RUN_NOTE = ' Exact whole-run percentiles (window="run"), one value per group (backend, model, user class).'
TRUST_NOTE = (
    " Red region (annotation 'Generator not trustworthy', on every panel): from the moment a load-generator"
    " process failed its self-check (llmload_generator_trustworthy == 0: CPU saturated, event-loop lag,"
    " dispatch lag or read lateness too high; the verdict covers the run so far, so the region lasts to the"
    " end), latencies include the client's own delay: check the Load generator trust panels before using them."
)
BUCKET_NOTE = (
    " Bucket histograms (coarse buckets, linear interpolation inside a bucket): an estimate, used here only"
    " because exact percentiles cannot be combined across groups."
)

PanelBuilder = timeseries_b.Panel | stat_b.Panel | table_b.Panel | heatmap_b.Panel | statetimeline_b.Panel
Target = tuple[str, str]  # (PromQL, legend)

# -- PromQL building blocks -----------------------------------------------------------------------------


def quantile(q: float, metric: str, selector: str = "", by: str = "") -> str:
    """Bucket estimate: ``histogram_quantile`` of a rate of ``metric``'s buckets, summed by ``le`` (and ``by``)."""
    labels = f"le, {by}" if by else "le"
    matchers = f"{{{selector}}}" if selector else ""
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket{matchers}[{RATE}])))"


def rate_sum(metric: str, selector: str = "", by: str = "") -> str:
    """Sum of the per-second rate of a counter."""
    grouping = f" by ({by})" if by else ""
    matchers = f"{{{selector}}}" if selector else ""
    return f"sum{grouping} (rate({metric}{matchers}[{RATE}]))"


def mean(metric: str, selector: str = "", by: str = "") -> str:
    """Mean of a histogram over the rate window: rate of ``_sum`` over rate of ``_count``."""
    return f"{rate_sum(metric + '_sum', selector, by)} / {rate_sum(metric + '_count', selector, by)}"


def exact(metric: str, selector: str, window: str, percentiles: str) -> str:
    """Exact percentile gauges of ``metric``; ``percentiles`` is one value ("99") or an alternation ("50|99")."""
    match = f'percentile=~"{percentiles}"' if "|" in percentiles else f'percentile="{percentiles}"'
    return f"{metric}{{{selector}, {window}, {match}}}"


# -- panels -------------------------------------------------------------------------------------------------


def query(expr: str, legend: str, ref: str, *, table: bool = False) -> prometheus_b.Dataquery:
    target = prometheus_b.Dataquery().datasource(DS).expr(expr).legend_format(legend).ref_id(ref)
    if table:
        return target.instant().format(prometheus_m.PromQueryFormat.TABLE)
    return target.range()


def queries(targets: list[Target]) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    return [query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)]


def timeseries(
    title: str,
    description: str,
    targets: list[Target],
    *,
    unit: str,
    w: int = 12,
    h: int = 8,
    min_value: float | None = 0,
    max_value: float | None = None,
    limit: str | None = None,
) -> timeseries_b.Panel:
    """A time series panel; ``limit`` adds the self-check threshold of that ``check`` as a red dashed line."""
    if limit is not None:
        targets = [*targets, (f'max(llmload_generator_limit{{check="{limit}"}})', "limit (--llm-selfcheck-*)")]
    panel = (
        timeseries_b.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .targets(queries(targets))
        .unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .span_nulls(True)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common_m.LegendDisplayMode.LIST)
            .placement(common_m.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_b.VizTooltipOptions().mode(common_m.TooltipDisplayMode.MULTI).sort(common_m.SortOrder.DESCENDING)
        )
        .height(h)
        .span(w)
    )
    if min_value is not None:
        panel.min(min_value)
    if max_value is not None:
        panel.max(max_value)
    if limit is not None:
        panel.override_by_query(chr(ord("A") + len(targets) - 1), LIMIT_STYLE)
    return panel


def stat(
    title: str, description: str, targets: list[Target], *, unit: str, w: int = 4, h: int = 4, decimals: int = 2
) -> stat_b.Panel:
    return (
        stat_b.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .targets(queries(targets))
        .unit(unit)
        .decimals(decimals)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(common_m.BigValueColorMode.VALUE)
        .graph_mode(common_m.BigValueGraphMode.AREA)
        .text_mode(common_m.BigValueTextMode.AUTO)
        .height(h)
        .span(w)
    )


TRUST_MAPPING = dashboard_m.ValueMap(
    options={
        "1": dashboard_m.ValueMappingResult(text="trustworthy", color="green", index=0),
        "0": dashboard_m.ValueMappingResult(text="NOT trustworthy", color="red", index=1),
    }
)


def trust_stat(w: int = 4, h: int = 4) -> stat_b.Panel:
    return (
        stat(
            "Generator trustworthy",
            "Whether every load-generator process has passed its self-check so far (min of "
            "llmload_generator_trustworthy over workers); the Load generator trust row of the LLM load test "
            "dashboard says which process failed, when and why." + TRUST_NOTE,
            [("min(llmload_generator_trustworthy)", "trustworthy")],
            unit="none",
            w=w,
            h=h,
            decimals=0,
        )
        .mappings([TRUST_MAPPING])
        .color_mode(common_m.BigValueColorMode.BACKGROUND)
        .graph_mode(common_m.BigValueGraphMode.NONE)
    )


def heatmap(title: str, description: str, metric: str, selector: str, *, unit: str, w: int = 12) -> heatmap_b.Panel:
    """Heatmap of a histogram's buckets (rate per bucket, Grafana de-accumulates the ``le`` buckets)."""
    target = query(f"sum by (le) (rate({metric}_bucket{{{selector}}}[{RATE}]))", "{{le}}", "A").format(
        prometheus_m.PromQueryFormat.HEATMAP
    )
    return (
        heatmap_b.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .targets([target])
        .calculate(False)
        .y_axis(heatmap_b.YAxisConfig().unit(unit))
        .color(
            heatmap_b.HeatmapColorOptions()
            .mode(heatmap_m.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(heatmap_m.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
        )
        .height(8)
        .span(w)
    )


# -- dashboards ---------------------------------------------------------------------------------------------


def datasource_variable() -> dashboard_b.DatasourceVariable:
    return dashboard_b.DatasourceVariable("DS_PROMETHEUS").label("Prometheus").type("prometheus").regex("")


def query_variable(name: str, label: str, definition: str) -> dashboard_b.QueryVariable:
    return (
        dashboard_b.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query({"query": definition, "refId": f"{name}-values"})
        .definition(definition)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dashboard_m.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(dashboard_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_m.VariableSort.ALPHABETICAL_ASC)
    )


BACKEND_VARIABLE = ("backend", "Backend", "label_values(llmload_requests_total, backend)")


def client_variables() -> list[dashboard_b.QueryVariable]:
    return [
        query_variable(*BACKEND_VARIABLE),
        query_variable("model", "Model", 'label_values(llmload_requests_total{backend=~"$backend"}, model)'),
        query_variable(
            "user_class",
            "User class",
            'label_values(llmload_requests_total{backend=~"$backend", model=~"$model"}, user_class)',
        ),
    ]


def dashboard_annotations() -> list[cogbuilder.Builder[dashboard_m.AnnotationQuery]]:
    """Grafana's own annotations, llmload's run events, and the periods the load generator was not trustworthy."""
    builtin = (
        dashboard_b.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(common_m.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .built_in(1)
        .type("dashboard")
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
    )
    # The gauge holds the Unix time of the latest event of each kind: "series value as timestamp"
    # puts one marker there, whatever the query step.
    run_events = (
        dashboard_b.AnnotationQuery()
        .name("Run events")
        .datasource(DS)
        .enable(True)
        .icon_color("blue")
        .expr("llmload_run_event_last_timestamp_seconds * 1000")
        .use_value_for_time(True)
        .title_format("{{event}} {{backend}}")
        .tag_keys("event,backend")
        .step("5s")
    )
    # Grafana marks the samples whose value is above 0 (and joins those at most one step apart into a
    # region): "== bool 0" is 1 while a worker is not trustworthy and 0 otherwise.
    untrustworthy = (
        dashboard_b.AnnotationQuery()
        .name("Generator not trustworthy")
        .datasource(DS)
        .enable(True)
        .icon_color("red")
        .expr("max by (worker) (llmload_generator_trustworthy == bool 0)")
        .title_format("load generator {{worker}} not trustworthy")
        .text_format("From here on, latencies include the client's own delay (see Load generator trust).")
        .tag_keys("worker")
        .step("5s")
    )
    return [builtin, run_events, untrustworthy]


class Board:
    """One dashboard: the SDK's builder, with llmload's settings, numbering panels in the order they are added."""

    def __init__(self, *, uid: str, title: str, description: str, variables: list[dashboard_b.QueryVariable]) -> None:
        self.next_id = 1
        self.builder = (
            dashboard_b.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["llmload"])
            .editable()
            .tooltip(dashboard_m.DashboardCursorSync.CROSSHAIR)
            .refresh("5s")
            .time("now-30m", "now")
            .timezone("")
            .version(1)
            .variables([datasource_variable(), *variables])
            .annotations(dashboard_annotations())
            .links(
                [
                    dashboard_b.DashboardLink("llmload")
                    .type(dashboard_m.DashboardLinkType.DASHBOARDS)
                    .tags(["llmload"])
                    .as_dropdown(True)
                    .include_vars(True)
                    .keep_time(True)
                ]
            )
        )

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str, *, repeat: str | None = None) -> None:
        """Start a (never collapsed) row: the panels added next belong to it, at the top level of ``panels``."""
        row = dashboard_b.Row(title).id(self._id()).collapsed(False)
        if repeat:
            row.repeat(repeat)
        self.builder.with_row(row)

    def add(self, *panels: PanelBuilder) -> None:
        for panel in panels:
            self.builder.with_panel(panel.id(self._id()))

    def build(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(json.dumps(self.builder.build(), cls=JSONEncoder))
        # The SDK sets Grafana 12's placement "inControlsMenu" on every annotation and link, which would
        # tuck the annotation toggles and the dashboard links away in a menu: keep them on the dashboard.
        for item in [*doc["annotations"]["list"], *doc["links"]]:
            item.pop("placement", None)
        panel_types = sorted({p["type"] for p in doc["panels"] if p["type"] != "row"})
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
            "id": None,
            **doc,
        }


def latency_panels(c: str) -> list[timeseries_b.Panel]:
    """Live exact p50 / p90 / p99 of TTFT (with the TTFT SLO line), ITL, TPOT and E2E, one panel each."""
    specs = [
        ("Time to first token", "llmload_ttft_percentile_seconds", "First token-carrying event minus send time."),
        ("Inter-token latency", "llmload_itl_percentile_seconds", "Gaps between consecutive token-carrying events."),
        ("Time per output token", "llmload_tpot_percentile_seconds", "(E2E - TTFT) / (output tokens - 1)."),
        ("End-to-end latency", "llmload_e2e_percentile_seconds", "Last token-carrying event minus send time."),
    ]
    panels = []
    for title, metric, what in specs:
        targets = [(exact(metric, c, LIVE, "50|90|99"), f"{GROUP} p{{{{percentile}}}}")]
        if metric == "llmload_ttft_percentile_seconds":
            targets.append(("max(llmload_slo_ttft_seconds)", "SLO"))
            what += " The dashed SLO line shows when --llm-slo-ttft is set."
        panels.append(timeseries(f"{title} p50 / p90 / p99", what + LIVE_NOTE + TRUST_NOTE, targets, unit="s"))
    return panels


def load_test() -> dict[str, Any]:
    c = CLIENT
    ok = f'{c}, outcome="ok"'
    failed = f'{c}, outcome="failed"'
    b = Board(
        uid="llmload-load-test",
        title="LLM load test",
        description="llmload: users, throughput, errors, exact token latencies, SLOs and the load generator's "
        "own trustworthiness during a Locust run.",
        variables=client_variables(),
    )
    b.row("Overview")
    b.add(
        stat("Users", "Running Locust users.", [("sum(llmload_users)", "users")], unit="short", decimals=0),
        stat(
            "Load generators",
            "Connected workers (1 in a local run).",
            [("sum(llmload_workers)", "workers")],
            unit="short",
            decimals=0,
        ),
        stat(
            "Requests/s",
            "Finished requests per second.",
            [(rate_sum("llmload_requests_total", c), "requests/s")],
            unit="reqps",
        ),
        stat(
            "Output tokens/s",
            "Output tokens received per second (counted as they stream in, corrected to the server's usage figure "
            "when a request ends).",
            [(rate_sum("llmload_output_tokens_total", c), "tokens/s")],
            unit=TOKENS_PER_S,
        ),
        stat(
            "Error ratio",
            "Failed requests / all finished requests.",
            [(f"{rate_sum('llmload_requests_total', failed)} / {rate_sum('llmload_requests_total', c)}", "errors")],
            unit="percentunit",
        ),
        trust_stat(),
    )
    b.row("Whole run (exact)")
    run_specs = [
        ("TTFT (whole run)", "llmload_ttft_percentile_seconds", "50|90|99", "s"),
        ("ITL (whole run)", "llmload_itl_percentile_seconds", "50|90|99", "s"),
        ("TPOT (whole run)", "llmload_tpot_percentile_seconds", "50|90|99", "s"),
        ("E2E (whole run)", "llmload_e2e_percentile_seconds", "50|90|99", "s"),
        ("Stream rate (whole run)", "llmload_stream_rate_percentile_tokens_per_second", "10|50", TOKENS_PER_S),
    ]
    for i, (title, metric, percentiles, unit) in enumerate(run_specs):
        b.add(
            stat(
                title,
                f"p{percentiles.replace('|', ' / p')} since the test started." + RUN_NOTE,
                [(exact(metric, c, RUN, percentiles), f"{GROUP} p{{{{percentile}}}}")],
                unit=unit,
                w=4 if i == len(run_specs) - 1 else 5,
                h=5,
            )
        )
    b.row("Live latency (exact percentiles, sliding window)")
    b.add(*latency_panels(c))
    b.add(
        timeseries(
            "Stream rate per request p10 / p50",
            "Output tokens / E2E per request: what a reader sees. p10 is the slowest tenth of requests; the dashed "
            "line is the stream-rate SLO." + LIVE_NOTE + TRUST_NOTE,
            [
                (
                    exact("llmload_stream_rate_percentile_tokens_per_second", c, LIVE, "10|50"),
                    f"{GROUP} p{{{{percentile}}}}",
                ),
                ("max(llmload_slo_stream_rate_tokens_per_second)", "SLO"),
            ],
            unit=TOKENS_PER_S,
        ),
        timeseries(
            "Latency across all selected groups (bucket estimate)",
            "TTFT, ITL and E2E p90 and mean over every selected backend, model and user class together." + BUCKET_NOTE,
            [
                (quantile(0.9, "llmload_ttft_seconds", c), "TTFT p90"),
                (mean("llmload_ttft_seconds", c), "TTFT mean"),
                (quantile(0.9, "llmload_itl_seconds", c), "ITL p90"),
                (quantile(0.9, "llmload_e2e_seconds", c), "E2E p90"),
            ],
            unit="s",
        ),
    )
    b.row("Distributions (histogram buckets)")
    b.add(
        heatmap(
            "TTFT distribution",
            "Requests per second by time-to-first-token bucket, all selected groups together." + BUCKET_NOTE,
            "llmload_ttft_seconds",
            c,
            unit="s",
        ),
        heatmap(
            "ITL distribution",
            "Inter-token gaps per second by bucket, all selected groups together." + BUCKET_NOTE,
            "llmload_itl_seconds",
            c,
            unit="s",
        ),
    )
    b.row("Throughput, errors and SLOs")
    b.add(
        timeseries(
            "Users and requests in flight",
            "Locust users, and requests in flight on the load generators.",
            [("sum(llmload_users)", "users"), ("sum(llmload_in_flight_requests)", "in flight")],
            unit="short",
        ),
        timeseries(
            "Requests/s by user class and outcome",
            "Finished requests per second.",
            [(rate_sum("llmload_requests_total", c, "user_class, outcome"), "{{user_class}} {{outcome}}")],
            unit="reqps",
        ),
        timeseries(
            "Errors/s by user class and kind",
            "Failed requests per second by error kind (http_429, http_5xx, timeout, disconnect, ...).",
            [(rate_sum("llmload_requests_total", failed, "user_class, error"), "{{user_class}} {{error}}")],
            unit="reqps",
        ),
        timeseries(
            "Tokens/s by user class",
            "Output tokens received (counted per event, corrected to usage at the end of each request) and prompt "
            "tokens sent per second.",
            [
                (rate_sum("llmload_output_tokens_total", c, "user_class"), "{{user_class}} output"),
                (rate_sum("llmload_prompt_tokens_total", c, "user_class"), "{{user_class}} prompt"),
            ],
            unit=TOKENS_PER_S,
        ),
        timeseries(
            "SLO attainment by user class",
            "Successful requests meeting every configured SLO / successful requests.",
            [
                (
                    f"{rate_sum('llmload_slo_met_requests_total', c, 'user_class')} / "
                    f"{rate_sum('llmload_requests_total', ok, 'user_class')}",
                    "{{user_class}} all SLOs",
                )
            ],
            unit="percentunit",
            max_value=1,
        ),
        timeseries(
            "Attainment per SLO",
            "Finished requests (ok or failed) meeting the TTFT SLO, and the stream-rate SLO, / finished requests. "
            "A failed request meets no SLO.",
            [
                (
                    f"{rate_sum('llmload_slo_ttft_met_requests_total', c, 'user_class')} / "
                    f"{rate_sum('llmload_requests_total', c, 'user_class')}",
                    "{{user_class}} TTFT",
                ),
                (
                    f"{rate_sum('llmload_slo_stream_rate_met_requests_total', c, 'user_class')} / "
                    f"{rate_sum('llmload_requests_total', c, 'user_class')}",
                    "{{user_class}} stream rate",
                ),
            ],
            unit="percentunit",
            max_value=1,
        ),
        timeseries(
            "Goodput",
            "Requests per second meeting every SLO.",
            [(rate_sum("llmload_slo_met_requests_total", c, "user_class"), "{{user_class}}")],
            unit="reqps",
            w=24,
        ),
    )
    b.row("Load generator trust")
    b.add(
        statetimeline_b.Panel()
        .title("Trustworthy by load generator")
        .description(
            "llmload_generator_trustworthy of each Locust process: green while it passes the self-check "
            "(--llm-selfcheck-*: CPU, event-loop lag, dispatch lag, read lateness) over the run so far, red from "
            "the moment it fails. The same period is shaded red on every panel by the 'Generator not "
            "trustworthy' annotation."
        )
        .datasource(DS)
        .targets(queries([("max by (worker) (llmload_generator_trustworthy)", "{{worker}}")]))
        .mappings([TRUST_MAPPING])
        .thresholds(
            dashboard_b.ThresholdsConfig()
            .mode(dashboard_m.ThresholdsMode.ABSOLUTE)
            .steps([dashboard_m.Threshold(None, "red"), dashboard_m.Threshold(1, "green")])
        )
        .show_value(common_m.VisibilityMode.NEVER)
        .merge_values(True)
        .height(8)
        .span(12),
        timeseries(
            "Event-loop lag p99 by load generator",
            "How late a runnable greenlet resumes on each process: p99 over the run so far. Above the red dashed line "
            "(--llm-selfcheck-lag-ms, default 10 ms) the process delays what it measures.",
            [("max by (worker) (llmload_generator_loop_lag_p99_seconds)", "{{worker}}")],
            unit="s",
            limit="loop_lag_p99_s",
        ),
        timeseries(
            "Load-generator CPU",
            "CPU of each Locust process, percent of one core. Above the red dashed line (the limit in force, "
            "--llm-selfcheck-cpu, default 90%) for a quarter of the samples, the generator inflates TTFT and ITL.",
            [("max by (worker) (llmload_generator_cpu_percent)", "{{worker}}")],
            unit="percent",
            limit="cpu_percent",
        ),
        timeseries(
            "Read lateness by load generator",
            "Kernel-stamped streams only: when a socket read returned minus when the kernel received its data, "
            "p99 and max over the run so far. Above the red dashed line (--llm-selfcheck-lateness-ms, default "
            "10 ms) at p99 the process is late.",
            [
                ('max by (worker) (llmload_generator_read_lateness_seconds{stat="p99"})', "{{worker}} p99"),
                ('max by (worker) (llmload_generator_read_lateness_seconds{stat="max"})', "{{worker}} max"),
            ],
            unit="s",
            limit="read_lateness_p99_s",
        ),
        timeseries(
            "In flight by load generator",
            "Requests in flight on each Locust process.",
            [("sum by (worker) (llmload_in_flight_requests)", "{{worker}}")],
            unit="short",
        ),
        timeseries(
            "Workers connected and missing",
            "Workers reporting to the master, and workers that missed their heartbeats (their unsent figures are "
            "lost).",
            [("sum(llmload_workers)", "connected"), ("max(llmload_workers_missing)", "missing")],
            unit="short",
        ),
    )
    b.row("Open loop (arrival-rate runs only)")
    b.add(
        timeseries(
            "Dispatch lag",
            "Open loop: send time minus the scheduled arrival time, p50 and p99 over the selected groups. Above the "
            "red dashed line (--llm-selfcheck-lag-ms, default 10 ms) at p99, requests leave later than their "
            "schedule and the run is not trustworthy." + BUCKET_NOTE,
            [
                (quantile(0.5, "llmload_dispatch_lag_seconds", c), "p50"),
                (quantile(0.99, "llmload_dispatch_lag_seconds", c), "p99"),
            ],
            unit="s",
            w=8,
            limit="dispatch_lag_p99_s",
        ),
        timeseries(
            "TTFT from intended arrival vs from send",
            "Open loop: first token minus the scheduled arrival time (client-side queueing cannot hide overload), "
            "next to the usual TTFT from the send time, both over all groups (the from-intended histograms have no "
            "labels, so the dashboard filters do not apply here)." + BUCKET_NOTE,
            [
                (quantile(0.5, "llmload_ttft_from_intended_seconds"), "from intended p50"),
                (quantile(0.99, "llmload_ttft_from_intended_seconds"), "from intended p99"),
                (quantile(0.5, "llmload_ttft_seconds"), "from send p50"),
                (quantile(0.99, "llmload_ttft_seconds"), "from send p99"),
            ],
            unit="s",
            w=8,
        ),
        timeseries(
            "E2E from intended arrival vs from send",
            "Open loop: last token minus the scheduled arrival time, next to E2E from the send time, both over all "
            "groups (no dashboard filters)." + BUCKET_NOTE,
            [
                (quantile(0.5, "llmload_e2e_from_intended_seconds"), "from intended p50"),
                (quantile(0.99, "llmload_e2e_from_intended_seconds"), "from intended p99"),
                (quantile(0.5, "llmload_e2e_seconds"), "from send p50"),
                (quantile(0.99, "llmload_e2e_seconds"), "from send p99"),
            ],
            unit="s",
            w=8,
        ),
    )
    b.row("Reasoning models (groups that thought only)")
    b.add(
        timeseries(
            "Time to first answer token p50 / p90 / p99",
            "A reasoning model's first thinking token satisfies TTFT; the first answer token (content or a tool "
            "call) is the wait a reader sees. The dashed line is the TTFT SLO (on the answer with "
            "--llm-slo-ttft-of answer, the reasoning user class's default)." + LIVE_NOTE + TRUST_NOTE,
            [
                (exact("llmload_ttfa_percentile_seconds", c, LIVE, "50|90|99"), f"{GROUP} p{{{{percentile}}}}"),
                ("max(llmload_slo_ttft_seconds)", "SLO"),
            ],
            unit="s",
        ),
        timeseries(
            "Reasoning and answer tokens/s",
            "Output tokens of reasoning models split into thinking and answer (exact from the server's continuous "
            "usage, else estimated: docs/metrics.md), counted when each request ends.",
            [
                (
                    rate_sum("llmload_reasoning_tokens_total", c, by="backend, model, user_class, part"),
                    f"{GROUP} {{{{part}}}}",
                )
            ],
            unit=TOKENS_PER_S,
        ),
    )
    return b.build()


def backend_comparison() -> dict[str, Any]:
    c = CLIENT
    ok = f'{c}, outcome="ok"'
    failed = f'{c}, outcome="failed"'
    price = f"max by (backend) (llmload_backend_price_per_hour_dollars{{{BACKEND}}})"
    b = Board(
        uid="llmload-backend-comparison",
        title="GPU backend comparison",
        description="llmload: the same load on several backends (--llm-backends), side by side, with live cost "
        "per million output tokens and users per dollar-hour from each backend's declared price.",
        variables=client_variables(),
    )
    b.row("Throughput and cost")
    b.add(
        timeseries(
            "Output tokens/s by backend",
            "Aggregate output tokens received per second.",
            [(rate_sum("llmload_output_tokens_total", c, "backend"), "{{backend}}")],
            unit=TOKENS_PER_S,
            w=8,
        ),
        timeseries(
            "Cost per million output tokens",
            "The backend's price per hour (llmload_backend_price_per_hour_dollars, from --llm-backends) / 3600 / "
            "its output tokens per second x 1e6: what a million generated tokens cost at the current load.",
            [
                (
                    f"{price} / 3600 / {rate_sum('llmload_output_tokens_total', c, 'backend')} * 1e6",
                    "{{backend}}",
                )
            ],
            unit="currencyUSD",
            w=8,
        ),
        timeseries(
            "Users per dollar-hour",
            "Users the backend is serving now (llmload_backend_users) / its price per hour: concurrency bought "
            "per dollar. Read it together with the latency and SLO panels below.",
            [(f"sum by (backend) (llmload_backend_users{{{BACKEND}}}) / {price}", "{{backend}}")],
            unit="short",
            w=8,
        ),
    )
    b.add(
        table_b.Panel()
        .title("Backends")
        .description(
            "llmload_backend_info (gpu, engine, quantization, model) of each backend of --llm-backends, with its "
            "price per hour and the users it serves now."
        )
        .datasource(DS)
        .targets(
            [
                query(
                    f"max by (backend, gpu, engine, quantization, model) (llmload_backend_info{{{BACKEND}}})",
                    "",
                    "A",
                    table=True,
                ),
                query(price, "", "B", table=True),
                query(f"sum by (backend) (llmload_backend_users{{{BACKEND}}})", "", "C", table=True),
            ]
        )
        .transformations(
            [
                dashboard_m.DataTransformerConfig(id_val="merge", options={}),
                dashboard_m.DataTransformerConfig(
                    id_val="organize",
                    options={
                        "excludeByName": {"Time": True, "Value #A": True},
                        "indexByName": {
                            "backend": 0,
                            "gpu": 1,
                            "engine": 2,
                            "quantization": 3,
                            "model": 4,
                            "Value #B": 5,
                            "Value #C": 6,
                        },
                        "renameByName": {"Value #B": "price per hour (USD)", "Value #C": "users"},
                    },
                ),
            ]
        )
        .height(6)
        .span(24)
    )
    b.row("Whole run (exact)")
    b.add(
        stat(
            "TTFT p99 (whole run)",
            "p99 time to first token since the test started." + RUN_NOTE,
            [(exact("llmload_ttft_percentile_seconds", c, RUN, "99"), GROUP)],
            unit="s",
            w=6,
            h=5,
        ),
        stat(
            "ITL p99 (whole run)",
            "p99 inter-token latency since the test started." + RUN_NOTE,
            [(exact("llmload_itl_percentile_seconds", c, RUN, "99"), GROUP)],
            unit="s",
            w=6,
            h=5,
        ),
        stat(
            "Stream rate p10 (whole run)",
            "The slowest tenth of requests since the test started (tokens / E2E)." + RUN_NOTE,
            [(exact("llmload_stream_rate_percentile_tokens_per_second", c, RUN, "10"), GROUP)],
            unit=TOKENS_PER_S,
            w=6,
            h=5,
        ),
        trust_stat(w=6, h=5),
    )
    b.row("Live latency by backend (exact percentiles, sliding window)")
    live_specs = [
        ("TTFT p50 by backend", "Median time to first token.", "llmload_ttft_percentile_seconds", "50", "s"),
        ("TTFT p99 by backend", "99th percentile time to first token.", "llmload_ttft_percentile_seconds", "99", "s"),
        ("ITL p50 by backend", "Median inter-token latency.", "llmload_itl_percentile_seconds", "50", "s"),
        ("ITL p99 by backend", "99th percentile inter-token latency.", "llmload_itl_percentile_seconds", "99", "s"),
        ("TPOT p50 by backend", "Median time per output token.", "llmload_tpot_percentile_seconds", "50", "s"),
        ("E2E p90 by backend", "90th percentile end-to-end latency.", "llmload_e2e_percentile_seconds", "90", "s"),
        (
            "Time to first answer token p99 by backend",
            "Reasoning models only: 99th percentile wait for the first answer token (after the thinking).",
            "llmload_ttfa_percentile_seconds",
            "99",
            "s",
        ),
    ]
    for title, what, metric, p, unit in live_specs:
        b.add(timeseries(title, what + LIVE_NOTE + TRUST_NOTE, [(exact(metric, c, LIVE, p), GROUP)], unit=unit))
    for p, what in (
        ("50", "Median per-request stream rate (tokens / E2E)."),
        ("10", "The slowest tenth of requests: the users who give up first."),
    ):
        b.add(
            timeseries(
                f"Stream rate p{p} by backend",
                what + " The dashed line is the stream-rate SLO." + LIVE_NOTE + TRUST_NOTE,
                [
                    (exact("llmload_stream_rate_percentile_tokens_per_second", c, LIVE, p), GROUP),
                    ("max(llmload_slo_stream_rate_tokens_per_second)", "SLO"),
                ],
                unit=TOKENS_PER_S,
            )
        )
    b.row("Load and quality by backend")
    b.add(
        timeseries(
            "Users and requests in flight by backend",
            "Users assigned to each backend and requests in flight to it (--llm-backends runs).",
            [
                (f"sum by (backend) (llmload_backend_users{{{BACKEND}}})", "{{backend}} users"),
                (f"sum by (backend) (llmload_backend_in_flight_requests{{{BACKEND}}})", "{{backend}} in flight"),
            ],
            unit="short",
        ),
        timeseries(
            "Requests/s by backend and outcome",
            "Finished requests per second.",
            [(rate_sum("llmload_requests_total", c, "backend, outcome"), "{{backend}} {{outcome}}")],
            unit="reqps",
        ),
        timeseries(
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
        ),
        timeseries(
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
        ),
    )
    return b.build()


def client_vs_server() -> dict[str, Any]:
    c = BACKEND
    b = Board(
        uid="llmload-client-vs-server",
        title="Client vs server",
        description="llmload's client-side timings next to each backend's own /metrics, re-exported by llmload "
        "(--llm-server-metrics) as llmload_server_* with the backend label: one row per backend.",
        variables=[query_variable(*BACKEND_VARIABLE)],
    )
    b.row("Backends")
    b.add(
        stat(
            "Server metrics scraped",
            "llmload_server_up: 1 when llmload's last scrape of the backend's /metrics succeeded.",
            [(f"max by (backend) (llmload_server_up{{{c}}})", "{{backend}}")],
            unit="none",
            w=12,
            decimals=0,
        ).mappings(
            [
                dashboard_m.ValueMap(
                    options={
                        "1": dashboard_m.ValueMappingResult(text="up", color="green", index=0),
                        "0": dashboard_m.ValueMappingResult(text="DOWN", color="red", index=1),
                    }
                )
            ]
        ),
        stat(
            "Server restarts",
            "Resets of the server's counters seen by llmload (a restarted server); each is also a "
            "backend_restarted run event.",
            [(f"max by (backend) (llmload_server_restarts_total{{{c}}})", "{{backend}}")],
            unit="short",
            w=6,
            decimals=0,
        ),
        trust_stat(w=6),
    )
    b.row("Backend $backend", repeat="backend")
    for name, client_metric, server_metric, what in (
        (
            "TTFT",
            "llmload_ttft_percentile_seconds",
            "llmload_server_ttft_seconds",
            "Client: first token event minus send time (exact, sliding window). Server: the engine's time to first "
            "token, arrival to first token (its own histogram buckets, over the rate window). The gap is network, "
            "HTTP and client overhead.",
        ),
        (
            "ITL",
            "llmload_itl_percentile_seconds",
            "llmload_server_itl_seconds",
            "Client: gaps between token-carrying events (exact, sliding window). Server: the engine's inter-token "
            "latency (its own buckets, over the rate window).",
        ),
    ):
        b.add(
            timeseries(
                f"{name}: client vs server",
                what + TRUST_NOTE,
                [
                    (exact(client_metric, c, LIVE, "50|99"), "client {{model}} {{user_class}} p{{percentile}}"),
                    (quantile(0.5, server_metric, c, "backend"), "server p50"),
                    (quantile(0.99, server_metric, c, "backend"), "server p99"),
                ],
                unit="s",
            )
        )
    server_ttft = mean("llmload_server_ttft_seconds", c, "backend")
    b.add(
        timeseries(
            "Mean TTFT: client, server and the gap",
            "Means over the rate window (histogram sums / counts), and client minus server.",
            [
                (mean("llmload_ttft_seconds", c, "backend"), "client"),
                (server_ttft, "server"),
                (f"({mean('llmload_ttft_seconds', c, 'backend')}) - ({server_ttft})", "gap"),
            ],
            unit="s",
            min_value=None,
        ),
        timeseries(
            "Server queue time",
            "Time requests wait in the engine's queue before they are scheduled (its own buckets)." + BUCKET_NOTE,
            [
                (quantile(0.5, "llmload_server_queue_time_seconds", c, "backend"), "p50"),
                (quantile(0.9, "llmload_server_queue_time_seconds", c, "backend"), "p90"),
                (mean("llmload_server_queue_time_seconds", c, "backend"), "mean"),
            ],
            unit="s",
        ),
        timeseries(
            "Output tokens/s: client vs server",
            "Tokens the client received vs tokens the server generated (the server also counts tokens of requests "
            "cut off, which the client never received in full).",
            [
                (rate_sum("llmload_output_tokens_total", c, "backend"), "client"),
                (rate_sum("llmload_server_generation_tokens_total", c, "backend"), "server"),
            ],
            unit=TOKENS_PER_S,
        ),
        timeseries(
            "Prompt tokens/s: client vs server",
            "Prompt tokens the client sent vs tokens the server prefilled.",
            [
                (rate_sum("llmload_prompt_tokens_total", c, "backend"), "client"),
                (rate_sum("llmload_server_prompt_tokens_total", c, "backend"), "server"),
            ],
            unit=TOKENS_PER_S,
        ),
        timeseries(
            "Running, waiting and in flight",
            "Server: requests in the batch and in the queue. Client: requests llmload has in flight to this backend "
            "(--llm-backends runs).",
            [
                (f"max by (backend) (llmload_server_requests_running{{{c}}})", "server running"),
                (f"max by (backend) (llmload_server_requests_waiting{{{c}}})", "server waiting"),
                (f"sum by (backend) (llmload_backend_in_flight_requests{{{c}}})", "client in flight"),
            ],
            unit="short",
            w=8,
        ),
        timeseries(
            "KV-cache usage",
            "Share of the server's KV cache in use.",
            [(f"max by (backend) (llmload_server_kv_cache_usage_ratio{{{c}}})", "KV cache")],
            unit="percentunit",
            max_value=1,
            w=8,
        ),
        timeseries(
            "Preemptions/s",
            "Requests the server preempted because the KV cache was full.",
            [(rate_sum("llmload_server_preemptions_total", c, "backend"), "preemptions")],
            unit="short",
            w=8,
        ),
    )
    return b.build()


DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
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
