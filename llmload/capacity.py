"""Capacity search: the largest load a backend serves within the SLO.

``CapacityShape`` is a Locust ``LoadTestShape`` (``locustfiles/capacity.py``
uses it). It runs steps of a load level, users (closed loop) or requests/s
(``--llm-capacity-mode rate``, open loop): it ramps to the level, waits out a
warm-up (at least the previous step's E2E p99, so requests started at the
previous level do not count), opens a plugin metrics window, holds until
``--llm-capacity-hold`` seconds and at least ``--llm-capacity-min-requests``
requests (default: one per user) have finished, and closes the window. A step
passes when at least ``--llm-capacity-attainment`` (0.95) of its requests
succeeded and met the run's SLO (``--llm-slo-stream-rate``, default 10 tok/s,
and ``--llm-slo-ttft``, which a capacity run defaults to 2 s); failed and
skipped requests count as misses. Levels grow by ``--llm-capacity-growth``
from ``--llm-capacity-start`` until a step fails (or ``--llm-capacity-max``
passes); then bisection between the last passing and the first failing level
until they are within ``--llm-capacity-resolution`` of each other.

Every step and the answer go to the results JSON as ``capacity`` and to the
console as a table. ``llmload capacity`` (llmload/capacity_cli.py) wraps the
Locust command line.

Nothing here imports Locust at module level (``llmload --help`` imports this
module); ``CapacityShape`` is built on first access.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from llmload.errors import ConfigError

logger = logging.getLogger("llmload")

MODES = ("users", "rate")
DEFAULT_SLO_TTFT_S = 2.0
DEFAULT_ATTAINMENT = 0.95
WINDOW = "capacity"
# How long a ramp may take before the step starts anyway (a worker that never reports its users).
RAMP_TIMEOUT_S = 60.0
# The first step's users start over this many seconds (at most --llm-capacity-warmup); a later
# step's new users start over the previous step's E2E p50.
FIRST_RAMP_S = 10.0
# A step ends after 4x --llm-capacity-hold even without its minimum number of requests.
HOLD_CAP_FACTOR = 4


@dataclass(frozen=True)
class CapacitySettings:
    """The validated ``--llm-capacity-*`` options."""

    mode: str = "users"
    start: float = 10
    growth: float = 2.0
    max: float = 1000
    resolution: float = 0.05
    warmup_s: float = 30.0
    hold_s: float = 60.0
    min_requests: int = 0  # 0: one per user (users mode) or rate x hold (rate mode)
    attainment: float = DEFAULT_ATTAINMENT
    spawn_rate: float = 0.0  # 0: spread a step's new users over about one request duration
    pool: int = 500  # rate mode: users = the most requests in flight
    label: str = ""

    @classmethod
    def from_parsed(cls, parsed: Any) -> CapacitySettings:
        """Validate Locust's parsed options; a bad value raises a one-line ``ConfigError``."""

        def number(name: str, default: float, *, low: float, high: float = math.inf, low_ok: bool = True) -> float:
            raw = getattr(parsed, f"llm_capacity_{name}", "")
            if raw in (None, ""):
                return default
            try:
                value = float(raw)
            except (TypeError, ValueError):
                value = math.nan
            if not (value >= low if low_ok else value > low) or not value <= high:
                bound = f"{'>=' if low_ok else '>'} {low:g}" + (f" and <= {high:g}" if high != math.inf else "")
                raise ConfigError(f"--llm-capacity-{name.replace('_', '-')}: expected a number {bound}, got {raw!r}")
            return value

        mode = str(getattr(parsed, "llm_capacity_mode", "") or "users").strip().lower()
        if mode not in MODES:
            raise ConfigError(f"--llm-capacity-mode: expected one of {', '.join(MODES)}, got {mode!r}")
        settings = cls(
            mode=mode,
            start=number("start", 10, low=0, low_ok=False),
            growth=number("growth", 2.0, low=1, low_ok=False),
            max=number("max", 1000, low=0, low_ok=False),
            resolution=number("resolution", 0.05, low=0, low_ok=False, high=1),
            warmup_s=number("warmup", 30.0, low=0),
            hold_s=number("hold", 60.0, low=0, low_ok=False),
            min_requests=int(number("min_requests", 0, low=0)),
            attainment=number("attainment", DEFAULT_ATTAINMENT, low=0, low_ok=False, high=1),
            spawn_rate=number("spawn_rate", 0.0, low=0),
            pool=int(number("pool", 500, low=1)),
            label=str(getattr(parsed, "llm_capacity_label", "") or ""),
        )
        if settings.start > settings.max:
            raise ConfigError(
                f"--llm-capacity-start ({settings.start:g}) is above --llm-capacity-max ({settings.max:g})"
            )
        if mode == "users" and (settings.start != int(settings.start) or settings.max != int(settings.max)):
            raise ConfigError("--llm-capacity-start and --llm-capacity-max: whole numbers of users")
        if mode == "rate" and getattr(parsed, "llm_arrival", "closed") in ("", "closed", None):
            raise ConfigError("--llm-capacity-mode rate: needs --llm-arrival poisson or constant")
        return settings


