"""The web UI: the LLM cockpit page, the "LLM" tab, downloads, the cockpit's routes, the API key kept out.

On the master (or a local process) with a web UI:

- The page is llmload's build of Locust's UI (``llmload/webui_app``, on
  ``locust-ui``; ``--llm-web-ui classic`` keeps Locust's own): Locust's tabs
  plus the "LLM cockpit" tab, which reads the JSON routes below.
- Routes on a Blueprint at the web base path, each behind ``--web-login``:
  ``llmload/charts`` (``LiveFigures.history``), ``llmload/state``
  (``llmload.cockpit``: run state, the verdict once stopped),
  ``POST llmload/steer`` (``llmload.steering``), ``llmload/results.json``.

- ``template_args["extended_tabs"]`` / ``["extended_tables"]`` declare the
  "LLM" tab and its columns; an ``after_request`` hook adds the rows to the
  ``/stats/requests`` JSON under ``extended_stats`` (matched by endpoint
  name, so it works under ``--web-base-path``), so the tab refreshes with
  Locust's own polling. One row per group (backend, model, user class), plus
  a Total row when there are several, from the merged ``plugin.store``.
- A run whose user classes include embeddings, score or rerank users gets a second tab,
  "LLM embeddings & rerank", with their columns (latency, inputs and prompt tokens per second)
  and a Total row per kind; the "LLM" tab then shows the streamed groups only.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from flask import Blueprint, make_response, request

from llmload import cockpit, results
from llmload.distribution import POOLING_DISTRIBUTIONS
from llmload.errors import ConfigError
from llmload.extension import Extension
from llmload.figures import attainment, per_second
from llmload.live import LiveFigures
from llmload.locust_compat import (
    INDEX_ENDPOINT,
    REQUEST_STATS_ENDPOINT,
    SWARM_ENDPOINT,
    after_template_args,
    replace_request_form,
    use_web_ui_build,
)
from llmload.metrics import GroupMetrics, MetricsStore
from llmload.pooling import POOLING_KINDS, STREAM
from llmload.render import html
from llmload.render.text import group_label
from llmload.steering import Change, Steering, SteeringRefused

if TYPE_CHECKING:
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

TAB_DISTRIBUTIONS = ("ttft_s", "itl_s", "stream_rate_tps", "ttfa_s")

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
    ("ttfa_p50_ms", "TTFA p50 (ms)"),  # time to first answer token: reasoning models only, else empty
    ("ttfa_p99_ms", "TTFA p99 (ms)"),
    ("stream_rate_p50_tps", "Stream rate p50 (tok/s)"),
    ("stream_rate_p10_tps", "Stream rate p10 (tok/s)"),
    ("output_tokens_per_s", "Output tok/s"),
    ("slo_attainment_pct", "SLO attainment (%)"),
)
POOLED_TAB_KEY = "llm_pooling"
POOLED_TAB_TITLE = "LLM embeddings & rerank"
POOLED_COLUMNS = (
    ("group", "Group (backend · model · user class)"),
    ("kind", "Kind"),
    ("requests", "# Requests"),
    ("failures", "# Fails"),
    ("latency_p50_ms", "Latency p50 (ms)"),
    ("latency_p90_ms", "Latency p90 (ms)"),
    ("latency_p99_ms", "Latency p99 (ms)"),
    ("inputs_per_request", "Inputs per request"),
    ("requests_per_s", "Requests/s"),
    ("inputs_per_s", "Inputs/s"),
    ("prompt_tokens_per_s", "Prompt tok/s"),
)
MAX_ROWS = 200  # like Locust's own 500-row cap: a table this long is unreadable anyway
CACHE_S = 1.0  # several browsers polling every 2 s share one computation
CSV_ROUTE = "/llmload/stats.csv"
REPORT_ROUTE = "/llmload/report.html"
RESULTS_ROUTE = "/llmload/results.json"
CHARTS_ROUTE = "/llmload/charts"
STATE_ROUTE = "/llmload/state"
STEER_ROUTE = "/llmload/steer"
COCKPIT_BUILD = Path(__file__).parent / "webui_app" / "dist"
"""llmload's build of Locust's page (``make webui`` rebuilds it from ``llmload/webui_app``)."""
SECRET_HINT = " (a value is set; leave blank to keep it)"


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


_NO_TTFA: dict[float, float | None] = {50.0: None, 99.0: None}


def group_row(label: str, group: GroupMetrics) -> dict[str, Any]:
    """Return one table row: counts, percentiles, and the run-so-far throughput and SLO attainment.

    The figures are those of the results' ``group_body`` (the same ``Distribution.percentiles``,
    ``per_second`` over the group's window and ``attainment``), rounded for the page; only the
    columns the tab shows are computed, since this runs on the master's event loop on every poll.
    """
    counters, dists = group.counters, group.dists
    ttft = dists["ttft_s"].percentiles((50.0, 99.0))
    itl = dists["itl_s"].percentiles((50.0, 99.0))
    rate = dists["stream_rate_tps"].percentiles((10.0, 50.0))
    ttfa = dists["ttfa_s"].percentiles((50.0, 99.0)) if counters["reasoning_requests"] else _NO_TTFA
    finished = counters["ok"] + counters["failed"]
    met = attainment(counters["slo_met"], finished)
    return {
        "group": label,
        "requests": finished,
        "failures": counters["failed"],
        "ttft_p50_ms": _ms(ttft[50.0]),
        "ttft_p99_ms": _ms(ttft[99.0]),
        "itl_p50_ms": _ms(itl[50.0]),
        "itl_p99_ms": _ms(itl[99.0]),
        "ttfa_p50_ms": _ms(ttfa[50.0]),
        "ttfa_p99_ms": _ms(ttfa[99.0]),
        "stream_rate_p50_tps": _round(rate[50.0], 1),
        "stream_rate_p10_tps": _round(rate[10.0], 1),
        "output_tokens_per_s": round(per_second(counters["output_tokens"], group.window_s), 1),
        "slo_attainment_pct": None if met is None else round(met * 100, 1),
    }


def pooled_row(label: str, group: GroupMetrics) -> dict[str, Any]:
    """One row of the embeddings & rerank tab: the figures of the results' ``pooled_body``, rounded."""
    counters = group.counters
    latency = group.dists["latency_s"].percentiles((50.0, 90.0, 99.0))
    finished, inputs, window = counters["ok"] + counters["failed"], counters["inputs"], group.window_s
    return {
        "group": label,
        "kind": group.kind,
        "requests": finished,
        "failures": counters["failed"],
        "latency_p50_ms": _ms(latency[50.0]),
        "latency_p90_ms": _ms(latency[90.0]),
        "latency_p99_ms": _ms(latency[99.0]),
        "inputs_per_request": round(inputs / counters["ok"], 2) if counters["ok"] else None,
        "requests_per_s": round(per_second(finished, window), 2),
        "inputs_per_s": round(per_second(inputs, window), 1),
        "prompt_tokens_per_s": round(per_second(counters["prompt_tokens"], window), 1),
    }


