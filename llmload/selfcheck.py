"""Load-generator self-check: was the client itself the bottleneck of this run?

A busy generator inflates what it measures: a greenlet whose token has arrived
resumes only when the gevent hub gets to it, so every millisecond the process
is late shows up in TTFT and ITL. While a test runs, every process that runs
users (a local run, each worker) samples:

* **CPU**: its own CPU use, percent of one core, once a second (psutil);
* **event-loop lag**: a greenlet sleeps ``LAG_INTERVAL_S`` and records how much
  longer than that it actually slept (HdrHistogram, microseconds): how late a
  runnable greenlet resumes right now;
* **dispatch lag** (open-loop arrivals only) is already in the token store
  (``dispatch_lag_s``: ``t_send - t_intended``) and is read from there;
* **read lateness** (streams with kernel receive stamps, ``llmload.http_adapter``):
  for every read, when it returned minus when the kernel received its data:
  the generator's own delay, measured rather than guessed.

It also removes one known source of lag: once every user has spawned, the
objects that exist then (users, sessions, Locust's own) are frozen out of the
cyclic garbage collector (``gc.freeze()``, undone at test stop), so full
collections stop walking them; with 1,000 users a full collection otherwise
stalls the loop ~40 ms.

Workers ship their samples as a delta in each report (through the plugin's
``wire``, under ``WIRE_KEY``) and the master merges them per worker. At the
end, the results JSON gets a ``generator`` section and the console a verdict.
A run is **not trustworthy** when any of these holds (docs/performance.md; the
rules are ``llmload.selfcheck_rules``, which needs no Locust):

* a process spent more than ``CPU_SATURATED_SHARE`` (25%) of its samples above
  ``--llm-selfcheck-cpu`` (90%) of one core;
* a process's event-loop lag p99 exceeds ``--llm-selfcheck-lag-ms`` (10 ms);
* the open-loop dispatch lag p99 exceeds ``--llm-selfcheck-lag-ms`` as well
  (requests left later than their schedule).

When every request of the run has kernel receive stamps, a busy CPU no longer
inflates TTFT and ITL by itself (the stamps are the kernel's), so CPU
saturation is reported as a note, not a reason; the run is then not
trustworthy when a process's read lateness p99 exceeds
``--llm-selfcheck-lateness-ms`` (10 ms, one inter-token gap of a fast model),
or, as before, its event-loop lag p99 exceeds ``--llm-selfcheck-lag-ms``: a
read later than one gap finds the events queued behind it coalesced by the
kernel into one segment with the newest stamp (docs/metrics.md, Clocks), and
since a read's lateness is measured against that newest stamp, the delay of
the coalesced ones shows only in the loop's lag.

When CPU saturation is found, ``generator.workers_to_add`` says how many
generator processes (workers) to add so that each stays under 75% of a core
(``selfcheck_rules.workers_to_add``), and the master logs it.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import TYPE_CHECKING, Any

import gevent
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from llmload.errors import ConfigError
from llmload.extension import Extension, exit_on_config_error
from llmload.record import RequestRecord
from llmload.selfcheck_rules import (
    DEFAULT_CPU_PERCENT,
    DEFAULT_LAG_MS,
    DEFAULT_LATENESS_MS,
    LIVE_WARN_AFTER,
    WORKER_TARGET_CPU_PERCENT,
    ProcessStats,
    Thresholds,
    cpu_findings,
    judge,
    new_lag_distribution,
    oversleep_s,
    tail_summary,
    workers_to_add,
)

if TYPE_CHECKING:
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

logger = logging.getLogger("llmload")

WIRE_KEY = "llmload_selfcheck"
LAG_INTERVAL_S = 0.05
CPU_INTERVAL_S = 1.0


def add_arguments(parser: Any) -> None:
    """Register the self-check's thresholds."""
    parser.add_argument(
        "--llm-selfcheck-cpu",
        env_var="LOCUST_LLM_SELFCHECK_CPU",
        default=str(DEFAULT_CPU_PERCENT),
        help="Self-check: a generator process above this CPU percent of one core is saturated",
    )
    parser.add_argument(
        "--llm-selfcheck-lateness-ms",
        env_var="LOCUST_LLM_SELFCHECK_LATENESS_MS",
        default=str(DEFAULT_LATENESS_MS),
        help="Self-check with kernel receive stamps: a read lateness p99 above this marks a run untrustworthy",
    )
    parser.add_argument(
        "--llm-selfcheck-lag-ms",
        env_var="LOCUST_LLM_SELFCHECK_LAG_MS",
        default=str(DEFAULT_LAG_MS),
        help="Self-check: event-loop (and open-loop dispatch) lag p99 above this marks a run untrustworthy",
    )


