"""Live figures: exact percentiles over a sliding window and over the whole run.

Prometheus' ``histogram_quantile`` interpolates inside fixed buckets, which put
live percentiles 18-31% off the run's exact figures. Here the master (or local
process) computes them from its merged HdrHistograms, exactly as the results
do: over the whole run (``plugin.store``) and over a sliding window. The
window is a ring of ``SLICES`` slices of ``span / SLICES`` seconds, each a
plugin window keeping only ``LIVE_DISTRIBUTIONS``; its figures merge the
closed slices and the open one, so they cover between ``span`` and ``span +
span / SLICES`` seconds of finished requests. A closed slice older than the
span leaves the ring and its store becomes the next open slice's, emptied: the
ring, and the two stores its merges go into, allocate no histograms after the
first minute however long the run.

``LiveFigures.compute`` is the one function the exporter's gauges and the web
UI read; it caches its answer for ``MAX_AGE_S`` so that many scrapes or
browser polls cost one computation.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
import gevent.lock

from llmload.chart_history import ChartHistory, backend_load
from llmload.errors import ConfigError
from llmload.extension import Extension, exit_on_config_error
from llmload.metrics import GroupMetrics, MetricsStore
from llmload.options import parse_number
from llmload.supervisor import pause
from llmload.windows import Window

if TYPE_CHECKING:
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

# distribution -> the percentiles shown live (0-100)
LIVE_DISTRIBUTIONS: dict[str, tuple[float, ...]] = {
    "ttft_s": (50.0, 90.0, 99.0),
    "itl_s": (50.0, 90.0, 99.0),
    "tpot_s": (50.0, 90.0, 99.0),
    "e2e_s": (50.0, 90.0, 99.0),
    "stream_rate_tps": (10.0, 50.0, 90.0, 99.0),
    "ttfa_s": (50.0, 90.0, 99.0),  # reasoning models only: groups without thinking export no series
    "latency_s": (50.0, 90.0, 99.0),  # embeddings, score and rerank groups only
}
DEFAULT_SPAN_S = 60.0
SLICES = 6
MAX_AGE_S = 1.0
WINDOW = "live"

GroupKey = tuple[str, str, str]
# group -> distribution -> percentile -> value (None without samples)
Percentiles = dict[GroupKey, dict[str, dict[float, float | None]]]


def percentiles_of(groups: dict[GroupKey, GroupMetrics], *, between: Callable[[], None] = pause) -> Percentiles:
    """The live percentiles of each group's distributions (``between`` runs after each one)."""
    out: Percentiles = {}
    for key, group in list(groups.items()):
        figures = out[key] = {}
        for name, qs in LIVE_DISTRIBUTIONS.items():
            figures[name] = group.dists[name].percentiles(qs)
            between()
    return out


def merge_into(
    into: MetricsStore, groups_of: list[dict[GroupKey, GroupMetrics]], *, between: Callable[[], None] = pause
) -> dict[GroupKey, GroupMetrics]:
    """Empty ``into``, merge the groups of several stores (the slices of a window) into it, return its groups."""
    into.clear()
    for groups in groups_of:
        for key, group in list(groups.items()):
            into.group(*key).merge(group)
            between()
    return into.groups


@dataclass(frozen=True)
class Snapshot:
    """Live percentiles at one moment."""

    at: float
    """Wall-clock time of the computation."""
    span_s: float
    """The sliding window's nominal span (its ``window`` label)."""
    covers_s: float
    """Seconds the sliding window actually covers now (between span and span + one slice)."""
    window: Percentiles
    run: Percentiles


