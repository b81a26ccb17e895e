"""llmload's Locust plugin: options, the token metrics store, and the run's lifecycle.

``LLMLoadPlugin(environment).register()`` attaches one plugin to a Locust
environment (``llmload.hooks`` does it on Locust's ``init`` event). Data flows
one way: the users' client hands each finished ``RequestRecord`` to
``record``; a local run folds it into ``store``; a worker folds it into its
store, which is its delta: the ``wire`` ships and resets it in every report
and once more at the end; the master merges every delta. At ``quit`` (after
the master's last worker reports), the master or local process builds the
results document, prints the token table, writes the results JSON and hands
the document to every extension.

Extensions plug in through three declared members: ``extensions`` (the typed
registry, ``llmload.extension``), ``wire`` (worker-to-master data,
``llmload.wire``) and ``supervisor`` (background greenlets,
``llmload.supervisor``).
"""

from __future__ import annotations

import logging
import os
import random
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import gevent
from locust.runners import STATE_MISSING, STATE_RUNNING, STATE_SPAWNING, STATE_STOPPED, MasterRunner, WorkerRunner

from llmload import http_adapter, results
from llmload.client import HostCapabilities
from llmload.cpu import CpuMeter
from llmload.distribution import DISTRIBUTIONS
from llmload.errors import ConfigError
from llmload.extension import Registry, exit_on_config_error
from llmload.metrics import MetricsStore
from llmload.options import LLMOptions, Range
from llmload.record import RequestRecord
from llmload.render.table import format_table
from llmload.run_events import RunEvents
from llmload.streamed import StreamsInFlight
from llmload.supervisor import Supervisor, pause
from llmload.timeline import INTERVAL_DISTRIBUTIONS as TIMELINE_DISTRIBUTIONS
from llmload.timeline import WINDOW as TIMELINE_WINDOW
from llmload.timeline import Timeline
from llmload.windows import OpenWindows, Window
from llmload.wire import Wire

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from locust.env import Environment

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
WINDOW_FEED_INTERVAL_S = 0.25
WINDOW_FEED_BATCH = 8


def get_plugin(environment: Environment) -> LLMLoadPlugin:
    """Return the plugin registered on ``environment``."""
    plugin = getattr(environment, "llmload", None)
    if not isinstance(plugin, LLMLoadPlugin):
        raise ConfigError("llmload is not registered on this Locust environment: import llmload in the locustfile")
    return plugin