def pooled_rows(store: MetricsStore, *, max_rows: int = MAX_ROWS) -> list[dict[str, Any]]:
    """The embeddings & rerank tab: a row per pooling group (sorted), then a Total per kind with several."""
    groups = sorted((g for g in store.groups.values() if g.kind != STREAM), key=lambda g: g.key)
    rows = [
        pooled_row(group_label({"backend": g.backend, "model": g.model, "user_class": g.user_class}), g)
        for g in groups[:max_rows]
    ]
    for kind in POOLING_KINDS:
        if sum(1 for g in groups if g.kind == kind) > 1:
            rows.append(pooled_row(f"Total {kind}", store.total(POOLING_DISTRIBUTIONS, kind=kind)))
    return rows


def has_pooling_users(environment: Environment) -> bool:
    """Whether the run's user classes include embeddings, score or rerank users."""
    from llmload.request_kinds import PoolingUser

    return any(isinstance(cls, type) and issubclass(cls, PoolingUser) for cls in environment.user_classes or ())


def table_rows(
    store: MetricsStore, *, max_rows: int = MAX_ROWS, total_into: GroupMetrics | None = None
) -> list[dict[str, Any]]:
    """Return the LLM table: one row per streamed group (sorted), then Total when there are several.

    ``total_into`` is the group the Total row is merged into (reused from poll to poll).
    """
    groups = sorted((g for g in store.groups.values() if g.kind == STREAM), key=lambda g: g.key)
    rows = [
        group_row(group_label({"backend": g.backend, "model": g.model, "user_class": g.user_class}), g)
        for g in groups[:max_rows]
    ]
    if len(groups) > 1:
        rows.append(group_row("Total", store.total(TAB_DISTRIBUTIONS, into=total_into)))
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


