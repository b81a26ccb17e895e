"""Capacity search: the largest load a backend serves within the SLO, as a Locust load shape.

``CapacityShape`` is a Locust ``LoadTestShape`` (``locustfiles/capacity.py``
uses it). It runs steps of a load level, users (closed loop) or requests/s
(``--llm-capacity-mode rate``, open loop): it ramps to the level, waits out a
warm-up (at least the previous step's E2E p99, so requests started at the
previous level do not count), opens a window (``llmload.windows``), holds
until ``--llm-capacity-hold`` seconds and at least
``--llm-capacity-min-requests`` requests (default: one per user) have
finished, and closes the window. A step passes when its SLO attainment
(``llmload.figures``: requests that met the SLO over all finished ones,
skipped arrivals counting as misses) reaches ``--llm-capacity-attainment``.
The SLO is ``--llm-slo-stream-rate`` (default 10 tok/s) and
``--llm-slo-ttft``, which a capacity run defaults to 2 s. Which level comes
next is ``llmload.capacity_search.CapacitySearch``'s decision. ``-t/--run-time``
bounds the search: when it is reached, the search stops and answers with
what it has established, marked incomplete.

Every step and the answer go to the results JSON as ``capacity`` and to the
console as a table. ``llmload capacity`` (llmload/capacity_cli.py) wraps the
Locust command line.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from locust import LoadTestShape
from locust.runners import STATE_RUNNING

from llmload.arrivals import get_arrivals
from llmload.capacity_search import (
    DEFAULT_SLO_TTFT_S,
    FIRST_RAMP_S,
    HOLD_CAP_FACTOR,
    RAMP_TIMEOUT_S,
    CapacitySearch,
    CapacitySettings,
    build_doc,
    step_figures,
)
from llmload.errors import ConfigError
from llmload.extension import Extension, exit_on_config_error
from llmload.metrics import MetricsStore
from llmload.render.capacity import answer_text, format_table, level_unit, step_line

if TYPE_CHECKING:
    from locust.env import Environment
    from locust.runners import Runner

    from llmload.plugin import LLMLoadPlugin

logger = logging.getLogger("llmload")

WINDOW = "capacity"


class CapacityRun(Extension):
    """One capacity search in progress: its phase, its steps so far, and the results' ``capacity`` section."""

    results_key = "capacity"

    def __init__(self, plugin: LLMLoadPlugin, settings: CapacitySettings, *, label: str, run_time_s: float | None):
        self.plugin = plugin
        self.settings = settings
        self.search = CapacitySearch(settings)
        self.label = label
        self.run_time_s = run_time_s
        """The run-time limit (``-t``) the search stops at, or None."""
        self.started = time.monotonic()
        self.phase = "ramp"
        self.phase_since = self.started
        self.users = 0
        self.spawn_rate = 1.0
        self.warmup_s = settings.warmup_s
        self.window_opened = 0.0
        self.skipped_at_open = 0
        self.previous_e2e_p99 = 0.0
        self.previous_e2e_p50 = 0.0
        self.doc: dict[str, Any] | None = None
        """The search so far as the results' ``capacity`` section (None before the first step ends)."""
        self.over = False
        """The search has ended (answered, or stopped at the run-time limit)."""
        self._entered = False

    # -- what the shape asks -------------------------------------------------------------------

    def tick(self, runner: Runner) -> tuple[int, float] | None:
        """Return the users and spawn rate wanted now, or None when the search is over."""
        if self.over:
            return None
        now = time.monotonic()
        if not self._entered:
            self._entered = True
            self.started = now
            self._enter_level(self.search.level or self.settings.start, now)
        if self.run_time_s is not None and now - self.started >= self.run_time_s:
            self._stop_at_run_time(now)
            return None
        if self.phase == "ramp":
            ramped = runner.state == STATE_RUNNING and runner.user_count == self.users
            if ramped or now - self.phase_since > RAMP_TIMEOUT_S:
                self.phase, self.phase_since = "warmup", now
                self.warmup_s = max(self.settings.warmup_s, self.previous_e2e_p99)
        if self.phase == "warmup" and now - self.phase_since >= self.warmup_s:
            self.plugin.open_window(WINDOW)
            self.window_opened, self.skipped_at_open = now, self._skipped()
            self.phase, self.phase_since = "hold", now
        elif self.phase == "hold" and self._hold_done(now):
            level = self.search.level
            assert level is not None
            self._finish_step(level, now - self.window_opened)
            if self.search.done:
                self._finish()
                return None
            next_level = self.search.level
            assert next_level is not None
            self._enter_level(next_level, now)
        return (self.users, self.spawn_rate)

    def results_section(self) -> dict[str, Any] | None:
        return self.doc

    # -- steps ---------------------------------------------------------------------------------

    def _slo(self) -> dict[str, Any]:
        store = self.plugin.store
        return {
            "stream_rate_tps": store.slo_stream_rate_tps,
            "ttft_s": store.slo_ttft_s,
            "attainment": self.settings.attainment,
        }

    def _enter_level(self, level: float, now: float) -> None:
        previous = self.users
        if self.settings.mode == "users":
            self.users = int(level)
        else:
            self.users = self.settings.pool
            arrivals = get_arrivals(self.plugin)
            if arrivals is not None:
                arrivals.set_rate(level)
        change = abs(self.users - previous) or 1
        # Spread new users over about one request duration, so that their requests do not start,
        # batch and finish together in waves that alias with the measurement window.
        ramp_s = self.previous_e2e_p50 or min(self.settings.warmup_s, FIRST_RAMP_S)
        self.spawn_rate = self.settings.spawn_rate or max(change / max(ramp_s, 1.0), 1.0)
        self.phase, self.phase_since = "ramp", now
        logger.info(
            "llmload capacity: step %d, %g %s", len(self.search.steps) + 1, level, level_unit(self.settings.mode)
        )
        self.plugin.run_events.emit(
            "capacity_step", detail=f"step {len(self.search.steps) + 1}: {level:g} {level_unit(self.settings.mode)}"
        )

    def _skipped(self) -> int:
        arrivals = get_arrivals(self.plugin)
        return arrivals.totals().skipped if arrivals is not None and self.settings.mode == "rate" else 0

    def _hold_done(self, now: float) -> bool:
        window = self.plugin.window(WINDOW)
        elapsed = now - self.window_opened
        finished = 0
        if window is not None:
            counters = window.store.counter_totals()
            finished = counters["ok"] + counters["failed"]
        level = self.search.level or 0.0
        wanted = self.settings.min_requests or (
            self.users if self.settings.mode == "users" else int(level * self.settings.hold_s)
        )
        return elapsed >= self.settings.hold_s and (
            finished >= wanted or elapsed >= HOLD_CAP_FACTOR * self.settings.hold_s
        )

    def _finish_step(self, level: float, elapsed: float) -> None:
        window = self.plugin.close_window(WINDOW)
        store = window.store if window is not None else MetricsStore()
        step = step_figures(
            store,
            level=level,
            users=self.users,
            mode=self.settings.mode,
            elapsed_s=elapsed,
            attainment_target=self.settings.attainment,
            skipped=self._skipped() - self.skipped_at_open,
        )
        self.previous_e2e_p99 = step["e2e_p99_s"] or 0.0
        self.previous_e2e_p50 = step["e2e_p50_s"] or 0.0
        self.search.record(step)
        self.publish()
        logger.info("llmload capacity: %s", step_line(step, self.settings.mode))

    def publish(self) -> dict[str, Any]:
        """Build the search so far as the results' ``capacity`` section."""
        doc = build_doc(self.search, label=self.label, slo=self._slo())
        doc["answer"]["text"] = answer_text(doc)
        self.doc = doc
        return doc

    def _finish(self) -> None:
        self.over = True
        print(format_table(self.publish()), flush=True)

    def _stop_at_run_time(self, now: float) -> None:
        self.plugin.close_window(WINDOW)
        self.search.stop(f"the run-time limit of {self.run_time_s:g} s was reached")
        logger.warning(
            "llmload capacity: run-time limit of %g s reached after %d step(s); answering with what is established",
            self.run_time_s,
            len(self.search.steps),
        )
        self._finish()

    def on_quit(self, **_kwargs: Any) -> None:
        """A search ended by Ctrl-C or the web UI still prints what it established."""
        if not self.over and self.search.steps:
            self.search.stop("the test was stopped before the search ended")
            self._finish()


