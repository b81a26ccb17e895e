"""The "LLM" tab in Locust's web UI, its CSV, the live HTML report, and the API key kept out of the page.

On the master (or a local process) with a web UI, through Locust's own
extension points only (no fork of its UI):

- ``template_args["extended_tabs"]`` / ``["extended_tables"]`` declare the
  "LLM" tab and its columns; an ``after_request`` hook adds the rows to the
  ``/stats/requests`` JSON under ``extended_stats`` (matched by endpoint
  name, so it works under ``--web-base-path``), so the tab refreshes with
  Locust's own polling. One row per group (backend, model, user class), plus
  a Total row when there are several, from the merged ``plugin.store``.
- ``template_args["extended_csv_files"]`` links the LLM table as CSV and the
  live HTML report (``llmload.report``), served by a Blueprint mounted at the
  web base path.
- Secrets: Locust renders every custom option's command-line, environment or
  config-file value into the page (``extra_options``), ``is_secret`` ones
  included. The page gets them blank, with a hint that a value is set; a
  start form posted with a secret left blank keeps the value the process
  has, so it still reaches the users and, through the master's spawn
  message, the workers.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import orjson
from flask import Blueprint, make_response, request

from llmload import report, results
from llmload.charts import group_label
from llmload.metrics import GroupMetrics, MetricsStore

TAB_KEY = "llm"
TAB_TITLE = "LLM"
# (row key, column title); the same titles head the CSV.
COLUMNS = (
    ("group", "Group (backend · model · user class)"),
    ("requests", "# Requests"),
    ("failures", "# Fails"),
    ("ttft_p50_ms", "TTFT p50 (ms)"),
    ("ttft_p99_ms", "TTFT p99 (ms)"),
    ("itl_p50_ms", "ITL p50 (ms)"),
    ("itl_p99_ms", "ITL p99 (ms)"),
    ("stream_rate_p50_tps", "Stream rate p50 (tok/s)"),
    ("stream_rate_p10_tps", "Stream rate p10 (tok/s)"),
    ("output_tokens_per_s", "Output tok/s"),
    ("slo_attainment_pct", "SLO attainment (%)"),
)
MAX_ROWS = 200  # like Locust's own 500-row cap: a table this long is unreadable anyway
CACHE_S = 1.0  # several browsers polling every 2 s share one computation
CSV_ROUTE = "/llmload/stats.csv"
REPORT_ROUTE = "/llmload/report.html"
SECRET_HINT = " (a value is set; leave blank to keep it)"


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def group_row(label: str, group: GroupMetrics) -> dict[str, Any]:
    """Return one table row: counts, percentiles, and the run-so-far throughput and SLO attainment.

    Throughput and attainment follow docs/metrics.md (as ``results.group_body`` does): output
    tokens over the group's window, SLO-met over successful requests. Only the six percentiles
    the tab shows are computed, since this runs on the master's event loop.
    """
    counters, dists = group.counters, group.dists
    ok, failed = counters["ok"], counters["failed"]
    window = group.window_s
    return {
        "group": label,
        "requests": ok + failed,
        "failures": failed,
        "ttft_p50_ms": _ms(dists["ttft_s"].percentile(50)),
        "ttft_p99_ms": _ms(dists["ttft_s"].percentile(99)),
        "itl_p50_ms": _ms(dists["itl_s"].percentile(50)),
        "itl_p99_ms": _ms(dists["itl_s"].percentile(99)),
        "stream_rate_p50_tps": _round(dists["stream_rate_tps"].percentile(50), 1),
        "stream_rate_p10_tps": _round(dists["stream_rate_tps"].percentile(10), 1),
        "output_tokens_per_s": round(counters["output_tokens"] / window, 1) if window else 0.0,
        "slo_attainment_pct": round(counters["slo_met"] / ok * 100, 1) if ok else None,
    }


def table_rows(store: MetricsStore, *, max_rows: int = MAX_ROWS) -> list[dict[str, Any]]:
    """Return the LLM table: one row per group (sorted), then Total when there are several groups."""
    groups = sorted(store.groups.values(), key=lambda g: g.key)
    label = lambda g: group_label({"backend": g.backend, "model": g.model, "user_class": g.user_class})  # noqa: E731
    rows = [group_row(label(g), g) for g in groups[:max_rows]]
    if len(groups) > 1:
        rows.append(group_row("Total", store.total()))
    return rows


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Return the LLM table as CSV, headed by the column titles; an empty cell for no value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([title for _, title in COLUMNS])
    for row in rows:
        writer.writerow(["" if row[key] is None else row[key] for key, _ in COLUMNS])
    return out.getvalue()


def scrub_secrets(template_args: dict[str, Any]) -> set[str]:
    """Blank every secret option's value in Locust's template args; return the secret options' names."""
    extra = template_args.get("extra_options") or {}
    names = set()
    for name, spec in list(extra.items()):
        if not spec.get("is_secret"):
            continue
        names.add(name)
        if spec.get("default_value"):
            extra[name] = {**spec, "default_value": "", "help_text": (spec.get("help_text") or "") + SECRET_HINT}
    return names


