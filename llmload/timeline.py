"""The results' ``timeline``: the run's state every few seconds, bounded for hours-long runs.

Each point holds cumulative counts (requests, output tokens of finished requests
and output tokens as they arrived, ``llmload.streamed``, SLO-met) and the
figures of the interval since the previous point (its own window, see
``llmload.windows``). A timeline longer than ``MAX_POINTS`` is halved (every
other point kept) and then sampled half as often, so a soak test keeps a
bounded, evenly spaced history.

Points are kept in columns (one ``array`` per field, a few bytes per point)
rather than as a dict per point: a soak run adds a point every 2 s for hours,
and thousands of small long-lived objects among each request's short-lived
ones keep the allocator from giving memory back.
"""

from __future__ import annotations

import math
import time
from array import array
from typing import Any

from llmload.figures import Slo, group_body
from llmload.metrics import MetricsStore
from llmload.pooling import STREAM

MAX_POINTS = 3600
WINDOW = "timeline"
INTERVAL_DISTRIBUTIONS = ("ttft_s", "itl_s", "stream_rate_tps")

# field -> array typecode: "q" for counts, "d" for figures (NaN stands for no value, None in the points)
FIELDS: dict[str, str] = {
    "t": "d",
    "users": "q",
    "in_flight": "d",
    "generator_cpu_percent": "d",
    "requests_ok": "q",
    "requests_failed": "q",
    "output_tokens": "q",
    "output_tokens_arrived": "q",
    "slo_met": "q",
    "ttft_p50_s": "d",
    "ttft_p99_s": "d",
    "itl_p50_s": "d",
    "stream_rate_p50_tps": "d",
}


class Timeline:
    """The points of one run, and how often a sample becomes a point."""

    def __init__(self, *, max_points: int = MAX_POINTS) -> None:
        self.max_points = max_points
        self._columns: dict[str, array[Any]] = {name: array(code) for name, code in FIELDS.items()}
        self.every = 1
        """One sample in ``every`` becomes a point (doubles each time the timeline is halved)."""
        self._ticks = 0

    def reset(self) -> None:
        self._columns = {name: array(code) for name, code in FIELDS.items()}
        self.every, self._ticks = 1, 0

    def __len__(self) -> int:
        return len(self._columns["t"])

    @property
    def points(self) -> list[dict[str, Any]]:
        """The points, oldest first, as the results' ``timeline`` shows them (a new list each time)."""
        names = list(FIELDS)
        rows = zip(*(self._columns[name] for name in names), strict=True)
        return [{name: _shown(value) for name, value in zip(names, row, strict=True)} for row in rows]

    def tick(self) -> bool:
        """Count one sample; return whether it is due as a point."""
        self._ticks += 1
        return self._ticks % self.every == 0

    def append(
        self, *, store: MetricsStore, interval: MetricsStore, gauges: dict[str, dict[str, float]], users: int
    ) -> dict[str, Any]:
        """Add the point of now: cumulative counts of ``store`` and the figures of ``interval``."""
        totals = dict.fromkeys(("ok", "failed", "output_tokens", "arrived_output_tokens", "slo_met"), 0)
        for group in store.groups.values():
            if group.kind != STREAM:  # the timeline follows streamed requests (tokens, SLO)
                continue
            for name in totals:
                totals[name] += group.counters[name]
        figures = group_body(interval.total(), slo=Slo.of(interval), distributions=INTERVAL_DISTRIBUTIONS)
        processes = gauges.values()
        point: dict[str, Any] = {
            "t": round(time.time(), 3),
            "users": users,
            "in_flight": sum(g.get("in_flight", 0) for g in processes),
            "generator_cpu_percent": max((g.get("cpu_percent", 0) for g in processes), default=0.0),
            "requests_ok": totals["ok"],
            "requests_failed": totals["failed"],
            "output_tokens": totals["output_tokens"],
            "output_tokens_arrived": totals["arrived_output_tokens"],
            "slo_met": totals["slo_met"],
            "ttft_p50_s": figures["ttft_s"]["p50"],
            "ttft_p99_s": figures["ttft_s"]["p99"],
            "itl_p50_s": figures["itl_s"]["p50"],
            "stream_rate_p50_tps": figures["stream_rate_tps"]["p50"],
        }
        for name, column in self._columns.items():
            value = point[name]
            column.append(math.nan if value is None else value)
        if len(self) > self.max_points:
            self._columns = {name: column[::2] for name, column in self._columns.items()}
            self.every *= 2
        return point


def _shown(value: float) -> float | None:
    """A column's value as a point shows it: NaN (no value) as None."""
    return None if value != value else value  # NaN is the only value unequal to itself
