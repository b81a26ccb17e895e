"""Mergeable token metrics: per-group HdrHistograms and counters.

A ``MetricsStore`` holds one ``GroupMetrics`` per (backend, model, user class).
Every distribution is an HdrHistogram with 3 significant digits (relative
error <= 0.1%) plus exact count, sum, min and max, so means are exact and
percentiles carry the histogram's stated precision. ``to_wire`` turns a store
into a small msgpack-safe dict (histograms as compressed bytes) and
``merge_wire`` adds one into another: merging is exact, so percentiles
computed on a Locust master equal those a single process would compute from
the same samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from llmload.hdr import ScaledHistogram
from llmload.record import RequestRecord
from llmload.streamed import settled_tokens

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
}
REASONING_DISTRIBUTIONS = ("ttfa_s", "reasoning_s", "answer_stream_rate_tps")
"""Filled by requests of reasoning models only (``RequestRecord.thinks``)."""


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


def _new_distributions(names: Iterable[str]) -> dict[str, Distribution]:
    return {name: new_distribution(name) for name in names}


_COUNTERS = (
    "ok",
    "failed",
    "prompt_tokens",
    "output_tokens",
    "arrived_output_tokens",
    "estimated_requests",
    "slo_met",
    "slo_ttft_met",
    "slo_stream_rate_met",
    "kernel_clock_requests",
    "reasoning_requests",
    "reasoning_tokens",
    "answer_tokens",
    "reasoning_estimated_requests",
    "answers_checked",
    "answers_valid",
    "image_requests",
    "images",
    "image_pixels",
)


class GroupMetrics:
    """Token metrics of one (backend, model, user class) group."""

    def __init__(
        self, backend: str, model: str, user_class: str, *, distributions: Iterable[str] = DISTRIBUTIONS
    ) -> None:
        self.backend = backend
        self.model = model
        self.user_class = user_class
        self.dists = _new_distributions(distributions)
        """The group's distributions: every one of ``DISTRIBUTIONS``, or those a window asked for."""
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.errors: dict[str, int] = {}
        self.first_start: float | None = None
        self.last_end: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.backend, self.model, self.user_class)

    def clear(self) -> None:
        """Forget everything recorded, keeping the distributions' memory."""
        for dist in self.dists.values():
            dist.clear()
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.errors = {}
        self.first_start = self.last_end = None

    def record(
        self,
        record: RequestRecord,
        *,
        slo_ttft_s: float | None,
        slo_stream_rate_tps: float | None,
        slo_ttft_of: str = "any",
    ) -> None:
        """Fold one finished request into the group (the TTFT SLO on the first token of ``slo_ttft_of``)."""
        counters = self.counters
        end_wall = record.start_wall + ((record.t_end or record.t_send) - record.t_send)
        if self.first_start is None or record.start_wall < self.first_start:
            self.first_start = record.start_wall
        if self.last_end is None or end_wall > self.last_end:
            self.last_end = end_wall
        counters["prompt_tokens"] += record.prompt_tokens or 0
        if record.images:
            counters["image_requests"] += 1
            counters["images"] += record.images
            counters["image_pixels"] += record.image_pixels
        counters["output_tokens"] += record.output_tokens
        counters["arrived_output_tokens"] += settled_tokens(record)
        if record.output_estimated:
            counters["estimated_requests"] += 1
        dists = self.dists
        lag = record.dispatch_lag_s
        if lag is not None and "dispatch_lag_s" in dists:
            dists["dispatch_lag_s"].record(max(lag, 0.0))
        if record.connect_s is not None and "connect_s" in dists:
            dists["connect_s"].record(record.connect_s)
        if record.clock == "kernel":
            counters["kernel_clock_requests"] += 1
        kind = record.error_kind
        if kind is not None:
            counters["failed"] += 1
            self.errors[kind] = self.errors.get(kind, 0) + 1
            return
        counters["ok"] += 1
        times = record.token_times
        if not times:
            return
        t_send = record.t_send
        dists["ttft_s"].record(times[0] - t_send)  # every store keeps TTFT and ITL; the others are optional
        dists["itl_s"].record_many(record.itl_s)
        e2e = dists.get("e2e_s")
        if e2e is not None:
            e2e.record(times[-1] - t_send)
        for name in ("tpot_s", "stream_rate_tps", "decode_rate_tps"):
            dist = dists.get(name)
            if dist is not None:
                value = getattr(record, name)
                if value is not None:
                    dist.record(value)
        if record.thinks:
            self._record_reasoning(record)
        valid = record.answer_valid
        if valid is not None:
            counters["answers_checked"] += 1
            if valid:
                counters["answers_valid"] += 1
        if slo_ttft_s is None:
            ttft_met = True
        elif slo_ttft_of == "answer":
            ttfa = record.ttfa_s
            ttft_met = ttfa is not None and ttfa <= slo_ttft_s
        else:
            ttft_met = times[0] - t_send <= slo_ttft_s
        rate = record.stream_rate_tps
        rate_met = slo_stream_rate_tps is None or (rate is not None and rate >= slo_stream_rate_tps)
        if ttft_met:
            counters["slo_ttft_met"] += 1
        if rate_met:
            counters["slo_stream_rate_met"] += 1
        if ttft_met and rate_met and valid is not False:  # an invalid answer misses the SLO
            counters["slo_met"] += 1

    def _record_reasoning(self, record: RequestRecord) -> None:
        """The reasoning figures of a successful request of a model that thinks."""
        counters, dists = self.counters, self.dists
        counters["reasoning_requests"] += 1
        counters["reasoning_tokens"] += record.reasoning_tokens
        counters["answer_tokens"] += record.answer_tokens
        if record.reasoning_estimated:
            counters["reasoning_estimated_requests"] += 1
        for name in REASONING_DISTRIBUTIONS:
            dist = dists.get(name)
            if dist is not None:
                value = getattr(record, name)
                if value is not None:
                    dist.record(value)

    def add_arrived_tokens(self, n: int) -> None:
        """Count ``n`` output tokens that arrived on streams still open (``llmload.streamed``)."""
        self.counters["arrived_output_tokens"] += n

    def merge(self, other: GroupMetrics) -> None:
        """Add another group's metrics into this one."""
        for name, dist in other.dists.items():
            mine = self.dists.get(name)
            if mine is not None:
                mine.merge(dist)
        self._merge_plain(other.counters, other.errors, other.first_start, other.last_end)

    def _merge_plain(
        self,
        counters: dict[str, int],
        errors: dict[str, int],
        first_start: float | None,
        last_end: float | None,
    ) -> None:
        for name, value in counters.items():
            self.counters[name] += value
        for kind, n in errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        if first_start is not None and (self.first_start is None or first_start < self.first_start):
            self.first_start = first_start
        if last_end is not None and (self.last_end is None or last_end > self.last_end):
            self.last_end = last_end

    def to_wire(self) -> dict[str, Any]:
        return {
            "key": list(self.key),
            "dists": {name: dist.to_wire() for name, dist in self.dists.items() if dist.count},
            "counters": dict(self.counters),
            "errors": dict(self.errors),
            "first_start": self.first_start,
            "last_end": self.last_end,
        }

    def merge_wire(self, wire: dict[str, Any]) -> None:
        """Add a group serialized by ``to_wire``."""
        for name, dist_wire in wire["dists"].items():
            mine = self.dists.get(name)
            if mine is not None:
                mine.merge_wire(dist_wire)
        self._merge_plain(wire["counters"], wire["errors"], wire["first_start"], wire["last_end"])

    @property
    def window_s(self) -> float:
        """Seconds from the first request sent to the last one finished in this group."""
        if self.first_start is None or self.last_end is None:
            return 0.0
        return max(self.last_end - self.first_start, 0.0)


