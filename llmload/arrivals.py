"""Open-loop arrivals: requests on a seeded schedule, whatever the server's speed.

With ``--llm-arrival poisson|constant --llm-rate R`` the run sends R requests
per second in total. The master (or the single local process) divides R among
the load-generator processes: worker slot ``i`` of ``N`` (ordered by Locust's
worker index) gets R/N. Poisson slots draw exponential gaps from a generator
seeded by ``--llm-seed``, the slot and the assignment's epoch (independent
Poisson processes at R/N sum to one at R); constant slots send at
``t0 + (k*N + i)/R``, so together they are evenly spaced at 1/R. When the
number of workers changes, the master sends every worker a new assignment
(custom message ``llmload_arrivals``) and the schedule restarts at its ``t0``.

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
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from locust.runners import MasterRunner

from llmload.distribution import LATENCY_HIGHEST, LATENCY_SCALE, Distribution
from llmload.extension import Extension
from llmload.record import RequestRecord

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
#: An arrival that found no free user is skipped once it is this late (seconds).
SKIP_AFTER_S = 1.0
#: Arrivals start once this process has started its users, or after this many seconds.
SPAWN_WAIT_S = 60.0
#: A master's t0 further than this from a worker's clock (machines' clocks differ) is replaced by "now".
MAX_CLOCK_SKEW_S = 1.0
FROM_INTENDED = ("ttft_from_intended_s", "e2e_from_intended_s")


@dataclass(frozen=True, slots=True)
class Assignment:
    """One process's share of the schedule."""

    epoch: int
    mode: str  # poisson | constant
    rate_rps: float  # for the whole test
    slot: int
    slots: int
    t0_wall: float
    seed: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "mode": self.mode,
            "rate_rps": self.rate_rps,
            "slot": self.slot,
            "slots": self.slots,
            "t0_wall": self.t0_wall,
            "seed": self.seed,
        }


def offsets(assignment: Assignment) -> Iterator[float]:
    """Yield this slot's arrival times, in seconds after ``t0``, forever."""
    a = assignment
    if a.mode == "constant":
        k = 0
        while True:
            yield (k * a.slots + a.slot) / a.rate_rps
            k += 1
    rng = random.Random(f"llmload-arrivals:{a.seed}:{a.epoch}:{a.slot}:{a.slots}")
    rate = a.rate_rps / a.slots
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        yield t


def exponential_fit(gaps: list[float], rate: float) -> tuple[float, float]:
    """Kolmogorov-Smirnov test of inter-arrival gaps against an exponential of ``rate``: ``(D, p-value)``.

    The p-value uses Stephens' small-sample correction of the Kolmogorov
    distribution, accurate to a few percent for n >= 5; a Poisson schedule
    should give p well above 0.01.
    """
    xs = sorted(gaps)
    n = len(xs)
    if n == 0:
        raise ValueError("no gaps")
    d = 0.0
    for i, x in enumerate(xs):
        cdf = 1.0 - math.exp(-rate * max(x, 0.0))
        d = max(d, cdf - i / n, (i + 1) / n - cdf)
    root = math.sqrt(n)
    lam = (root + 0.12 + 0.11 / root) * d
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return d, min(max(p, 0.0), 1.0)


class ArrivalStats:
    """Counts and from-intended latencies; a worker's delta or the merged totals."""

    def __init__(self) -> None:
        self.scheduled = 0
        self.sent = 0
        self.skipped = 0
        self.dists = {name: Distribution(scale=LATENCY_SCALE, highest=LATENCY_HIGHEST) for name in FROM_INTENDED}

    def observe(self, record: RequestRecord) -> None:
        """Add one finished open-loop request's latencies from its intended time."""
        if record.t_intended is None or not record.ok or not record.token_times:
            return
        self.dists["ttft_from_intended_s"].record(max(record.token_times[0] - record.t_intended, 0.0))
        self.dists["e2e_from_intended_s"].record(max(record.token_times[-1] - record.t_intended, 0.0))

    def to_wire(self) -> dict[str, Any]:
        return {
            "scheduled": self.scheduled,
            "sent": self.sent,
            "skipped": self.skipped,
            "dists": {name: d.to_wire() for name, d in self.dists.items()},
        }

    def merge_wire(self, wire: dict[str, Any]) -> None:
        self.scheduled += wire["scheduled"]
        self.sent += wire["sent"]
        self.skipped += wire["skipped"]
        for name, dist in wire["dists"].items():
            self.dists[name].merge_wire(dist)

    def is_empty(self) -> bool:
        return not (self.scheduled or self.dists["ttft_from_intended_s"].count)


