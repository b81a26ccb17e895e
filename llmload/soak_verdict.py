"""The soak verdict's rules, without Locust: breach episodes, window summaries, drift and verdicts.

``llmload.soak`` feeds these from its windows; docs/soak.md defines each rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmload.figures import attainment, per_second
from llmload.metrics import GroupMetrics

RELATIVE_THRESHOLD = 0.10
"""A drift counts when it exceeds this share of the first steady window's value..."""
ABSOLUTE_FLOORS = {"ttft_p99_s": 0.05, "itl_p50_s": 0.002, "stream_rate_p50_tps": 1.0}
"""...and this absolute amount (goodput's floor is one request per window, ``goodput_floor``)."""
# (figure, True when a higher value is worse)
DRIFT_METRICS = (
    ("ttft_p99_s", True),
    ("itl_p50_s", True),
    ("stream_rate_p50_tps", False),
    ("goodput_rps", False),
)
MAX_LISTED_BREACHES = 1000
"""Breach episodes listed per backend; later ones are only counted (``breach_count``)."""
VERDICT_ORDER = ("degraded", "improved", "stable", "too short")


def goodput_floor(window_s: float) -> float:
    """The absolute floor of a goodput drift: one SLO-met request per window."""
    return 1.0 / window_s


# -- one interval of one backend -----------------------------------------------------------------


@dataclass
class Counts:
    """The exact counters of one backend over a span (its groups added up)."""

    ok: int = 0
    failed: int = 0
    met: int = 0
    ttft_met: int = 0
    stream_rate_met: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add_group(self, group: GroupMetrics) -> None:
        counters = group.counters
        self.ok += counters["ok"]
        self.failed += counters["failed"]
        self.met += counters["slo_met"]
        self.ttft_met += counters["slo_ttft_met"]
        self.stream_rate_met += counters["slo_stream_rate_met"]
        for kind, n in group.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n

    def add(self, other: Counts) -> None:
        self.ok += other.ok
        self.failed += other.failed
        self.met += other.met
        self.ttft_met += other.ttft_met
        self.stream_rate_met += other.stream_rate_met
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n

    @property
    def finished(self) -> int:
        return self.ok + self.failed

    @property
    def attainment(self) -> float | None:
        return attainment(self.met, self.finished)

    def reason(self) -> tuple[str, str]:
        """The main reason of the misses, as ``(cause, kind)``.

        ``(error class, "error")`` when failed requests are most of the misses (the commonest class);
        else ``("ttft" | "stream_rate", "slo")``, by which SLO successful requests missed more (a tie:
        stream rate).
        """
        misses = self.finished - self.met
        if self.errors and 2 * self.failed > misses:
            kind = max(sorted(self.errors), key=lambda k: self.errors[k])
            return kind, "error"
        ttft_missed, rate_missed = self.ok - self.ttft_met, self.ok - self.stream_rate_met
        return ("ttft" if ttft_missed > rate_missed else "stream_rate"), "slo"


# -- breach episodes ----------------------------------------------------------------------------


@dataclass
class Episode:
    """An SLO-breach episode of one backend, open or ended.

    Its cause is the reason (``Counts.reason``) of most of its breaching intervals, the earliest on a
    tie: weighted by time, not by requests, since a failing request returns at once and comes back
    for more (a restart's burst of connection errors) while a slow one takes seconds.
    """

    backend: str
    start: float
    counts: Counts = field(default_factory=Counts)
    reasons: dict[str, int] = field(default_factory=dict)
    """Breaching intervals by their reason, in order of first appearance."""
    kinds: dict[str, str] = field(default_factory=dict)
    intervals: int = 0
    worst_attainment: float = 1.0

    def add(self, counts: Counts) -> None:
        """Add one breaching interval."""
        self.counts.add(counts)
        self.intervals += 1
        reason, kind = counts.reason()
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self.kinds[reason] = kind
        share = counts.attainment
        if share is not None:
            self.worst_attainment = min(self.worst_attainment, share)

    def as_dict(self, *, end: float | None, stopped_at: float) -> dict[str, Any]:
        counts = self.counts
        cause = max(self.reasons, key=lambda r: self.reasons[r])  # the first of the most frequent
        until = end if end is not None else stopped_at
        return {
            "backend": self.backend,
            "start": round(self.start, 3),
            "end": None if end is None else round(end, 3),
            "recovered": end is not None,
            "time_to_recover_s": None if end is None else round(end - self.start, 3),
            "duration_s": round(max(until - self.start, 0.0), 3),
            "cause": cause,
            "cause_kind": self.kinds[cause],
            "onset_cause": next(iter(self.reasons)),
            "reasons": dict(self.reasons),
            "worst_attainment": self.worst_attainment,
            "intervals": self.intervals,
            "requests": counts.finished,
            "misses": {
                "total": counts.finished - counts.met,
                "ttft": counts.ok - counts.ttft_met,
                "stream_rate": counts.ok - counts.stream_rate_met,
                "errors": dict(sorted(counts.errors.items())),
            },
        }


