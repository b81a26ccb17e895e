"""The self-check's rules, without Locust: thresholds, per-process samples, and the verdict.

``llmload.selfcheck`` samples each load-generating process and ships the
samples to the master; this module holds what they are (``CpuStats``,
``ProcessStats``, mergeable like the token metrics) and how a run is judged
from them (``judge``, with ``cpu_findings`` and ``lag_findings``), so that
the rules can be read and tested on their own (docs/performance.md lists
them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llmload.distribution import LATENCY_HIGHEST, LATENCY_SCALE, Distribution
from llmload.options import parse_number

DEFAULT_CPU_PERCENT = 90.0
DEFAULT_LAG_MS = 10.0
DEFAULT_LATENESS_MS = 10.0
CPU_SATURATED_SHARE = 0.25
MIN_CPU_SAMPLES = 3
# Consecutive saturated CPU samples before a process warns while the test runs.
LIVE_WARN_AFTER = 5
# Sizing: the CPU share of one core a worker should stay under (docs/kubernetes.md, Sizing): below
# the 90% saturation limit, where queueing delay is still small.
WORKER_TARGET_CPU_PERCENT = 75.0


@dataclass(frozen=True)
class Thresholds:
    """When a run stops being trustworthy."""

    cpu_percent: float = DEFAULT_CPU_PERCENT
    cpu_saturated_share: float = CPU_SATURATED_SHARE
    lag_s: float = DEFAULT_LAG_MS / 1e3
    lateness_s: float = DEFAULT_LATENESS_MS / 1e3

    @classmethod
    def from_parsed(cls, parsed: Any) -> Thresholds:
        """Validate the options; a bad value is a one-line ``ConfigError``."""
        cpu = _number(getattr(parsed, "llm_selfcheck_cpu", None), DEFAULT_CPU_PERCENT, "--llm-selfcheck-cpu", 1, 100)
        lag = _number(
            getattr(parsed, "llm_selfcheck_lag_ms", None), DEFAULT_LAG_MS, "--llm-selfcheck-lag-ms", 0.1, 60e3
        )
        lateness = _number(
            getattr(parsed, "llm_selfcheck_lateness_ms", None),
            DEFAULT_LATENESS_MS,
            "--llm-selfcheck-lateness-ms",
            0.1,
            60e3,
        )
        return cls(cpu_percent=cpu, lag_s=lag / 1e3, lateness_s=lateness / 1e3)

    def as_dict(self) -> dict[str, float]:
        return {
            "cpu_percent": self.cpu_percent,
            "cpu_saturated_share": self.cpu_saturated_share,
            "loop_lag_p99_s": self.lag_s,
            "dispatch_lag_p99_s": self.lag_s,
            "read_lateness_p99_s": self.lateness_s,
        }


def _number(text: Any, default: float, option: str, low: float, high: float) -> float:
    value = parse_number(
        text, option=option, default=default, low=low, high=high, expected=f"a number from {low:g} to {high:g}"
    )
    assert value is not None
    return value


def new_lag_distribution() -> Distribution:
    return Distribution(scale=LATENCY_SCALE, highest=LATENCY_HIGHEST)


def oversleep_s(*, asked_s: float, slept_s: float) -> float:
    """Return how late a sleeper resumed: the time slept beyond the time asked (never negative)."""
    return max(slept_s - asked_s, 0.0)


class CpuStats:
    """CPU samples of one process: count, sum, max, and how many were saturated."""

    __slots__ = ("samples", "total", "max", "saturated", "_limit", "_streak")

    def __init__(self, limit_percent: float) -> None:
        self._limit = limit_percent
        self.samples = 0
        self.total = 0.0
        self.max = 0.0
        self.saturated = 0
        self._streak = 0

    def add(self, percent: float) -> int:
        """Record one sample; return the current run of consecutive saturated samples."""
        self.samples += 1
        self.total += percent
        self.max = max(self.max, percent)
        if percent > self._limit:
            self.saturated += 1
            self._streak += 1
        else:
            self._streak = 0
        return self._streak

    def to_wire(self) -> list[float]:
        return [self.samples, self.total, self.max, self.saturated]

    def merge_wire(self, wire: list[float]) -> None:
        samples, total, peak, saturated = wire
        self.samples += int(samples)
        self.total += float(total)
        self.max = max(self.max, float(peak))
        self.saturated += int(saturated)

    def reset(self) -> None:
        self.samples, self.total, self.max, self.saturated = 0, 0.0, 0.0, 0

    def summary(self) -> dict[str, float | int | None]:
        n = self.samples
        return {
            "mean": self.total / n if n else None,
            "max": self.max if n else None,
            "saturated_share": self.saturated / n if n else None,
            "samples": n,
        }


class ProcessStats:
    """Everything sampled on one generator process (a delta on a worker, the whole run on the master)."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.cpu = CpuStats(thresholds.cpu_percent)
        self.lag = new_lag_distribution()
        self.lateness = new_lag_distribution()

    def to_wire(self) -> dict[str, Any]:
        return {"cpu": self.cpu.to_wire(), "lag": self.lag.to_wire(), "late": self.lateness.to_wire()}

    def merge_wire(self, wire: dict[str, Any]) -> None:
        self.cpu.merge_wire(wire["cpu"])
        self.lag.merge_wire(wire["lag"])
        if "late" in wire:
            self.lateness.merge_wire(wire["late"])

    def reset(self) -> None:
        self.cpu.reset()
        self.lag = new_lag_distribution()
        self.lateness = new_lag_distribution()

    def summary(self) -> dict[str, Any]:
        return {
            "cpu_percent": self.cpu.summary(),
            "loop_lag_s": tail_summary(self.lag),
            "read_lateness_s": tail_summary(self.lateness),
        }


