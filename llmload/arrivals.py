"""Open-loop arrivals: requests on a seeded schedule, whatever the server's speed.

With ``--llm-arrival poisson|constant|gamma --llm-rate R`` (or ``--llm-rate-profile``) the
run sends R requests per second in total; with ``--llm-trace FILE`` it sends the trace's
requests at their recorded times. Every process computes the same global schedule
(``llmload.schedule``) and sends the arrivals dealt to its slot: worker slot ``i`` of ``N``
(ordered by Locust's worker index). When the number of workers changes, the master deals
again from the schedule's current offset (custom message ``llmload_arrivals``): the new
deal takes over at ``t0``, ``HANDOVER_S`` later, when each process stops its old deal, so
each arrival is sent by one process at most. A change of rate starts a new schedule.

In each process one greenlet keeps the schedule (from the moment the process
has started its users) and hands each arrival to an idle user (the Locust
users are the pool: ``-u`` is the most requests in flight at once). A
request therefore never waits for a previous one on the same user; if every
user is busy when an arrival is due, it waits for the first user to become
free, and is skipped (counted, never sent) if none is free within
``SKIP_AFTER_S``. Each request carries its scheduled time as
``RequestRecord.t_intended``: ``dispatch_lag_s = t_send - t_intended``, and
TTFT and E2E are also measured from the intended time.

At the end, the results' ``arrivals`` section holds the counts, the lag and
the from-intended latencies, and a ``warning`` (also logged once) when the
generator could not keep the schedule: any skipped arrival, or a dispatch-lag
p99 above ``LAG_WARN_P99_S``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from locust.runners import MasterRunner

from llmload import schedule
from llmload.extension import Extension
from llmload.open_loop import (
    HANDOVER_S,
    SKIP_AFTER_S,
    ArrivalExecutor,
    ArrivalStats,
    Assignment,
)
from llmload.record import RequestRecord
from llmload.trace_replay import trace_of
from llmload.traces import Trace

if TYPE_CHECKING:
    import gevent
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

    Spawn = Callable[..., gevent.Greenlet]

logger = logging.getLogger("llmload")

MESSAGE = "llmload_arrivals"
WIRE_KEY = "llmload_arrivals"
#: A dispatch-lag p99 above this (seconds) means the generator could not keep the schedule.
LAG_WARN_P99_S = 0.1
#: After a trace's last request is due, the test stops once nothing is in flight this long after.
TRACE_DRAIN_S = 4.0


class Arrivals(Extension):
    """llmload's open-loop coordinator of one Locust process (``plugin.extensions.get(Arrivals)``)."""

    results_key = "arrivals"

    def __init__(self, environment: Environment, plugin: LLMLoadPlugin) -> None:
        self.environment = environment
        self.plugin = plugin
        self.delta = ArrivalStats()  # this process's unreported figures
        self.total = ArrivalStats()  # merged figures (master or local)
        self.executor = ArrivalExecutor(self.delta, spawn=plugin.supervisor.spawn, trace=self.trace)
        self.rate_override: float | None = None
        self._epoch = 0
        self._slots_key: tuple[str, ...] | None = None
        self._running = False
        self._warned = False
        self.deals: list[tuple[float, float, schedule.ScheduleSpec]] = []
        """The master's deals: (t0 wall, schedule time at t0, spec), to count the arrivals due."""

    # -- options ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.plugin.options.arrival != "closed"

    @property
    def rate_rps(self) -> float | None:
        return self.rate_override if self.rate_override is not None else self.plugin.options.rate_rps

    # -- assignment --------------------------------------------------------------------------

    def trace(self) -> Trace | None:
        """The run's trace (trace replay), read once per process."""
        return trace_of(self.plugin.options) if self.plugin.options.arrival == "trace" else None

    def _spec(self) -> schedule.ScheduleSpec:
        options = self.plugin.options
        return schedule.ScheduleSpec(
            mode=options.arrival,
            rate_rps=float(self.rate_rps or 0.0),
            burstiness=options.burstiness,
            profile="" if self.rate_override is not None else options.rate_profile,
            seed=options.seed,
            speed=options.trace_speed,
        )

    def _next_deal(self, *, restart: bool) -> tuple[float, float, schedule.ScheduleSpec]:
        """The next deal's (t0, schedule time at t0, spec): the same schedule goes on unless it changed."""
        spec, now = self._spec(), time.time()
        if self.deals and not restart and self.deals[-1][2] == spec:
            t0_prev, start_prev, _spec = self.deals[-1]
            t0 = now + HANDOVER_S
            return t0, start_prev + (t0 - t0_prev), spec
        # Workers get a deal by message: it starts once every one has it.
        distributed = isinstance(self.environment.runner, MasterRunner)
        return (now + HANDOVER_S if self.deals or distributed else now), 0.0, spec

    def _assignment(self, slot: int, slots: int, deal: tuple[float, float, schedule.ScheduleSpec]) -> Assignment:
        t0, start_s, spec = deal
        return Assignment(
            self._epoch,
            spec.mode,
            spec.rate_rps,
            slot,
            slots,
            t0,
            spec.seed,
            start_s=start_s,
            burstiness=spec.burstiness,
            profile=spec.profile,
            speed=spec.speed,
        )

    def redistribute(self, *, force: bool = False, restart: bool = False) -> None:
        """Deal the schedule to the active processes again (master), from where it is; ``restart``: anew."""
        if not (self._running and self.enabled):
            return
        runner = self.environment.runner
        if not isinstance(runner, MasterRunner):
            if self.deals and not restart and not force:
                return
            self._epoch += 1
            deal = self._next_deal(restart=restart)
            self.deals.append(deal)
            self.executor.assign(self._assignment(0, 1, deal))
            return
        nodes = runner.clients.ready + runner.clients.spawning + runner.clients.running
        ids = tuple(sorted((n.id for n in nodes), key=runner.get_worker_index))
        if not ids or (ids == self._slots_key and not force):
            return
        self._slots_key = ids
        self._epoch += 1
        deal = self._next_deal(restart=restart)
        self.deals.append(deal)
        for slot, client_id in enumerate(ids):
            runner.send_message(MESSAGE, self._assignment(slot, len(ids), deal).to_wire(), client_id=client_id)
        logger.debug(
            "llmload: open-loop rate %.3g/s divided among %d workers (epoch %d)", self.rate_rps, len(ids), self._epoch
        )

    def set_rate(self, rate_rps: float) -> None:
        """Change the whole test's rate (the capacity search's rate mode)."""
        previous = self.rate_rps
        self.rate_override = rate_rps
        if previous != rate_rps:
            self.plugin.run_events.emit("rate_changed", detail=f"{previous or 0:g} -> {rate_rps:g} requests/s")
        self.redistribute(force=True, restart=True)

    def wait_for_arrival(self) -> tuple[float, int]:
        """Block a user until its next arrival; return its intended time (perf counter) and global index."""
        return self.executor.wait()

    def observe(self, record: RequestRecord) -> None:
        self.delta.observe(record)

    # -- events ------------------------------------------------------------------------------

    def _on_assignment(self, _sender: str, data: Any) -> None:
        self.executor.assign(Assignment(**data))

    def _on_test_start(self, environment: Environment, **_kwargs: Any) -> None:
        try:
            enabled = self.enabled
        except Exception:  # bad options: the plugin reports them
            return
        if not enabled:
            return
        if not self.plugin.is_worker:
            self.total = ArrivalStats()
            self.delta = self.executor.stats = ArrivalStats()
            self._running, self._slots_key, self._warned = True, None, False
            self.deals = []
            if self.plugin.options.arrival != "trace":
                self.redistribute(force=True)

    def _on_spawning_complete(self, **_kwargs: Any) -> None:
        self.executor.pool_ready.set()
        # A trace starts once every user exists, so that none of its requests is due before.
        if not self.plugin.is_worker and self._running and self.plugin.options.arrival == "trace" and not self.deals:
            self.redistribute(force=True)
            self.plugin.supervisor.spawn("end of trace", self._end_of_trace)

    def _end_of_trace(self) -> None:
        """Stop the test once the trace's last request is due and no request is in flight any more."""
        import gevent

        trace = self.trace()
        if trace is None:
            return
        last = trace.requests[-1].at_s / self.plugin.options.trace_speed
        last_due: float | None = None
        limit = self.plugin.options.stream_timeout_s + SKIP_AFTER_S + 10
        while self._running:
            t0, start_s, _spec = self.deals[-1]
            wait = t0 + (last - start_s) - time.time()
            if wait > 0:
                gevent.sleep(min(wait, 1.0))
                continue
            now = time.monotonic()
            last_due = last_due or now
            # Workers report requests in flight every few seconds: trust a 0 once a report came since.
            in_flight = sum(g.get("in_flight", 0) for g in self.plugin.generator_gauges.values())
            if (in_flight == 0 and now - last_due > TRACE_DRAIN_S) or now - last_due > limit:
                break
            gevent.sleep(0.5)
        if not self._running:
            return
        logger.info("llmload: the trace's last request has finished; stopping the test")
        self.plugin.run_events.emit("trace_ended", detail=f"{len(trace.requests)} requests")
        runner = self.environment.runner
        if runner is None:
            return
        if getattr(self.environment.parsed_options, "headless", False):
            runner.quit()
        else:
            runner.stop()

    def _on_test_stopping(self, **_kwargs: Any) -> None:
        # Users waiting for an arrival stop at once instead of waiting out --stop-timeout.
        from locust.exception import StopUser

        self._running = False
        self.executor.stop(release=StopUser())

    def _on_test_stop(self, environment: Environment, **_kwargs: Any) -> None:
        self._on_test_stopping()
        self.executor.pool_ready.clear()

    def _on_worker_change(self, **_kwargs: Any) -> None:
        # Locust fires worker_connect before it adds the worker to runner.clients: divide the rate
        # again once it has.
        self.plugin.supervisor.spawn("open-loop redistribution", self.redistribute)

    def ship(self) -> dict[str, Any] | None:
        """This worker's figures since the last report (None: nothing new), then a new delta starts."""
        if self.delta.is_empty():
            return None
        wire = self.delta.to_wire()
        self.delta = self.executor.stats = ArrivalStats()
        return wire

    def merge(self, _client_id: str, wire: Any) -> None:
        self.total.merge_wire(wire)

    def _on_worker_report(self, **_kwargs: Any) -> None:
        self.redistribute()

    def _on_quit(self, **_kwargs: Any) -> None:
        summary = self.summary() if not self.plugin.is_worker else None
        if summary and summary["warning"] and not self._warned:
            self._warned = True
            logger.warning("llmload: %s", summary["warning"])

    # -- results -----------------------------------------------------------------------------

    def totals(self) -> ArrivalStats:
        """The merged figures so far (a local process folds its own delta in first)."""
        if not self.plugin.is_master and not self.delta.is_empty():
            self.total.merge_wire(self.delta.to_wire())
            self.delta = self.executor.stats = ArrivalStats()
        return self.total

    def due(self, ended: float) -> int:
        """The arrivals of the schedule that were due from the first deal until ``ended`` (wall time)."""
        trace = self.trace()
        times = [row.at_s for row in trace.requests] if trace is not None else []
        count = 0
        for i, (t0, start_s, spec) in enumerate(self.deals):
            until = self.deals[i + 1][0] if i + 1 < len(self.deals) else ended
            if until > t0:
                count += schedule.due_between(spec, start_s, start_s + (until - t0), trace_times=times)
        return count

    def results_section(self) -> dict[str, Any] | None:
        return self.summary()

    def summary(self) -> dict[str, Any] | None:
        """The results' ``arrivals`` section (None in closed-loop runs)."""
        try:
            if not self.enabled:
                return None
        except Exception:
            return None
        total = self.totals()
        lag = self.plugin.store.merged("dispatch_lag_s")
        started, ended = self.plugin.started_at, self.plugin.ended_at or time.time()
        duration = (ended - started) if started else None
        lag_p99 = lag.percentile(99)
        warnings = []
        if total.skipped:
            warnings.append(
                f"{total.skipped} of {total.scheduled} arrivals skipped because no user was free "
                f"within {SKIP_AFTER_S:g} s (raise -u, the pool of users)"
            )
        if lag_p99 is not None and lag_p99 > LAG_WARN_P99_S:
            warnings.append(
                f"dispatch lag p99 {lag_p99 * 1000:.0f} ms exceeds {LAG_WARN_P99_S * 1000:.0f} ms "
                f"(the load generator is short of CPU: add workers)"
            )
        options = self.plugin.options
        trace = self.trace()
        due = self.due(ended) if trace is not None else None
        if due is not None and due > total.sent + total.skipped:
            warnings.append(f"{due - total.sent - total.skipped} arrivals lost (dealt to a worker that left)")
        return {
            "mode": options.arrival,
            "rate_rps": self.rate_rps,
            "rate_profile": options.rate_profile or None,
            "burstiness": options.burstiness if options.arrival == "gamma" else None,
            "seed": options.seed,
            "scheduled": due if due is not None else total.scheduled,
            "sent": total.sent,
            "skipped": total.skipped,
            "lost": max(due - total.sent - total.skipped, 0) if due is not None else None,
            "trace": None
            if trace is None
            else {
                "file": os.path.basename(trace.path),
                "format": trace.format,
                "requests": len(trace.requests),
                "rows": trace.rows,
                "failed_rows": trace.failed_rows,
                "duration_s": trace.duration_s,
                "speed": options.trace_speed,
                "start_s": options.trace_start_s,
            },
            "sent_rps": total.sent / duration if duration else None,
            "dispatch_lag_s": lag.summary(),
            **{name: dist.summary() for name, dist in total.dists.items()},
            "lag_warn_p99_s": LAG_WARN_P99_S,
            "warning": ("open-loop schedule not kept: " + "; ".join(warnings)) if warnings else None,
        }


# -- Locust extension -------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    """The arrival options live in ``llmload.options``; nothing to add."""


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    """Add the open-loop coordinator to ``plugin`` and wire it to Locust's events."""
    arrivals = plugin.extensions.add(Arrivals(environment, plugin))
    events = environment.events
    events.test_start.add_listener(arrivals._on_test_start)
    events.test_stopping.add_listener(arrivals._on_test_stopping)
    events.test_stop.add_listener(arrivals._on_test_stop)
    events.spawning_complete.add_listener(arrivals._on_spawning_complete)
    events.quit.add_listener(arrivals._on_quit)
    plugin.wire.add(WIRE_KEY, what="arrivals report", ship=arrivals.ship, merge=arrivals.merge)
    if plugin.is_worker:
        plugin.wire.register_message(MESSAGE, arrivals._on_assignment, what="open-loop assignment")
    elif plugin.is_master:
        events.worker_report.add_listener(arrivals._on_worker_report)
        events.worker_connect.add_listener(arrivals._on_worker_change)


def get_arrivals(plugin: LLMLoadPlugin) -> Arrivals | None:
    """Return the process's open-loop coordinator, when registered."""
    return plugin.extensions.get(Arrivals)
