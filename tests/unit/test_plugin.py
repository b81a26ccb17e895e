"""The plugin's bookkeeping: worker deltas, windows, the bounded timeline, options on late workers."""

from types import SimpleNamespace

import msgpack
from locust.env import Environment
from locust.event import Events

from llmload import plugin as plugin_module
from llmload.options import LLMOptions
from llmload.plugin import LLMLoadPlugin
from llmload.record import RequestRecord


def make_record(ttft=0.1, user_class="U"):
    record = RequestRecord(
        backend="b", model="m", user_class=user_class, endpoint="/v1/chat/completions", t_send=1.0, start_wall=50.0
    )
    record.token_times = [1.0 + ttft, 1.0 + ttft + 0.01]
    record.t_end = record.token_times[-1]
    record.completion_tokens = 2
    return record


def new_plugin(parsed=None):
    environment = Environment(events=Events(), parsed_options=parsed)
    environment.runner = SimpleNamespace(user_count=3, register_message=lambda *args, **kwargs: None)
    return LLMLoadPlugin().register(environment)


def test_worker_delta_ships_and_resets_and_master_merges_into_windows():
    worker, master = new_plugin(), new_plugin()
    for _ in range(4):
        worker.record(make_record())
    data = {}
    worker._on_report_to_master(client_id="w1", data=data)
    assert worker.store.is_empty()
    step = master.open_window("step-1")
    master._on_worker_report(client_id="w1", data=msgpack.unpackb(msgpack.packb(data)))
    assert master.store.total().counters["ok"] == 4 and step.total().counters["ok"] == 4
    assert master.seen_workers == {"w1"} and master.generator_gauges["w1"]["in_flight"] == 0
    assert master.close_window("step-1") is step
    master._on_worker_report(client_id="w1", data=msgpack.unpackb(msgpack.packb(data)))
    assert master.store.total().counters["ok"] == 8 and step.total().counters["ok"] == 4


def test_malformed_worker_report_is_ignored_with_a_warning(caplog):
    master = new_plugin()
    master._on_worker_report(client_id="w9", data={"llmload": {"groups": [{"key": ["b"]}]}})
    master._on_worker_report(client_id="w9", data={"llmload": ["not", "a", "dict"]})
    assert caplog.text.count("malformed token-metrics report from worker w9") == 2


def test_timeline_points_and_bound(monkeypatch):
    monkeypatch.setattr(plugin_module, "MAX_TIMELINE_POINTS", 10)
    plugin = new_plugin()
    plugin.open_window(plugin_module._TIMELINE_WINDOW)
    for i in range(11):
        plugin.record(make_record(ttft=0.1 + i / 100))
        plugin._append_timeline_point()
    assert len(plugin.timeline) == 6 and plugin._timeline_every == 2
    last = plugin.timeline[-1]
    assert last["requests_ok"] == 11 and last["output_tokens"] == 22 and last["users"] == 3
    assert abs(last["ttft_p50_s"] - 0.20) < 0.001  # only the last interval's request


def test_options_load_on_first_use_when_test_start_was_missed():
    parsed = SimpleNamespace(worker=True, llm_max_tokens="20", llm_slo_stream_rate="5")
    plugin = new_plugin(parsed)
    assert plugin._options is None
    assert plugin.options.max_tokens.low == 20 and plugin.store.slo_stream_rate_tps == 5.0
    plugin.options = LLMOptions(slo_ttft_s=1.0)
    assert plugin.store.slo_ttft_s == 1.0


def test_worker_flushes_its_delta_at_test_stop_through_a_custom_message():
    sent = []
    worker = new_plugin(SimpleNamespace(worker=True))
    worker.environment.runner = SimpleNamespace(user_count=0, send_message=lambda kind, data: sent.append((kind, data)))
    worker.record(make_record())
    worker._on_test_stop(environment=worker.environment)
    assert [kind for kind, _ in sent] == [plugin_module.FLUSH_MESSAGE] and worker.store.is_empty()
    master = new_plugin()
    master._awaiting_final = {"w1"}
    master._on_flush_message(
        environment=master.environment,
        msg=SimpleNamespace(node_id="w1", data=msgpack.unpackb(msgpack.packb(sent[0][1]))),
    )
    assert master.store.total().counters["ok"] == 1 and master._awaiting_final == set()
