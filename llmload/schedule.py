"""The open-loop schedule: one global seeded sequence of arrivals, dealt to the load generators.

Every process computes the same global sequence from the run's settings, and sends the
arrivals dealt to its slot (docs/scenarios.md, "Open-loop arrivals"):

- ``constant``: arrival ``k`` at ``Λ⁻¹(k)``, evenly spaced at the rate; dealt round robin
  (``k mod slots``), so the slots interleave;
- ``poisson`` and ``gamma``: the gaps, in units of the rate, are gamma-distributed with shape
  ``b`` (the burstiness) and mean 1 (``b = 1``: exponential, a Poisson process; ``b < 1``:
  burstier; ``b > 1``: more regular; vLLM's ``--burstiness``); arrival ``k`` is dealt to
  slot ``floor(u_k * slots)`` with ``u_k`` a seeded hash of ``k``. Independent gamma streams
  per process would not add up to a gamma stream: this one global stream is one;
- ``trace``: arrival ``k`` is request ``k`` of the trace at its recorded time over the speed
  factor; a session's requests go to one slot (a hash of the session id), others as above.

A rate profile (``step:`` or ``ramp:``, ``parse_rate_profile``) makes the rate a function of
time ``R(t)``; arrivals are drawn in operational time ``s = Λ(t) = ∫R`` and mapped back with
``Λ⁻¹``, so the process keeps its shape at every rate.
"""

from __future__ import annotations

import bisect
import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from llmload.errors import ConfigError
from llmload.options import parse_float