def tail_summary(dist: Distribution) -> dict[str, float | int | None]:
    """p50, p99, max and count of a delay distribution (None without samples)."""
    values = dist.percentiles((50, 99))
    return {"p50": values[50], "p99": values[99], "max": dist.max if dist.count else None, "count": dist.count}


def cpu_findings(processes: dict[str, dict[str, Any]], thresholds: Thresholds) -> list[str]:
    """CPU saturation beyond the thresholds, per process."""
    findings = []
    for name, proc in sorted(processes.items()):
        cpu = proc["cpu_percent"]
        if cpu["samples"] >= MIN_CPU_SAMPLES and cpu["saturated_share"] > thresholds.cpu_saturated_share:
            findings.append(
                f"{name}: CPU above {thresholds.cpu_percent:g}% of a core in {cpu['saturated_share']:.0%} of "
                f"samples (mean {cpu['mean']:.0f}%, max {cpu['max']:.0f}%)"
            )
    return findings


def workers_to_add(
    processes: dict[str, dict[str, Any]],
    thresholds: Thresholds,
    *,
    target_percent: float = WORKER_TARGET_CPU_PERCENT,
) -> int:
    """How many load-generator processes (workers) to add when CPU saturation was found; else 0.

    The run's CPU demand is the sum of every sampled process's mean CPU (percent of one core); each
    worker should carry at most ``target_percent`` of it, so the run needed
    ``ceil(demand / target_percent)`` workers. A saturated process could not show more than its
    core, so the demand, and this figure, are a lower bound: at least 1 when saturation was found.
    """
    if not cpu_findings(processes, thresholds):
        return 0
    sampled = [proc["cpu_percent"] for proc in processes.values() if proc["cpu_percent"]["samples"]]
    demand = float(sum(cpu["mean"] for cpu in sampled))
    return max(int(math.ceil(demand / target_percent)) - len(sampled), 1)


def lag_findings(processes: dict[str, dict[str, Any]], thresholds: Thresholds) -> list[str]:
    """Event-loop lag beyond the threshold, per process."""
    findings = []
    for name, proc in sorted(processes.items()):
        lag_p99 = proc["loop_lag_s"]["p99"]
        if lag_p99 is not None and lag_p99 > thresholds.lag_s:
            findings.append(f"{name}: event-loop lag p99 {lag_p99 * 1e3:.1f} ms > {thresholds.lag_s * 1e3:g} ms")
    return findings


def judge(
    processes: dict[str, dict[str, Any]],
    dispatch_p99_s: float | None,
    thresholds: Thresholds,
    *,
    kernel_clock: bool = False,
) -> tuple[bool, list[str]]:
    """Return (trustworthy, reasons) for per-process summaries and the dispatch lag p99.

    With ``kernel_clock`` (every request kernel-stamped), CPU saturation is not a reason
    (``cpu_findings`` reports it as a note) and each process's read lateness p99 is one; the
    event-loop lag stays one: a read is measured against the newest segment's stamp, so the
    lateness of events coalesced behind it only shows in the loop's lag.
    """
    reasons = [] if kernel_clock else cpu_findings(processes, thresholds)
    reasons += lag_findings(processes, thresholds)
    if kernel_clock:
        for name, proc in sorted(processes.items()):
            late_p99 = (proc.get("read_lateness_s") or {}).get("p99")
            if late_p99 is not None and late_p99 > thresholds.lateness_s:
                reasons.append(
                    f"{name}: read lateness p99 {late_p99 * 1e3:.1f} ms > {thresholds.lateness_s * 1e3:g} ms "
                    "(events queued that long share one kernel stamp; requests leave that late)"
                )
    if dispatch_p99_s is not None and dispatch_p99_s > thresholds.lag_s:
        reasons.append(
            f"open-loop dispatch lag p99 {dispatch_p99_s * 1e3:.1f} ms > {thresholds.lag_s * 1e3:g} ms "
            "(requests left later than scheduled)"
        )
    return not reasons, reasons
