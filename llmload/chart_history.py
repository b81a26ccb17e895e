"""The web UI's chart history: one point per group per closed live slice, bounded in memory.

Each point covers one slice of the sliding window (``llmload.live``: 10 s by
default) and holds that slice's figures, computed by the same function as
the exporter's live percentiles (``live.percentiles_of``) from the same
merged HdrHistograms: TTFT and ITL p50/p99, stream rate p50/p10, output
tokens per second as they arrived (``llmload.streamed``), finished and failed
requests with their error kinds, and SLO attainment; plus, per backend, the
users and requests in flight the load generators reported.

A group keeps at most ``MAX_POINTS`` points (an hour at 10 s), as tuples in
``FIELDS`` order; at 50 groups that is about 9 MiB.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Reversible
from typing import Any

from llmload.figures import attainment
from llmload.metrics import GroupMetrics
from llmload.pooling import STREAM

MAX_POINTS = 360
GroupKey = tuple[str, str, str]
Percentiles = dict[str, dict[float, float | None]]

FIELDS = (
    "t",
    "ttft_p50_s",
    "ttft_p99_s",
    "itl_p50_s",
    "itl_p99_s",
    "stream_rate_p50_tps",
    "stream_rate_p10_tps",
    "output_tokens_per_s",
    "requests",
    "failed",
    "slo_attainment",
)
"""What each group's point holds, in order (``t``: wall-clock end of the slice)."""

Point = tuple[float | int | None, ...]


def point_of(end: float, duration_s: float, group: GroupMetrics, figures: Percentiles) -> Point:
    """One group's point for a slice that ended at ``end`` and lasted ``duration_s``."""
    counters = group.counters
    finished = counters["ok"] + counters["failed"]
    ttft, itl, rate = figures["ttft_s"], figures["itl_s"], figures["stream_rate_tps"]
    streamed = group.kind == STREAM  # embeddings, score and rerank: no tokens out, no streaming SLO
    return (
        round(end, 3),
        ttft[50.0],
        ttft[99.0],
        itl[50.0],
        itl[99.0],
        rate[50.0],
        rate[10.0],
        counters["arrived_output_tokens"] / duration_s if duration_s > 0 and streamed else None,
        finished,
        counters["failed"],
        attainment(counters["slo_met"], finished) if streamed else None,
    )


class ChartHistory:
    """The points of every group and the per-backend load of each slice."""

    def __init__(self, *, max_points: int = MAX_POINTS) -> None:
        self.max_points = max_points
        self.points: dict[GroupKey, deque[Point]] = {}
        self.errors: dict[GroupKey, deque[tuple[float, dict[str, int]]]] = {}
        """Error kinds by group, for the slices that had failures only."""
        self.load: deque[tuple[float, dict[str, dict[str, float]]]] = deque(maxlen=max_points)
        """(t, backend -> {"users", "in_flight"}) per slice."""

    def reset(self) -> None:
        self.points.clear()
        self.errors.clear()
        self.load.clear()

    def add_slice(
        self,
        *,
        end: float,
        duration_s: float,
        groups: dict[GroupKey, GroupMetrics],
        percentiles: Callable[[dict[GroupKey, GroupMetrics]], dict[GroupKey, Percentiles]],
        load: dict[str, dict[str, float]],
    ) -> None:
        """Append the points of one closed slice (``percentiles`` is the exporter's function)."""
        figures = percentiles(groups)
        for key, group in groups.items():
            series = self.points.get(key)
            if series is None:
                series = self.points[key] = deque(maxlen=self.max_points)
            series.append(point_of(end, duration_s, group, figures[key]))
            if group.errors:
                kinds = self.errors.get(key)
                if kinds is None:
                    kinds = self.errors[key] = deque(maxlen=self.max_points)
                kinds.append((round(end, 3), dict(group.errors)))
        self.load.append((round(end, 3), load))

    def as_json(self, *, since: float = 0.0) -> dict[str, Any]:
        """The points after ``since`` (wall-clock seconds), grouped by series, for the web UI.

        Series are in time order, so each is read from its newest end back to ``since``: a poll
        for the last few points costs the same with an hour of history as with a minute.
        """
        return {
            "fields": list(FIELDS),
            "groups": [
                {
                    "backend": key[0],
                    "model": key[1],
                    "user_class": key[2],
                    "points": [list(p) for p in _after(series, since)],
                    "errors": [[t, kinds] for t, kinds in _after(self.errors.get(key, ()), since)],
                }
                for key, series in sorted(self.points.items())
            ],
            "load": [[t, by_backend] for t, by_backend in _after(self.load, since)],
        }


def _after(series: Reversible[Any], since: float) -> list[Any]:
    """The entries of a time-ordered series (first item: the time) later than ``since``, oldest first."""
    newer = []
    for entry in reversed(series):
        if entry[0] <= since:
            break
        newer.append(entry)
    newer.reverse()
    return newer


def backend_load(by_process: Iterable[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Sum the users and requests in flight per backend over the load-generating processes."""
    out: dict[str, dict[str, float]] = {}
    for backends in by_process:
        for backend, gauges in backends.items():
            mine = out.setdefault(backend, {"users": 0.0, "in_flight": 0.0})
            mine["users"] += gauges.get("users", 0.0)
            mine["in_flight"] += gauges.get("in_flight", 0.0)
    return out
