"""The results' ``timeline``: the run's state every few seconds, bounded for hours-long runs.

Each point holds cumulative counts (requests, output tokens of finished requests
and output tokens as they arrived, ``llmload.streamed``, SLO-met) and the
figures of the interval since the previous point (its own window, see
``llmload.windows``). A timeline longer than ``MAX_POINTS`` is halved (every
other point kept) and then sampled half as often, so a soak test keeps a
bounded, evenly spaced history.
"""

from __future__ import annotations

import time
from typing import Any

from llmload.figures import Slo, group_body
from llmload.metrics import MetricsStore

MAX_POINTS = 3600
WINDOW = "timeline"
INTERVAL_DISTRIBUTIONS = ("ttft_s", "itl_s", "stream_rate_tps")


class Timeline:
    """The points of one run, and how often a sample becomes a point."""

    def __init__(self, *, max_points: int = MAX_POINTS) -> None:
        self.max_points = max_points
        self.points: list[dict[str, Any]] = []
        self.every = 1
        """One sample in ``every`` becomes a point (doubles each time the timeline is halved)."""
        self._ticks = 0

    def reset(self) -> None:
        self.points, self.every, self._ticks = [], 1, 0

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
            for name in totals:
                totals[name] += group.counters[name]
        figures = group_body(interval.total(), slo=Slo.of(interval), distributions=INTERVAL_DISTRIBUTIONS)
        processes = gauges.values()
        point = {
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
        self.points.append(point)
        if len(self.points) > self.max_points:
            self.points = self.points[::2]
            self.every *= 2
        return point