class BreachTracker:
    """Every backend's breach episodes on the fine timeline."""

    def __init__(self, objective: float) -> None:
        self.objective = objective
        self.open: dict[str, Episode] = {}
        self.ended: dict[str, list[dict[str, Any]]] = {}
        self.count: dict[str, int] = {}

    def observe(self, backend: str, counts: Counts, *, start: float) -> None:
        """Judge one interval of ``backend`` that began at ``start`` (wall time)."""
        share = counts.attainment
        if share is None:
            return  # no finished request: neither a breach nor a recovery
        episode = self.open.get(backend)
        if share < self.objective:
            if episode is None:
                episode = self.open[backend] = Episode(backend, start)
                self.count[backend] = self.count.get(backend, 0) + 1
            episode.add(counts)
        elif episode is not None:
            del self.open[backend]
            self._keep(episode.as_dict(end=start, stopped_at=start))

    def _keep(self, episode: dict[str, Any]) -> None:
        listed = self.ended.setdefault(episode["backend"], [])
        if len(listed) < MAX_LISTED_BREACHES:
            listed.append(episode)

    def listed(self, stopped_at: float) -> dict[str, list[dict[str, Any]]]:
        """Every backend's listed episodes, those still open included (``end`` None, not recovered)."""
        out = {backend: list(episodes) for backend, episodes in self.ended.items()}
        for backend, episode in self.open.items():
            listed = out.setdefault(backend, [])
            if len(listed) < MAX_LISTED_BREACHES:
                listed.append(episode.as_dict(end=None, stopped_at=stopped_at))
        return out

    def backends(self) -> set[str]:
        return set(self.count)


# -- windows and drift ---------------------------------------------------------------------------


def window_figures(group: GroupMetrics, *, duration_s: float) -> dict[str, Any]:
    """The summary a closed window keeps of one backend (no histogram): counts, rates, percentiles."""
    counters, dists = group.counters, group.dists
    finished, met = counters["ok"] + counters["failed"], counters["slo_met"]
    ttft = dists["ttft_s"].percentiles((50.0, 99.0))
    itl = dists["itl_s"].percentiles((50.0, 99.0))
    rate = dists["stream_rate_tps"].percentiles((10.0, 50.0))
    return {
        "requests": finished,
        "failed": counters["failed"],
        "errors": dict(sorted(group.errors.items())),
        "error_rate": counters["failed"] / finished if finished else None,
        "attainment": attainment(met, finished),
        "goodput_rps": per_second(met, duration_s),
        "output_tokens_per_s": per_second(counters["output_tokens"], duration_s),
        "ttft_p50_s": ttft[50.0],
        "ttft_p99_s": ttft[99.0],
        "itl_p50_s": itl[50.0],
        "itl_p99_s": itl[99.0],
        "stream_rate_p50_tps": rate[50.0],
        "stream_rate_p10_tps": rate[10.0],
        "e2e_p50_s": dists["e2e_s"].percentile(50.0),
    }


def drift_entry(first: float | None, last: float | None, *, floor: float, higher_is_worse: bool) -> dict[str, Any]:
    """One figure's drift: its two values, the relative change, and whether it is beyond the threshold."""
    if first is None or last is None:
        return {"first": first, "last": last, "change": None, "direction": None}
    delta = last - first
    beyond = abs(delta) > floor and (first == 0 or abs(delta) / abs(first) > RELATIVE_THRESHOLD)
    direction = "within"
    if beyond:
        direction = "worse" if (delta > 0) == higher_is_worse else "better"
    return {"first": first, "last": last, "change": delta / first if first else None, "direction": direction}


def judge_drift(
    first: dict[str, Any] | None, last: dict[str, Any] | None, *, floors: dict[str, float]
) -> tuple[dict[str, Any], str]:
    """Drift of one backend from its first steady window to its last one, and the verdict.

    A backend missing from a window had no finished request there: goodput 0, no percentiles.
    """
    drift = {}
    for name, higher_is_worse in DRIFT_METRICS:
        empty = 0.0 if name == "goodput_rps" else None
        a = first.get(name) if first is not None else empty
        b = last.get(name) if last is not None else empty
        drift[name] = drift_entry(a, b, floor=floors[name], higher_is_worse=higher_is_worse)
    directions = {entry["direction"] for entry in drift.values()}
    verdict = "degraded" if "worse" in directions else "improved" if "better" in directions else "stable"
    return drift, verdict


def overall_verdict(verdicts: list[str]) -> str:
    """The run's verdict: the first of degraded, improved, stable, too short that any backend has."""
    for verdict in VERDICT_ORDER:
        if verdict in verdicts:
            return verdict
    return "too short"