class CapacitySearch:
    """Which level to test next, from the verdicts so far: grow, then bisect."""

    def __init__(self, settings: CapacitySettings) -> None:
        self.settings = settings
        self.steps: list[dict[str, Any]] = []
        self.passing: float | None = None  # highest passing level
        self.failing: float | None = None  # lowest failing level
        self.level: float | None = settings.start

    def _round(self, level: float) -> float:
        if self.settings.mode == "users":
            return float(max(int(round(level)), 1))
        return float(f"{level:.3g}")

    def record(self, step: dict[str, Any]) -> float | None:
        """Add a finished step (``level`` and ``passed``); return the next level, or None when done."""
        self.steps.append(step)
        level, s = step["level"], self.settings
        if step["passed"]:
            self.passing = max(self.passing or 0.0, level)
        else:
            self.failing = level if self.failing is None else min(self.failing, level)
        if self.failing is None:
            self.level = None if level >= s.max else self._round(min(level * s.growth, s.max))
            return self.level
        low, high = self.passing or 0.0, self.failing
        if high - low <= s.resolution * high or (s.mode == "users" and high - low <= 1):
            self.level = None
            return None
        middle = self._round((low + high) / 2)
        self.level = None if middle in (low, high) else middle
        return self.level

    @property
    def done(self) -> bool:
        return self.level is None

    def answer(self) -> dict[str, Any]:
        """The answer so far: the largest passing level, the first failing one, and the passing step's figures."""
        s = self.settings
        best = next((st for st in sorted(self.steps, key=lambda st: -st["level"]) if st["passed"]), None)
        key = "users" if s.mode == "users" else "rate_rps"
        value = None if best is None else (int(best["level"]) if s.mode == "users" else best["level"])
        out: dict[str, Any] = {
            key: value,
            "first_failing": None
            if self.failing is None
            else (int(self.failing) if s.mode == "users" else self.failing),
            "limit_reached": self.failing is None and best is not None and best["level"] >= s.max,
            "complete": self.done,
        }
        if best is not None:
            for name in (
                "users" if s.mode == "users" else "rate_rps",
                "stream_rate_p50_tps",
                "stream_rate_p10_tps",
                "ttft_p50_s",
                "ttft_p99_s",
                "output_tokens_per_s",
                "attainment",
            ):
                out.setdefault(name, best.get(name))
        return out


def step_figures(
    window: Any, *, level: float, users: int, mode: str, elapsed_s: float, attainment_target: float, skipped: int = 0
) -> dict[str, Any]:
    """Summarize one step's metrics window (a ``MetricsStore``) as a results-JSON step."""
    total = window.total()
    counters, dists = total.counters, total.dists
    ok, failed = counters["ok"], counters["failed"]
    requests = ok + failed + skipped
    attainment = counters["slo_met"] / requests if requests else None
    step = {
        "level": level,
        "users": users,
        "requests": requests,
        "failed": failed,
        "stream_rate_p50_tps": dists["stream_rate_tps"].percentile(50),
        "stream_rate_p10_tps": dists["stream_rate_tps"].percentile(10),
        "ttft_p50_s": dists["ttft_s"].percentile(50),
        "ttft_p99_s": dists["ttft_s"].percentile(99),
        "e2e_p99_s": dists["e2e_s"].percentile(99),
        "output_tokens_per_s": counters["output_tokens"] / elapsed_s if elapsed_s > 0 else 0.0,
        "window_s": round(elapsed_s, 3),
        "attainment": attainment,
        "passed": attainment is not None and attainment >= attainment_target,
    }
    if mode == "rate":
        step["rate_rps"] = level
        step["skipped"] = skipped
    return step


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def slo_text(slo: dict[str, Any]) -> str:
    """``95% of requests with stream rate >= 10 tok/s and TTFT <= 2 s``."""
    parts = []
    if slo.get("stream_rate_tps") is not None:
        parts.append(f"stream rate >= {slo['stream_rate_tps']:g} tok/s")
    if slo.get("ttft_s") is not None:
        parts.append(f"TTFT <= {slo['ttft_s']:g} s")
    return f"{slo['attainment'] * 100:g}% of requests with {' and '.join(parts) or 'success'}"


