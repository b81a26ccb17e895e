"""Output tokens counted as they arrive: per event, corrected to the server's usage at the end."""

from __future__ import annotations

from locust.env import Environment
from locust.event import Events

from llmload.options import LLMOptions
from llmload.plugin import LLMLoadPlugin
from llmload.record import RequestRecord
from llmload.streamed import StreamsInFlight, arrived_tokens, settled_tokens


def open_record(backend: str = "gpu-a") -> RequestRecord:
    return RequestRecord(
        backend=backend, model="m", user_class="Chat", endpoint="/v1/chat/completions", t_send=0.0, start_wall=1.0
    )


def arrived(plugin: LLMLoadPlugin) -> int:
    return sum(g.counters["arrived_output_tokens"] for g in plugin.store.groups.values())


def new_plugin() -> LLMLoadPlugin:
    environment = Environment(events=Events())
    environment.create_local_runner()
    plugin = LLMLoadPlugin(environment).register()
    plugin.set_options(LLMOptions())
    return plugin


def test_tokens_count_while_streaming_and_settle_to_usage():
    plugin = new_plugin()
    record = open_record()
    plugin.streams.opened(record)
    record.token_times += [0.1, 0.2, 0.3]  # three token-carrying events so far
    plugin.collect_arrived_tokens()
    assert arrived(plugin) == 3
    assert plugin.store.total().counters["output_tokens"] == 0  # the results' total: usage of finished requests
    record.token_times += [0.4]
    record.completion_tokens = 6  # the server packed 6 tokens into 4 events
    record.t_end = 0.4
    plugin.record(record)
    assert arrived(plugin) == 6 and plugin.store.total().counters["output_tokens"] == 6
    assert len(plugin.streams) == 0
    plugin.collect_arrived_tokens()
    assert arrived(plugin) == 6  # a finished request is never counted again


def test_continuous_usage_counts_the_servers_running_total():
    record = open_record()
    record.token_times += [0.1, 0.2]
    record.continuous_completion_tokens = 5
    assert arrived_tokens(record) == 5
    streams = StreamsInFlight()
    streams.opened(record)
    assert streams.collect() == {("gpu-a", "m", "Chat"): 5}
    record.continuous_completion_tokens = 7
    assert streams.collect() == {("gpu-a", "m", "Chat"): 2}
    assert streams.collect() == {}
    # More events than the server's usage: the counter keeps what it counted (it never goes down).
    record.completion_tokens = 6
    assert settled_tokens(record) == 0


def test_in_flight_by_backend():
    streams = StreamsInFlight()
    a, b, c = open_record("gpu-a"), open_record("gpu-a"), open_record("gpu-b")
    for r in (a, b, c):
        streams.opened(r)
    streams.closed(b)
    assert streams.open_by_backend() == {"gpu-a": 1, "gpu-b": 1}


def test_worker_delta_ships_tokens_of_open_streams():
    plugin = new_plugin()
    record = open_record()
    plugin.streams.opened(record)
    record.token_times += [0.1, 0.2]
    payload = plugin._delta_payload()  # what the wire ships in a worker's report
    groups = payload["groups"]
    assert [g["counters"]["arrived_output_tokens"] for g in groups] == [2]
    assert plugin.store.is_empty()