class SelfCheck(Extension):
    """The self-check of one Locust process: samplers where users run, the merged view where results are built."""

    results_key = "generator"

    def __init__(self, plugin: LLMLoadPlugin, thresholds: Thresholds) -> None:
        self.plugin = plugin
        self.thresholds = thresholds
        self.local = ProcessStats(thresholds)  # this process's samples (a delta on a worker)
        self.processes: dict[str, ProcessStats] = {}  # master: per worker; local run: "local"
        self._sampler: gevent.Greenlet | None = None
        self._warned = False
        self._frozen = False

    # -- sampling (local and worker processes) ---------------------------------------------

    def start(self) -> None:
        """Start sampling this process (idempotent)."""
        if self._sampler is None:
            self._sampler = self.plugin.supervisor.spawn("self-check sampler", self._sample_forever)

    def stop(self) -> None:
        """Stop sampling (what was sampled stays until shipped or summarised)."""
        if self._sampler is not None:
            self._sampler.kill(block=False)
            self._sampler = None

    def _sample_forever(self) -> None:
        cpu = self.plugin.cpu
        cpu.sample()
        perf_counter, sleep, interval = time.perf_counter, gevent.sleep, LAG_INTERVAL_S
        next_cpu = perf_counter() + CPU_INTERVAL_S
        while True:
            t0 = perf_counter()
            sleep(interval)
            t1 = perf_counter()
            self.local.lag.record(oversleep_s(asked_s=interval, slept_s=t1 - t0))
            # By the clock, not by ticks: a saturated loop ticks late, and must still be sampled.
            if t1 >= next_cpu:
                next_cpu = t1 + CPU_INTERVAL_S
                streak = self.local.cpu.add(cpu.sample())
                if streak >= LIVE_WARN_AFTER and not self._warned:
                    self._warned = True
                    logger.warning(
                        "llmload: this load-generator process has used over %g%% of a core for %d samples in a "
                        "row: measured TTFT/ITL include client-side delay (add --processes or workers)",
                        self.thresholds.cpu_percent,
                        streak,
                    )

    # -- events ---------------------------------------------------------------------------

    def observe(self, record: RequestRecord) -> None:
        """Fold a finished request's read lateness into this process's samples."""
        if record.read_lateness_s:
            self.local.lateness.record_many(record.read_lateness_s)

    def _on_test_start(self, **_kwargs: Any) -> None:
        self.local.reset()
        self.processes = {}
        self._warned = False
        if not self.plugin.is_master:
            self.start()

    def _on_spawning_complete(self, **_kwargs: Any) -> None:
        # What exists once every user is up lives for the whole run: move it out of the cyclic
        # collector's generations (as Locust does before --processes forks), so that a full
        # collection no longer walks it and stalls every stream for tens of milliseconds.
        # Once per test, and undone at test stop, so that users stopped later in a run (a
        # capacity search's steps) are collected after it.
        if not self.plugin.is_master and not self._frozen:
            gc.freeze()
            self._frozen = True

    def _on_test_stop(self, **_kwargs: Any) -> None:
        self.stop()
        if self._frozen:
            gc.unfreeze()
            self._frozen = False

    def ship(self) -> dict[str, Any]:
        """This worker's samples since the last report (then a new delta starts)."""
        if self._sampler is None and getattr(self.plugin.environment.runner, "state", None) in (
            STATE_SPAWNING,
            STATE_RUNNING,
        ):
            self.start()  # a worker that joined a running test missed test_start
        wire = self.local.to_wire()
        self.local.reset()
        return wire

    def merge(self, client_id: str, wire: Any) -> None:
        """Fold a worker's samples into its own figures."""
        stats = ProcessStats(self.thresholds)
        stats.merge_wire(wire)
        known = self.processes.get(client_id)
        if known is None:
            self.processes[client_id] = stats
        else:
            known.merge_wire(wire)

    def _on_quit(self, **_kwargs: Any) -> None:
        self.stop()
        if self.plugin.is_worker or self.plugin.started_at is None:
            return
        summary = self.summary()
        add = summary["workers_to_add"]
        if add and self.plugin.is_master:
            logger.warning(
                "llmload: the workers were CPU-saturated: add at least %d worker(s) to the %d this run had "
                "(each worker under %g%% of a core; results generator.workers_to_add, docs/kubernetes.md)",
                add,
                len(summary["cpu_percent"]),
                WORKER_TARGET_CPU_PERCENT,
            )
        print(self.console_line(summary), flush=True)

    # -- verdict ----------------------------------------------------------------------------

    def _all_processes(self) -> dict[str, ProcessStats]:
        if self.plugin.is_master:
            return self.processes
        return {"local": self.local}

    def results_section(self) -> dict[str, Any]:
        return self.summary()

    def lateness_by_process(self) -> dict[str, dict[str, float | int | None]]:
        """Each load-generator process's read lateness so far: p50, p99, max, count."""
        return {name: tail_summary(stats.lateness) for name, stats in self._all_processes().items()}

    def verdict_by_process(self) -> dict[str, tuple[bool, float | None]]:
        """Each load-generator process's verdict so far, by the rules of ``judge``: (trustworthy, lag p99).

        What the exporter shows live per worker; the run's verdict (``summary``) also weighs the
        open-loop dispatch lag, which belongs to no one process.
        """
        counters = self.plugin.store.counter_totals()
        finished, kernel = counters["ok"] + counters["failed"], counters["kernel_clock_requests"]
        kernel_clock = bool(kernel) and kernel == finished
        out: dict[str, tuple[bool, float | None]] = {}
        for name, stats in sorted(self._all_processes().items()):
            proc = stats.summary()
            trustworthy, _reasons = judge({name: proc}, None, self.thresholds, kernel_clock=kernel_clock)
            out[name] = (trustworthy, proc["loop_lag_s"]["p99"])
        return out

    def summary(self) -> dict[str, Any]:
        """Return the results JSON's ``generator`` section."""
        processes = {name: stats.summary() for name, stats in sorted(self._all_processes().items())}
        merged, lateness = new_lag_distribution(), new_lag_distribution()
        for stats in self._all_processes().values():
            merged.merge(stats.lag)
            lateness.merge(stats.lateness)
        counters = self.plugin.store.counter_totals()
        finished, kernel = counters["ok"] + counters["failed"], counters["kernel_clock_requests"]
        clock = "kernel" if kernel and kernel == finished else "mixed" if kernel else "user"
        dispatch = self.plugin.store.merged("dispatch_lag_s")
        dispatch_summary: dict[str, float | None] | None = None
        if dispatch.count:
            dispatch_summary = {"p50": dispatch.percentile(50), "p99": dispatch.percentile(99), "max": dispatch.max}
        dispatch_p99 = dispatch_summary["p99"] if dispatch_summary is not None else None
        trustworthy, reasons = judge(processes, dispatch_p99, self.thresholds, kernel_clock=clock == "kernel")
        return {
            "cpu_percent": {name: proc["cpu_percent"] for name, proc in processes.items()},
            "loop_lag_s": {
                "p50": merged.percentile(50),
                "p99": merged.percentile(99),
                "max": merged.max if merged.count else None,
            },
            "loop_lag_by_process_s": {name: proc["loop_lag_s"] for name, proc in processes.items()},
            "dispatch_lag_s": dispatch_summary,
            "clock": clock,
            "read_lateness_s": tail_summary(lateness),
            "read_lateness_by_process_s": {name: proc["read_lateness_s"] for name, proc in processes.items()},
            "trustworthy": trustworthy,
            "reasons": reasons,
            "notes": cpu_findings(processes, self.thresholds) if clock == "kernel" else [],
            "workers_to_add": workers_to_add(processes, self.thresholds),
            "thresholds": self.thresholds.as_dict(),
        }

    def console_line(self, summary: dict[str, Any] | None = None) -> str:
        """Return the end-of-run verdict for the console."""
        s = summary or self.summary()
        cpu_max = max((c["max"] for c in s["cpu_percent"].values() if c["max"] is not None), default=None)
        lag = s["loop_lag_s"]["p99"]
        figures = (f"CPU max {cpu_max:.0f}% of a core" if cpu_max is not None else "no CPU samples") + (
            f", event-loop lag p99 {lag * 1e3:.1f} ms" if lag is not None else ""
        )
        late = s.get("read_lateness_s") or {}
        if late.get("count"):
            p50, p99, top = (late[k] * 1e3 for k in ("p50", "p99", "max"))
            figures += f", read lateness p50/p99/max {p50:.2f}/{p99:.2f}/{top:.2f} ms ({s.get('clock')} clock)"
        if s["trustworthy"]:
            notes = s.get("notes") or []
            tail = "".join(f"\n  note (kernel stamps keep the figures true): {note}" for note in notes)
            return f"llmload: generator self-check OK ({figures}){tail}"
        return (
            "llmload: WARNING: the load generator was a bottleneck; latencies are inflated and the results "
            f"are marked trustworthy: false ({figures}):\n  - " + "\n  - ".join(s["reasons"])
        )


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    """Attach the self-check to a plugin: samplers on local/worker processes, the verdict on master/local."""
    parsed = environment.parsed_options
    try:
        thresholds = Thresholds.from_parsed(parsed) if parsed is not None else Thresholds()
    except ConfigError as exc:
        exit_on_config_error(exc)
    check = plugin.extensions.add(SelfCheck(plugin, thresholds))
    events = environment.events
    events.test_start.add_listener(check._on_test_start)
    events.spawning_complete.add_listener(check._on_spawning_complete)
    events.test_stop.add_listener(check._on_test_stop)
    events.quit.add_listener(check._on_quit)
    plugin.wire.add(WIRE_KEY, what="self-check report", ship=check.ship, merge=check.merge)
    if not plugin.is_master:
        plugin.observe_records(check.observe)