class LLMWebUI(Extension):
    """The LLM tab, CSV and live report of one Locust web UI, and its secret scrubbing."""

    def __init__(self, plugin: LLMLoadPlugin, web_ui: Any) -> None:
        self.plugin = plugin
        self.web_ui = web_ui
        self.secret_names: set[str] = set()
        self._cache: tuple[float, list[dict[str, Any]]] | None = None
        self._pooled_cache: list[dict[str, Any]] = []
        self.pooled = has_pooling_users(plugin.environment)
        """Whether the page has the embeddings & rerank tab."""
        self._total = GroupMetrics("*", "*", "*", distributions=TAB_DISTRIBUTIONS)
        """The Total row's merged histograms, reused by every poll."""
        self._state_cache: tuple[float, dict[str, Any]] | None = None
        self.final: dict[str, Any] | None = None
        """The finished run's results document, handed over at quit (``finished``)."""
        self._stopped: tuple[float, dict[str, Any]] | None = None
        """(the run's end, its results) once a test stopped in the web UI, before the process quits."""

    @property
    def base_path(self) -> str:
        """The web base path Locust mounted its own routes at ('' at the root)."""
        for rule in self.web_ui.app.url_map.iter_rules():
            if rule.endpoint == INDEX_ENDPOINT:
                return str(rule.rule).rstrip("/")
        return (getattr(self.plugin.environment.parsed_options, "web_base_path", "") or "").rstrip("/")

    def install(self) -> LLMWebUI:
        """Add the tab, the routes and the hooks; call before the web UI serves its first request."""
        web_ui, app, base = self.web_ui, self.web_ui.app, self.base_path
        tabs = [{"title": TAB_TITLE, "key": TAB_KEY}]
        tables = [{"key": TAB_KEY, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}]
        if self.pooled:
            tabs.append({"title": POOLED_TAB_TITLE, "key": POOLED_TAB_KEY})
            tables.append(
                {"key": POOLED_TAB_KEY, "structure": [{"key": key, "title": title} for key, title in POOLED_COLUMNS]}
            )
        web_ui.template_args["extended_tabs"] = tabs
        web_ui.template_args["extended_tables"] = tables
        web_ui.template_args["extended_csv_files"] = [
            {"href": f"{base}{CSV_ROUTE}", "title": "Download LLM token metrics CSV"},
            {"href": f"{base}{REPORT_ROUTE}", "title": "Download LLM HTML report"},
            {"href": f"{base}{RESULTS_ROUTE}", "title": "Download LLM results JSON"},
        ]
        after_template_args(web_ui, self._scrub)

        blueprint = Blueprint("llmload", __name__, url_prefix=base or None)
        guard = web_ui.auth_required_if_enabled
        blueprint.add_url_rule(CSV_ROUTE, "stats_csv", guard(self._csv_view))
        blueprint.add_url_rule(REPORT_ROUTE, "report", guard(self._report_view))
        blueprint.add_url_rule(RESULTS_ROUTE, "results", guard(self._results_view))
        blueprint.add_url_rule(CHARTS_ROUTE, "charts", guard(self._charts_view))
        blueprint.add_url_rule(STATE_ROUTE, "state", guard(self._state_view))
        blueprint.add_url_rule(STEER_ROUTE, "steer", guard(self._steer_view), methods=["POST"])
        app.register_blueprint(blueprint)
        app.before_request(self._keep_blank_secrets)
        app.after_request(self._add_extended_stats)
        return self

    def _scrub(self, template_args: dict[str, Any]) -> None:
        self.secret_names |= scrub_secrets(template_args)

    def rows(self) -> list[dict[str, Any]]:
        """Return the table rows, computed at most once per ``CACHE_S``."""
        now = time.monotonic()
        if self._cache is None or now - self._cache[0] > CACHE_S:
            self._cache = (now, table_rows(self.plugin.store, total_into=self._total))
            self._pooled_cache = pooled_rows(self.plugin.store) if self.pooled else []
        return self._cache[1]

    def extended_stats(self) -> list[dict[str, Any]]:
        """The tabs' rows as Locust's page reads them (``extended_stats`` of ``/stats/requests``)."""
        stats = [{"key": TAB_KEY, "data": self.rows()}]
        if self.pooled:
            stats.append({"key": POOLED_TAB_KEY, "data": self._pooled_cache})
        return stats

    # -- request hooks and views --------------------------------------------------------------------

    def _add_extended_stats(self, response: Any) -> Any:
        if request.endpoint != REQUEST_STATS_ENDPOINT or response.status_code != 200 or not response.is_json:
            return response
        payload = orjson.loads(response.get_data())
        payload["extended_stats"] = self.extended_stats()
        # Locust memoizes this Response object; replacing the key keeps repeated hooks idempotent.
        response.set_data(orjson.dumps(payload))
        return response

    def _keep_blank_secrets(self) -> None:
        if request.endpoint != SWARM_ENDPOINT or not self.secret_names:
            return
        parsed = self.plugin.environment.parsed_options
        form = request.form.copy()
        for name in self.secret_names:
            current = getattr(parsed, name, "")
            if name in form and not form[name] and current:
                form[name] = current
        replace_request_form(form)  # Locust's swarm view then reads the real key

    def _csv_view(self) -> Any:
        response = make_response(csv_text(table_rows(self.plugin.store)))
        response.headers["Content-Type"] = "text/csv; charset=utf-8"
        response.headers["Content-Disposition"] = f"attachment; filename=llmload_{time.strftime('%Y%m%d_%H%M%S')}.csv"
        return response

    def expire_caches(self) -> None:
        """Forget the cached table rows and run state: the next poll computes them (as 1 s later)."""
        self._cache = self._state_cache = None

    def finished(self, doc: dict[str, Any]) -> None:
        self.final = doc

    def _document(self) -> dict[str, Any]:
        """The results so far while a test runs; once it stopped, its results (built once per stop)."""
        plugin = self.plugin
        if self._running() or plugin.ended_at is None:
            return results.build(plugin)
        if self.final is not None and plugin.finished:
            return self.final
        if self._stopped is None or self._stopped[0] != plugin.ended_at:
            self._stopped = (plugin.ended_at, results.build(plugin))
        return self._stopped[1]

    def _running(self) -> bool:
        return getattr(self.plugin.environment.runner, "state", None) in ("spawning", "running", "stopping")

    def _results_view(self) -> Any:
        response = make_response(orjson.dumps(self._document(), option=orjson.OPT_INDENT_2))
        response.headers["Content-Type"] = "application/json"
        response.headers["Content-Disposition"] = (
            f"attachment; filename=llmload_results_{time.strftime('%Y%m%d_%H%M%S')}.json"
        )
        return response

    def _charts_view(self) -> Any:
        live = self.plugin.extensions.get(LiveFigures)
        try:
            since = float(request.args.get("since", "0") or 0)
        except ValueError:
            return _json({"error": "since: expected seconds since the epoch"}, 400)
        if live is None:
            return _json({"error": "no live figures on this process"}, 404)
        body = live.history.as_json(since=since)
        body["interval_s"] = live.slice_s
        body["slo"] = {"ttft_s": self.plugin.store.slo_ttft_s, "stream_rate_tps": self.plugin.store.slo_stream_rate_tps}
        return _json(body)

    def _state_view(self) -> Any:
        now = time.monotonic()
        if self._state_cache is None or now - self._state_cache[0] > CACHE_S:
            state = cockpit.run_state(self.plugin)
            if not self._running() and self.plugin.ended_at is not None:
                state["verdict"] = cockpit.verdict(self._document())
            self._state_cache = (now, state)
        return _json(self._state_cache[1])

    def _steer_view(self) -> Any:
        steering = self.plugin.extensions.get(Steering)
        if steering is None:
            return _json({"error": "steering is not available on this process"}, 404)
        try:
            change = Change.from_json(request.get_json(silent=True))
            closed = steering.apply(change)
        except ConfigError as exc:
            return _json({"error": str(exc)}, 400)
        except SteeringRefused as exc:
            return _json({"error": f"refused: {exc}"}, 409)
        self._state_cache = None
        return _json({"closed": closed["name"], "phase": steering.phase_name})

    def _report_view(self) -> Any:
        page = html.build_html(results.build(self.plugin), secrets=[self.plugin.options.api_key])
        response = make_response(page)
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        response.headers["Content-Disposition"] = (
            f"attachment; filename=llmload_report_{time.strftime('%Y%m%d_%H%M%S')}.html"
        )
        return response


def _json(body: Any, status: int = 200) -> Any:
    response = make_response(orjson.dumps(body), status)
    response.headers["Content-Type"] = "application/json"
    response.headers["Cache-Control"] = "no-store"
    return response


def add_arguments(parser: Any) -> None:
    """``--llm-web-ui``: llmload's cockpit (Locust's page with the LLM cockpit tab) or Locust's own page."""
    parser.add_argument(
        "--llm-web-ui",
        env_var="LOCUST_LLM_WEB_UI",
        default="cockpit",
        choices=("cockpit", "classic"),
        help="Web UI page: cockpit (Locust's page with llmload's live charts, run state and steering; default) "
        "or classic (Locust's own page; the LLM tab stays). Ignored when --build-path is given",
    )


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    """Install the LLM tab on a master or local process that has a web UI."""
    web_ui = environment.web_ui
    if web_ui is None or plugin.is_worker:
        return
    parsed = environment.parsed_options
    page = getattr(parsed, "llm_web_ui", "cockpit") if parsed is not None else "cockpit"
    if page == "cockpit" and not getattr(parsed, "build_path", None):
        use_web_ui_build(web_ui, str(COCKPIT_BUILD))
    plugin.extensions.add(LLMWebUI(plugin, web_ui)).install()
