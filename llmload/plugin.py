"""llmload's Locust plugin: options, the token metrics store, and the run's lifecycle.

``LLMLoadPlugin.register(environment)`` attaches one plugin to a Locust
environment (``llmload.hooks`` does it on Locust's ``init`` event). Data flows
one way: the users' client hands each finished ``RequestRecord`` to
``record``; a local run folds it into ``store``; a worker folds it into its
store, which is its delta: ``report_to_master`` ships and resets it every
report and once more at quit; the master merges every delta in
``worker_report``. At ``quit`` (after the master's last worker reports), the
master or local process prints the token table and writes the results JSON.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from typing import Any

import gevent
import psutil

from llmload import results, summary
from llmload.client import HostCapabilities
from llmload.errors import ConfigError
from llmload.metrics import MetricsStore
from llmload.options import LLMOptions
from llmload.record import RequestRecord

logger = logging.getLogger("llmload")

WIRE_KEY = "llmload"
# A headless master quits without sending "stop" to its workers: it sends "quit" and waits
# only 0.5 s for final reports, while each worker first lets its users finish (up to
# --stop-timeout). So the master, in its own test_stop, asks running workers to stop
# (STOP_MESSAGE) and waits for each one's final delta (FLUSH_MESSAGE), which a worker
# also sends whenever its users stop.
FLUSH_MESSAGE = "llmload_delta"
STOP_MESSAGE = "llmload_stop"
FINAL_DELTA_GRACE_S = 10.0
SAMPLE_INTERVAL_S = 2.0
# A timeline longer than this is halved (every other point kept) and then sampled half as often,
# so an hours-long soak test keeps a bounded, evenly spaced history.
MAX_TIMELINE_POINTS = 3600
_TIMELINE_WINDOW = "_timeline"


def get_plugin(environment: Any) -> LLMLoadPlugin:
    """Return the plugin registered on ``environment``."""
    plugin = getattr(environment, "llmload", None)
    if plugin is None:
        raise ConfigError("llmload is not registered on this Locust environment: import llmload in the locustfile")
    return plugin


class LLMLoadPlugin:
    """Token metrics and run bookkeeping for one Locust process."""

    def __init__(self) -> None:
        self.environment: Any = None
        self._options: LLMOptions | None = None
        self.store = MetricsStore()
        self._capabilities: dict[str, HostCapabilities] = {}
        self._user_seq = 0
        self._sampler: gevent.Greenlet | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.peak_users = 0
        self.seen_workers: set[str] = set()
        self.missing_workers: dict[str, float] = {}
        self.finished = False
        # Named stores that receive the same records or merged deltas as ``store`` while open
        # (a capacity-search step, the timeline's current interval).
        self.windows: dict[str, MetricsStore] = {}
        self.timeline: list[dict[str, Any]] = []
        self._timeline_every = 1
        self._ticks = 0
        self.in_flight = 0
        self._awaiting_final: set[str] = set()
        # Latest gauges of each load-generator process: {"in_flight", "cpu_percent", "users"} by worker id.
        self.generator_gauges: dict[str, dict[str, float]] = {}
        self._process = psutil.Process()
        self._process.cpu_percent()

    # -- wiring --------------------------------------------------------------------------

    def register(self, environment: Any) -> LLMLoadPlugin:
        """Attach to ``environment`` and listen to its events."""
        self.environment = environment
        environment.llmload = self
        events = environment.events
        events.test_start.add_listener(self._on_test_start)
        events.test_stop.add_listener(self._on_test_stop)
        events.report_to_master.add_listener(self._on_report_to_master)
        events.worker_report.add_listener(self._on_worker_report)
        events.quit.add_listener(self._on_quit)
        if self.is_master:
            environment.runner.register_message(FLUSH_MESSAGE, self._on_flush_message)
        elif self.is_worker and environment.runner is not None:
            environment.runner.register_message(STOP_MESSAGE, self._on_stop_request, concurrent=True)
        if environment.parsed_options is not None and not self.is_worker:
            self.load_options(exit_on_error=True)
        return self

    @property
    def is_worker(self) -> bool:
        options = self.environment.parsed_options
        return bool(getattr(options, "worker", False)) or type(self.environment.runner).__name__ == "WorkerRunner"

    @property
    def is_master(self) -> bool:
        return type(self.environment.runner).__name__ == "MasterRunner"

    @property
    def options(self) -> LLMOptions:
        """The run's validated options, loaded on first use when ``test_start`` was missed.

        A worker that joins a running test can receive the master's spawn message, and so
        Locust's ``test_start``, before its own ``init`` event registered this plugin.
        """
        if self._options is None:
            self.load_options()
        return self._options

    @options.setter
    def options(self, options: LLMOptions) -> None:
        self._options = options
        self.store.slo_ttft_s = options.slo_ttft_s
        self.store.slo_stream_rate_tps = options.slo_stream_rate_tps

    def load_options(self, *, exit_on_error: bool = False) -> None:
        """Validate the ``--llm-*`` options; a bad one is one error line and exit code 2 at start-up."""
        try:
            options = LLMOptions.from_parsed(self.environment.parsed_options)
            if options.results_path:
                results.check_writable(options.results_path)
        except ConfigError as exc:
            if not exit_on_error:
                raise
            print(f"llmload: error: {exc}", file=sys.stderr)
            sys.exit(2)
        self.options = options

    def capabilities(self, host: str) -> HostCapabilities:
        """Return what is known of ``host``, shared by every user of this process."""
        caps = self._capabilities.get(host)
        if caps is None:
            caps = self._capabilities[host] = HostCapabilities()
        return caps

    def next_user_seed(self) -> int:
        """Return a distinct, reproducible seed for the next user of this process."""
        self._user_seq += 1
        worker_index = getattr(self.environment.runner, "worker_index", 0) or 0
        return random.Random(f"{self.options.seed}:{worker_index}:{self._user_seq}").getrandbits(63)

    def record(self, record: RequestRecord) -> None:
        """Fold one finished request into this process's store (and any open window)."""
        self.store.record(record)
        for window in self.windows.values():
            window.record(record)

    def open_window(self, name: str) -> MetricsStore:
        """Start collecting a separate store of everything recorded or merged from now on."""
        window = MetricsStore(slo_ttft_s=self.store.slo_ttft_s, slo_stream_rate_tps=self.store.slo_stream_rate_tps)
        self.windows[name] = window
        return window

    def close_window(self, name: str) -> MetricsStore | None:
        """Stop collecting the window ``name`` and return it."""
        return self.windows.pop(name, None)

    # -- events ----------------------------------------------------------------------------

    def _on_test_start(self, environment: Any, **_kwargs: Any) -> None:
        try:
            self.load_options()
        except ConfigError as exc:
            logger.error("llmload: %s", exc)
            environment.process_exit_code = 2
            if environment.runner is not None:
                gevent.spawn(environment.runner.quit)
            return
        if self.is_worker:
            return
        if getattr(environment.parsed_options, "headless", False) and not self._host_reachable(environment.host):
            environment.process_exit_code = 1
            self.finished = True
            if environment.runner is not None:
                gevent.spawn(environment.runner.quit)
            return
        self.store.reset()
        self.started_at = time.time()
        self.ended_at = None
        self.peak_users = 0
        self.seen_workers = set()
        self.missing_workers = {}
        self.finished = False
        self.timeline = []
        self._timeline_every, self._ticks = 1, 0
        self.open_window(_TIMELINE_WINDOW)
        if self._sampler is None:
            self._sampler = gevent.spawn(self._sample_forever)

    @staticmethod
    def _host_reachable(host: str | None) -> bool:
        """Check once, before users start, that the target host accepts connections."""
        if not host:
            return True
        from geventhttpclient import HTTPClient
        from geventhttpclient.url import URL

        try:
            client = HTTPClient.from_url(URL(host), connection_timeout=5, network_timeout=5)
            try:
                client.get(URL(host).request_uri or "/").read()
            finally:
                client.close()
        except Exception as exc:
            reason = str(exc).split("\n", 1)[0] or type(exc).__name__
            logger.error("llmload: cannot reach %s: %s", host, reason)
            return False
        return True

    def _on_test_stop(self, environment: Any, **_kwargs: Any) -> None:
        if self.is_worker:
            if environment.runner is not None:
                environment.runner.send_message(FLUSH_MESSAGE, self._delta_payload(final=True))
            return
        if self.is_master and environment.runner.user_count > 0:
            self._collect_final_deltas(environment)
        self.ended_at = time.time()
        self._sample()
        self._append_timeline_point()

    def local_gauges(self) -> dict[str, float]:
        """This process's load-generator gauges: in-flight requests, CPU percent of one core."""
        return {"in_flight": self.in_flight, "cpu_percent": self._process.cpu_percent()}

    def _delta_payload(self, *, final: bool = False) -> dict[str, Any]:
        """Ship this worker's delta: the store since the last report, then start a new one."""
        payload = {"groups": self.store.to_wire(), "gauges": self.local_gauges(), "final": final}
        self.store.reset()
        return payload

    def _on_stop_request(self, environment: Any, **_kwargs: Any) -> None:
        """Stop this worker's users (they finish their requests) and send the final delta."""
        runner = environment.runner
        if runner.state != "stopped":
            runner.stop()  # fires test_stop, which sends the final delta
        else:
            runner.send_message(FLUSH_MESSAGE, self._delta_payload(final=True))

    def _collect_final_deltas(self, environment: Any) -> None:
        """Ask workers that still run users to stop, and wait for their final deltas."""
        runner = environment.runner
        workers = [c.id for c in (*runner.clients.running, *runner.clients.spawning)]
        self._awaiting_final = set(workers)
        for worker_id in workers:
            runner.send_message(STOP_MESSAGE, None, client_id=worker_id)
        deadline = time.monotonic() + (environment.stop_timeout or 0.0) + FINAL_DELTA_GRACE_S
        while self._awaiting_final and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if self._awaiting_final:
            logger.warning(
                "llmload: no final token metrics from worker(s) %s; their last interval is missing",
                ", ".join(sorted(self._awaiting_final)),
            )

    def _on_report_to_master(self, client_id: str, data: dict, **_kwargs: Any) -> None:
        data[WIRE_KEY] = self._delta_payload()

    def _on_worker_report(self, client_id: str, data: dict, **_kwargs: Any) -> None:
        payload = data.get(WIRE_KEY)
        if payload is not None:
            self._merge_payload(client_id, payload)

    def _on_flush_message(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        if isinstance(msg.data, dict):
            self._merge_payload(msg.node_id, msg.data)

    def _merge_payload(self, client_id: str, payload: dict[str, Any]) -> None:
        try:
            if payload.get("final"):
                self._awaiting_final.discard(client_id)
            if payload["groups"]:
                self.seen_workers.add(client_id)
            self.store.merge_wire(payload["groups"])
            for window in self.windows.values():
                window.merge_wire(payload["groups"])
            self.generator_gauges[client_id] = {k: float(v) for k, v in payload.get("gauges", {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.warning("llmload: ignored a malformed token-metrics report from worker %s (%s)", client_id, exc)

    def _on_quit(self, exit_code: int = 0, **_kwargs: Any) -> None:
        if self.is_worker or self.started_at is None or self.finished:
            return
        self.finish()

    def finish(self) -> dict[str, Any]:
        """Print the token table and write the results JSON; return the results."""
        self.finished = True
        if self._sampler is not None:
            self._sampler.kill(block=False)
            self._sampler = None
        if self.ended_at is None:
            self.ended_at = time.time()
        doc = results.build(self)
        print(summary.format_table(doc), flush=True)
        if self.options.results_path:
            results.write(doc, self.options.results_path)
            print(f"llmload: results written to {os.path.abspath(self.options.results_path)}", flush=True)
        return doc

    # -- sampling --------------------------------------------------------------------------

    def _sample_forever(self) -> None:
        while True:
            gevent.sleep(SAMPLE_INTERVAL_S)
            self._sample()
            self._ticks += 1
            if self._ticks % self._timeline_every == 0:
                self._append_timeline_point()

    def _append_timeline_point(self) -> None:
        """Append the run's state now: cumulative counts and the last interval's percentiles."""
        runner = self.environment.runner
        interval = self.windows.get(_TIMELINE_WINDOW)
        if runner is None or interval is None:
            return
        self.open_window(_TIMELINE_WINDOW)
        totals = dict.fromkeys(("ok", "failed", "output_tokens", "slo_met"), 0)
        for group in self.store.groups.values():
            for name in totals:
                totals[name] += group.counters[name]
        dists = interval.total().dists
        gauges = self.generator_gauges.values()
        self.timeline.append(
            {
                "t": round(time.time(), 3),
                "users": runner.user_count,
                "in_flight": sum(g.get("in_flight", 0) for g in gauges),
                "generator_cpu_percent": max((g.get("cpu_percent", 0) for g in gauges), default=0.0),
                "requests_ok": totals["ok"],
                "requests_failed": totals["failed"],
                "output_tokens": totals["output_tokens"],
                "slo_met": totals["slo_met"],
                "ttft_p50_s": dists["ttft_s"].percentile(50),
                "ttft_p99_s": dists["ttft_s"].percentile(99),
                "itl_p50_s": dists["itl_s"].percentile(50),
                "stream_rate_p50_tps": dists["stream_rate_tps"].percentile(50),
            }
        )
        if len(self.timeline) > MAX_TIMELINE_POINTS:
            self.timeline = self.timeline[::2]
            self._timeline_every *= 2

    def _sample(self) -> None:
        runner = self.environment.runner
        if runner is None:
            return
        self.peak_users = max(self.peak_users, runner.user_count)
        if self.is_master:
            for client in runner.clients.values():
                if client.state == "missing":
                    self.missing_workers.setdefault(client.id, time.time())
                elif client.state in ("spawning", "running"):
                    self.seen_workers.add(client.id)
        else:
            self.seen_workers.add("local")
            self.generator_gauges["local"] = self.local_gauges()
