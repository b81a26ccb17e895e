"""The results JSON (schema ``llmload.results/1``): building, writing, reading.

Shape (docs/results.md has every key)::

    {"schema": "llmload.results/1",
     "run": {"started_at", "ended_at", "duration_s", "llmload_version", "locust_version",
             "workers", "peak_users", "missing_workers", "host", "options"},
     "groups": [{"backend", "model", "user_class", <group body>}],
     "total": {<group body>}}

where a group body is ``requests``, ``tokens``, one summary per distribution
(``ttft_s``, ``itl_s``, ``tpot_s``, ``e2e_s``, ``stream_rate_tps``,
``decode_rate_tps``: count, mean, p50, p90, p99, max), ``throughput`` and ``slo``.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import orjson

from llmload import backends
from llmload._version import __version__
from llmload.errors import ConfigError
from llmload.metrics import GroupMetrics

SCHEMA = "llmload.results/1"
REPORTED_DISTRIBUTIONS = ("ttft_s", "itl_s", "tpot_s", "e2e_s", "stream_rate_tps", "decode_rate_tps")


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


def group_body(group: GroupMetrics, *, slo_ttft_s: float | None, slo_stream_rate_tps: float | None) -> dict[str, Any]:
    """Return the results-JSON body of one group (or of the total)."""
    counters = group.counters
    ok, failed = counters["ok"], counters["failed"]
    window = group.window_s
    body: dict[str, Any] = {
        "requests": {"ok": ok, "failed": failed, "errors": dict(sorted(group.errors.items()))},
        "tokens": {
            "prompt": counters["prompt_tokens"],
            "output": counters["output_tokens"],
            "output_source": "estimated" if counters["estimated_requests"] else "usage",
            "estimated_requests": counters["estimated_requests"],
        },
    }
    for name in REPORTED_DISTRIBUTIONS:
        body[name] = group.dists[name].summary()
    if group.dists["dispatch_lag_s"].count:
        body["dispatch_lag_s"] = group.dists["dispatch_lag_s"].summary()
    body["throughput"] = {
        "window_s": window,
        "output_tokens_per_s": counters["output_tokens"] / window if window else 0.0,
        "requests_per_s": (ok + failed) / window if window else 0.0,
    }
    body["slo"] = {
        "ttft_s": slo_ttft_s,
        "stream_rate_tps": slo_stream_rate_tps,
        "met": counters["slo_met"],
        "attainment": counters["slo_met"] / ok if ok else None,
        "goodput_rps": counters["slo_met"] / window if window else 0.0,
    }
    return body


def build(plugin: Any) -> dict[str, Any]:
    """Build the results document from a plugin's merged store and run bookkeeping."""
    import locust

    store, options = plugin.store, plugin.options
    slo = {"slo_ttft_s": store.slo_ttft_s, "slo_stream_rate_tps": store.slo_stream_rate_tps}
    started, ended = plugin.started_at, plugin.ended_at
    groups = [
        {"backend": g.backend, "model": g.model, "user_class": g.user_class, **group_body(g, **slo)}
        for g in sorted(store.groups.values(), key=lambda g: g.key)
    ]
    parsed = plugin.environment.parsed_options
    return {
        "schema": SCHEMA,
        "run": {
            "started_at": _iso(started),
            "ended_at": _iso(ended),
            "duration_s": (ended - started) if started and ended else None,
            "llmload_version": __version__,
            "locust_version": locust.__version__,
            "workers": len(plugin.seen_workers),
            "peak_users": plugin.peak_users,
            "missing_workers": [{"id": wid, "at": _iso(at)} for wid, at in sorted(plugin.missing_workers.items())],
            "host": getattr(parsed, "host", None),
            "options": options.public_dict(),
            "backends": backends.describe(options),
        },
        "groups": groups,
        "total": group_body(store.total(), **slo),
        "timeline": list(plugin.timeline),
        "server": getattr(plugin, "server_metrics", None) and plugin.server_metrics.summary(),
        "generator": getattr(plugin, "selfcheck", None) and plugin.selfcheck.summary(),
        "arrivals": getattr(plugin, "arrivals", None) and plugin.arrivals.summary(),
        "capacity": getattr(plugin, "capacity", None),
    }


def check_writable(path: str) -> None:
    """Fail early, with one line, when the results file cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--llm-results {path}: cannot create directory {directory}: {exc.strerror}") from None
    if os.path.isdir(path) or not os.access(directory, os.W_OK):
        raise ConfigError(f"--llm-results {path}: not a writable file path")


def write(doc: dict[str, Any], path: str) -> None:
    """Write a results document atomically."""
    check_writable(path)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


def read(path: str) -> dict[str, Any]:
    """Read a results document; a missing or foreign file is one ConfigError line."""
    try:
        with open(path, "rb") as handle:
            doc = orjson.loads(handle.read())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such results file") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ConfigError(f"{path}: not an llmload results file (expected schema {SCHEMA!r})")
    return doc