def answer_text(doc: dict[str, Any]) -> str:
    """One line: ``rtx3090: 137 users at >= 10 tok/s (...)``."""
    answer, slo, label = doc["answer"], doc["slo"], doc.get("label") or "backend"
    unit = "users" if doc["mode"] == "users" else "requests/s"
    value = answer.get("users") if doc["mode"] == "users" else answer.get("rate_rps")
    rate = f" at >= {slo['stream_rate_tps']:g} tok/s" if slo.get("stream_rate_tps") is not None else ""
    if value is None:
        return f"{label}: no tested load met the SLO ({slo_text(slo)})"
    bound = ">= " if answer.get("limit_reached") else ""
    tail = " (the search's upper limit)" if answer.get("limit_reached") else ""
    partial = "" if answer.get("complete") else " [search incomplete]"
    return f"{label}: {bound}{value:g} {unit}{rate}{tail} ({slo_text(slo)}){partial}"


def format_table(doc: dict[str, Any]) -> str:
    """Render every step and the answer as a fixed-width table."""
    rate_mode = doc["mode"] == "rate"
    header = [
        "step",
        "req/s" if rate_mode else "users",
        "requests",
        "rate p50",
        "p10",
        "TTFT p50",
        "p99",
        "out tok/s",
        "SLO met",
        "result",
    ]
    rows = []
    for i, st in enumerate(doc["steps"], start=1):
        rows.append(
            [
                str(i),
                f"{st['level']:g}",
                str(st["requests"]),
                _fmt(st["stream_rate_p50_tps"]),
                _fmt(st["stream_rate_p10_tps"]),
                _fmt(st["ttft_p50_s"], 1000, 0),
                _fmt(st["ttft_p99_s"], 1000, 0),
                _fmt(st["output_tokens_per_s"], digits=0),
                _fmt(st["attainment"], 100) + ("%" if st["attainment"] is not None else ""),
                "pass" if st["passed"] else "FAIL",
            ]
        )
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    title = f"Capacity search (rates in tok/s, TTFT in ms; SLO: {slo_text(doc['slo'])})"
    return "\n".join(
        [
            title,
            line(header),
            line(["-" * w for w in widths]),
            *(line(r) for r in rows),
            "",
            "Answer: " + answer_text(doc),
        ]
    )


def build_doc(search: CapacitySearch, *, label: str, slo: dict[str, Any]) -> dict[str, Any]:
    """The results JSON's ``capacity`` section."""
    return {
        "mode": search.settings.mode,
        "label": label,
        "slo": slo,
        "settings": asdict(search.settings),
        "steps": list(search.steps),
        "answer": {**search.answer(), "text": ""},
    }


# -- the Locust shape -------------------------------------------------------------------------


