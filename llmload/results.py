"""Building the results document (schema ``llmload.results/2``) of a run, and writing it.

Shape (docs/results.md has every key)::

    {"schema": "llmload.results/2",
     "run": {"started_at", "ended_at", "duration_s", "llmload_version", "locust_version",
             "workers", "peak_users", "missing_workers", "host", "options", "backends", "errors"},
     "groups": [{"backend", "model", "user_class", <group body>}],
     "total": {<group body>},
     "timeline": [...],
     "server" | "generator" | "arrivals" | "capacity": <extension sections, or null>}

where a group body is built by ``llmload.figures.group_body``. Reading a
results file (either version) is ``llmload.render.document.read``, which
needs no Locust.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from llmload import backends
from llmload._version import __version__
from llmload.figures import Slo, group_body, kind_totals, main_kind, store_bodies
from llmload.render.document import SCHEMA, check_writable, read, write
from llmload.targets import run_targets

if TYPE_CHECKING:
    from llmload.plugin import LLMLoadPlugin

__all__ = ["SCHEMA", "TIMING", "build", "check_writable", "read", "write"]

# The clocks behind every time in the document (docs/metrics.md).
TIMING = {
    "clock": "perf_counter (CLOCK_MONOTONIC); wall-clock times are ISO 8601 UTC",
    "t_send": "when the request's last byte was handed to the kernel; over TLS, the request's start plus connect_s",
    "connect": "connection set-up (TCP, TLS) is connect_s, apart from TTFT and E2E",
    "events": "kernel receive stamps where a group's timestamps.clock is kernel, else when the read returned",
}


def iso(timestamp: float | None) -> str | None:
    """A wall-clock time as ISO 8601 in UTC, to the millisecond."""
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


def build(plugin: LLMLoadPlugin) -> dict[str, Any]:
    """Build the results document from a plugin's merged store, run bookkeeping and extensions."""
    import locust

    store, options = plugin.store, plugin.options
    started, ended = plugin.started_at, plugin.ended_at
    parsed = plugin.environment.parsed_options
    return {
        "schema": SCHEMA,
        "run": {
            "started_at": iso(started),
            "ended_at": iso(ended),
            "duration_s": (ended - started) if started and ended else None,
            "llmload_version": __version__,
            "locust_version": locust.__version__,
            "workers": len(plugin.seen_workers),
            "peak_users": plugin.peak_users,
            "missing_workers": [{"id": wid, "at": iso(at)} for wid, at in sorted(plugin.missing_workers.items())],
            "host": getattr(parsed, "host", None),
            "options": options.public_dict(),
            "backends": backends.describe(options),
            "targets": [target.describe() for _label, target in sorted(run_targets(plugin).items())],
            "events": plugin.run_events.results_list(),
            "errors": [{**error, "at": iso(error["at"])} for error in plugin.supervisor.errors],
            "timing": TIMING,
        },
        "groups": store_bodies(store),
        "total": group_body(store.total(kind=main_kind(store)), slo=Slo.of(store)),
        **({"kind_totals": kind_totals(store)} if len(store.kinds()) > 1 else {}),
        "timeline": list(plugin.timeline.points),
        **plugin.extensions.results_sections(),
    }