class LiveFigures(Extension):
    """The sliding window of one master or local process, and the cached live percentiles."""

    def __init__(
        self, plugin: LLMLoadPlugin, *, span_s: float = DEFAULT_SPAN_S, clock: Callable[[], float] = time.time
    ) -> None:
        self.plugin = plugin
        self.span_s = span_s
        self.slice_s = span_s / SLICES
        self._clock = clock
        self._closed: deque[tuple[float, Window]] = deque(maxlen=SLICES)
        self._opened_at = clock()
        self._cached: Snapshot | None = None
        self._closed_merged = MetricsStore(distributions=LIVE_DISTRIBUTIONS)
        """The closed slices merged, once per rotation (a compute then adds only the open slice)."""
        self._closed_merged_current = False
        self._window_merged = MetricsStore(distributions=LIVE_DISTRIBUTIONS)
        """The whole sliding window, merged again by each compute."""
        self._computing = gevent.lock.Semaphore()
        """One compute at a time: concurrent callers (a scrape, a browser poll) share its answer and stores."""
        self._greenlet: gevent.Greenlet | None = None
        self.history = ChartHistory()
        """One point per group per closed slice: what the web UI's charts draw."""

    @property
    def label(self) -> str:
        """The ``window`` label of the sliding window's series, e.g. ``60s``."""
        return f"{self.span_s:g}s"

    def start(self) -> None:
        """Start a new sliding window (at test start) and rotate its slices in the background."""
        self.stop()
        self._closed.clear()
        self.history.reset()
        self._cached = None
        self._closed_merged_current = False
        self.plugin.open_window(WINDOW, distributions=LIVE_DISTRIBUTIONS)
        self._opened_at = self._clock()
        self._greenlet = self.plugin.supervisor.spawn("live window", self._rotate_forever)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _rotate_forever(self) -> None:
        while True:
            gevent.sleep(self.slice_s)
            self.rotate()

    def rotate(self) -> None:
        """Close the open slice into the ring and open the next in the memory of the slice leaving the ring.

        The closed slice also becomes one point of the chart history.
        """
        with self._computing:  # a compute in progress reads the ring
            self.plugin.collect_arrived_tokens()
            closed = self.plugin.close_window(WINDOW)
            leaving = self._closed[0][1].store if len(self._closed) == SLICES else None
            if closed is not None:
                self._closed.append((self._opened_at, closed))
            self.plugin.open_window(WINDOW, distributions=LIVE_DISTRIBUTIONS, reuse=leaving)
            now = self._clock()
            if closed is not None:
                self.history.add_slice(
                    end=now,
                    duration_s=now - self._opened_at,
                    groups=closed.store.groups,
                    percentiles=percentiles_of,
                    load=backend_load(self.plugin.backend_gauges.values()),
                )
            self._opened_at = now
            self._cached = None
            self._closed_merged_current = False

    def compute(self, *, max_age_s: float = MAX_AGE_S) -> Snapshot:
        """Return the live percentiles, computed at most once per ``max_age_s``."""
        cached = self._cached
        if cached is not None and self._clock() - cached.at < max_age_s:
            return cached
        with self._computing:
            now = self._clock()
            cached = self._cached
            if cached is not None and now - cached.at < max_age_s:
                return cached  # computed by the caller this one waited for
            self.plugin.collect_arrived_tokens()
            if not self._closed_merged_current:
                merge_into(self._closed_merged, [window.store.groups for _opened_at, window in self._closed])
                self._closed_merged_current = True
            current = self.plugin.window(WINDOW)
            in_window = [self._closed_merged.groups, current.store.groups if current is not None else {}]
            oldest = self._closed[0][0] if self._closed else self._opened_at
            snapshot = Snapshot(
                at=now,
                span_s=self.span_s,
                covers_s=max(now - oldest, 0.0),
                window=percentiles_of(merge_into(self._window_merged, in_window)),
                run=percentiles_of(self.plugin.store.groups),
            )
            self._cached = snapshot
            return snapshot


def add_arguments(parser: Any) -> None:
    """Register ``--llm-live-window``."""
    parser.add_argument(
        "--llm-live-window",
        env_var="LOCUST_LLM_LIVE_WINDOW",
        default=str(DEFAULT_SPAN_S),
        help="Seconds of the sliding window of the live percentiles (Prometheus gauges, web UI; default 60)",
    )


def span_from(parsed: Any) -> float:
    """The validated ``--llm-live-window``; a bad value raises a one-line ``ConfigError``."""
    span = parse_number(
        getattr(parsed, "llm_live_window", DEFAULT_SPAN_S),
        option="--llm-live-window",
        default=DEFAULT_SPAN_S,
        low=SLICES,
        high=86400,
        expected=f"seconds between {SLICES} and 86400",
    )
    assert span is not None
    return span


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    """Keep a sliding window on the master or local process."""
    parsed = environment.parsed_options
    if plugin.is_worker:
        return
    try:
        span = span_from(parsed) if parsed is not None else DEFAULT_SPAN_S
    except ConfigError as exc:
        exit_on_config_error(exc)
        return
    live = plugin.extensions.add(LiveFigures(plugin, span_s=span))
    environment.events.test_start.add_listener(lambda **_kw: live.start())
    environment.events.test_stop.add_listener(lambda **_kw: live.stop())