class CapacityShape(LoadTestShape):
    """Step the load until the SLO breaks, then bisect; see ``llmload.capacity``."""

    abstract = True

    def __init__(self) -> None:
        super().__init__()
        self.search_run: CapacityRun | None = None
        """The search this shape drives; attached by llmload on Locust's ``init`` (master or local)."""

    def attach(self, search_run: CapacityRun) -> None:
        """Drive ``search_run`` from now on."""
        self.search_run = search_run

    def tick(self) -> tuple[int, float] | None:
        if self.search_run is None or self.runner is None:
            return None
        return self.search_run.tick(self.runner)


def default_label(plugin: LLMLoadPlugin, environment: Environment) -> str:
    """The backend's name when one backend of a backends file is used, else the host."""
    from llmload import backends

    options = plugin.options
    if options.backends:
        names = [b.name for b in backends.load_backends(options.backends, only=options.backend_names)]
        return ",".join(names)
    return environment.host or "backend"


# -- Locust extension: options, SLO default, the search itself -------------------------------------


def add_arguments(parser: Any) -> None:
    """Register the ``--llm-capacity-*`` options."""

    def add(name: str, help: str, default: str = "") -> None:
        parser.add_argument(
            f"--llm-capacity-{name}",
            env_var=f"LOCUST_LLM_CAPACITY_{name.upper().replace('-', '_')}",
            default=default,
            help=help,
        )

    add("mode", "Capacity search: step users (closed loop) or rate (open loop, requests/s)", "users")
    add("start", "Capacity search: first level (default 10)")
    add("growth", "Capacity search: factor between levels until the SLO breaks (default 2)")
    add("max", "Capacity search: highest level tried (default 1000)")
    add("resolution", "Capacity search: stop bisecting when failing - passing <= this share of failing (default 0.05)")
    add(
        "warmup",
        "Capacity search: seconds after each ramp before measuring (default 30; at least the last step's E2E p99)",
    )
    add("hold", "Capacity search: seconds measured per step (default 60)")
    add("min-requests", "Capacity search: requests a step needs before it ends (default: one per user)")
    add("attainment", "Capacity search: share of requests that must meet the SLO (default 0.95)")
    add("spawn-rate", "Capacity search: users started per second (default: a step's new users over the last E2E p50)")
    add("pool", "Capacity search, rate mode: users, i.e. the most requests in flight (default 500)")
    add("label", "Capacity search: name of the backend in the answer (default: backend name or host)")


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    """In a capacity run: default the TTFT SLO to 2 s (every process); on the master or local, run the search."""
    shape = environment.shape_class
    if not isinstance(shape, CapacityShape):
        return
    plugin.set_option_default("llm_slo_ttft", f"{DEFAULT_SLO_TTFT_S:g}")
    if plugin.is_worker:
        return
    parsed = environment.parsed_options
    try:
        settings = CapacitySettings.from_parsed(parsed)
        label = settings.label or default_label(plugin, environment)
    except ConfigError as exc:
        exit_on_config_error(exc)
    run_time = getattr(parsed, "run_time", None)
    search_run = plugin.extensions.add(
        CapacityRun(plugin, settings, label=label, run_time_s=float(run_time) if run_time else None)
    )
    shape.attach(search_run)
    environment.events.quit.add_listener(search_run.on_quit)
