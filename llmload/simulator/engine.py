"""The two real-time engines that decide when each token leaves the simulator.

``StepEngine`` runs the continuous-batching scheduler step by step on the event
loop's monotonic clock. Each step's end time is the previous step's end plus
the modelled duration (an absolute schedule, so timer lateness never
accumulates); only after an idle period does the clock restart from now.

``FixedEngine`` serves the ``fixed`` profile: token ``k`` of a request is due
at ``received + ttft + (k - 1) * itl``, again on an absolute schedule. With
``itl == 0`` every token is due at once and is written in batches.

Both are driven by ``loop.call_at`` callbacks rather than tasks: a step costs
one timer, whatever the batch size. Tokens reach the client through the
request's ``sink`` (see :mod:`llmload.simulator.server`), which has
``on_tokens(count, done)`` and ``paused``.
"""

from __future__ import annotations

import asyncio
import heapq
import math

from llmload.simulator.prefix_cache import PrefixCache
from llmload.simulator.scheduler import Scheduler, SimRequest, StepPlan
from llmload.simulator.vllm_metrics import SimMetrics

#: Past this lag behind the modelled schedule the step clock resynchronises
#: instead of catching up with a burst (only when the host is overloaded).
MAX_LAG_S = 0.5

#: Tokens written to one stream per wake-up at full speed, bounding write size.
FULL_SPEED_BATCH = 256


class StepEngine:
    """Continuous batching in real time, timed by the performance model."""

    slow_factor = 1.0
    """Every step takes this many times its modelled duration (``slow_down``)."""

    def slow_down(self, factor: float) -> None:
        """Make every later step ``factor`` times slower (a degraded GPU)."""
        self.slow_factor = factor

    def __init__(self, *, scheduler: Scheduler, metrics: SimMetrics, loop: asyncio.AbstractEventLoop) -> None:
        self.scheduler = scheduler
        self.metrics = metrics
        self.loop = loop
        self.frontend_s = scheduler.perf.calibration.frontend_latency_s
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None

    def gauges(self) -> tuple[int, int, float]:
        """Return (running, waiting, KV-cache usage) for /metrics."""
        s = self.scheduler
        return len(s.running), len(s.waiting), s.kv_cache_usage

    def submit(self, req: SimRequest) -> None:
        """Hand ``req`` to the scheduler once the modelled front-end latency has passed."""
        self.loop.call_at(req.arrival + self.frontend_s, self._enqueue, req)

    def _enqueue(self, req: SimRequest) -> None:
        if req.aborted:
            return
        req.queued_at = req.arrival + self.frontend_s  # model time, not the timer's late wake-up
        self.scheduler.add(req)
        if not self._busy:
            self._start(req.queued_at)

    def abort(self, req: SimRequest) -> None:
        """Stop generating for ``req`` (client gone); counted as finished with "abort"."""
        if req.finished or req.aborted:
            return
        self.scheduler.abort(req)
        self.metrics.finished(req, "abort", self.loop.time())

    def unpark(self, req: SimRequest) -> None:
        """Nothing to do: steps never wait for a slow reader, like vLLM."""

    def _start(self, t: float) -> None:
        plan = self.scheduler.plan()
        if plan is None:
            self._busy = False
            return
        self._busy = True
        if plan.preempted:
            self.metrics.preemptions += plan.preempted
        end = t + plan.duration_s * self.slow_factor
        self._timer = self.loop.call_at(end, self._finish, plan, end)

    def _finish(self, plan: StepPlan, end: float) -> None:
        metrics = self.metrics
        emitted = self.scheduler.complete(plan, end)
        metrics.iteration(plan.num_decode + plan.prefill_tokens)
        if emitted:
            metrics.lateness_h.observe(max(0.0, self.loop.time() - end), len(emitted))
        for req in emitted:
            if req.generated == 1:
                req.first_token_at = end
                metrics.first_token(req)
            else:
                assert req.last_token_at is not None  # set when its first token was emitted
                metrics.itl(end - req.last_token_at)
            req.last_token_at = end
        metrics.generation_tokens += sum(1 for req in emitted if not req.pooled)
        for req in emitted:
            req.sink.on_tokens(1, req.finished)
            if req.finished:
                metrics.finished(req, req.finish_reason or "abort", end)
        now = self.loop.time()
        self._start(end if now - end < MAX_LAG_S else now)

    def close(self) -> None:
        """Cancel the pending step."""
        if self._timer is not None:
            self._timer.cancel()


