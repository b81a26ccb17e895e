"""Closed-loop users against the scheduler in virtual time (no sockets, no sleeping).

Used to fit the calibration constants and by the unit tests: it replays what
the real-time engine does (a step starts when the engine is idle and work
arrives, the next step starts when the previous one ends) with an event queue,
so a 100-user run of a thousand requests takes well under a second.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import cast

from llmload.simulator.perfmodel import PerfModel
from llmload.simulator.scheduler import Scheduler, SimRequest, StepPlan


@dataclass(frozen=True)
class VirtualResult:
    """Per-request timings of a virtual run, in seconds from each request's send."""

    ttft_s: list[float]
    e2e_s: list[float]
    output_tokens: list[int]
    duration_s: float

    @property
    def stream_rate_mean_tps(self) -> float:
        """Mean over requests of output tokens / E2E (TTFT included)."""
        return sum(n / e for n, e in zip(self.output_tokens, self.e2e_s, strict=True)) / len(self.e2e_s)

    @property
    def output_tps(self) -> float:
        """Output tokens per second over the whole run."""
        return sum(self.output_tokens) / self.duration_s

    @property
    def ttft_mean_s(self) -> float:
        """Mean time to first token."""
        return sum(self.ttft_s) / len(self.ttft_s)


def simulate_closed_loop(
    *,
    perf: PerfModel,
    users: int,
    requests: int | None = None,
    max_tokens: int = 100,
    prompt_tokens: tuple[int, int] = (37, 44),
    turnaround_s: float = 0.0005,
    seed: int = 0,
) -> VirtualResult:
    """Run ``users`` closed-loop users (no think time) for ``requests`` requests in total."""
    total = requests if requests is not None else 10 * users
    rng = random.Random(seed)
    sched = Scheduler(perf=perf)
    frontend = perf.calibration.frontend_latency_s
    events: list[tuple[float, int, str, object]] = []
    seq = 0

    def push(t: float, kind: str, payload: object = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, payload))

    sent = 0
    sends: dict[int, float] = {}

    def send(t: float) -> None:
        nonlocal sent
        if sent >= total:
            return
        req = SimRequest(
            rid=sent, prompt_tokens=rng.randint(*prompt_tokens), n_target=max_tokens, finish_reason="length", arrival=t
        )
        sends[req.rid] = t
        sent += 1
        push(t + frontend, "visible", req)

    for _ in range(users):
        send(0.0)
    busy = False
    ttft: list[float] = []
    e2e: list[float] = []
    outs: list[int] = []
    end_time = 0.0

    def start(t: float) -> None:
        nonlocal busy
        plan = sched.plan()
        busy = plan is not None
        if plan is not None:
            push(t + plan.duration_s, "step", plan)

    while events:
        t, _, kind, payload = heapq.heappop(events)
        if kind == "visible":
            sched.add(cast(SimRequest, payload))
            if not busy:
                start(t)
            continue
        for req in sched.complete(cast(StepPlan, payload), t):
            if req.generated == 1:
                ttft.append(t - sends[req.rid])
            if req.finished:
                e2e.append(t - sends[req.rid])
                outs.append(req.generated)
                end_time = t
                send(t + turnaround_s)
        start(t)
    return VirtualResult(ttft_s=ttft, e2e_s=e2e, output_tokens=outs, duration_s=end_time)
