"""Run events: what changed during a run, kept as counts and times for Prometheus and the results.

Every event has a kind (``EVENTS``) and, for a backend's events, the backend's
label. The exporter serves ``llmload_run_events_total{event, backend}`` and
``llmload_run_event_last_timestamp_seconds{event, backend}``, which a Grafana
annotation query reads (``expr: llmload_run_event_last_timestamp_seconds *
1000``, series value as timestamp), so events show on the dashboards without
write access to Grafana. The results keep the first ``MAX_KEPT`` events, in
order, under ``run.events``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

EVENTS = (
    "test_start",
    "test_stop",
    "users_changed",
    "rate_changed",
    "slo_changed",
    "think_time_changed",
    "capacity_step",
    "worker_lost",
    "backend_restarted",
    "trace_ended",
)
MAX_KEPT = 1000


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One event of a run."""

    event: str
    at: float
    """Wall-clock time (``time.time()``)."""
    backend: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, str | float]:
        out: dict[str, str | float] = {"event": self.event, "t": round(self.at, 3)}
        if self.backend:
            out["backend"] = self.backend
        if self.detail:
            out["detail"] = self.detail
        return out


class RunEvents:
    """The events of one run on the master (or local process)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.counts: dict[tuple[str, str], int] = {}
        """Events so far by (event, backend)."""
        self.last_at: dict[tuple[str, str], float] = {}
        """Time of the latest event by (event, backend)."""
        self.kept: list[RunEvent] = []
        self.dropped = 0

    def emit(self, event: str, *, backend: str = "", detail: str = "") -> RunEvent:
        """Record that ``event`` happened now."""
        if event not in EVENTS:
            raise ValueError(f"unknown run event {event!r}; expected one of {', '.join(EVENTS)}")
        happened = RunEvent(event=event, at=self._clock(), backend=backend, detail=detail)
        key = (event, backend)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.last_at[key] = happened.at
        if len(self.kept) < MAX_KEPT:
            self.kept.append(happened)
        else:
            self.dropped += 1
        return happened

    def reset(self) -> None:
        """Forget every event (a new run starts in the same process)."""
        self.counts.clear()
        self.last_at.clear()
        self.kept.clear()
        self.dropped = 0

    def results_list(self) -> list[dict[str, str | float]]:
        """The kept events as the results' ``run.events`` shows them."""
        return [event.as_dict() for event in self.kept]