class LLMWebUI:
    """The LLM tab, CSV and live report of one Locust web UI, and its secret scrubbing."""

    def __init__(self, plugin: Any, web_ui: Any) -> None:
        self.plugin = plugin
        self.web_ui = web_ui
        self.secret_names: set[str] = set()
        self._cache: tuple[float, list[dict[str, Any]]] | None = None

    @property
    def base_path(self) -> str:
        """The web base path Locust mounted its own routes at ('' at the root)."""
        for rule in self.web_ui.app.url_map.iter_rules():
            if rule.endpoint == "locust.index":
                return rule.rule.rstrip("/")
        return (getattr(self.plugin.environment.parsed_options, "web_base_path", "") or "").rstrip("/")

    def install(self) -> LLMWebUI:
        """Add the tab, the routes and the hooks; call before the web UI serves its first request."""
        web_ui, app, base = self.web_ui, self.web_ui.app, self.base_path
        web_ui.template_args["extended_tabs"] = [{"title": TAB_TITLE, "key": TAB_KEY}]
        web_ui.template_args["extended_tables"] = [
            {"key": TAB_KEY, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}
        ]
        web_ui.template_args["extended_csv_files"] = [
            {"href": f"{base}{CSV_ROUTE}", "title": "Download LLM token metrics CSV"},
            {"href": f"{base}{REPORT_ROUTE}", "title": "Download LLM HTML report"},
        ]
        render_args = web_ui.update_template_args

        def update_template_args() -> None:
            render_args()
            self.secret_names |= scrub_secrets(web_ui.template_args)

        # Locust calls this before rendering each page; the instance attribute wraps it for this UI only.
        web_ui.update_template_args = update_template_args
        if self.plugin.environment.runner is not None:
            update_template_args()

        blueprint = Blueprint("llmload", __name__, url_prefix=base or None)
        guard = web_ui.auth_required_if_enabled
        blueprint.add_url_rule(CSV_ROUTE, "stats_csv", guard(self._csv_view))
        blueprint.add_url_rule(REPORT_ROUTE, "report", guard(self._report_view))
        app.register_blueprint(blueprint)
        app.before_request(self._keep_blank_secrets)
        app.after_request(self._add_extended_stats)
        return self

    def rows(self) -> list[dict[str, Any]]:
        """Return the table rows, computed at most once per ``CACHE_S``."""
        now = time.monotonic()
        if self._cache is None or now - self._cache[0] > CACHE_S:
            self._cache = (now, table_rows(self.plugin.store))
        return self._cache[1]

    # -- request hooks and views --------------------------------------------------------------------

    def _add_extended_stats(self, response: Any) -> Any:
        if request.endpoint != "locust.request_stats" or response.status_code != 200 or not response.is_json:
            return response
        payload = orjson.loads(response.get_data())
        payload["extended_stats"] = [{"key": TAB_KEY, "data": self.rows()}]
        # Locust memoizes this Response object; replacing the key keeps repeated hooks idempotent.
        response.set_data(orjson.dumps(payload))
        return response

    def _keep_blank_secrets(self) -> None:
        if request.endpoint != "locust.swarm" or not self.secret_names:
            return
        parsed = self.plugin.environment.parsed_options
        form = request.form.copy()
        for name in self.secret_names:
            current = getattr(parsed, name, "")
            if name in form and not form[name] and current:
                form[name] = current
        # Locust's swarm view reads request.form (a settable cached property); it gets the real key.
        request.form = form

    def _csv_view(self) -> Any:
        response = make_response(csv_text(table_rows(self.plugin.store)))
        response.headers["Content-Type"] = "text/csv; charset=utf-8"
        response.headers["Content-Disposition"] = f"attachment; filename=llmload_{time.strftime('%Y%m%d_%H%M%S')}.csv"
        return response

    def _report_view(self) -> Any:
        page = report.build_html(results.build(self.plugin), secrets=[self.plugin.options.api_key])
        response = make_response(page)
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        response.headers["Content-Disposition"] = (
            f"attachment; filename=llmload_report_{time.strftime('%Y%m%d_%H%M%S')}.html"
        )
        return response


def add_arguments(parser: Any) -> None:
    """The web UI extension has no options of its own."""


def register(environment: Any, plugin: Any) -> LLMWebUI | None:
    """Install the LLM tab on a master or local process that has a web UI."""
    web_ui = getattr(environment, "web_ui", None)
    if web_ui is None or plugin.is_worker:
        return None
    return LLMWebUI(plugin, web_ui).install()
