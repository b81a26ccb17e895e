"""The soak verdict: fixed windows, drift between the first steady window and the last, SLO-breach episodes.

On the master or a local process (never a worker, and not in a capacity
search, whose load changes and breaks the SLO on purpose), ``SoakMonitor`` keeps one
window (``llmload.windows``, named ``soak``) open from test start and rotates
it every fine interval (``plugin.SAMPLE_INTERVAL_S``, the results timeline's
2 s). Each closed interval does two things:

* per backend, its counters (finished, SLO-met, per-SLO met, errors) feed the
  **breach episodes**: an interval whose SLO attainment is below
  ``--llm-slo-objective`` opens (or continues) an episode; an interval with no
  finished request of that backend changes nothing; the first interval back at
  or above the objective ends it;
* its groups are merged, per backend (``GroupMetrics.merge``), into the current
  **fixed window** (``--llm-soak-window`` seconds, default 300). When a fixed
  window is due, its summary (percentiles, rates, error rate, goodput) is kept
  and its histograms are dropped: memory is one fine interval's store plus one
  merged group per backend, however long the run.

At test stop the last fine interval and the last, partial, window are closed;
the drift between the first and the last full steady window decides a verdict
per backend (stable, degraded, improved, or too short). The rules themselves
(episodes, window summaries, drift, verdicts) are ``llmload.soak_verdict``.
Definitions: docs/soak.md; the results' ``soak`` section: docs/results.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from llmload.capacity import CapacityRun
from llmload.errors import ConfigError
from llmload.extension import Extension, exit_on_config_error
from llmload.figures import Slo
from llmload.metrics import GroupMetrics
from llmload.options import parse_number
from llmload.plugin import SAMPLE_INTERVAL_S
from llmload.pooling import STREAM
from llmload.soak_verdict import (
    ABSOLUTE_FLOORS,
    RELATIVE_THRESHOLD,
    BreachTracker,
    Counts,
    goodput_floor,
    judge_drift,
    overall_verdict,
    window_figures,
)

if TYPE_CHECKING:
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

WINDOW = "soak"
DEFAULT_WINDOW_S = 300.0
WINDOW_DISTRIBUTIONS = ("ttft_s", "itl_s", "e2e_s", "stream_rate_tps")
"""What the soak window and the merged window of each backend keep (not all of ``DISTRIBUTIONS``)."""


# -- the extension ---------------------------------------------------------------------------------


class SoakMonitor(Extension):
    """Soak windows, drift and breach episodes of one run (master or local process)."""

    results_key = "soak"

    def __init__(
        self,
        plugin: LLMLoadPlugin,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        interval_s: float = SAMPLE_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.plugin = plugin
        self.window_s = window_s
        self.interval_s = interval_s
        self.clock = clock
        """Wall-clock time (``time.time``; tests inject their own)."""
        self.objective = 0.99
        self.slo = Slo()
        self.started_at = 0.0
        self.windows: list[dict[str, Any]] = []
        """Closed windows' summaries (no histograms)."""
        self.breaches = BreachTracker(self.objective)
        self.section: dict[str, Any] | None = None
        """The results' ``soak`` section, built at test stop."""
        self.running = False
        self._loop: gevent.Greenlet | None = None
        self._current: dict[str, GroupMetrics] = {}
        self._spare: dict[str, GroupMetrics] = {}
        """Merged groups of closed windows, emptied, for the next window to fill again (no new histograms)."""
        self._window_start = 0.0
        self._interval_start = 0.0
        self._spawned_at: float | None = None
        self._users: tuple[int, int] | None = None
        self._spawning_seen = False

    # -- events -------------------------------------------------------------------------------

    def on_test_start(self, **_kwargs: Any) -> None:
        if self.plugin.finished:  # the plugin aborted the run at start
            return
        self.begin()
        if self._loop is None:
            self._loop = self.plugin.supervisor.spawn("soak sampler", self._tick_forever)

    def on_spawning_complete(self, **_kwargs: Any) -> None:
        if self.running:
            self._spawned_at = self.clock()

    def on_test_stop(self, **_kwargs: Any) -> None:
        # After the plugin's own test_stop (registered first): a master has merged the final deltas.
        self.stop()

    def _tick_forever(self) -> None:
        while True:
            gevent.sleep(self.interval_s)
            self.tick()

    # -- the run --------------------------------------------------------------------------------

    def begin(self) -> None:
        """Start tracking a run now: the first interval and the first window open."""
        now = self.clock()
        self.objective = self.plugin.options.slo_objective
        self.slo = Slo.of(self.plugin.store)
        self.started_at = now
        self.windows = []
        self.breaches = BreachTracker(self.objective)
        self.section = None
        self._current = {}
        self._window_start = self._interval_start = now
        self._spawned_at = None
        self._users = None
        self._spawning_seen = False
        self.plugin.open_window(WINDOW, distributions=WINDOW_DISTRIBUTIONS)
        self.running = True
        self._sample_users(now)

    def tick(self, *, final: bool = False) -> None:
        """Close the fine interval now; close the fixed window when due (or, ``final``, the partial one)."""
        if not self.running:
            return
        now = self.clock()
        window = self.plugin.window(WINDOW)
        groups = window.store.groups.values() if window is not None else ()
        counts: dict[str, Counts] = {}
        for group in groups:
            if group.kind != STREAM:  # the soak's SLO is the streaming one; pooling requests have none
                continue
            counts.setdefault(group.backend, Counts()).add_group(group)
            merged = self._current.get(group.backend)
            if merged is None:
                merged = self._spare.pop(group.backend, None) or GroupMetrics(
                    group.backend, "*", "*", distributions=WINDOW_DISTRIBUTIONS
                )
                self._current[group.backend] = merged
            merged.merge(group)
        if final:
            self.plugin.close_window(WINDOW)
        else:
            self.plugin.restart_window(WINDOW)
        for backend in sorted(counts):
            self.breaches.observe(backend, counts[backend], start=self._interval_start)
        self._interval_start = now
        if final:
            self._close_window(now, partial=True)
            return
        self._sample_users(now)
        if now - self._window_start >= self.window_s - self.interval_s / 2:
            self._close_window(now, partial=False)
            self._users = None
            self._spawning_seen = False
            self._sample_users(now)

    def stop(self) -> None:
        """End of the test: close the last interval and the partial window; build the section."""
        if self._loop is not None:
            self._loop.kill(block=False)
            self._loop = None
        if not self.running:
            return
        self.tick(final=True)
        self.running = False
        self.section = self._build(self.clock(), self.windows)

    def results_section(self) -> dict[str, Any] | None:
        """The section: as built at test stop, or, while the test runs (the web UI's report), the run so far."""
        if not self.running:
            return self.section
        now = self.clock()
        current = self._window_summary(self._window_start, now, self._current, partial=True)
        return self._build(now, self.windows + ([current] if current is not None else []))

    # -- windows ------------------------------------------------------------------------------

    def _sample_users(self, now: float) -> None:
        runner = self.plugin.environment.runner
        if runner is None:
            return
        users, state = int(runner.user_count), getattr(runner, "state", None)
        if state == STATE_SPAWNING:
            self._spawning_seen = True
        elif state == STATE_RUNNING and self._spawned_at is None:
            self._spawned_at = now  # spawning ended without the event reaching us
        low, high = self._users if self._users is not None else (users, users)
        self._users = (min(low, users), max(high, users))

    def _close_window(self, now: float, *, partial: bool) -> None:
        summary = self._window_summary(self._window_start, now, self._current, partial=partial)
        for backend, merged in self._current.items():
            merged.clear()  # keeps its histograms' memory for the next window
            self._spare[backend] = merged
        self._window_start, self._current = now, {}
        if summary is not None:
            self.windows.append(summary)

    def _window_summary(
        self, start: float, now: float, merged: dict[str, GroupMetrics], *, partial: bool
    ) -> dict[str, Any] | None:
        duration = now - start
        if partial and (not merged or duration < self.interval_s):
            return None  # a sliver after the last full window: its requests stay in the breaches and the run's figures
        users = self._users
        steady = (
            self._spawned_at is not None
            and self._spawned_at <= start
            and not self._spawning_seen
            and users is not None
            and users[0] == users[1]
        )
        return {
            "index": len(self.windows),
            "start": round(start, 3),
            "end": round(now, 3),
            "duration_s": round(duration, 3),
            "partial": partial,
            "steady": steady and not partial,
            "users_min": None if users is None else users[0],
            "users_max": None if users is None else users[1],
            "backends": {
                backend: window_figures(group, duration_s=duration) for backend, group in sorted(merged.items())
            },
        }

    # -- the section ----------------------------------------------------------------------------

    def floors(self) -> dict[str, float]:
        return {**ABSOLUTE_FLOORS, "goodput_rps": goodput_floor(self.window_s)}

    def _build(self, stopped_at: float, windows: list[dict[str, Any]]) -> dict[str, Any]:
        full = [w for w in windows if not w["partial"]]
        steady = [w for w in full if w["steady"]]
        first, last = (steady[0], steady[-1]) if len(steady) >= 2 else (None, None)
        floors = self.floors()
        episodes = self.breaches.listed(stopped_at)
        names = {b for w in windows for b in w["backends"]} | self.breaches.backends()
        backends: dict[str, Any] = {}
        for name in sorted(names):
            drift: dict[str, Any] | None = None
            verdict = "too short"
            if first is not None and last is not None:
                drift, verdict = judge_drift(first["backends"].get(name), last["backends"].get(name), floors=floors)
            listed = episodes.get(name, [])
            recovered = [e["time_to_recover_s"] for e in listed if e["recovered"]]
            backends[name] = {
                "verdict": verdict,
                "drift": drift,
                "breaches": listed,
                "breach_count": self.breaches.count.get(name, 0),
                "longest_time_to_recover_s": max(recovered) if recovered else None,
                "unrecovered": any(not e["recovered"] for e in listed),
            }
        reason = None
        if first is None:
            reason = f"fewer than 2 full steady windows ({len(full)} full, {len(steady)} steady)"
        return {
            "window_s": self.window_s,
            "interval_s": self.interval_s,
            "objective": self.objective,
            "slo": {"ttft_s": self.slo.ttft_s, "stream_rate_tps": self.slo.stream_rate_tps},
            "started_at": round(self.started_at, 3),
            "ended_at": round(stopped_at, 3),
            "full_windows": len(full),
            "steady_windows": len(steady),
            "first_steady_window": None if first is None else first["index"],
            "last_steady_window": None if last is None else last["index"],
            "threshold": {"relative": RELATIVE_THRESHOLD, "floors": floors},
            "verdict": overall_verdict([b["verdict"] for b in backends.values()]) if backends else "too short",
            "reason": reason,
            "windows": windows,
            "backends": backends,
        }