MODES = ("poisson", "constant", "gamma", "trace")
PROFILE_KINDS = ("step", "ramp")
_MASK64 = (1 << 64) - 1
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, *, option: str) -> float:
    """Seconds from ``90``, ``90s``, ``1.5m``, ``2h`` or ``250ms``."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"--{option}: expected a time such as 90, 90s, 30m or 2h; got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class RateProfile:
    """Requests per second over time: ``step`` holds each rate until the next point, ``ramp`` interpolates."""

    kind: str
    points: tuple[tuple[float, float], ...]
    """(seconds after the schedule's start, requests/s), by time; the first at 0."""
    spec: str = ""

    def rate_at(self, t: float) -> float:
        times = [p[0] for p in self.points]
        i = bisect.bisect_right(times, t) - 1
        t0, r0 = self.points[max(i, 0)]
        if self.kind == "step" or i + 1 >= len(self.points):
            return r0
        t1, r1 = self.points[i + 1]
        return r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    def _segments(self) -> Iterator[tuple[float, float, float, float]]:
        """(start, end, rate at start, rate at end) of each piece, the last one open-ended."""
        for i, (t0, r0) in enumerate(self.points):
            if i + 1 < len(self.points):
                t1, r1 = self.points[i + 1]
                yield t0, t1, r0, (r0 if self.kind == "step" else r1)
            else:
                yield t0, math.inf, r0, r0

    def cumulative(self, t: float) -> float:
        """Λ(t): the expected arrivals from 0 to ``t``."""
        total = 0.0
        for start, end, r0, r1 in self._segments():
            if t <= start:
                break
            upto = min(t, end)
            span = upto - start
            slope = 0.0 if end == math.inf else (r1 - r0) / (end - start)
            total += r0 * span + slope * span * span / 2
        return total

    def inverse(self, s: float) -> float:
        """Λ⁻¹(s): the time at which ``s`` arrivals are expected; inf when the rate stays 0 past it."""
        done = 0.0
        for start, end, r0, r1 in self._segments():
            span = end - start
            slope = 0.0 if end == math.inf else (r1 - r0) / span
            piece = math.inf if end == math.inf else r0 * span + slope * span * span / 2
            if s <= done + piece:
                need = s - done
                if slope == 0.0:
                    return start + need / r0 if r0 > 0 else math.inf
                # r0 x + slope x^2 / 2 = need
                disc = r0 * r0 + 2 * slope * need
                return start + (-r0 + math.sqrt(max(disc, 0.0))) / slope
            done += piece
        return math.inf


def parse_rate_profile(spec: str, *, option: str = "llm-rate-profile") -> RateProfile:
    """``step:0=2,10m=5,20m=3`` or ``ramp:0=1,30m=10,60m=1``: (time=rate) points from the test's start."""
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in PROFILE_KINDS:
        raise ConfigError(f"--{option}: expected step:T=R,... or ramp:T=R,... (T a time, R requests/s); got {spec!r}")
    points: list[tuple[float, float]] = []
    for item in filter(None, (part.strip() for part in rest.split(","))):
        when, eq, rate_text = item.partition("=")
        if not eq:
            raise ConfigError(f"--{option}: expected T=R in {item!r}")
        t = parse_duration(when, option=option)
        try:
            rate = float(rate_text)
        except ValueError:
            raise ConfigError(f"--{option}: expected a rate (requests/s) in {item!r}") from None
        if not math.isfinite(rate) or rate < 0:
            raise ConfigError(f"--{option}: a rate must be >= 0 in {item!r}")
        if points and t <= points[-1][0]:
            raise ConfigError(f"--{option}: times must increase; {item!r} does not")
        points.append((t, rate))
    if not points or points[0][0] != 0:
        raise ConfigError(f"--{option}: the first point must be at time 0; got {spec!r}")
    if all(rate == 0 for _, rate in points):
        raise ConfigError(f"--{option}: every rate is 0")
    return RateProfile(kind, tuple(points), spec.strip())


def constant_profile(rate_rps: float) -> RateProfile:
    return RateProfile("step", ((0.0, rate_rps),), f"{rate_rps:g}")


def share(seed: int, k: int) -> float:
    """A seeded, well-mixed number in [0, 1) for arrival ``k`` (splitmix64)."""
    z = (seed * 0x9E3779B97F4A7C15 + (k + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


def session_share(seed: int, session: str) -> float:
    """The share of a session: every request of a session goes to one slot."""
    h = 1469598103934665603
    for byte in session.encode():
        h = ((h ^ byte) * 1099511628211) & _MASK64
    return share(seed, h)


@dataclass(frozen=True)
class ScheduleSpec:
    """What every process needs to compute the global schedule (trace times come from the trace file)."""

    mode: str
    rate_rps: float = 0.0
    burstiness: float = 1.0
    profile: str = ""
    seed: int = 0
    speed: float = 1.0

    def rate_profile(self) -> RateProfile:
        return parse_rate_profile(self.profile) if self.profile else constant_profile(self.rate_rps)


def offsets(spec: ScheduleSpec, *, trace_times: Sequence[float] = ()) -> Iterator[float]:
    """The global arrivals' times (seconds after the schedule's start), in order, forever (or to the trace's end)."""
    if spec.mode == "trace":
        speed = spec.speed
        for t in trace_times:
            yield t / speed
        return
    profile = spec.rate_profile()
    if spec.mode == "constant":
        k = 0
        while True:
            t = profile.inverse(float(k))
            if t == math.inf:
                return
            yield t
            k += 1
    shape = 1.0 if spec.mode == "poisson" else spec.burstiness
    rng = random.Random(f"llmload-schedule:{spec.seed}:{spec.mode}:{shape}")
    s = 0.0
    while True:
        s += rng.gammavariate(shape, 1.0 / shape)
        t = profile.inverse(s)
        if t == math.inf:
            return
        yield t


def slot_of(spec: ScheduleSpec, k: int, slots: int, *, session: str | None = None) -> int:
    """The slot arrival ``k`` is dealt to, among ``slots``."""
    if slots <= 1:
        return 0
    if spec.mode == "constant":
        return k % slots
    u = session_share(spec.seed, session) if session is not None else share(spec.seed, k)
    return min(int(u * slots), slots - 1)


def due_between(spec: ScheduleSpec, start_s: float, end_s: float, *, trace_times: Sequence[float] = ()) -> int:
    """How many global arrivals fall in [start_s, end_s) of the schedule."""
    if spec.mode == "trace":
        times = [t / spec.speed for t in trace_times]
        return bisect.bisect_left(times, end_s) - bisect.bisect_left(times, start_s)
    count = 0
    for t in offsets(spec):
        if t >= end_s:
            break
        if t >= start_s:
            count += 1
    return count


def schedule_options(get: Any, arrival: str) -> dict[str, Any]:
    """The open-loop schedule's options: rate or rate profile, burstiness, trace replay, tokenizer."""
    out: dict[str, Any] = {}
    trace = str(get("llm_trace") or "").strip()
    if trace and arrival == "closed":
        arrival = "trace"
    if arrival == "trace" and not trace:
        raise ConfigError("--llm-arrival trace: needs --llm-trace FILE")
    if trace and arrival != "trace":
        raise ConfigError(
            f"--llm-trace: replays at the trace's times; it cannot be combined with --llm-arrival {arrival}"
        )
    rate = parse_float(get("llm_rate"), option="llm-rate", exclusive=True)
    profile = str(get("llm_rate_profile") or "").strip()
    if profile:
        parse_rate_profile(profile)
    if arrival in ("poisson", "constant", "gamma") and rate is None and not profile:
        raise ConfigError(
            f"--llm-arrival {arrival}: needs --llm-rate (requests/s for the whole test) or --llm-rate-profile"
        )
    if arrival in ("closed", "trace") and (rate is not None or profile):
        raise ConfigError(
            f"--llm-rate{'-profile' if profile else ''}: only with --llm-arrival poisson, constant or gamma"
        )
    burstiness = parse_float(get("llm_burstiness"), option="llm-burstiness", exclusive=True)
    if burstiness is not None and arrival != "gamma":
        raise ConfigError("--llm-burstiness: only with --llm-arrival gamma")
    out["arrival"], out["rate_rps"], out["rate_profile"] = arrival, rate, profile
    out["burstiness"] = burstiness if burstiness is not None else 1.0
    out["trace"] = trace
    out["trace_format"] = str(get("llm_trace_format") or "auto").strip().lower()
    out["trace_speed"] = parse_float(get("llm_trace_speed") or "1", option="llm-trace-speed", exclusive=True) or 1.0
    out["trace_start_s"] = parse_duration(str(get("llm_trace_start") or "0"), option="llm-trace-start")
    duration = str(get("llm_trace_duration") or "").strip()
    out["trace_duration_s"] = parse_duration(duration, option="llm-trace-duration") if duration else None
    cap = str(get("llm_trace_max_requests") or "").strip()
    if cap and (not cap.isdigit() or int(cap) < 1):
        raise ConfigError(f"--llm-trace-max-requests: expected a whole number >= 1, got {cap!r}")
    out["trace_max_requests"] = int(cap) if cap else None
    block = str(get("llm_block_tokens") or "512").strip()
    if not block.isdigit() or int(block) < 1:
        raise ConfigError(f"--llm-block-tokens: expected a whole number >= 1, got {block!r}")
    out["block_tokens"] = int(block)
    out["tokenizer"] = str(get("llm_tokenizer") or "").strip()
    if trace:
        from llmload import trace_replay

        trace_replay.trace_of(out)  # read once per process: a bad file is one line and exit 2 at start
    if out["tokenizer"]:
        from llmload import token_text

        token_text.load_text_maker(out["tokenizer"], seed=0)
    return out
