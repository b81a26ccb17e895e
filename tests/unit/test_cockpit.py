"""The cockpit's run state and verdict: what the page shows besides the charts, from the modules that own it."""

from __future__ import annotations

from locust.runners import STATE_RUNNING

from llmload import cockpit, selfcheck, steering
from llmload.capacity import CapacityRun
from llmload.capacity_search import CapacitySettings
from llmload.options import LLMOptions
from llmload.steering import Change, Steering
from tests.support.environments import RecordingRunner, fire, local_environment, new_plugin


def test_run_state_names_the_search_steps_the_self_check_and_the_phases():
    environment = local_environment(runner=RecordingRunner(user_count=7, state=STATE_RUNNING))
    plugin = new_plugin(environment, selfcheck, steering)
    fire(environment.events.test_start, environment=environment)
    plugin.set_options(LLMOptions(slo_ttft_s=0.5, slo_stream_rate_tps=10.0))
    plugin.extensions.get(Steering).apply(Change(slo_ttft_s=0.25))
    state = cockpit.run_state(plugin)
    assert state["state"] == STATE_RUNNING and state["users"] == 7 and state["workers"]["missing"] == []
    assert state["slo"] == {"ttft_s": 0.25, "stream_rate_tps": 10.0, "objective": 0.99}
    assert [p["name"] for p in state["phases"]] == ["start", "SLO TTFT 0.25 s"]
    assert state["generator"]["trustworthy"] is True and "local" in state["generator"]["by_process"]
    assert state["generator"]["limits"]["loop_lag_p99_s"] == 0.01
    assert state["capacity"] is None and state["rate_rps"] is None

    run = plugin.extensions.add(CapacityRun(plugin, CapacitySettings(start=10), label="gpu", run_time_s=None))
    run.search.record({"level": 10.0, "passed": True, "figures": {"ttft_p99_s": 0.2}})
    capacity = cockpit.run_state(plugin)["capacity"]
    assert capacity["level"] == 20.0 and capacity["steps"] == [{"level": 10.0, "passed": True}]
    assert capacity["answer"]["users"] == 10


def test_verdict_of_a_results_document():
    doc = {
        "run": {"options": {"slo_objective": 0.95}},
        "total": {"slo": {"attainment": 0.9}},
        "soak": {"verdict": "degraded"},
        "capacity": {"answer": {"users": 150, "text": "150 users"}},
        "generator": {"trustworthy": False, "reasons": ["local: CPU above 90%"]},
    }
    assert cockpit.verdict(doc) == {
        "slo": {"attainment": 0.9, "objective": 0.95, "met": False},
        "capacity": {"users": 150, "text": "150 users"},
        "soak": "degraded",
        "trustworthy": False,
        "reasons": ["local: CPU above 90%"],
    }
    assert cockpit.verdict({"total": {"slo": {"attainment": None}}})["slo"]["met"] is None