# -- Locust extension: the option, and the monitor on the master or local process ----------------


def add_arguments(parser: Any) -> None:
    """Register ``--llm-soak-window``."""
    parser.add_argument(
        "--llm-soak-window",
        env_var="LOCUST_LLM_SOAK_WINDOW",
        default=f"{DEFAULT_WINDOW_S:g}",
        help="Soak verdict: length of each fixed window in seconds (default 300; docs/soak.md)",
    )


def parse_window(value: Any) -> float:
    """Validate ``--llm-soak-window``: seconds, at least one fine interval; a bad value is a ConfigError."""
    window = parse_number(
        value,
        option="--llm-soak-window",
        default=DEFAULT_WINDOW_S,
        low=SAMPLE_INTERVAL_S,
        expected=f"seconds >= {SAMPLE_INTERVAL_S:g}",
    )
    assert window is not None
    return window


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    """On the master or a local process, unless the run is a capacity search: watch the run in soak windows.

    A capacity search changes the load step after step and drives it past the SLO on purpose: neither
    drift nor breaches would mean anything there.
    """
    if plugin.is_worker or plugin.extensions.get(CapacityRun) is not None:
        return
    try:
        window_s = parse_window(getattr(environment.parsed_options, "llm_soak_window", None))
    except ConfigError as exc:
        exit_on_config_error(exc)
    monitor = plugin.extensions.add(SoakMonitor(plugin, window_s=window_s))
    events = environment.events
    events.test_start.add_listener(monitor.on_test_start)
    events.spawning_complete.add_listener(monitor.on_spawning_complete)
    events.test_stop.add_listener(monitor.on_test_stop)
