"""The plugin's bookkeeping: worker deltas, windows, the bounded timeline, options on late workers, supervision."""

import functools
import logging
from types import SimpleNamespace

import gevent
import msgpack
from locust.rpc import Message
from locust.runners import STATE_RUNNING

from llmload import plugin as plugin_module
from llmload import results
from llmload.metrics import MetricsStore
from llmload.options import LLMOptions
from llmload.record import RequestRecord
from llmload.timeline import Timeline
from tests.support.environments import (
    RecordingRunner,
    connect_worker,
    fire,
    local_environment,
    master_environment,
    new_plugin,
    worker_environment,
    worker_report,
)


def make_record(ttft=0.1, user_class="U"):
    record = RequestRecord(
        backend="b", model="m", user_class=user_class, endpoint="/v1/chat/completions", t_send=1.0, start_wall=50.0
    )
    record.token_times = [1.0 + ttft, 1.0 + ttft + 0.01]
    record.t_end = record.token_times[-1]
    record.completion_tokens = 2
    return record


def over_the_wire(data):
    return msgpack.unpackb(msgpack.packb(data))


def test_worker_delta_ships_and_resets_and_master_merges_into_windows():
    worker = new_plugin(worker_environment())
    for _ in range(4):
        worker.record(make_record())
    data = {}
    fire(worker.environment.events.report_to_master, client_id="w1", data=data)
    assert worker.store.is_empty()
    with master_environment() as environment:
        master = new_plugin(environment)
        step = master.open_window("step-1")
        connect_worker(environment.runner, "w1", users={"U": 4})
        fire(environment.events.worker_report, client_id="w1", data=worker_report(over_the_wire(data)))
        assert master.store.total().counters["ok"] == 4 and step.store.total().counters["ok"] == 4
        assert master.seen_workers == {"w1"} and master.generator_gauges["w1"]["in_flight"] == 0
        assert master.close_window("step-1") is step and step.closed_at is not None
        fire(environment.events.worker_report, client_id="w1", data=worker_report(over_the_wire(data)))
        assert master.store.total().counters["ok"] == 8 and step.store.total().counters["ok"] == 4


def test_restarted_window_starts_empty_in_its_own_memory_with_the_slo_in_force():
    plugin = new_plugin(local_environment())
    plugin.set_options(LLMOptions(slo_ttft_s=0.5))
    window = plugin.open_window("span", distributions=("ttft_s", "itl_s"))
    plugin.record(make_record(ttft=0.2))
    assert plugin.window("span").store.counter_totals()["slo_ttft_met"] == 1  # fed on read
    store = window.store
    plugin.set_options(LLMOptions(slo_ttft_s=0.1))  # a mid-run SLO change applies from the next span on
    restarted = plugin.restart_window("span")
    assert restarted is not None and restarted.store is store and store.is_empty()
    assert restarted.opened_at >= window.opened_at and store.slo_ttft_s == 0.1
    plugin.record(make_record(ttft=0.2))
    assert plugin.window("span").store.counter_totals()["slo_ttft_met"] == 0
    assert plugin.restart_window("not-open") is None


def test_malformed_worker_report_is_ignored_with_a_warning(caplog):
    master = new_plugin(local_environment())
    fire(master.environment.events.worker_report, client_id="w9", data={"llmload": {"groups": [{"key": ["b"]}]}})
    fire(master.environment.events.worker_report, client_id="w9", data={"llmload": ["not", "a", "dict"]})
    assert caplog.text.count("llmload: ignored a malformed token-metrics report from worker w9 (") == 2
    assert master.store.is_empty()


def test_timeline_points_and_bound(monkeypatch):
    monkeypatch.setattr(plugin_module, "Timeline", functools.partial(Timeline, max_points=10))
    plugin = new_plugin(local_environment(runner=RecordingRunner(user_count=3)))
    events = plugin.environment.events
    fire(events.test_start, environment=plugin.environment)
    try:
        for i in range(11):
            plugin.record(make_record(ttft=0.1 + i / 100))
            fire(events.test_stop, environment=plugin.environment)  # the plugin appends a point at test stop
    finally:
        plugin.supervisor.kill_all()
    assert len(plugin.timeline.points) == 6 and plugin.timeline.every == 2
    last = plugin.timeline.points[-1]
    assert last["requests_ok"] == 11 and last["output_tokens"] == 22 and last["users"] == 3
    assert abs(last["ttft_p50_s"] - 0.20) < 0.001  # only the last interval's request


