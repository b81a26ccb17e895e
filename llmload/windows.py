"""Windows: named spans of a run, each with its own figures.

A window collects, from the moment it opens, every request recorded (or
merged from workers) into a store of its own, so that its figures are those
of that span only. llmload uses windows for the capacity search's steps
(``capacity``), the results timeline's intervals (``timeline``), and the
spans the later features add (soak windows, the spans between mid-run
changes). docs/metrics.md defines the notion; ``LLMLoadPlugin.open_window``
and ``close_window`` manage them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from llmload.metrics import MetricsStore


@dataclass
class Window:
    """A named span of a run and the requests that finished in it."""

    name: str
    store: MetricsStore
    opened_at: float = field(default_factory=time.time)
    """Wall-clock time (``time.time()``) the window opened."""
    closed_at: float | None = None
    """Wall-clock time it closed; None while open."""