class LLMLoadPlugin:
    """Token metrics and run bookkeeping for one Locust process."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        """The Locust environment this plugin serves."""
        self.store = MetricsStore()
        """Token metrics: the whole run (master, local) or the unreported delta (worker)."""
        self.extensions = Registry()
        """The extensions that registered an object (``llmload.extension``)."""
        self.wire = Wire(environment)
        """Worker-to-master data of llmload and its extensions."""
        self.supervisor = Supervisor(environment)
        """Every background greenlet of llmload in this process."""
        self.cpu = CpuMeter()
        """This process's CPU use (sampled by the self-check)."""
        self.windows = OpenWindows(slo_of=lambda: self.store)
        """Open windows: named stores that receive the same records or merged deltas as ``store``."""
        self.timeline = Timeline()
        """The run's points over time (the results' ``timeline``)."""
        self.streams = StreamsInFlight()
        """This process's requests whose streams are open: their tokens count as they arrive."""
        self.run_events = RunEvents()
        """What changed during the run (master or local): start, stop, users, workers lost..."""
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.peak_users = 0
        self.seen_workers: set[str] = set()
        self.missing_workers: dict[str, float] = {}
        self.finished = False
        """The run's results are built (or the run was aborted before it started)."""
        self.generator_gauges: dict[str, dict[str, float]] = {}
        """Latest gauges of each load-generator process (``in_flight``, ``cpu_percent``) by worker id."""
        self.backend_gauges: dict[str, dict[str, dict[str, float]]] = {}
        """Latest users and requests in flight per backend label, of each load-generator process."""
        self.steered_think_time: Range | None = None
        """A think time set while the test runs (``llmload.steering``): every user's, from its next wait."""
        self._options: LLMOptions | None = None
        self._option_defaults: dict[str, str] = {}
        self._capabilities: dict[str, HostCapabilities] = {}
        self._user_seq = 0
        self._in_flight = 0
        self._sampler: gevent.Greenlet | None = None
        self._awaiting_final: set[str] = set()
        self._record_observers: list[Callable[[RequestRecord], None]] = []
        self._target_users: int | None = None
        self._feeder: gevent.Greenlet | None = None

    # -- wiring --------------------------------------------------------------------------

    def register(self) -> LLMLoadPlugin:
        """Listen to the environment's events; the plugin becomes ``environment.llmload``."""
        environment = self.environment
        # The one attribute llmload sets on another library's object: Locust's environment is where
        # users, shapes and extensions find the plugin (``get_plugin``).
        environment.llmload = self  # type: ignore[attr-defined]
        events = environment.events
        events.test_start.add_listener(self._on_test_start)
        events.test_stop.add_listener(self._on_test_stop)
        events.quit.add_listener(self._on_quit)
        self.wire.add(WIRE_KEY, what="token-metrics report", ship=self._delta_payload, merge=self._merge_delta)
        if self.is_master:
            self.wire.register_message(FLUSH_MESSAGE, self._merge_delta, what="token-metrics report")
        elif self.is_worker:
            self.wire.register_message(STOP_MESSAGE, self._on_stop_request, what="stop request", concurrent=True)
        targets = {getattr(cls, "slo_ttft_of", None) for cls in environment.user_classes} - {None}
        if len(targets) == 1:  # the user classes agree on what the TTFT SLO targets
            self.set_option_default("llm_slo_ttft_of", str(targets.pop()))
        if environment.parsed_options is not None and not self.is_worker:
            try:
                self.load_options()
            except ConfigError as exc:
                exit_on_config_error(exc)
        return self

    @property
    def is_worker(self) -> bool:
        options = self.environment.parsed_options
        return bool(getattr(options, "worker", False)) or isinstance(self.environment.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.environment.runner, MasterRunner)

    # -- options -------------------------------------------------------------------------

    @property
    def options(self) -> LLMOptions:
        """The run's validated options, loaded on first use when ``test_start`` was missed.

        A worker that joins a running test can receive the master's spawn message, and so
        Locust's ``test_start``, before its own ``init`` event registered this plugin.
        """
        if self._options is None:
            self.load_options()
        assert self._options is not None
        return self._options

    def set_options(self, options: LLMOptions) -> None:
        """Use ``options`` for the run (the SLO applies to requests recorded from now on)."""
        self._options = options
        self.store.slo_ttft_s = options.slo_ttft_s
        self.store.slo_ttft_of = options.slo_ttft_of
        self.store.slo_stream_rate_tps = options.slo_stream_rate_tps

    def steer_think_time(self, think_time: Range) -> None:
        """Give every user of this process ``think_time`` from its next wait on (until the next test)."""
        self.steered_think_time = think_time

    def set_option_default(self, name: str, value: str) -> None:
        """Make ``value`` the default of the ``--llm-*`` option parsed as ``name`` (e.g. ``llm_slo_ttft``)."""
        self._option_defaults[name] = value
        if self._options is not None:
            self.load_options()

    def load_options(self) -> None:
        """Validate the ``--llm-*`` options; a bad one raises ``ConfigError``."""
        options = LLMOptions.from_parsed(self.environment.parsed_options, defaults=self._option_defaults)
        if options.results_path:
            results.check_writable(options.results_path)
        self.set_options(options)

    # -- what users call -------------------------------------------------------------------

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

    @contextmanager
    def request_in_flight(self) -> Iterator[None]:
        """Count a request as in flight while the block runs."""
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        """Requests of this process in flight now."""
        return self._in_flight

    def observe_records(self, observer: Callable[[RequestRecord], None]) -> None:
        """Hand every request this process records to ``observer`` too (an extension's per-request figures)."""
        self._record_observers.append(observer)

    def record(self, record: RequestRecord) -> None:
        """Fold one finished request into this process's store, queue it for the open windows, tell the observers.

        Windows get it a moment later (``feed_windows``): when many streams end together (100 users
        whose answers end at once), recording each one into three or four windows at once would add
        that work to the burst, while the streams still running wait.
        """
        self.streams.closed(record)
        self.store.record(record)
        self.windows.queue(record)
        for observer in self._record_observers:
            observer(record)

    # -- windows ------------------------------------------------------------------------------

    def collect_arrived_tokens(self) -> None:
        """Count the output tokens that arrived on open streams since the last call (store and windows)."""
        for key, n in self.streams.collect().items():
            self.store.group(*key).add_arrived_tokens(n)
            for window in self.windows:
                window.store.group(*key).add_arrived_tokens(n)

    def feed_windows(self, *, pause_every: int = 0) -> None:
        """Fold the requests finished since the last call into every open window.

        With ``pause_every``, let other greenlets run after every that many requests (the
        background feeder); without, finish at once (before a window opens, closes or is read).
        """
        self.windows.feed(pause_every=pause_every, pause=pause)

    def window(self, name: str) -> Window | None:
        """The open window ``name``, with every request finished so far in it (None when not open)."""
        return self.windows.get(name)

    def _feed_forever(self) -> None:
        while True:
            gevent.sleep(WINDOW_FEED_INTERVAL_S)
            self.feed_windows(pause_every=WINDOW_FEED_BATCH)

    def open_window(
        self, name: str, *, distributions: Iterable[str] = DISTRIBUTIONS, reuse: MetricsStore | None = None
    ) -> Window:
        """Start a window (``OpenWindows.open``): its store gets everything recorded or merged from now on."""
        return self.windows.open(name, distributions=distributions, reuse=reuse)

    def restart_window(self, name: str) -> Window | None:
        """Start the open window ``name`` again from now, empty, in its own memory (None when not open).

        What a reader that has just taken the window's figures does to begin the next span.
        """
        return self.windows.restart(name)

    def close_window(self, name: str) -> Window | None:
        """Stop collecting the window ``name`` and return it."""
        return self.windows.close(name)

    # -- run control -------------------------------------------------------------------------

    def abort_run(self, *, exit_code: int) -> None:
        """End the run before it measured anything (a target that cannot be reached), with ``exit_code``."""
        self.environment.process_exit_code = exit_code
        self.finished = True
        runner = self.environment.runner
        if runner is not None:
            self.supervisor.spawn("quit", runner.quit)

    # -- events ----------------------------------------------------------------------------

    def _on_test_start(self, environment: Environment, **_kwargs: Any) -> None:
        try:
            self.load_options()
        except ConfigError as exc:
            logger.error("llmload: %s", exc)
            self.abort_run(exit_code=2)
            return
        if self.is_worker:
            return
        host = environment.host
        # With a backends file every user goes to one of its backends (checked by llmload.backends).
        if getattr(environment.parsed_options, "headless", False) and host and not self.options.backends:
            reason = http_adapter.host_reachable(host)
            if reason is not None:
                logger.error("llmload: cannot reach %s: %s", host, reason)
                self.abort_run(exit_code=1)
                return
        self.store.reset()
        self.started_at = time.time()
        self.ended_at = None
        self.peak_users = 0
        self.seen_workers = set()
        self.missing_workers = {}
        self.finished = False
        self.timeline.reset()
        self.steered_think_time = None
        self.run_events.reset()
        self.run_events.emit("test_start")
        self._target_users = None
        self.open_window(TIMELINE_WINDOW, distributions=TIMELINE_DISTRIBUTIONS)
        if self._sampler is None:
            self._sampler = self.supervisor.spawn("run sampler", self._sample_forever)
        if self._feeder is None and not self.is_master:
            self._feeder = self.supervisor.spawn("window feeder", self._feed_forever)

    def _on_test_stop(self, environment: Environment, **_kwargs: Any) -> None:
        runner = environment.runner
        if self.is_worker:
            if runner is not None:
                runner.send_message(FLUSH_MESSAGE, self._delta_payload(final=True))
            return
        if isinstance(runner, MasterRunner) and runner.user_count > 0:
            self._collect_final_deltas(runner)
        self.ended_at = time.time()
        self._sample()
        self._append_timeline_point()
        self.run_events.emit("test_stop")

    def local_gauges(self) -> dict[str, float]:
        """This process's load-generator gauges: in-flight requests, CPU percent of one core."""
        return {"in_flight": float(self._in_flight), "cpu_percent": self.cpu.last_percent}

    def local_backend_gauges(self) -> dict[str, dict[str, float]]:
        """This process's users and requests in flight, by backend label."""
        out: dict[str, dict[str, float]] = {}
        runner = self.environment.runner
        # Locust's own runners find a user as its greenlet's first argument.
        for greenlet in list(getattr(runner, "user_greenlets", None) or ()):
            user = greenlet.args[0] if greenlet.args else None
            label = getattr(getattr(user, "llm", None), "backend", None)
            if isinstance(label, str):
                out.setdefault(label, {"users": 0.0, "in_flight": 0.0})["users"] += 1
        for label, n in self.streams.open_by_backend().items():
            out.setdefault(label, {"users": 0.0, "in_flight": 0.0})["in_flight"] = float(n)
        return out

    def _delta_payload(self, *, final: bool = False) -> dict[str, Any]:
        """This worker's delta: the store since the last report (then a new one starts)."""
        self.collect_arrived_tokens()
        payload = {
            "groups": self.store.to_wire(),
            "gauges": self.local_gauges(),
            "backends": self.local_backend_gauges(),
            "final": final,
        }
        self.store.reset()
        return payload

    def _on_stop_request(self, _sender: str, _data: Any) -> None:
        """Stop this worker's users (they finish their requests) and send the final delta."""
        runner = self.environment.runner
        if runner is None:
            return
        if runner.state != STATE_STOPPED:
            runner.stop()  # fires test_stop, which sends the final delta
        else:
            runner.send_message(FLUSH_MESSAGE, self._delta_payload(final=True))

    def _collect_final_deltas(self, runner: MasterRunner) -> None:
        """Ask workers that still run users to stop, and wait for their final deltas."""
        workers = [c.id for c in (*runner.clients.running, *runner.clients.spawning)]
        self._awaiting_final = set(workers)
        for worker_id in workers:
            runner.send_message(STOP_MESSAGE, None, client_id=worker_id)
        deadline = time.monotonic() + (self.environment.stop_timeout or 0.0) + FINAL_DELTA_GRACE_S
        while self._awaiting_final and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if self._awaiting_final:
            logger.warning(
                "llmload: no final token metrics from worker(s) %s; their last interval is missing",
                ", ".join(sorted(self._awaiting_final)),
            )

    def _merge_delta(self, client_id: str, payload: Any) -> None:
        groups = payload["groups"]
        gauges = {str(k): float(v) for k, v in payload.get("gauges", {}).items()}
        if payload.get("final"):
            self._awaiting_final.discard(client_id)
        if groups:
            self.seen_workers.add(client_id)
        self.store.merge_wire(groups)
        for window in self.windows:
            window.store.merge_wire(groups)
        self.generator_gauges[client_id] = gauges
        self.backend_gauges[client_id] = {
            str(label): {str(k): float(v) for k, v in values.items()}
            for label, values in (payload.get("backends") or {}).items()
        }

    def _on_quit(self, exit_code: int = 0, **_kwargs: Any) -> None:
        self.supervisor.kill_all()
        if self.is_worker or self.started_at is None or self.finished:
            return
        self.finish()

    def finish(self) -> dict[str, Any]:
        """Build the results, print the token table, write the results JSON, hand it to every extension."""
        self.finished = True
        if self._sampler is not None:
            self._sampler.kill(block=False)
            self._sampler = None
        if self._feeder is not None:
            self._feeder.kill(block=False)
            self._feeder = None
        if self.ended_at is None:
            self.ended_at = time.time()
        doc = results.build(self)
        print(format_table(doc), flush=True)
        if self.options.results_path:
            results.write(doc, self.options.results_path)
            print(f"llmload: results written to {os.path.abspath(self.options.results_path)}", flush=True)
        for extension in self.extensions:
            extension.finished(doc)
        return doc

    # -- sampling --------------------------------------------------------------------------

    def _sample_forever(self) -> None:
        while True:
            gevent.sleep(SAMPLE_INTERVAL_S)
            self._sample()
            if self.timeline.tick():
                self._append_timeline_point()

    def _append_timeline_point(self) -> None:
        """Append the run's state now: cumulative counts and the last interval's percentiles."""
        runner = self.environment.runner
        interval = self.window(TIMELINE_WINDOW)
        if runner is None or interval is None:
            return
        self.timeline.append(
            store=self.store, interval=interval.store, gauges=self.generator_gauges, users=runner.user_count
        )
        self.restart_window(TIMELINE_WINDOW)

    def _sample(self) -> None:
        runner = self.environment.runner
        if runner is None:
            return
        self.peak_users = max(self.peak_users, runner.user_count)
        target = getattr(runner, "target_user_count", None)
        if target is not None and target != self._target_users:
            if self._target_users is not None:
                self.run_events.emit("users_changed", detail=f"{self._target_users} -> {target} users")
            self._target_users = target
        if isinstance(runner, MasterRunner):
            for client in runner.clients.values():
                if client.state == STATE_MISSING:
                    if client.id not in self.missing_workers:
                        self.missing_workers[client.id] = time.time()
                        self.run_events.emit("worker_lost", detail=client.id)
                elif client.state in (STATE_SPAWNING, STATE_RUNNING):
                    self.seen_workers.add(client.id)
        else:
            self.collect_arrived_tokens()
            self.seen_workers.add("local")
            self.generator_gauges["local"] = self.local_gauges()
            self.backend_gauges["local"] = self.local_backend_gauges()
