"""Steering a running test: the open-loop rate, the SLO thresholds and the think time, without a restart.

A change comes from the web UI (``llmload.webui``'s steering route) to the
master (or local process), which

* refuses it during a capacity search (the search owns users and rate) and
  refuses a rate in a closed-loop run, each with one line;
* closes the current phase: its figures (``figures.group_body``, summaries
  only) go to the results' ``phases`` section. The first phase's figures are
  the run's so far; from the first change on, each phase is a plugin window
  of its own;
* applies the change: the rate through ``Arrivals.set_rate`` (divided exactly
  among the workers); the SLO thresholds and the think time on this process
  and, by the custom message ``MESSAGE``, on every worker (SLO-met is decided
  where a request is recorded; running users read the think time before each
  wait), and again to a worker that connects later;
* emits the run event (``rate_changed``, ``slo_changed``,
  ``think_time_changed``) that the dashboards show as an annotation, and
  opens the next phase, named after the change.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from locust.runners import MasterRunner

from llmload.arrivals import get_arrivals
from llmload.capacity import CapacityRun
from llmload.errors import ConfigError
from llmload.extension import Extension
from llmload.figures import Slo, group_body, store_bodies
from llmload.options import Range

if TYPE_CHECKING:
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

logger = logging.getLogger(__name__)

MESSAGE = "llmload_steer"
WINDOW = "phase"
PHASE_DISTRIBUTIONS = ("ttft_s", "itl_s", "e2e_s", "stream_rate_tps")
MAX_PHASES = 200


class SteeringRefused(Exception):
    """A change the run cannot take now (one line, shown to the user)."""


@dataclass(frozen=True)
class Change:
    """One steering request; None leaves a setting as it is."""

    rate_rps: float | None = None
    slo_ttft_s: float | None = None
    slo_stream_rate_tps: float | None = None
    think_time: Range | None = None

    @classmethod
    def from_json(cls, data: Any) -> Change:
        """Validate a request body; a bad value raises a one-line ``ConfigError``."""
        if not isinstance(data, dict):
            raise ConfigError("steering: expected a JSON object")
        unknown = set(data) - {"rate_rps", "slo_ttft_s", "slo_stream_rate_tps", "think_time_s"}
        if unknown:
            raise ConfigError(f"steering: unknown setting {sorted(unknown)[0]!r}")
        think = data.get("think_time_s")
        think_range: Range | None = None
        if think is not None:
            low, high = (think, think) if not isinstance(think, list) else (think + [None, None])[:2]
            low_s = _number(low, "think_time_s", low=0, high=3600)
            high_s = _number(high, "think_time_s", low=0, high=3600)
            if low_s is None or high_s is None or high_s < low_s:
                raise ConfigError("steering: think_time_s: expected seconds or [low, high] with low <= high")
            think_range = Range(low_s, high_s)
        change = cls(
            rate_rps=_number(data.get("rate_rps"), "rate_rps", low=0.001, high=1e6),
            slo_ttft_s=_number(data.get("slo_ttft_s"), "slo_ttft_s", low=0.001, high=3600),
            slo_stream_rate_tps=_number(data.get("slo_stream_rate_tps"), "slo_stream_rate_tps", low=0.001, high=1e6),
            think_time=think_range,
        )
        if change == cls():
            raise ConfigError("steering: nothing to change")
        return change

    def describe(self) -> str:
        """A short name for the phase that starts with this change, e.g. ``rate 5 rps, SLO TTFT 0.5 s``."""
        parts = []
        if self.rate_rps is not None:
            parts.append(f"rate {self.rate_rps:g} rps")
        if self.slo_ttft_s is not None:
            parts.append(f"SLO TTFT {self.slo_ttft_s:g} s")
        if self.slo_stream_rate_tps is not None:
            parts.append(f"SLO stream rate {self.slo_stream_rate_tps:g} tok/s")
        if self.think_time is not None:
            low, high = self.think_time.low, self.think_time.high
            parts.append(f"think {low:g} s" if low == high else f"think {low:g}-{high:g} s")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        think = self.think_time
        return {
            "rate_rps": self.rate_rps,
            "slo_ttft_s": self.slo_ttft_s,
            "slo_stream_rate_tps": self.slo_stream_rate_tps,
            "think_time_s": None if think is None else [think.low, think.high],
        }


def _number(value: Any, name: str, *, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"steering: {name}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"steering: {name}: expected a number between {low:g} and {high:g}, got {value!r}")
    return float(value)


class Steering(Extension):
    """The phases of one run on the master (or local process), and the changes between them."""

    results_key = "phases"

    def __init__(self, plugin: LLMLoadPlugin) -> None:
        self.plugin = plugin
        self.phases: list[dict[str, Any]] = []
        """Closed phases: name, start, end, the change that ended it, figures (summaries only)."""
        self.phase_name = "start"
        self.phase_started = 0.0
        self.sent: dict[str, Any] = {}
        """The SLO and think time steered so far, as sent to workers (resent to one that connects)."""

    def on_test_start(self, **_kwargs: Any) -> None:
        self.plugin.close_window(WINDOW)
        self.phases, self.phase_name, self.phase_started, self.sent = [], "start", time.time(), {}

    def refusal(self, change: Change) -> str | None:
        """Why ``change`` cannot be made now (None: it can)."""
        if self.plugin.extensions.get(CapacityRun) is not None:
            return "a capacity search is running: it sets the users and the rate itself"
        runner = self.plugin.environment.runner
        if runner is None or runner.state not in ("spawning", "running"):
            return "no test is running"
        if change.rate_rps is not None:
            arrivals = get_arrivals(self.plugin)
            if arrivals is None or not arrivals.enabled:
                return "the rate applies to open-loop runs (--llm-arrival poisson or constant) only"
        return None

    def apply(self, change: Change) -> dict[str, Any]:
        """Make ``change`` now; return the closed phase. Raises ``SteeringRefused``."""
        why = self.refusal(change)
        if why is not None:
            raise SteeringRefused(why)
        now = time.time()
        closed = self._close_phase(now, change)
        plugin = self.plugin
        if change.rate_rps is not None:
            arrivals = get_arrivals(plugin)
            assert arrivals is not None
            arrivals.set_rate(change.rate_rps)
        options = plugin.options
        if change.slo_ttft_s is not None or change.slo_stream_rate_tps is not None:
            before = f"TTFT {options.slo_ttft_s}, stream rate {options.slo_stream_rate_tps}"
            self.sent["slo_ttft_s"] = change.slo_ttft_s if change.slo_ttft_s is not None else options.slo_ttft_s
            self.sent["slo_stream_rate_tps"] = (
                change.slo_stream_rate_tps if change.slo_stream_rate_tps is not None else options.slo_stream_rate_tps
            )
            after = f"TTFT {self.sent['slo_ttft_s']}, stream rate {self.sent['slo_stream_rate_tps']}"
            plugin.run_events.emit("slo_changed", detail=f"{before} -> {after}")
        if change.think_time is not None:
            self.sent["think_time_s"] = [change.think_time.low, change.think_time.high]
            plugin.run_events.emit("think_time_changed", detail=change.describe())
        if self.sent:
            apply_settings(plugin, self.sent)
            runner = plugin.environment.runner
            if isinstance(runner, MasterRunner):
                for client_id in list(runner.clients):
                    runner.send_message(MESSAGE, self.sent, client_id=client_id)
        self.phase_name, self.phase_started = change.describe(), now
        plugin.open_window(WINDOW, distributions=PHASE_DISTRIBUTIONS)
        logger.info("llmload: steered the run: %s", change.describe())
        return closed

    def _close_phase(self, now: float, change: Change) -> dict[str, Any]:
        phase = self._phase(now, change)
        if len(self.phases) < MAX_PHASES:
            self.phases.append(phase)
        return phase

    def _phase(self, now: float, change: Change | None) -> dict[str, Any]:
        """The figures of the open phase until ``now`` (ended by ``change``, or by the end of the run)."""
        window = self.plugin.window(WINDOW)
        store = window.store if window is not None else self.plugin.store
        duration = max(now - self.phase_started, 0.0)
        total = store.total(PHASE_DISTRIBUTIONS)
        return {
            "name": self.phase_name,
            "started": round(self.phase_started, 3),
            "ended": round(now, 3),
            "ended_by": None if change is None else change.as_dict(),
            "total": group_body(total, slo=Slo.of(store), distributions=PHASE_DISTRIBUTIONS, window_s=duration),
            "groups": store_bodies(store, distributions=PHASE_DISTRIBUTIONS, window_s=duration),
        }

    def on_worker_connect(self, client_id: str, **_kwargs: Any) -> None:
        runner = self.plugin.environment.runner
        if self.sent and isinstance(runner, MasterRunner):
            runner.send_message(MESSAGE, self.sent, client_id=client_id)

    def results_section(self) -> list[dict[str, Any]] | None:
        """Every phase, the open one up to the end of the run (None when nothing was steered)."""
        if not self.phases:
            return None
        return [*self.phases, self._phase(self.plugin.ended_at or time.time(), None)]


def apply_settings(plugin: LLMLoadPlugin, settings: dict[str, Any]) -> None:
    """Apply steered SLO thresholds and think time on this process (a worker, or the master's own)."""
    options = plugin.options
    if "slo_ttft_s" in settings or "slo_stream_rate_tps" in settings:
        ttft, rate = settings.get("slo_ttft_s", options.slo_ttft_s), settings.get("slo_stream_rate_tps")
        if "slo_stream_rate_tps" not in settings:
            rate = options.slo_stream_rate_tps
        options = replace(
            options,
            slo_ttft_s=None if ttft is None else float(ttft),
            slo_stream_rate_tps=None if rate is None else float(rate),
        )
        plugin.set_options(options)
    think = settings.get("think_time_s")
    if think is not None:
        low, high = (float(v) for v in think)
        plugin.steer_think_time(Range(low, high))


def add_arguments(parser: Any) -> None:
    """Steering has no options of its own."""


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    """Steering on the master or local process; the steered settings' handler on a worker."""
    if plugin.is_worker:
        plugin.wire.register_message(
            MESSAGE, lambda _sender, data: apply_settings(plugin, dict(data)), what="steering message"
        )
        return
    steering = plugin.extensions.add(Steering(plugin))
    environment.events.test_start.add_listener(steering.on_test_start)
    environment.events.worker_connect.add_listener(steering.on_worker_connect)
