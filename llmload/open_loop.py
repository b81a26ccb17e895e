"""One process's open-loop machinery, without Locust: its deal of the schedule, and its users as the pool.

``Assignment`` is a process's deal (``llmload.schedule`` computes the global schedule),
``offsets`` its arrivals, ``ArrivalExecutor`` keeps them and hands each to an idle user,
``ArrivalStats`` counts them; ``llmload.arrivals`` coordinates the processes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmload import schedule
from llmload.distribution import LATENCY_HIGHEST, LATENCY_SCALE, Distribution
from llmload.record import RequestRecord
from llmload.traces import Trace

if TYPE_CHECKING:
    import gevent

    Spawn = Callable[..., gevent.Greenlet]

#: An arrival that found no free user is skipped once it is this late (seconds).
SKIP_AFTER_S = 1.0
#: Arrivals start once this process has started its users, or after this many seconds.
SPAWN_WAIT_S = 60.0
#: A master's t0 further than this from a worker's clock (machines' clocks differ) is replaced by "now".
MAX_CLOCK_SKEW_S = 1.0
#: A new deal (workers changed, rate changed) takes over this long after the master decides it.
HANDOVER_S = 0.5
FROM_INTENDED = ("ttft_from_intended_s", "e2e_from_intended_s")


@dataclass(frozen=True, slots=True)
class Assignment:
    """One process's share of the schedule."""

    epoch: int
    mode: str  # poisson | constant | gamma | trace
    rate_rps: float  # for the whole test (unless a profile is given)
    slot: int
    slots: int
    t0_wall: float
    seed: int
    start_s: float = 0.0
    """The schedule's time at ``t0``: a new deal goes on from where the previous one was."""
    burstiness: float = 1.0
    profile: str = ""
    speed: float = 1.0

    @property
    def spec(self) -> schedule.ScheduleSpec:
        return schedule.ScheduleSpec(
            mode=self.mode,
            rate_rps=self.rate_rps,
            burstiness=self.burstiness,
            profile=self.profile,
            seed=self.seed,
            speed=self.speed,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "mode": self.mode,
            "rate_rps": self.rate_rps,
            "slot": self.slot,
            "slots": self.slots,
            "t0_wall": self.t0_wall,
            "seed": self.seed,
            "start_s": self.start_s,
            "burstiness": self.burstiness,
            "profile": self.profile,
            "speed": self.speed,
        }


def offsets(assignment: Assignment, *, trace: Trace | None = None) -> Iterator[tuple[float, int]]:
    """Yield this slot's arrivals, ``(seconds after t0, global index)``, from the schedule's ``start_s`` on."""
    a = assignment
    spec = a.spec
    rows = trace.requests if trace is not None else ()
    times = [row.at_s for row in rows]
    for k, t in enumerate(schedule.offsets(spec, trace_times=times)):
        if t < a.start_s:
            continue
        session = rows[k].session if rows else None
        if schedule.slot_of(spec, k, a.slots, session=session) == a.slot:
            yield t - a.start_s, k


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
    unbounded queue. An arrival is ``(intended time, global index)``: trace
    replay sends request ``index`` of the trace.
    """

    def __init__(self, stats: ArrivalStats, *, spawn: Spawn, trace: Callable[[], Trace | None] = lambda: None) -> None:
        """Keep the schedule in a greenlet started by ``spawn(name, func, *args)`` (a supervisor's)."""
        from gevent.event import Event

        self.spawn = spawn
        self.stats = stats
        self.trace = trace
        self.pool_ready = Event()  # set when this process has started its users (spawning_complete)
        self.assignment: Assignment | None = None
        self._idle: deque[Any] = deque()
        self._backlog: deque[tuple[float, int]] = deque()
        self._greenlet: Any = None
        self._stop_at: list[float] = [math.inf]
        """When the running deal stops (perf-counter time): the next deal's ``t0``."""

    def assign(self, assignment: Assignment) -> None:
        """Follow ``assignment``: a new epoch takes over at its ``t0``, when the current deal stops."""
        if self.assignment is not None and self.assignment.epoch == assignment.epoch and self._greenlet:
            return
        base = self._base(assignment)
        if self._greenlet is not None and not self._greenlet.dead:
            self._stop_at[0] = base  # the old deal sends what is due before the new one starts
        self.assignment = assignment
        self._stop_at = [math.inf]
        self._greenlet = self.spawn("open-loop schedule", self._run, assignment, base, self._stop_at)

    def stop(self, *, release: BaseException | None = None) -> None:
        """Stop scheduling; drop the backlog (due after the test) and raise ``release`` in waiting users."""
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
        self._stop_at[0] = -math.inf
        self.stats.skipped += len(self._backlog)  # due, never sent
        self._backlog.clear()
        if release is not None:
            while self._idle:
                waiter = self._idle.popleft()
                if not waiter.ready():
                    waiter.set_exception(release)

    @staticmethod
    def _base(assignment: Assignment) -> float:
        """The perf-counter time of the assignment's ``t0`` on this machine (a skewed clock: now)."""
        now_wall, now = time.time(), time.perf_counter()
        skew = assignment.t0_wall - now_wall
        return now + (skew if abs(skew) <= MAX_CLOCK_SKEW_S + HANDOVER_S else 0.0)

    def _run(self, assignment: Assignment, base: float, stop_at: list[float]) -> None:
        import gevent

        # The users are the pool: arrivals due while this process is still starting them are not
        # part of the test (the schedule keeps its t0, so constant slots stay interleaved).
        ready = self.pool_ready.is_set()
        self.pool_ready.wait(timeout=SPAWN_WAIT_S)
        start = -math.inf if ready else time.perf_counter()
        for offset, index in offsets(assignment, trace=self.trace() if assignment.mode == "trace" else None):
            due = base + offset
            if due >= stop_at[0]:
                return
            if due < start:
                continue
            delay = due - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
                if due >= stop_at[0]:
                    return
            self._dispatch(due, index)

    def _dispatch(self, due: float, index: int = 0) -> None:
        self.stats.scheduled += 1
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.ready():
                waiter.set((due, index))
                self.stats.sent += 1
                return
        backlog = self._backlog
        backlog.append((due, index))
        while due - backlog[0][0] > SKIP_AFTER_S:
            backlog.popleft()
            self.stats.skipped += 1

    def wait(self) -> tuple[float, int]:
        """Block the calling user until an arrival is handed to it; return ``(intended time, index)``."""
        backlog = self._backlog
        if backlog:
            now = time.perf_counter()
            while backlog:
                due, index = backlog.popleft()
                if now - due <= SKIP_AFTER_S:
                    self.stats.sent += 1
                    return due, index
                self.stats.skipped += 1
        from gevent.event import AsyncResult

        waiter = AsyncResult()
        self._idle.append(waiter)
        try:
            due, index = waiter.get()
            return float(due), int(index)
        finally:
            if not waiter.ready():
                try:
                    self._idle.remove(waiter)
                except ValueError:
                    pass

    @property
    def idle_users(self) -> int:
        return len(self._idle)
