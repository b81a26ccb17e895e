"""The extension seam: the typed registry, the worker-to-master wire and the supervisor."""

import logging

import gevent
from locust.env import Environment
from locust.event import Events

from llmload.extension import RESULT_SECTIONS, Extension, Registry
from llmload.supervisor import Supervisor
from llmload.wire import Wire


class Sampler(Extension):
    results_key = "generator"

    def results_section(self):
        return {"trustworthy": True}


class Other(Extension):
    pass


def test_registry_is_typed_and_fills_the_result_sections():
    registry = Registry()
    sampler = registry.add(Sampler())
    assert registry.get(Sampler) is sampler and registry.get(Other) is None
    other = registry.add(Other())
    assert list(registry) == [sampler, other]
    sections = registry.results_sections()
    assert list(sections) == list(RESULT_SECTIONS)
    assert sections["generator"] == {"trustworthy": True} and sections["server"] is None
    replacement = registry.add(Sampler())
    assert registry.get(Sampler) is replacement and len(list(registry)) == 2


def test_wire_ships_every_section_and_guards_each_merge(caplog):
    worker_env, master_env = Environment(events=Events()), Environment(events=Events())
    worker, master = Wire(worker_env), Wire(master_env)
    merged: list[tuple[str, object]] = []
    deltas = iter([{"n": 1}, None])
    for wire in (worker, master):
        wire.add("a", what="a report", ship=lambda: next(deltas), merge=lambda wid, data: merged.append((wid, data)))
        wire.add("b", what="b report", ship=lambda: 5, merge=lambda wid, data: data["missing"])
    data: dict = {}
    worker_env.events.report_to_master.fire(client_id="w1", data=data)
    assert data == {"a": {"n": 1}, "b": 5}
    with caplog.at_level(logging.WARNING, logger="llmload"):
        master_env.events.worker_report.fire(client_id="w1", data=data)
    assert merged == [("w1", {"n": 1})]
    assert caplog.messages == [
        "llmload: ignored a malformed b report from worker w1 ('int' object is not subscriptable)"
    ]
    data = {}
    worker_env.events.report_to_master.fire(client_id="w1", data=data)
    assert data == {"b": 5}  # a section with nothing new is left out


def test_supervisor_logs_a_crash_once_lists_it_and_fails_the_run(caplog):
    environment = Environment(events=Events())
    supervisor = Supervisor(environment)

    def crash():
        raise RuntimeError("sampler broke")

    with caplog.at_level(logging.ERROR, logger="llmload"):
        supervisor.spawn("sampler", crash).join()
    assert environment.process_exit_code == 1
    assert [e["task"] for e in supervisor.errors] == ["sampler"]
    assert supervisor.errors[0]["error"] == "RuntimeError: sampler broke"
    assert len(caplog.records) == 1 and "Traceback" in caplog.text and "sampler broke" in caplog.text


def test_supervisor_kill_all_spares_the_caller_and_a_kill_is_no_crash():
    environment = Environment(events=Events())
    supervisor = Supervisor(environment)
    loop = supervisor.spawn("loop", gevent.sleep, 60)
    survived = []

    def quitting():
        supervisor.kill_all()
        gevent.sleep(0.01)
        survived.append(True)

    supervisor.spawn("quit", quitting).join(timeout=5)
    gevent.sleep(0.01)
    assert survived == [True] and loop.dead
    assert supervisor.errors == [] and environment.process_exit_code is None