class MetricsStore:
    """All groups of one process (a worker's delta, or the merged view on the master)."""

    def __init__(
        self,
        *,
        slo_ttft_s: float | None = None,
        slo_stream_rate_tps: float | None = None,
        distributions: Iterable[str] = DISTRIBUTIONS,
    ) -> None:
        self.slo_ttft_s = slo_ttft_s
        self.slo_stream_rate_tps = slo_stream_rate_tps
        self.slo_ttft_of = "any"
        """What the TTFT SLO targets (``options.TTFT_OF``)."""
        self.distributions = tuple(distributions)
        """The distributions each group keeps (a live window keeps only those it exports)."""
        self.groups: dict[tuple[str, str, str], GroupMetrics] = {}
        self._emptied: dict[tuple[str, str, str], GroupMetrics] = {}
        """Groups of before the last ``clear``, emptied, for ``group`` to take back instead of allocating."""

    def group(self, backend: str, model: str, user_class: str) -> GroupMetrics:
        key = (backend, model, user_class)
        group = self.groups.get(key)
        if group is None:
            group = self._emptied.pop(key, None)
            if group is None:
                group = GroupMetrics(backend, model, user_class, distributions=self.distributions)
            self.groups[key] = group
        return group

    def record(self, record: RequestRecord) -> None:
        """Fold one finished request into its group."""
        self.group(record.backend, record.model, record.user_class).record(
            record,
            slo_ttft_s=self.slo_ttft_s,
            slo_stream_rate_tps=self.slo_stream_rate_tps,
            slo_ttft_of=self.slo_ttft_of,
        )

    def total(self, distributions: Iterable[str] | None = None, *, into: GroupMetrics | None = None) -> GroupMetrics:
        """Return all groups merged into one, with ``distributions`` (default: those this store keeps).

        ``into`` (emptied first) is reused instead of a new group: a caller that totals on every
        poll keeps one set of histograms rather than allocating and freeing them each time.
        """
        if into is not None:
            into.clear()
            total = into
        else:
            total = GroupMetrics(
                "*", "*", "*", distributions=self.distributions if distributions is None else distributions
            )
        for group in self.groups.values():
            total.merge(group)
        return total

    def counter_totals(self) -> dict[str, int]:
        """Every counter summed over the groups (``total().counters`` without merging histograms)."""
        totals = dict.fromkeys(_COUNTERS, 0)
        for group in self.groups.values():
            for name, value in group.counters.items():
                totals[name] += value
        return totals

    def merged(self, name: str) -> Distribution:
        """The distribution ``name`` of every group merged into one."""
        merged = new_distribution(name)
        for group in self.groups.values():
            dist = group.dists.get(name)
            if dist is not None:
                merged.merge(dist)
        return merged

    def clear(self) -> None:
        """Empty the store; its groups are emptied in place and reused as their keys come back.

        The store then behaves as a new one (no groups) without allocating histograms again:
        what lets windows restart every few seconds for hours at a constant memory.
        """
        for key, group in self.groups.items():
            group.clear()
            self._emptied[key] = group
        self.groups = {}

    def reset(self) -> None:
        self.clear()

    def is_empty(self) -> bool:
        return not self.groups

    def to_wire(self) -> list[dict[str, Any]]:
        """Serialize every group to msgpack-safe data."""
        return [group.to_wire() for group in self.groups.values()]

    def merge_wire(self, wire: list[dict[str, Any]]) -> None:
        """Add groups serialized by ``to_wire`` (a worker's delta)."""
        for group_wire in wire:
            self.group(*group_wire["key"]).merge_wire(group_wire)
