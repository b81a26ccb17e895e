"""Steering a running test: validation, refusals, phases in the results, settings reaching the workers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from locust.runners import STATE_RUNNING

from llmload import arrivals, capacity, steering
from llmload.errors import ConfigError
from llmload.options import LLMOptions, Range
from llmload.record import RequestRecord
from llmload.steering import Change, Steering, SteeringRefused
from tests.support.environments import (
    RecordingRunner,
    connect_worker,
    fire,
    local_environment,
    master_environment,
    new_plugin,
    worker_environment,
)


def request(ttft: float, *, n: int = 10) -> RequestRecord:
    times = [ttft + 0.05 * i for i in range(n)]
    return RequestRecord(
        backend="gpu-a",
        model="m",
        user_class="Chat",
        endpoint="/v1/chat/completions",
        t_send=0.0,
        start_wall=1.0,
        token_times=times,
        t_end=times[-1],
        completion_tokens=n,
        prompt_tokens=5,
    )


def running_local(parsed=None):
    environment = local_environment(parsed, runner=RecordingRunner(user_count=4, state=STATE_RUNNING))
    plugin = new_plugin(environment, steering)
    fire(environment.events.test_start, environment=environment)
    plugin.set_options(LLMOptions(slo_ttft_s=0.5, slo_stream_rate_tps=5.0))  # test_start loads the options
    return plugin, plugin.extensions.get(Steering)


def test_change_from_json_validates_with_one_line():
    change = Change.from_json({"rate_rps": 5, "slo_ttft_s": 0.25, "think_time_s": [1, 2]})
    assert change == Change(rate_rps=5.0, slo_ttft_s=0.25, think_time=Range(1.0, 2.0))
    assert change.describe() == "rate 5 rps, SLO TTFT 0.25 s, think 1-2 s"
    assert Change.from_json({"think_time_s": 0}).think_time == Range(0.0, 0.0)
    for body, message in (
        ([], "steering: expected a JSON object"),
        ({}, "steering: nothing to change"),
        ({"users": 3}, "steering: unknown setting 'users'"),
        ({"rate_rps": "fast"}, "steering: rate_rps: expected a number, got 'fast'"),
        ({"rate_rps": True}, "steering: rate_rps: expected a number, got True"),
        ({"slo_ttft_s": -1}, "steering: slo_ttft_s: expected a number between 0.001 and 3600, got -1"),
        ({"think_time_s": [3, 1]}, "steering: think_time_s: expected seconds or [low, high] with low <= high"),
    ):
        with pytest.raises(ConfigError) as info:
            Change.from_json(body)
        assert str(info.value) == message


def test_slo_change_applies_from_the_next_request_and_splits_the_run_into_phases():
    plugin, steer = running_local()
    plugin.record(request(0.3))  # meets TTFT 0.5 s
    closed = steer.apply(Change(slo_ttft_s=0.2))
    assert closed["name"] == "start" and closed["total"]["slo"]["met"] == 1
    assert plugin.options.slo_ttft_s == 0.2 and plugin.options.slo_stream_rate_tps == 5.0
    plugin.record(request(0.3))  # misses TTFT 0.2 s from now on
    phases = plugin.extensions.results_sections()["phases"]
    assert [p["name"] for p in phases] == ["start", "SLO TTFT 0.2 s"]
    assert phases[1]["total"]["requests"]["ok"] == 1 and phases[1]["total"]["slo"]["met"] == 0
    assert phases[1]["total"]["slo"]["ttft_s"] == 0.2 and phases[0]["ended_by"]["slo_ttft_s"] == 0.2
    assert phases[1]["ended_by"] is None and phases[1]["groups"][0]["backend"] == "gpu-a"
    events = [(e["event"], e.get("detail")) for e in plugin.run_events.results_list()]
    assert ("slo_changed", "TTFT 0.5, stream rate 5.0 -> TTFT 0.2, stream rate 5.0") in events
    # Building the results again (the live report) does not close the open phase.
    assert len(plugin.extensions.results_sections()["phases"]) == 2


def test_think_time_reaches_running_users_of_this_process():
    plugin, steer = running_local()
    steer.apply(Change(think_time=Range(0.0, 0.0)))
    assert plugin.steered_think_time == Range(0.0, 0.0)
    assert "think_time_changed" in {e["event"] for e in plugin.run_events.results_list()}


def test_refused_without_a_running_test_in_closed_loop_and_during_a_capacity_search():
    environment = local_environment(runner=RecordingRunner(state="stopped"))
    plugin = new_plugin(environment, steering)
    with pytest.raises(SteeringRefused, match="no test is running"):
        plugin.extensions.get(Steering).apply(Change(slo_ttft_s=1.0))
    plugin, steer = running_local()
    with pytest.raises(SteeringRefused, match=r"the rate applies to open-loop runs"):
        steer.apply(Change(rate_rps=3.0))
    assert plugin.extensions.results_sections()["phases"] is None  # nothing changed
    plugin.extensions.add(capacity.CapacityRun.__new__(capacity.CapacityRun))
    with pytest.raises(SteeringRefused, match="a capacity search is running"):
        steer.apply(Change(slo_ttft_s=1.0))


def test_master_sends_the_settings_to_every_worker_and_to_one_that_joins(monkeypatch):
    parsed = SimpleNamespace(llm_arrival="poisson", llm_rate="20", llm_seed="7")
    with master_environment(parsed) as environment:
        runner = environment.runner
        plugin = new_plugin(environment, arrivals, steering)
        sent = []
        monkeypatch.setattr(
            runner, "send_message", lambda kind, data=None, client_id=None: sent.append((kind, client_id, data))
        )
        for worker in ("w1", "w2"):
            connect_worker(runner, worker)
        fire(environment.events.test_start, environment=environment)
        runner.state = STATE_RUNNING
        sent.clear()
        plugin.extensions.get(Steering).apply(Change(rate_rps=8.0, slo_stream_rate_tps=12.0))
        rates = sorted((c, d["rate_rps"], d["slots"]) for k, c, d in sent if k == arrivals.MESSAGE)
        assert rates == [("w1", 8.0, 2), ("w2", 8.0, 2)]  # each worker's schedule takes its slot of 8 rps
        settings = [(c, d) for k, c, d in sent if k == steering.MESSAGE]
        assert sorted(c for c, _ in settings) == ["w1", "w2"]
        assert settings[0][1] == {"slo_ttft_s": plugin.options.slo_ttft_s, "slo_stream_rate_tps": 12.0}
        sent.clear()
        fire(environment.events.worker_connect, client_id="w3")
        assert [(k, c) for k, c, _ in sent if k == steering.MESSAGE] == [(steering.MESSAGE, "w3")]


def test_worker_applies_the_steered_settings_to_what_it_records():
    environment = worker_environment()
    plugin = new_plugin(environment, steering)
    plugin.set_options(LLMOptions(slo_ttft_s=0.5, slo_stream_rate_tps=None))
    environment.runner.deliver(
        steering.MESSAGE, {"slo_ttft_s": 0.1, "slo_stream_rate_tps": None, "think_time_s": [2, 4]}
    )
    assert plugin.store.slo_ttft_s == 0.1 and plugin.steered_think_time == Range(2.0, 4.0)
    plugin.record(request(0.3))
    assert plugin.store.counter_totals()["slo_ttft_met"] == 0
