"""Output tokens counted as they arrive, so live token rates follow the stream, not request ends.

A request's answer used to count only when the request ended: 100 users whose
answers end together chart as spikes and gaps. Here every request in flight is
known, and its tokens so far are read when a live figure is due (a worker's
report, a local run's sample or scrape): the server's running count
(``continuous_usage_stats``) when it sends one, else one per token-carrying
event. When the request ends, ``max(0, usage - counted)`` is added, so the
counter never goes down and, summed over finished requests, equals the
server's usage whenever no event carried more tokens than the server reports.
Reading costs nothing per event: the counts are fields the stream reader
fills anyway (docs/metrics.md, "Output tokens over time").
"""

from __future__ import annotations

from llmload.record import RequestRecord

GroupKey = tuple[str, str, str]


def arrived_tokens(record: RequestRecord) -> int:
    """Output tokens of ``record`` seen so far: the server's running count, else token-carrying events."""
    running = record.continuous_completion_tokens
    return running if running is not None else len(record.token_times)


def settled_tokens(record: RequestRecord) -> int:
    """What a finished request adds to the counter beyond what was already reported."""
    return max(arrived_tokens(record), record.output_tokens) - record.tokens_reported


class StreamsInFlight:
    """The requests of one process whose streams are open."""

    def __init__(self) -> None:
        self._open: dict[int, RequestRecord] = {}

    def opened(self, record: RequestRecord) -> None:
        """Start counting ``record``'s tokens as they arrive."""
        self._open[id(record)] = record

    def closed(self, record: RequestRecord) -> None:
        """Stop counting ``record`` (finished, or dropped in favour of a retry)."""
        self._open.pop(id(record), None)

    def __len__(self) -> int:
        return len(self._open)

    def open_by_backend(self) -> dict[str, int]:
        """Requests in flight now, by backend label."""
        out: dict[str, int] = {}
        for record in self._open.values():
            out[record.backend] = out.get(record.backend, 0) + 1
        return out

    def collect(self) -> dict[GroupKey, int]:
        """Return the tokens that arrived since the last collect, by group, and mark them reported."""
        out: dict[GroupKey, int] = {}
        for record in self._open.values():
            arrived = arrived_tokens(record)
            delta = arrived - record.tokens_reported
            if delta > 0:
                record.tokens_reported = arrived
                key = (record.backend, record.model, record.user_class)
                out[key] = out.get(key, 0) + delta
        return out
