"""The global open-loop schedule: gamma arrivals (KS tests), rate profiles, dealing and re-dealing exactly once."""

from __future__ import annotations

import itertools
import math

import pytest

from llmload import schedule
from llmload.errors import ConfigError
from llmload.open_loop import Assignment, offsets
from llmload.traces import Trace, TraceRequest


def gamma_cdf(x: float, shape: float, scale: float) -> float:
    """P(X <= x) of a gamma distribution: the regularized lower incomplete gamma (series / continued fraction)."""
    if x <= 0:
        return 0.0
    z, a = x / scale, shape
    if z < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= z / n
            total += term
            if term < total * 1e-15:
                break
        return total * math.exp(-z + a * math.log(z) - math.lgamma(a))
    b, c, d = z + 1 - a, 1e300, 1 / (z + 1 - a)
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return 1.0 - math.exp(-z + a * math.log(z) - math.lgamma(a)) * h


def ks_p_value(samples: list[float], cdf) -> float:
    """Kolmogorov-Smirnov p-value of ``samples`` against ``cdf`` (Stephens' correction)."""
    xs = sorted(samples)
    n = len(xs)
    d = max(max(cdf(x) - i / n, (i + 1) / n - cdf(x)) for i, x in enumerate(xs))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return min(max(p, 0.0), 1.0)


def merged_gaps(spec: schedule.ScheduleSpec, slots: int, n: int) -> list[float]:
    """The gaps of the whole test's arrivals, put together from every slot's deal (up to a common horizon)."""
    per_slot = [
        [
            t
            for t, _k in itertools.islice(
                offsets(
                    Assignment(1, spec.mode, spec.rate_rps, slot, slots, 0.0, spec.seed, burstiness=spec.burstiness)
                ),
                n // slots,
            )
        ]
        for slot in range(slots)
    ]
    horizon = min(times[-1] for times in per_slot)
    merged = sorted(t for times in per_slot for t in times if t <= horizon)
    return [b - a for a, b in zip(merged, merged[1:], strict=False)]


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 1.0, 2.0, 4.0])
def test_gamma_arrivals_of_three_workers_add_up_to_one_gamma_process(burstiness):
    rate = 20.0
    spec = schedule.ScheduleSpec(mode="gamma", rate_rps=rate, burstiness=burstiness, seed=7)
    gaps = merged_gaps(spec, slots=3, n=3000)
    assert sum(gaps) / len(gaps) == pytest.approx(1 / rate, rel=0.1)
    right = ks_p_value(gaps, lambda x: gamma_cdf(x, burstiness, 1 / (burstiness * rate)))
    assert right > 0.01, right
    # The test has power: another burstiness is rejected.
    other = burstiness * 2 if burstiness < 1 else burstiness / 2
    wrong = ks_p_value(gaps, lambda x: gamma_cdf(x, other, 1 / (other * rate)))
    assert wrong < 1e-4, wrong


def test_poisson_is_gamma_with_burstiness_1_and_the_cdf_helper_is_right():
    assert gamma_cdf(0.7, 1.0, 0.5) == pytest.approx(1 - math.exp(-1.4))
    assert gamma_cdf(3.0, 2.0, 1.0) == pytest.approx(1 - math.exp(-3) * (1 + 3))
    gaps = merged_gaps(schedule.ScheduleSpec(mode="poisson", rate_rps=50.0, seed=3), slots=2, n=2000)
    assert ks_p_value(gaps, lambda x: 1 - math.exp(-50.0 * x)) > 0.01