class FixedEngine:
    """Fixed TTFT and inter-token latency per request, no batching effects.

    A prefix cache, when given, is looked up and filled at submit (the request's
    scheduling) for its counters only: cached tokens do not shorten the fixed TTFT.
    """

    def __init__(
        self,
        *,
        ttft_s: float,
        itl_s: float,
        metrics: SimMetrics,
        loop: asyncio.AbstractEventLoop,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.prefix_cache = prefix_cache
        self.ttft_s = ttft_s
        self.itl_s = itl_s
        self.metrics = metrics
        self.loop = loop
        self._heap: list[tuple[float, int, SimRequest]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._firing = False
        self._active = 0

    def gauges(self) -> tuple[int, int, float]:
        """Return (running, waiting, KV-cache usage) for /metrics."""
        return self._active, 0, 0.0

    def slow_down(self, factor: float) -> None:
        """Make requests submitted from now on ``factor`` times slower (TTFT and inter-token latency)."""
        self.ttft_s *= factor
        self.itl_s *= factor

    def submit(self, req: SimRequest) -> None:
        """Schedule ``req``'s first token at ``arrival + ttft``."""
        req.scheduled_at = req.queued_at = req.arrival
        if self.prefix_cache is not None:
            self.prefix_cache.lookup(req)
        req.first_due = req.arrival + self.ttft_s + req.encode_s
        req.itl_s = self.itl_s
        self._active += 1
        self._push(req.first_due, req)

    def abort(self, req: SimRequest) -> None:
        """Stop generating for ``req`` (client gone); counted as finished with "abort"."""
        if req.finished or req.aborted:
            return
        req.aborted = True
        self._active -= 1
        self.metrics.finished(req, "abort", self.loop.time())

    def unpark(self, req: SimRequest) -> None:
        """Resume a stream whose transport stopped pausing."""
        if req.parked and not (req.aborted or req.finished):
            req.parked = False
            self._push(self.loop.time(), req)

    def _push(self, due: float, req: SimRequest) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, req))
        if due < self._timer_at and not self._firing:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = self.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        # asyncio may fire a timer a clock tick early; never treat a token as not yet due.
        now = max(self.loop.time(), self._timer_at)
        self._timer, self._timer_at = None, math.inf
        heap = self._heap
        due_now: list[SimRequest] = []
        while heap and heap[0][0] <= now:
            due_now.append(heapq.heappop(heap)[2])
        # Re-arm once, for the earliest entry, after the pushes made while emitting.
        self._firing = True
        try:
            for req in due_now:
                if not (req.aborted or req.finished):
                    self._emit(req, now)
        finally:
            self._firing = False
        if heap:
            self._arm(heap[0][0])

    def _emit(self, req: SimRequest, now: float) -> None:
        sink = req.sink
        if sink.paused:
            req.parked = True
            return
        itl, n_target, generated = req.itl_s, req.n_target, req.generated
        due_count = n_target if itl <= 0 else int((now - req.first_due) / itl + 1e-9) + 1
        if due_count > n_target:
            due_count = n_target
        count = due_count - generated
        if count > FULL_SPEED_BATCH:
            count = FULL_SPEED_BATCH
        metrics = self.metrics
        metrics.lateness_h.observe(max(0.0, now - req.first_due - generated * itl), count)
        if generated == 0:
            req.first_token_at = now
            metrics.first_token(req)
        else:
            assert req.last_token_at is not None  # set when its first token was emitted
            metrics.itl_h.observe(now - req.last_token_at)
        if count > 1:
            metrics.itl_h.observe(0.0, count - 1)
        req.generated = generated = generated + count
        req.last_token_at = now
        if not req.pooled:
            metrics.generation_tokens += count
        done = generated >= n_target
        if done:
            req.finished = True
            self._active -= 1
        sink.on_tokens(count, done)
        if done:
            metrics.finished(req, req.finish_reason or "abort", now)
        elif itl > 0:
            self._push(req.first_due + generated * itl, req)
        else:
            self._push(now, req)

    def close(self) -> None:
        """Cancel the pending timer."""
        if self._timer is not None:
            self._timer.cancel()
