"""What llmload serves to Prometheus: the metric families built from a plugin's merged state on every scrape.

``LLMLoadCollector`` builds fresh families from ``plugin.store`` (the whole run,
merged across workers, so nothing is double counted and no state is kept
here), the live percentiles (``llmload.live``), the self-check, the run's
targets, the server scrapes and the run events. HdrHistograms become coarse
Prometheus histograms (heatmaps, aggregation across groups); percentiles are
exact gauges. ``llmload.exporter`` serves it. Every series is listed in
docs/prometheus-grafana.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from locust.runners import STATE_MISSING, MasterRunner
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from llmload._version import __version__
from llmload.arrivals import get_arrivals
from llmload.distribution import POOLING_DISTRIBUTIONS, new_distribution
from llmload.errors import POOLING_ERROR_KINDS, STREAM_ERROR_KINDS, ConfigError
from llmload.live import LiveFigures
from llmload.pooling import STREAM
from llmload.render.text import redact_url
from llmload.selfcheck import SelfCheck
from llmload.series import (
    BUCKET_SCHEMES,
    DELAY_BUCKETS,
    GROUP_LABELS,
    HISTOGRAMS,
    MAX_GROUPS,
    PERCENTILE_GAUGES,
    SERVER_COUNTERS,
    SERVER_GAUGES,
    SERVER_HISTOGRAMS,
    cumulative_buckets,
)
from llmload.server_metrics import ServerMetrics
from llmload.supervisor import pause
from llmload.targets import run_targets

if TYPE_CHECKING:
    from llmload.plugin import LLMLoadPlugin

logger = logging.getLogger("llmload")


class LLMLoadCollector(Collector):
    """Build llmload's metric families from a plugin's merged store on every scrape."""

    def __init__(self, plugin: LLMLoadPlugin, *, max_groups: int = MAX_GROUPS, buckets: str = "coarse") -> None:
        self.plugin = plugin
        self.max_groups = max_groups
        self.bounds = BUCKET_SCHEMES[buckets]
        """Upper bounds of each bucketed distribution (``BUCKET_SCHEMES``)."""
        self._warned_cap = False

    def describe(self) -> list:
        """Return nothing: names are fixed and collecting at registration would read an empty store."""
        return []

    def _connected(self) -> set[str] | None:
        """On a master, the workers connected now (a gone worker's last gauges are not shown); else None: all."""
        runner = self.plugin.environment.runner
        return set(runner.clients) if isinstance(runner, MasterRunner) else None

    def _groups(self) -> list[Any]:
        groups = sorted(self.plugin.store.groups.values(), key=lambda g: g.key)
        if len(groups) > self.max_groups:
            if not self._warned_cap:
                self._warned_cap = True
                logger.warning(
                    "llmload: %d (backend, model, user class) groups; Prometheus gets the first %d",
                    len(groups),
                    self.max_groups,
                )
            groups = groups[: self.max_groups]
        return groups

    def collect(self) -> Iterator[Any]:
        """Yield fresh metric families (prometheus_client's collector protocol).

        On a local run the users share this process's event loop: after each family (which
        prometheus_client formats as it goes) the users' greenlets run, so that a scrape is a
        few slices of a millisecond or two, not one stall the streams would measure.
        """
        for family in self._families():
            yield family
            pause()

    def _families(self) -> Iterator[Any]:
        plugin = self.plugin
        groups = self._groups()
        labelled = [(group, [redact_url(group.backend), group.model, group.user_class]) for group in groups]
        yield from self._group_histograms(labelled)
        yield from self._group_counters(labelled)
        yield from self._percentiles(groups)
        yield from self._generator()
        yield from self._open_loop(labelled)
        yield from self._backends()
        yield from self._server()
        yield from self._run_events()
        options = plugin.options
        if options.slo_stream_rate_tps is not None:
            yield GaugeMetricFamily(
                "llmload_slo_stream_rate_tokens_per_second",
                "Configured SLO: minimum per-request stream rate.",
                value=options.slo_stream_rate_tps,
            )
        if options.slo_ttft_s is not None:
            yield GaugeMetricFamily(
                "llmload_slo_ttft_seconds", "Configured SLO: maximum time to first token.", value=options.slo_ttft_s
            )
        yield GaugeMetricFamily(
            "llmload_slo_objective_ratio",
            "Configured SLO objective: the share of finished requests that must meet the SLOs.",
            value=options.slo_objective,
        )
        yield InfoMetricFamily("llmload", "llmload version.", value={"version": __version__})

    def _group_histograms(self, labelled: list[tuple[Any, list[str]]]) -> Iterator[Any]:
        for name, (dist_name, doc) in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, doc, labels=GROUP_LABELS)
            bounds = self.bounds[dist_name]
            pooled = dist_name in POOLING_DISTRIBUTIONS
            for group, labels in labelled:
                if (group.kind != STREAM) != pooled:
                    continue
                dist = group.dists[dist_name]
                family.add_metric(labels, cumulative_buckets(dist, bounds), dist.total)
            yield family

    def _group_counters(self, labelled: list[tuple[Any, list[str]]]) -> Iterator[Any]:
        self.plugin.collect_arrived_tokens()
        requests = CounterMetricFamily(
            "llmload_requests",
            "Finished LLM requests by outcome (ok, failed) and error kind.",
            labels=[*GROUP_LABELS, "outcome", "error"],
        )
        output = CounterMetricFamily(
            "llmload_output_tokens",
            "Output tokens, counted as they arrive (server usage added when a request ends).",
            labels=GROUP_LABELS,
        )
        prompt = CounterMetricFamily("llmload_prompt_tokens", "Prompt tokens sent (server usage).", labels=GROUP_LABELS)
        slo_met = CounterMetricFamily(
            "llmload_slo_met_requests", "Successful requests that met every SLO.", labels=GROUP_LABELS
        )
        ttft_met = CounterMetricFamily(
            "llmload_slo_ttft_met_requests", "Successful requests that met the TTFT SLO.", labels=GROUP_LABELS
        )
        rate_met = CounterMetricFamily(
            "llmload_slo_stream_rate_met_requests",
            "Successful requests that met the stream-rate SLO.",
            labels=GROUP_LABELS,
        )
        inputs = CounterMetricFamily(
            "llmload_inputs",
            "Embeddings, score and rerank: inputs of successful requests (texts, pairs or documents), by kind.",
            labels=[*GROUP_LABELS, "kind"],
        )
        reasoning = CounterMetricFamily(
            "llmload_reasoning_tokens",
            "Output tokens of reasoning models, by part: reasoning (thinking) or answer (groups that thought only).",
            labels=[*GROUP_LABELS, "part"],
        )
        for group, labels in labelled:
            counters = group.counters
            if counters["reasoning_requests"]:
                reasoning.add_metric([*labels, "reasoning"], counters["reasoning_tokens"])
                reasoning.add_metric([*labels, "answer"], counters["answer_tokens"])
            requests.add_metric([*labels, "ok", ""], counters["ok"])
            # Every known kind is exported, zero included, so error panels and rates have a series to show.
            known = STREAM_ERROR_KINDS if group.kind == STREAM else POOLING_ERROR_KINDS
            for kind in (*known, *sorted(set(group.errors) - set(known))):
                requests.add_metric([*labels, "failed", kind], group.errors.get(kind, 0))
            prompt.add_metric(labels, counters["prompt_tokens"])
            if group.kind != STREAM:
                inputs.add_metric([*labels, group.kind], counters["inputs"])
                continue
            output.add_metric(labels, counters["arrived_output_tokens"])
            slo_met.add_metric(labels, counters["slo_met"])
            ttft_met.add_metric(labels, counters["slo_ttft_met"])
            rate_met.add_metric(labels, counters["slo_stream_rate_met"])
        yield from (requests, output, prompt, slo_met, ttft_met, rate_met, reasoning, inputs)

    def _percentiles(self, groups: list[Any]) -> Iterator[Any]:
        live = self.plugin.extensions.get(LiveFigures)
        if live is None:
            return
        snapshot = live.compute()
        keys = [group.key for group in groups]
        for name, (dist_name, doc) in PERCENTILE_GAUGES.items():
            family = GaugeMetricFamily(
                name,
                f"{doc} over the sliding window (window={live.label}) or the whole run (window=run).",
                labels=[*GROUP_LABELS, "window", "percentile"],
            )
            for window, figures in ((live.label, snapshot.window), ("run", snapshot.run)):
                for key in keys:
                    values = figures.get(key, {}).get(dist_name, {})
                    labels = [redact_url(key[0]), key[1], key[2], window]
                    for q, value in values.items():
                        if value is not None:
                            family.add_metric([*labels, f"{q:g}"], value)
            yield family

    def _generator(self) -> Iterator[Any]:
        plugin = self.plugin
        runner = plugin.environment.runner
        yield GaugeMetricFamily("llmload_users", "Running Locust users.", value=runner.user_count if runner else 0)
        workers = runner.worker_count if isinstance(runner, MasterRunner) else (1 if runner is not None else 0)
        yield GaugeMetricFamily(
            "llmload_workers", "Load-generating processes: connected workers, or 1 in a local run.", value=workers
        )
        missing = (
            sum(1 for c in runner.clients.values() if c.state == STATE_MISSING)
            if isinstance(runner, MasterRunner)
            else 0
        )
        yield GaugeMetricFamily("llmload_workers_missing", "Workers the master no longer hears from.", value=missing)
        in_flight = GaugeMetricFamily(
            "llmload_in_flight_requests", "Requests in flight per load generator.", labels=["worker"]
        )
        cpu = GaugeMetricFamily(
            "llmload_generator_cpu_percent",
            "CPU use of each load-generator process, percent of one core.",
            labels=["worker"],
        )
        connected = self._connected()
        for worker, gauges in sorted(plugin.generator_gauges.items()):
            if connected is not None and worker not in connected:
                continue
            in_flight.add_metric([worker], gauges.get("in_flight", 0.0))
            cpu.add_metric([worker], gauges.get("cpu_percent", 0.0))
        yield in_flight
        yield cpu
        check = plugin.extensions.get(SelfCheck)
        if check is None:
            return
        trustworthy = GaugeMetricFamily(
            "llmload_generator_trustworthy",
            "1 while a load generator passes the self-check so far (docs/metrics.md), 0 once it fails it.",
            labels=["worker"],
        )
        lag = GaugeMetricFamily(
            "llmload_generator_loop_lag_p99_seconds",
            "Per load generator: event-loop lag p99 over the run so far.",
            labels=["worker"],
        )
        for worker, (ok, lag_p99) in check.verdict_by_process().items():
            if connected is not None and worker not in connected:
                continue
            trustworthy.add_metric([worker], 1.0 if ok else 0.0)
            if lag_p99 is not None:
                lag.add_metric([worker], lag_p99)
        yield trustworthy
        yield lag
        limits = GaugeMetricFamily(
            "llmload_generator_limit",
            "The self-check's thresholds (--llm-selfcheck-*): beyond a limit a load generator is not trustworthy "
            "(the cpu_percent limit counts when a quarter of the samples exceed it). Dashboards draw them as lines.",
            labels=["check"],
        )
        for check_name, limit in sorted(check.thresholds.as_dict().items()):
            limits.add_metric([check_name], limit)
        yield limits
        lateness = GaugeMetricFamily(
            "llmload_generator_read_lateness_seconds",
            "Per load generator: how late its reads were (read time minus the kernel's receive stamp), "
            "over the run: stat p50, p99 or max.",
            labels=["worker", "stat"],
        )
        for worker, late in sorted(check.lateness_by_process().items()):
            if connected is not None and worker not in connected:
                continue
            for stat in ("p50", "p99", "max"):
                value = late[stat]
                if value is not None:
                    lateness.add_metric([worker, stat], float(value))
        yield lateness

    def _open_loop(self, labelled: list[tuple[Any, list[str]]]) -> Iterator[Any]:
        arrivals = get_arrivals(self.plugin)
        if arrivals is None or self.plugin.options.arrival == "closed":
            return
        dispatch = new_distribution("dispatch_lag_s")
        for group, _labels in labelled:
            dispatch.merge(group.dists["dispatch_lag_s"])
        family = HistogramMetricFamily(
            "llmload_dispatch_lag_seconds",
            "Open loop: send time minus intended arrival time, every group (coarse buckets).",
        )
        family.add_metric([], cumulative_buckets(dispatch, DELAY_BUCKETS), dispatch.total)
        yield family
        totals = arrivals.totals()
        for name, dist_name, doc, bounds in (
            (
                "llmload_ttft_from_intended_seconds",
                "ttft_from_intended_s",
                "TTFT from the intended arrival",
                self.bounds["ttft_s"],
            ),
            (
                "llmload_e2e_from_intended_seconds",
                "e2e_from_intended_s",
                "E2E from the intended arrival",
                self.bounds["e2e_s"],
            ),
        ):
            dist = totals.dists[dist_name]
            family = HistogramMetricFamily(name, f"Open loop: {doc} (client queueing included).")
            family.add_metric([], cumulative_buckets(dist, bounds), dist.total)
            yield family

    def _backends(self) -> Iterator[Any]:
        plugin = self.plugin
        try:
            targets = run_targets(plugin)
        except ConfigError:
            targets = {}
        info = InfoMetricFamily(
            "llmload_backend", "Each backend of the run: GPU, engine, quantization, model.", labels=["backend"]
        )
        price = GaugeMetricFamily(
            "llmload_backend_price_per_hour_dollars",
            "Each backend's price_per_hour (USD) from the backends file.",
            labels=["backend"],
        )
        for label, target in sorted(targets.items()):
            backend = target.backend
            described = {
                "gpu": backend.gpu if backend else "",
                "engine": backend.engine if backend else "",
                "quantization": backend.quantization if backend else "",
                "model": backend.model if backend else "",
            }
            info.add_metric([redact_url(label)], described)
            if backend is not None and backend.price_per_hour is not None:
                price.add_metric([redact_url(label)], backend.price_per_hour)
        yield info
        yield price
        users = GaugeMetricFamily("llmload_backend_users", "Running users bound to each backend.", labels=["backend"])
        in_flight = GaugeMetricFamily(
            "llmload_backend_in_flight_requests", "Requests in flight to each backend.", labels=["backend"]
        )
        connected = self._connected()
        summed: dict[str, dict[str, float]] = {}
        for worker, by_backend in plugin.backend_gauges.items():
            if connected is not None and worker not in connected:
                continue
            for label, values in by_backend.items():
                into = summed.setdefault(label, {"users": 0.0, "in_flight": 0.0})
                into["users"] += values.get("users", 0.0)
                into["in_flight"] += values.get("in_flight", 0.0)
        for label in sorted(set(summed) | set(targets)):
            values = summed.get(label, {"users": 0.0, "in_flight": 0.0})
            users.add_metric([redact_url(label)], values["users"])
            in_flight.add_metric([redact_url(label)], values["in_flight"])
        yield users
        yield in_flight

    def _server(self) -> Iterator[Any]:
        scraper = self.plugin.extensions.get(ServerMetrics)
        if scraper is None:
            return
        up = GaugeMetricFamily(
            "llmload_server_up", "1 when llmload's latest scrape of the backend's /metrics worked.", labels=["backend"]
        )
        restarts = CounterMetricFamily(
            "llmload_server_restarts", "Server restarts llmload saw (its counters went down).", labels=["backend"]
        )
        gauges = {name: GaugeMetricFamily(name, doc, labels=["backend"]) for name, (_k, doc) in SERVER_GAUGES.items()}
        counters = {
            name: CounterMetricFamily(name, doc, labels=["backend"]) for name, (_k, doc) in SERVER_COUNTERS.items()
        }
        histograms = {
            name: HistogramMetricFamily(name, doc, labels=["backend"]) for name, (_k, doc) in SERVER_HISTOGRAMS.items()
        }
        for label, series in sorted(scraper.series.items()):
            backend = [redact_url(label)]
            up.add_metric(backend, 1.0 if series.up else 0.0)
            restarts.add_metric(backend, series.restarts)
            last = series.last
            if last is None:
                continue
            for name, (key, _doc) in SERVER_GAUGES.items():
                if key in last.gauges:
                    gauges[name].add_metric(backend, last.gauges[key])
            for name, (key, _doc) in SERVER_COUNTERS.items():
                if key in last.counters:
                    counters[name].add_metric(backend, last.counters[key])
            for name, (key, _doc) in SERVER_HISTOGRAMS.items():
                hist = last.histograms.get(key)
                if hist is not None and hist.buckets:
                    buckets = [(floatToGoString(le), count) for le, count in sorted(hist.buckets.items())]
                    histograms[name].add_metric(backend, buckets, hist.sum)
        yield up
        yield restarts
        yield from gauges.values()
        yield from counters.values()
        yield from histograms.values()

    def _run_events(self) -> Iterator[Any]:
        events = self.plugin.run_events
        total = CounterMetricFamily(
            "llmload_run_events", "Run events (docs/prometheus-grafana.md) by kind.", labels=["event", "backend"]
        )
        last = GaugeMetricFamily(
            "llmload_run_event_last_timestamp_seconds",
            "Unix time of the latest run event of each kind (Grafana annotations read it).",
            labels=["event", "backend"],
        )
        for (event, backend), n in sorted(events.counts.items()):
            labels = [event, redact_url(backend)]
            total.add_metric(labels, n)
            last.add_metric(labels, events.last_at[(event, backend)])
        yield total
        yield last