class _CapacityShapeMixin:
    """The shape's logic; ``CapacityShape`` mixes it into Locust's ``LoadTestShape``."""

    def _setup(self) -> None:
        from llmload.plugin import get_plugin

        environment = self.runner.environment
        self.plugin = get_plugin(environment)
        self.settings = CapacitySettings.from_parsed(environment.parsed_options)
        self.search = CapacitySearch(self.settings)
        self.label = self.settings.label or default_label(self.plugin, environment)
        self.phase = "ramp"
        self.phase_since = time.monotonic()
        self.users = 0
        self.window_opened = 0.0
        self.skipped_at_open = 0
        self.previous_e2e_p99 = 0.0
        self.previous_e2e_p50 = 0.0
        self.finished_doc: dict[str, Any] | None = None
        self._enter_level(self.search.level)

    def _slo(self) -> dict[str, Any]:
        store = self.plugin.store
        return {
            "stream_rate_tps": store.slo_stream_rate_tps,
            "ttft_s": store.slo_ttft_s,
            "attainment": self.settings.attainment,
        }

    def _arrivals(self) -> Any:
        from llmload.arrivals import get_arrivals

        return get_arrivals(self.plugin)

    def _enter_level(self, level: float) -> None:
        previous = self.users
        if self.settings.mode == "users":
            self.users = int(level)
        else:
            self.users = self.settings.pool
            arrivals = self._arrivals()
            if arrivals is not None:
                arrivals.set_rate(level)
        change = abs(self.users - previous) or 1
        # Spread new users over about one request duration, so that their requests do not start,
        # batch and finish together in waves that alias with the measurement window.
        ramp_s = self.previous_e2e_p50 or min(self.settings.warmup_s, FIRST_RAMP_S)
        self.spawn_rate = self.settings.spawn_rate or max(change / max(ramp_s, 1.0), 1.0)
        self.phase, self.phase_since = "ramp", time.monotonic()
        logger.info(
            "llmload capacity: step %d, %g %s",
            len(self.search.steps) + 1,
            level,
            "users" if self.settings.mode == "users" else "requests/s",
        )

    def _skipped(self) -> int:
        arrivals = self._arrivals()
        return arrivals.totals().skipped if arrivals is not None and self.settings.mode == "rate" else 0

    def tick(self) -> tuple[int, float] | None:
        if not hasattr(self, "search"):
            self._setup()
        if self.finished_doc is not None:
            return None
        now = time.monotonic()
        runner = self.runner
        if self.phase == "ramp":
            ramped = runner.state == "running" and runner.user_count == self.users
            if ramped or now - self.phase_since > RAMP_TIMEOUT_S:
                self.phase, self.phase_since = "warmup", now
                self.warmup_s = max(self.settings.warmup_s, self.previous_e2e_p99)
        if self.phase == "warmup" and now - self.phase_since >= self.warmup_s:
            self.plugin.open_window(WINDOW)
            self.window_opened, self.skipped_at_open = now, self._skipped()
            self.phase, self.phase_since = "hold", now
        elif self.phase == "hold":
            window = self.plugin.windows.get(WINDOW)
            elapsed = now - self.window_opened
            finished = 0
            if window is not None:
                counters = window.total().counters
                finished = counters["ok"] + counters["failed"]
            level = self.search.level
            wanted = self.settings.min_requests or (
                self.users if self.settings.mode == "users" else int(level * self.settings.hold_s)
            )
            if elapsed >= self.settings.hold_s and (
                finished >= wanted or elapsed >= HOLD_CAP_FACTOR * self.settings.hold_s
            ):
                self._finish_step(level, elapsed)
                if self.search.done:
                    return self._finish_search()
                self._enter_level(self.search.level)
        return (self.users, self.spawn_rate)

    def _finish_step(self, level: float, elapsed: float) -> None:
        window = self.plugin.close_window(WINDOW)
        if window is None:
            from llmload.metrics import MetricsStore

            window = MetricsStore()
        step = step_figures(
            window,
            level=level,
            users=self.users,
            mode=self.settings.mode,
            elapsed_s=elapsed,
            attainment_target=self.settings.attainment,
            skipped=self._skipped() - self.skipped_at_open,
        )
        self.previous_e2e_p99 = step["e2e_p99_s"] or 0.0
        self.previous_e2e_p50 = window.total().dists["e2e_s"].percentile(50) or 0.0
        self.search.record(step)
        self.publish()
        logger.info(
            "llmload capacity: %g %s -> stream rate p50 %s tok/s, SLO met %s -> %s",
            level,
            "users" if self.settings.mode == "users" else "requests/s",
            _fmt(step["stream_rate_p50_tps"]),
            _fmt(step["attainment"], 100) + "%",
            "pass" if step["passed"] else "FAIL",
        )

    def publish(self) -> dict[str, Any]:
        """Put the search so far on the plugin, where the results JSON picks it up."""
        doc = build_doc(self.search, label=self.label, slo=self._slo())
        doc["answer"]["text"] = answer_text(doc)
        self.plugin.capacity = doc
        return doc

    def _finish_search(self) -> None:
        self.finished_doc = self.publish()
        print(format_table(self.finished_doc), flush=True)
        return None


def default_label(plugin: Any, environment: Any) -> str:
    """The backend's name when one backend of a backends file is used, else the host."""
    from llmload import backends

    options = plugin.options
    if options.backends:
        names = [b.name for b in backends.load_backends(options.backends, only=options.backend_names)]
        return ",".join(names)
    return environment.host or "backend"


_SHAPE: type | None = None


def _shape_class() -> type:
    global _SHAPE
    if _SHAPE is None:
        from locust import LoadTestShape

        class CapacityShape(_CapacityShapeMixin, LoadTestShape):
            """Step the load until the SLO breaks, then bisect; see ``llmload.capacity``."""

            abstract = True

        _SHAPE = CapacityShape
    return _SHAPE


def __getattr__(name: str) -> Any:
    if name == "CapacityShape":
        return _shape_class()
    raise AttributeError(f"module 'llmload.capacity' has no attribute {name!r}")


# -- Locust extension: options, SLO default, the table at quit ---------------------------------


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


def register(environment: Any, plugin: Any) -> None:
    """In a capacity run (master or local): validate the options, default the TTFT SLO to 2 s."""
    shape = environment.shape_class
    if shape is None or not isinstance(shape, _shape_class()) or plugin.is_worker:
        return
    parsed = environment.parsed_options
    try:
        CapacitySettings.from_parsed(parsed)
    except ConfigError as exc:
        print(f"llmload: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if parsed is not None and not getattr(parsed, "llm_slo_ttft", ""):
        # Workers receive the master's parsed options with the first spawn message.
        parsed.llm_slo_ttft = f"{DEFAULT_SLO_TTFT_S:g}"
        plugin.load_options(exit_on_error=True)

    def on_quit(**_kwargs: Any) -> None:
        if getattr(shape, "finished_doc", True) is None and hasattr(shape, "search") and shape.search.steps:
            print(format_table(shape.publish()), flush=True)

    environment.events.quit.add_listener(on_quit)