def test_rate_profiles_parse_and_invert():
    step = schedule.parse_rate_profile("step:0=2,10s=5,1m=0,90=1")
    assert step.points == ((0.0, 2.0), (10.0, 5.0), (60.0, 0.0), (90.0, 1.0))
    assert step.cumulative(10) == pytest.approx(20) and step.cumulative(60) == pytest.approx(270)
    assert step.inverse(20) == pytest.approx(10) and step.inverse(271) == pytest.approx(91)
    ramp = schedule.parse_rate_profile("ramp:0=0,100=10")
    assert ramp.rate_at(50) == pytest.approx(5) and ramp.cumulative(100) == pytest.approx(500)
    for s in (1.0, 125.0, 499.0, 700.0):
        assert ramp.cumulative(ramp.inverse(s)) == pytest.approx(s)
    # Arrivals follow the profile: about 20 in the first 10 s, then 5/s.
    spec = schedule.ScheduleSpec(mode="constant", profile="step:0=2,10=5", seed=0)
    times = list(itertools.takewhile(lambda t: t < 20, schedule.offsets(spec)))
    assert sum(t < 10 for t in times) == 20 and sum(10 <= t < 20 for t in times) == 50
    for bad, message in (
        ("2", "expected step:T=R"),
        ("step:1=2", "first point must be at time 0"),
        ("ramp:0=1,10=2,5=3", "times must increase"),
        ("step:0=-1", ">= 0"),
        ("step:0=0", "every rate is 0"),
        ("step:0=1,soon=2", "expected a time"),
    ):
        with pytest.raises(ConfigError, match=message):
            schedule.parse_rate_profile(bad)


def dealt(assignments: list[tuple[Assignment, float]], trace: Trace | None = None) -> list[int]:
    """Every index the deals send: each deal from its start_s until the next one takes over (its ``until``)."""
    out = []
    for assignment, until in assignments:
        for t, k in offsets(assignment, trace=trace):
            if t >= until:
                break
            out.append(k)
    return out


@pytest.mark.parametrize("mode", ["constant", "poisson", "gamma"])
def test_re_dealing_from_the_current_offset_sends_every_arrival_exactly_once(mode):
    def deal(epoch: int, slots: int, start_s: float, until_s: float) -> list[tuple[Assignment, float]]:
        return [
            (Assignment(epoch, mode, 40.0, slot, slots, 0.0, 5, start_s=start_s, burstiness=0.5), until_s - start_s)
            for slot in range(slots)
        ]

    # 3 workers for 10 s, then one joins (4) for 5 s, then two leave (2) until 30 s.
    indices = dealt([*deal(1, 3, 0.0, 10.0), *deal(2, 4, 10.0, 15.0), *deal(3, 2, 15.0, 30.0)])
    spec = schedule.ScheduleSpec(mode=mode, rate_rps=40.0, burstiness=0.5, seed=5)
    expected = schedule.due_between(spec, 0.0, 30.0)
    assert sorted(indices) == list(range(expected)) and len(indices) == expected


def test_a_trace_is_dealt_exactly_once_with_each_session_on_one_slot():
    rows = [
        TraceRequest(at_s=i * 0.5, input_tokens=10, output_tokens=5, session=f"s{i % 7}" if i % 3 == 0 else None)
        for i in range(300)
    ]
    trace = Trace(path="t", format="llmload", requests=rows, failed_rows=0, rows=300, duration_s=149.5)
    slots = [Assignment(1, "trace", 0.0, slot, 3, 0.0, 1, speed=10.0) for slot in range(3)]
    per_slot = [[k for _t, k in offsets(a, trace=trace)] for a in slots]
    assert sorted(k for ks in per_slot for k in ks) == list(range(300))
    for session in {row.session for row in rows if row.session}:
        owners = {i for i, ks in enumerate(per_slot) for k in ks if rows[k].session == session}
        assert len(owners) == 1, session
    # At 10x the trace's 0.5 s gaps are 50 ms.
    times = [t for t, _k in offsets(Assignment(1, "trace", 0.0, 0, 1, 0.0, 1, speed=10.0), trace=trace)]
    assert times[:3] == pytest.approx([0.0, 0.05, 0.1])
    assert (
        schedule.due_between(
            schedule.ScheduleSpec(mode="trace", speed=10.0), 0.0, 1.0, trace_times=[r.at_s for r in rows]
        )
        == 20
    )
