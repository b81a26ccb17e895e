"""One metric's samples, mergeable: an HdrHistogram plus exact count, sum, min and max.

Every distribution has 3 significant digits (relative error <= 0.1%); means are exact.
``DISTRIBUTIONS`` names each metric a group keeps, with its scale and range.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from llmload.hdr import ScaledHistogram

SIGNIFICANT_DIGITS = 3
PERCENTILES = (10.0, 50.0, 90.0, 99.0)
# Latencies are stored in microseconds up to one hour; rates in milli-tokens/s up to 1M tok/s.
LATENCY_SCALE = 1e6
LATENCY_HIGHEST = 3_600_000_000
RATE_SCALE = 1e3
RATE_HIGHEST = 1_000_000_000

# name -> (scale, highest trackable value)
DISTRIBUTIONS: dict[str, tuple[float, int]] = {
    "ttft_s": (LATENCY_SCALE, LATENCY_HIGHEST),
    "itl_s": (LATENCY_SCALE, LATENCY_HIGHEST),
    "tpot_s": (LATENCY_SCALE, LATENCY_HIGHEST),
    "e2e_s": (LATENCY_SCALE, LATENCY_HIGHEST),
    "stream_rate_tps": (RATE_SCALE, RATE_HIGHEST),
    "decode_rate_tps": (RATE_SCALE, RATE_HIGHEST),
    "dispatch_lag_s": (LATENCY_SCALE, LATENCY_HIGHEST),
    "connect_s": (LATENCY_SCALE, LATENCY_HIGHEST),
    "ttfa_s": (LATENCY_SCALE, LATENCY_HIGHEST),
    "reasoning_s": (LATENCY_SCALE, LATENCY_HIGHEST),
    "answer_stream_rate_tps": (RATE_SCALE, RATE_HIGHEST),
    "latency_s": (LATENCY_SCALE, LATENCY_HIGHEST),
}
REASONING_DISTRIBUTIONS = ("ttfa_s", "reasoning_s", "answer_stream_rate_tps")
"""Filled by requests of reasoning models only (``RequestRecord.thinks``)."""
POOLING_DISTRIBUTIONS = ("latency_s",)
"""What embeddings, score and rerank requests fill instead of the streaming distributions."""


class Distribution:
    """One metric's samples: an HdrHistogram plus exact count, sum, min and max.

    The histogram (about 184 KiB for a latency) is allocated on the first sample: a group keeps
    every distribution, and many stay empty in a run (dispatch lag in closed-loop runs,
    connection set-up on kept-alive connections, reasoning figures of models that do not think).
    """

    __slots__ = ("_hist", "_scale", "_highest", "count", "total", "min", "max")

    def __init__(self, *, scale: float, highest: int) -> None:
        self._hist: ScaledHistogram | None = None
        self._scale = scale
        self._highest = highest
        self.count = 0
        self.total = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def _allocated(self) -> ScaledHistogram:
        hist = self._hist
        if hist is None:
            hist = self._hist = ScaledHistogram(highest=self._highest, significant_digits=SIGNIFICANT_DIGITS)
        return hist

    def clear(self) -> None:
        """Forget every sample, keeping the histogram's memory."""
        if self._hist is not None:
            self._hist.clear()
        self.count = 0
        self.total = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def record(self, value: float) -> None:
        """Add one sample, in the metric's base unit (seconds or tokens/s)."""
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        (self._hist or self._allocated()).record(int(round(value * self._scale)))

    def record_many(self, values: Iterable[float]) -> None:
        """Add several samples (one pass; the same result as ``record`` on each, much cheaper)."""
        if not isinstance(values, list):
            values = list(values)
        if not values:
            return
        (self._hist or self._allocated()).record_scaled_floats(values, self._scale)
        lo, hi = min(values), max(values)
        self.count += len(values)
        total = self.total
        for value in values:  # in order, so that the sum equals that of ``record`` on each value
            total += value
        self.total = total
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi

    def percentile(self, q: float) -> float | None:
        """Return the value at percentile ``q`` (0-100), or None without samples."""
        if not self.count or self._hist is None:
            return None
        return self._hist.value_at_percentile(q) / self._scale

    def percentiles(self, qs: Sequence[float]) -> dict[float, float | None]:
        """Return the value at each percentile of ``qs`` (0-100), in one pass; None without samples."""
        if not self.count or self._hist is None:
            return dict.fromkeys(qs)
        values = self._hist.values_at_percentiles(qs)
        return {q: values[q] / self._scale for q in qs}

    def cumulative_counts(self, bounds: Sequence[float]) -> list[int]:
        """Return, for each ascending bound, how many samples lie at or below it.

        A bound falls inside one HdrHistogram cell; the whole cell counts as below
        it, so a count may include samples up to 0.1% above its bound.
        """
        if self._hist is None:
            return [0] * len(bounds)
        return self._hist.cumulative_counts((int(round(b * self._scale)) for b in bounds), limit=self.count)

    @property
    def histogram(self) -> ScaledHistogram:
        """The underlying histogram, in the metric's scaled integer units (allocated if it was not yet)."""
        return self._allocated()

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def summary(self) -> dict[str, float | int | None]:
        """Return count, mean, min, p10, p50, p90, p99 and max, as the results JSON shows them."""
        out: dict[str, float | int | None] = {
            "count": self.count,
            "mean": self.mean,
            "min": self.min if self.count else None,
        }
        for q, value in self.percentiles(PERCENTILES).items():
            out[f"p{q:g}"] = value
        out["max"] = self.max if self.count else None
        return out

    def to_wire(self) -> dict[str, Any]:
        return {
            "h": self._hist.encode() if self.count and self._hist is not None else b"",
            "n": self.count,
            "s": self.total,
            "lo": self.min if self.count else None,
            "hi": self.max if self.count else None,
        }

    def merge_wire(self, wire: dict[str, Any]) -> None:
        """Add a distribution serialized by ``to_wire``."""
        if not wire["n"]:
            return
        self._allocated().add_encoded(wire["h"])
        self.count += wire["n"]
        self.total += wire["s"]
        self.min = min(self.min, wire["lo"])
        self.max = max(self.max, wire["hi"])

    def merge(self, other: Distribution) -> None:
        """Add another distribution of the same metric."""
        if other.count and other._hist is not None:
            self._allocated().add(other._hist)
            self.count += other.count
            self.total += other.total
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)


def new_distribution(name: str) -> Distribution:
    """An empty distribution of one of ``DISTRIBUTIONS``."""
    scale, highest = DISTRIBUTIONS[name]
    return Distribution(scale=scale, highest=highest)
