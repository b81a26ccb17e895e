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

from collections.abc import Iterable
from typing import Any

from llmload.distribution import (
    DISTRIBUTIONS,
    POOLING_DISTRIBUTIONS,
    REASONING_DISTRIBUTIONS,
    Distribution,
    new_distribution,
)
from llmload.pooling import KINDS, STREAM
from llmload.record import RequestRecord
from llmload.streamed import settled_tokens


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
    "inputs",
    "tokenized_requests",
)


class GroupMetrics:
    """Token metrics of one (backend, model, user class) group, whose requests are all of one kind."""

    def __init__(
        self,
        backend: str,
        model: str,
        user_class: str,
        *,
        distributions: Iterable[str] = DISTRIBUTIONS,
        kind: str = STREAM,
    ) -> None:
        self.backend = backend
        self.model = model
        self.user_class = user_class
        self.kind = kind
        """``stream``, or the pooling kind (``llmload.pooling``) of every request of the group."""
        names = tuple(distributions)
        if kind != STREAM:
            names = (*names, *(name for name in POOLING_DISTRIBUTIONS if name not in names))
        self.dists = _new_distributions(names)
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
        elif record.output_tokenized:
            counters["tokenized_requests"] += 1
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
        if record.kind != STREAM:
            counters["inputs"] += record.inputs
            latency = record.latency_s
            if latency is not None:
                dists["latency_s"].record(latency)
            return
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
            "kind": self.kind,
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

    def group(self, backend: str, model: str, user_class: str, kind: str = STREAM) -> GroupMetrics:
        key = (backend, model, user_class)
        group = self.groups.get(key)
        if group is None:
            group = self._emptied.pop(key, None)
            if group is None or group.kind != kind:
                group = GroupMetrics(backend, model, user_class, distributions=self.distributions, kind=kind)
            self.groups[key] = group
        return group

    def record(self, record: RequestRecord) -> None:
        """Fold one finished request into its group."""
        self.group(record.backend, record.model, record.user_class, record.kind).record(
            record,
            slo_ttft_s=self.slo_ttft_s,
            slo_stream_rate_tps=self.slo_stream_rate_tps,
            slo_ttft_of=self.slo_ttft_of,
        )

    def total(
        self, distributions: Iterable[str] | None = None, *, into: GroupMetrics | None = None, kind: str = STREAM
    ) -> GroupMetrics:
        """Return the groups of ``kind`` merged into one, with ``distributions`` (default: those this store keeps).

        Streamed requests and each pooling kind have their own total: their figures do not add up.

        ``into`` (emptied first) is reused instead of a new group: a caller that totals on every
        poll keeps one set of histograms rather than allocating and freeing them each time.
        """
        if into is not None:
            into.clear()
            total = into
        else:
            total = GroupMetrics(
                "*", "*", "*", distributions=self.distributions if distributions is None else distributions, kind=kind
            )
        for group in self.groups.values():
            if group.kind == kind:
                total.merge(group)
        return total

    def kinds(self) -> list[str]:
        """The kinds of this store's groups, streamed first, then in ``pooling.KINDS`` order."""
        present = {group.kind for group in self.groups.values()}
        return [kind for kind in KINDS if kind in present]

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
            backend, model, user_class = group_wire["key"]
            self.group(backend, model, user_class, group_wire.get("kind", STREAM)).merge_wire(group_wire)