class ArrivalExecutor:
    """Keeps one process's schedule and hands each arrival to an idle user.

    An arrival that finds no idle user waits in a backlog for the next user to
    become free; one still waiting ``SKIP_AFTER_S`` after its intended time is
    skipped (counted, never sent), so a saturated pool cannot build an
    unbounded queue.
    """

    def __init__(self, stats: ArrivalStats, *, spawn: Spawn) -> None:
        """Keep the schedule in a greenlet started by ``spawn(name, func, *args)`` (a supervisor's)."""
        from gevent.event import Event

        self.spawn = spawn
        self.stats = stats
        self.pool_ready = Event()  # set when this process has started its users (spawning_complete)
        self.assignment: Assignment | None = None
        self._idle: deque[Any] = deque()
        self._backlog: deque[float] = deque()
        self._greenlet: Any = None

    def assign(self, assignment: Assignment) -> None:
        """Start following ``assignment`` (a new epoch replaces the current schedule)."""
        if self.assignment is not None and self.assignment.epoch == assignment.epoch and self._greenlet:
            return
        self.stop()
        self.assignment = assignment
        self._greenlet = self.spawn("open-loop schedule", self._run, assignment)

    def stop(self, *, release: BaseException | None = None) -> None:
        """Stop scheduling; drop the backlog (due after the test) and raise ``release`` in waiting users."""
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
        self._backlog.clear()
        if release is not None:
            while self._idle:
                waiter = self._idle.popleft()
                if not waiter.ready():
                    waiter.set_exception(release)

    def _run(self, assignment: Assignment) -> None:
        import gevent

        now_wall, now = time.time(), time.perf_counter()
        skew = assignment.t0_wall - now_wall
        base = now + (skew if abs(skew) <= MAX_CLOCK_SKEW_S else 0.0)
        # The users are the pool: arrivals due while this process is still starting them are not
        # part of the test (the schedule keeps its t0, so constant slots stay interleaved).
        self.pool_ready.wait(timeout=SPAWN_WAIT_S)
        start = time.perf_counter()
        for offset in offsets(assignment):
            due = base + offset
            if due < start:
                continue
            delay = due - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            self._dispatch(due)

    def _dispatch(self, due: float) -> None:
        self.stats.scheduled += 1
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.ready():
                waiter.set(due)
                self.stats.sent += 1
                return
        backlog = self._backlog
        backlog.append(due)
        while due - backlog[0] > SKIP_AFTER_S:
            backlog.popleft()
            self.stats.skipped += 1

    def wait(self) -> float:
        """Block the calling user until an arrival is handed to it; return its intended time."""
        backlog = self._backlog
        if backlog:
            now = time.perf_counter()
            while backlog:
                due = backlog.popleft()
                if now - due <= SKIP_AFTER_S:
                    self.stats.sent += 1
                    return due
                self.stats.skipped += 1
        from gevent.event import AsyncResult

        waiter = AsyncResult()
        self._idle.append(waiter)
        try:
            return float(waiter.get())
        finally:
            if not waiter.ready():
                try:
                    self._idle.remove(waiter)
                except ValueError:
                    pass

    @property
    def idle_users(self) -> int:
        return len(self._idle)


class Arrivals(Extension):
    """llmload's open-loop coordinator of one Locust process (``plugin.extensions.get(Arrivals)``)."""

    results_key = "arrivals"

    def __init__(self, environment: Environment, plugin: LLMLoadPlugin) -> None:
        self.environment = environment
        self.plugin = plugin
        self.delta = ArrivalStats()  # this process's unreported figures
        self.total = ArrivalStats()  # merged figures (master or local)
        self.executor = ArrivalExecutor(self.delta, spawn=plugin.supervisor.spawn)
        self.rate_override: float | None = None
        self._epoch = 0
        self._slots_key: tuple[str, ...] | None = None
        self._running = False
        self._warned = False

    # -- options ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.plugin.options.arrival != "closed"

    @property
    def rate_rps(self) -> float | None:
        return self.rate_override if self.rate_override is not None else self.plugin.options.rate_rps

    # -- assignment --------------------------------------------------------------------------

    def _assignment(self, slot: int, slots: int, t0: float) -> Assignment:
        options = self.plugin.options
        return Assignment(self._epoch, options.arrival, float(self.rate_rps or 0.0), slot, slots, t0, options.seed)

    def redistribute(self, *, force: bool = False) -> None:
        """Divide the rate among the active processes again (master) or restart the local schedule."""
        if not (self._running and self.enabled):
            return
        runner = self.environment.runner
        if not isinstance(runner, MasterRunner):
            self._epoch += 1
            self.executor.assign(self._assignment(0, 1, time.time()))
            return
        nodes = runner.clients.ready + runner.clients.spawning + runner.clients.running
        ids = tuple(sorted((n.id for n in nodes), key=runner.get_worker_index))
        if not ids or (ids == self._slots_key and not force):
            return
        self._slots_key = ids
        self._epoch += 1
        t0 = time.time()
        for slot, client_id in enumerate(ids):
            runner.send_message(MESSAGE, self._assignment(slot, len(ids), t0).to_wire(), client_id=client_id)
        logger.debug(
            "llmload: open-loop rate %.3g/s divided among %d workers (epoch %d)", self.rate_rps, len(ids), self._epoch
        )

    def set_rate(self, rate_rps: float) -> None:
        """Change the whole test's rate (the capacity search's rate mode)."""
        previous = self.rate_rps
        self.rate_override = rate_rps
        if previous != rate_rps:
            self.plugin.run_events.emit("rate_changed", detail=f"{previous or 0:g} -> {rate_rps:g} requests/s")
        self.redistribute(force=True)

    def wait_for_arrival(self) -> float:
        """Block a user until its next arrival; return the intended time (perf counter)."""
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
            self.redistribute(force=True)

    def _on_spawning_complete(self, **_kwargs: Any) -> None:
        self.executor.pool_ready.set()

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
        return {
            "mode": self.plugin.options.arrival,
            "rate_rps": self.rate_rps,
            "seed": self.plugin.options.seed,
            "scheduled": total.scheduled,
            "sent": total.sent,
            "skipped": total.skipped,
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
