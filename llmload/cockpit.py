"""What the web UI's cockpit shows besides the charts: the run's state now, and the verdict at the end.

``run_state`` gathers, on the master (or local process), figures other
modules own: the capacity search's steps and current answer
(``llmload.capacity``), the generator self-check's verdict so far and its
reasons (``llmload.selfcheck``), the workers connected and missing, the
open-loop dispatch lag, the steering phases (``llmload.steering``). It reads
only what those modules already keep (no figures of its own).

``verdict`` reads a finished results document (or one built live): whether
the SLO objective was met, the capacity answer, the soak verdict. It needs
no Locust.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmload.capacity import CapacityRun
from llmload.selfcheck import SelfCheck
from llmload.steering import Steering

if TYPE_CHECKING:
    from llmload.plugin import LLMLoadPlugin


def run_state(plugin: LLMLoadPlugin) -> dict[str, Any]:
    """The run's state now, for the cockpit's panel."""
    runner = plugin.environment.runner
    clients = getattr(runner, "clients", None)
    workers: dict[str, Any] = {"connected": 0, "missing": sorted(plugin.missing_workers)}
    if clients is not None:
        workers["connected"] = sum(1 for client in clients.values() if client.state != "missing")
    state: dict[str, Any] = {
        "state": getattr(runner, "state", None),
        "users": getattr(runner, "user_count", 0),
        "workers": workers,
        "slo": {
            "ttft_s": plugin.store.slo_ttft_s,
            "stream_rate_tps": plugin.store.slo_stream_rate_tps,
            "objective": plugin.options.slo_objective,
        },
        "think_time_s": None
        if plugin.steered_think_time is None
        else [plugin.steered_think_time.low, plugin.steered_think_time.high],
        "arrival": plugin.options.arrival,
        "rate_rps": None,
        "dispatch_lag_p99_s": None,
        "capacity": None,
        "generator": None,
        "phases": [],
    }
    if plugin.options.arrival != "closed":
        from llmload.arrivals import get_arrivals

        arrivals = get_arrivals(plugin)
        state["rate_rps"] = arrivals.rate_rps if arrivals is not None else plugin.options.rate_rps
        state["dispatch_lag_p99_s"] = plugin.store.merged("dispatch_lag_s").percentile(99)
    search = plugin.extensions.get(CapacityRun)
    if search is not None:
        state["capacity"] = {
            "phase": search.phase,
            "level": search.search.level,
            "steps": [
                {k: v for k, v in step.items() if not isinstance(v, (dict, list))} for step in search.search.steps
            ],
            "answer": search.search.answer(),
        }
    check = plugin.extensions.get(SelfCheck)
    if check is not None:
        by_process = check.verdict_by_process()
        state["generator"] = {
            "trustworthy": all(ok for ok, _lag in by_process.values()),
            "by_process": {
                name: {"trustworthy": ok, "loop_lag_p99_s": lag} for name, (ok, lag) in sorted(by_process.items())
            },
            "limits": check.thresholds.as_dict(),
        }
    steering = plugin.extensions.get(Steering)
    if steering is not None:
        state["phases"] = [{"name": phase["name"], "started": phase["started"]} for phase in steering.phases] + [
            {"name": steering.phase_name, "started": round(steering.phase_started, 3)}
        ]
    return state


def verdict(doc: dict[str, Any]) -> dict[str, Any]:
    """The end-of-run verdict of a results document: SLO objective met, capacity answer, soak verdict."""
    total = doc.get("total") or {}
    slo = total.get("slo") or {}
    objective = ((doc.get("run") or {}).get("options") or {}).get("slo_objective")
    attainment = slo.get("attainment")
    met = None if attainment is None or objective is None else attainment >= objective
    capacity = doc.get("capacity") or None
    soak = doc.get("soak") or None
    generator = doc.get("generator") or {}
    return {
        "slo": {"attainment": attainment, "objective": objective, "met": met},
        "capacity": None if capacity is None else capacity.get("answer"),
        "soak": None if soak is None else soak.get("verdict"),
        "trustworthy": generator.get("trustworthy"),
        "reasons": generator.get("reasons") or [],
    }