def test_options_load_on_first_use_when_test_start_was_missed():
    plugin = new_plugin(worker_environment(llm_max_tokens="20", llm_slo_stream_rate="5"))
    assert plugin.store.slo_stream_rate_tps is None  # a worker does not load its options at registration
    assert plugin.options.max_tokens.low == 20 and plugin.store.slo_stream_rate_tps == 5.0
    plugin.set_options(LLMOptions(slo_ttft_s=1.0))
    assert plugin.options.slo_ttft_s == 1.0 and plugin.store.slo_ttft_s == 1.0


def test_worker_flushes_its_delta_at_test_stop_through_a_custom_message(caplog):
    worker = new_plugin(worker_environment())
    worker.record(make_record())
    fire(worker.environment.events.test_stop, environment=worker.environment)
    sent = worker.environment.runner.sent
    assert [kind for kind, _, _ in sent] == [plugin_module.FLUSH_MESSAGE] and worker.store.is_empty()
    assert sent[0][1]["final"] is True
    with master_environment(stop_timeout=0) as environment:
        master = new_plugin(environment)
        runner = environment.runner
        connect_worker(runner, "w1", users={"U": 1})
        runner.update_state(STATE_RUNNING)
        # The master's test stop asks running workers to stop and waits for their final deltas.
        stopping = gevent.spawn(fire, environment.events.test_stop, environment=environment)
        gevent.sleep(0.1)
        assert not stopping.ready()
        runner.handle_message("w1", Message(plugin_module.FLUSH_MESSAGE, over_the_wire(sent[0][1]), "w1"))
        stopping.get(timeout=2)  # the final delta ended the wait
    assert master.store.total().counters["ok"] == 1 and master.seen_workers == {"w1"}
    assert "no final token metrics" not in caplog.text


def test_a_missing_final_delta_is_logged(monkeypatch, caplog):
    monkeypatch.setattr(plugin_module, "FINAL_DELTA_GRACE_S", 0.2)
    with master_environment(stop_timeout=0) as environment:
        new_plugin(environment)
        connect_worker(environment.runner, "w1", users={"U": 1})
        environment.runner.update_state(STATE_RUNNING)
        fire(environment.events.test_stop, environment=environment)
    assert "llmload: no final token metrics from worker(s) w1; their last interval is missing" in caplog.text


def test_a_crashed_background_task_is_logged_listed_and_fails_the_run(caplog):
    plugin = new_plugin(local_environment(SimpleNamespace()))

    def crash():
        raise RuntimeError("scraper exploded")

    with caplog.at_level(logging.ERROR, logger="llmload"):
        plugin.supervisor.spawn("test scraper", crash).join(timeout=2)
    crashes = [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crashes) == 1
    assert crashes[0].startswith("llmload: background task 'test scraper' crashed; its figures stop here:\n")
    assert "Traceback (most recent call last)" in crashes[0] and "RuntimeError: scraper exploded" in crashes[0]
    errors = results.build(plugin)["run"]["errors"]
    assert [(e["task"], e["error"]) for e in errors] == [("test scraper", "RuntimeError: scraper exploded")]
    assert errors[0]["at"].endswith("+00:00")
    assert plugin.environment.process_exit_code == 1


def test_timeline_columns_give_back_counts_figures_and_no_value():
    timeline = Timeline(max_points=4)
    store, interval = MetricsStore(), MetricsStore()
    store.record(make_record(ttft=0.1))
    interval.record(make_record(ttft=0.1))
    timeline.append(store=store, interval=interval, gauges={"w": {"in_flight": 2.0, "cpu_percent": 12.5}}, users=3)
    timeline.append(store=store, interval=MetricsStore(), gauges={}, users=3)  # an interval with no request
    first, second = timeline.points
    assert first["requests_ok"] == 1 and isinstance(first["requests_ok"], int) and first["in_flight"] == 2.0
    assert first["generator_cpu_percent"] == 12.5 and abs(first["ttft_p50_s"] - 0.1) < 0.001
    assert second["ttft_p50_s"] is None and second["requests_ok"] == 1
    assert list(first) == list(second) and "t" in first
