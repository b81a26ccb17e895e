"""Run events: counted and timed by kind, kept in order for the results, exported for Grafana annotations."""

from __future__ import annotations

import pytest
from locust.env import Environment
from locust.event import Events
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

from llmload import collector
from llmload.options import LLMOptions
from llmload.plugin import LLMLoadPlugin
from llmload.run_events import MAX_KEPT, RunEvents


def test_counts_last_times_and_kept_order():
    now = [100.0]
    events = RunEvents(clock=lambda: now[0])
    events.emit("test_start")
    now[0] = 130.5
    events.emit("backend_restarted", backend="gpu-b", detail="counters went down")
    now[0] = 140.0
    events.emit("backend_restarted", backend="gpu-b")
    assert events.counts == {("test_start", ""): 1, ("backend_restarted", "gpu-b"): 2}
    assert events.last_at[("backend_restarted", "gpu-b")] == 140.0
    assert events.results_list() == [
        {"event": "test_start", "t": 100.0},
        {"event": "backend_restarted", "t": 130.5, "backend": "gpu-b", "detail": "counters went down"},
        {"event": "backend_restarted", "t": 140.0, "backend": "gpu-b"},
    ]
    with pytest.raises(ValueError, match="unknown run event 'oops'"):
        events.emit("oops")


def test_the_kept_list_is_bounded():
    events = RunEvents(clock=lambda: 1.0)
    for _ in range(MAX_KEPT + 5):
        events.emit("users_changed")
    assert len(events.results_list()) == MAX_KEPT and events.dropped == 5
    assert events.counts[("users_changed", "")] == MAX_KEPT + 5


def test_exported_as_counter_and_last_timestamp():
    environment = Environment(events=Events())
    environment.create_local_runner()
    plugin = LLMLoadPlugin(environment).register()
    plugin.set_options(LLMOptions())
    plugin.run_events.emit("backend_restarted", backend="http://u:secret@gpu:8000")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector.LLMLoadCollector(plugin))
    text = generate_latest(registry).decode()
    assert 'llmload_run_events_total{backend="http://gpu:8000",event="backend_restarted"} 1.0' in text
    stamp = plugin.run_events.last_at[("backend_restarted", "http://u:secret@gpu:8000")]
    labels = 'backend="http://gpu:8000",event="backend_restarted"'
    line = f"llmload_run_event_last_timestamp_seconds{{{labels}}} {floatToGoString(stamp)}"
    assert line in text.splitlines()
    assert "secret" not in text
    environment.runner.quit()
