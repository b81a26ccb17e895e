"""Windows: named spans of a run, each with its own figures.

A window collects, from the moment it opens, every request recorded (or
merged from workers) into a store of its own, so that its figures are those
of that span only. llmload uses windows for the capacity search's steps
(``capacity``), the results timeline's intervals (``timeline``), and the
spans the later features add (soak windows, the spans between mid-run
changes). docs/metrics.md defines the notion; ``OpenWindows`` keeps a
process's open windows (the plugin's ``open_window``, ``window``,
``restart_window`` and ``close_window`` are its doors).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from llmload.distribution import DISTRIBUTIONS
from llmload.metrics import MetricsStore
from llmload.record import RequestRecord


@dataclass
class Window:
    """A named span of a run and the requests that finished in it."""

    name: str
    store: MetricsStore
    opened_at: float = field(default_factory=time.time)
    """Wall-clock time (``time.time()``) the window opened."""
    closed_at: float | None = None
    """Wall-clock time it closed; None while open."""


class OpenWindows:
    """The open windows of one process, and the requests finished since they were last fed.

    A recorded request is queued and folded into every open window a moment later (``feed``):
    when many streams end together, recording each into three or four windows at once would add
    that work to the burst while the streams still running wait. Every read, open, restart and
    close feeds first, so a window's figures always hold every request finished so far.
    """

    def __init__(self, *, slo_of: Callable[[], MetricsStore]) -> None:
        self.by_name: dict[str, Window] = {}
        self._unfed: deque[RequestRecord] = deque()
        self._slo_of = slo_of
        """The store whose SLO thresholds a window opened now takes (the run's)."""

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def __iter__(self) -> Iterator[Window]:
        return iter(list(self.by_name.values()))

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __getitem__(self, name: str) -> Window:
        return self.by_name[name]

    def queue(self, record: RequestRecord) -> None:
        """A finished request, for the open windows' next feed (nothing when none is open)."""
        if self.by_name:
            self._unfed.append(record)

    def feed(self, *, pause_every: int = 0, pause: Callable[[], None] | None = None) -> None:
        """Fold the queued requests into every open window (``pause`` after every ``pause_every``)."""
        fed = 0
        while self._unfed:
            record = self._unfed.popleft()
            for window in self.by_name.values():
                window.store.record(record)
            fed += 1
            if pause is not None and pause_every and fed % pause_every == 0:
                pause()

    def get(self, name: str) -> Window | None:
        """The open window ``name`` with every request finished so far in it (None when not open)."""
        self.feed()
        return self.by_name.get(name)

    def open(
        self, name: str, *, distributions: Iterable[str] = DISTRIBUTIONS, reuse: MetricsStore | None = None
    ) -> Window:
        """Start a window: a separate store of everything recorded or merged from now on.

        ``distributions`` narrows what its groups keep (each is an HdrHistogram of about 184 KiB);
        ``reuse`` is the store of a window done with, emptied and taken as the new one's (its
        distributions stay), so that windows opened every few seconds allocate no histograms.
        """
        self.feed()
        if reuse is None:
            store = MetricsStore(distributions=distributions)
        else:
            store = reuse
            store.clear()
        run = self._slo_of()
        store.slo_ttft_s, store.slo_stream_rate_tps, store.slo_ttft_of = (
            run.slo_ttft_s,
            run.slo_stream_rate_tps,
            run.slo_ttft_of,
        )
        window = self.by_name[name] = Window(name=name, store=store)
        return window

    def restart(self, name: str) -> Window | None:
        """Start the open window ``name`` again from now, empty, in its own memory (None when not open)."""
        self.feed()
        window = self.by_name.get(name)
        if window is None:
            return None
        return self.open(name, reuse=window.store)

    def close(self, name: str) -> Window | None:
        """Stop collecting the window ``name`` and return it."""
        self.feed()
        window = self.by_name.pop(name, None)
        if window is not None:
            window.closed_at = time.time()
        return window
