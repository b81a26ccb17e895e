"""The capacity search's settings, level sequence and step figures: everything but the Locust shape.

This module needs no Locust (``llmload capacity`` and ``llmload --help``
import it); ``llmload.capacity`` drives it from a Locust ``LoadTestShape``.
``CapacitySearch`` decides which level to test next from the verdicts so far
(grow by ``growth`` until a step fails, then bisect);
``step_figures`` turns a step's window into its figures, with SLO attainment
as defined once in ``llmload.figures``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from llmload.errors import ConfigError
from llmload.figures import Slo, group_body
from llmload.metrics import MetricsStore
from llmload.options import parse_number

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
            value = parse_number(
                getattr(parsed, f"llm_capacity_{name}", ""),
                option=f"--llm-capacity-{name.replace('_', '-')}",
                default=default,
                low=low,
                high=high,
                low_open=not low_ok,
            )
            assert value is not None
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
        self.stopped_by: str | None = None
        """Why the search ended before its answer was established (None: it was not cut short)."""

    def stop(self, reason: str) -> None:
        """End the search now (e.g. at the run-time limit); the answer is what was established so far."""
        if not self.done:
            self.stopped_by = reason
            self.level = None

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
            "complete": self.done and self.stopped_by is None,
            "stopped_by": self.stopped_by,
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


STEP_DISTRIBUTIONS = ("ttft_s", "e2e_s", "stream_rate_tps")


def step_figures(
    window: MetricsStore,
    *,
    level: float,
    users: int,
    mode: str,
    elapsed_s: float,
    attainment_target: float,
    skipped: int = 0,
) -> dict[str, Any]:
    """Summarize one step's window as a results-JSON step (figures from ``llmload.figures``).

    Skipped open-loop arrivals count as requests that missed the SLO.
    """
    body = group_body(
        window.total(), slo=Slo.of(window), window_s=elapsed_s, skipped=skipped, distributions=STEP_DISTRIBUTIONS
    )
    requests = body["requests"]["ok"] + body["requests"]["failed"] + skipped
    attainment = body["slo"]["attainment"]
    step = {
        "level": level,
        "users": users,
        "requests": requests,
        "failed": body["requests"]["failed"],
        "stream_rate_p50_tps": body["stream_rate_tps"]["p50"],
        "stream_rate_p10_tps": body["stream_rate_tps"]["p10"],
        "ttft_p50_s": body["ttft_s"]["p50"],
        "ttft_p99_s": body["ttft_s"]["p99"],
        "e2e_p50_s": body["e2e_s"]["p50"],
        "e2e_p99_s": body["e2e_s"]["p99"],
        "output_tokens_per_s": body["throughput"]["output_tokens_per_s"],
        "window_s": round(elapsed_s, 3),
        "attainment": attainment,
        "passed": attainment is not None and attainment >= attainment_target,
    }
    if mode == "rate":
        step["rate_rps"] = level
        step["skipped"] = skipped
    return step


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
