"""The continuous-batching scheduler: which tokens each engine step processes.

Pure bookkeeping with no clock and no I/O, so tests and the calibration fit can
drive it in virtual time. It follows vLLM V1's scheduler in the parts that
shape latency:

* Every request has ``num_tokens`` known tokens (prompt plus generated) of
  which ``num_computed`` have their KV cached. A step computes the missing
  ones: one token for a decoding request, a prompt chunk for a prefilling one.
  A request whose tokens are all computed after the step emits one new token.
* Running requests are scheduled first, in admission order, then waiting ones
  first-come-first-served, within ``max_num_batched_tokens`` tokens and
  ``max_num_seqs`` sequences; long prompts are chunked across steps.
* The KV cache is paged in blocks. When a running request needs a block and
  none is free, the most recently admitted request is preempted: its blocks are
  freed and it goes back to the head of the queue to recompute prompt and
  generated tokens later (vLLM's recompute preemption).
* With a prefix cache (``prefix_cache.PrefixCache``), a request admitted with
  nothing computed starts at ``num_computed`` = its cached prefix tokens, so its
  prefill computes only the rest (attending to the cached prefix); its full prompt
  blocks are then cached. Its KV blocks are still all reserved for it: blocks
  shared with other running requests are counted once per request.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmload.simulator.perfmodel import PerfModel

if TYPE_CHECKING:
    from llmload.simulator.prefix_cache import PrefixCache


class SimRequest:
    """One generation request as both engines track it."""

    __slots__ = (
        "rid",
        "prompt_tokens",
        "n_target",
        "finish_reason",
        "sink",
        "arrival",
        "queued_at",
        "scheduled_at",
        "first_token_at",
        "last_token_at",
        "num_tokens",
        "num_computed",
        "generated",
        "blocks",
        "aborted",
        "finished",
        "first_due",
        "itl_s",
        "parked",
        "encode_s",
        "pooled",
        "block_hashes",
        "cache_queried",
    )

    def __init__(
        self,
        *,
        rid: int,
        prompt_tokens: int,
        n_target: int,
        finish_reason: str | None,
        sink: Any = None,
        arrival: float = 0.0,
    ) -> None:
        self.rid = rid
        self.prompt_tokens = prompt_tokens
        self.n_target = n_target
        """Tokens to emit before the request ends."""
        self.finish_reason = finish_reason
        """Reported when ``n_target`` is reached: "length", "stop", or None for a fault cut."""
        self.encode_s = 0.0
        """The vision encoder's time for the request's images, before its prefill (fixed profile)."""
        self.pooled = False
        """An embeddings, score or rerank request: its one "token" is the answer, not a generated token."""
        self.block_hashes: list[int] | None = None
        """Chained hashes of the prompt's full blocks; None: kept out of the prefix cache (pooling, or no cache)."""
        self.cache_queried = False
        """Whether the prefix cache has counted this request (once, when first scheduled)."""
        self.sink = sink
        self.arrival = arrival
        self.queued_at = arrival
        self.scheduled_at: float | None = None
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.num_tokens = prompt_tokens
        self.num_computed = 0
        self.generated = 0
        self.blocks = 0
        self.aborted = False
        self.finished = False
        self.first_due = 0.0
        self.itl_s = 0.0
        """Fixed engine: this request's time between tokens (the engine's, at submit)."""
        self.parked = False


@dataclass
class StepPlan:
    """The work of one step: ``(request, tokens computed)`` pairs and the step's duration."""

    work: list[tuple[SimRequest, int]] = field(default_factory=list)
    duration_s: float = 0.0
    num_decode: int = 0
    prefill_tokens: int = 0
    preempted: int = 0


class Scheduler:
    """Waiting queue, running batch and paged KV cache of one simulated engine."""

    def __init__(self, *, perf: PerfModel, prefix_cache: PrefixCache | None = None) -> None:
        self.perf = perf
        self.prefix_cache = prefix_cache
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.total_blocks = perf.num_kv_blocks
        self.free_blocks = self.total_blocks
        self._bs = perf.block_size

    @property
    def kv_cache_usage(self) -> float:
        """Share of KV blocks in use, 0 to 1."""
        return 1.0 - self.free_blocks / self.total_blocks

    def has_work(self) -> bool:
        """Return whether a step would process anything."""
        return bool(self.running or self.waiting)

    def add(self, req: SimRequest) -> None:
        """Queue ``req`` behind the waiting requests."""
        self.waiting.append(req)

    def abort(self, req: SimRequest) -> None:
        """Drop ``req`` wherever it is and free its blocks."""
        req.aborted = True
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self._free(req)

    def _free(self, req: SimRequest) -> None:
        self.free_blocks += req.blocks
        req.blocks = 0

    def _grow(self, req: SimRequest, tokens: int) -> bool:
        """Reserve blocks so ``req`` can hold ``tokens`` more computed tokens."""
        need = -(-(req.num_computed + tokens) // self._bs) - req.blocks
        if need <= 0:
            return True
        if need > self.free_blocks:
            return False
        self.free_blocks -= need
        req.blocks += need
        return True

    def _preempt(self, victim: SimRequest) -> None:
        self.running.remove(victim)
        self._free(victim)
        victim.num_computed = 0
        self.waiting.appendleft(victim)

    def plan(self) -> StepPlan | None:
        """Choose the next step's work and compute its duration; None when idle."""
        perf = self.perf
        budget = perf.token_budget
        plan = StepPlan()
        context = 0
        prefill_flops = 0.0
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_tokens - req.num_computed, budget)
            self_preempted = False
            while not self._grow(req, n):
                victim = self.running[-1]
                self._preempt(victim)
                plan.preempted += 1
                if victim is req:
                    self_preempted = True
                    break
            if self_preempted:
                break  # req was the last running request
            budget -= n
            plan.work.append((req, n))
            if n == 1 and req.num_computed > 0:
                plan.num_decode += 1
                context += req.num_computed + 1
            else:
                prefill_flops += perf.prefill_flops(n, req.num_computed)
                plan.prefill_tokens += n
            i += 1
        if plan.preempted == 0:
            cache = self.prefix_cache
            while self.waiting and budget > 0 and len(self.running) < perf.max_num_seqs:
                req = self.waiting[0]
                hit = 0
                if cache is not None and req.num_computed == 0 and req.block_hashes is not None:
                    hit = req.num_computed = cache.match(req.block_hashes, req.num_tokens)
                n = min(req.num_tokens - req.num_computed, budget)
                if not self._grow(req, n):
                    req.num_computed -= hit
                    break
                if cache is not None and req.block_hashes is not None:
                    cache.admit(req, hit)
                self.waiting.popleft()
                self.running.append(req)
                budget -= n
                plan.work.append((req, n))
                prefill_flops += perf.prefill_flops(n, req.num_computed)
                plan.prefill_tokens += n
        if not plan.work:
            return None
        plan.duration_s = perf.step_s(num_decode=plan.num_decode, context_tokens=context, prefill_flops=prefill_flops)
        return plan

    def complete(self, plan: StepPlan, now: float) -> list[SimRequest]:
        """Apply ``plan`` at time ``now``; return the requests that emitted a token."""
        emitted: list[SimRequest] = []
        for req, n in plan.work:
            if req.aborted or req.finished:
                continue
            if req.scheduled_at is None:
                req.scheduled_at = now - plan.duration_s
            req.num_computed += n
            if req.num_computed < req.num_tokens:
                continue
            req.num_tokens += 1
            req.generated += 1
            emitted.append(req)
            if req.generated >= req.n_target:
                req.finished = True
                self.running.remove(req)
                self._free(req)
        return emitted
