"""The load-generator self-check: sampler math, wire format, verdict and thresholds."""

from __future__ import annotations

import gc
import time
from types import SimpleNamespace

import gevent
import msgpack
import pytest

from llmload import selfcheck
from llmload.errors import ConfigError
from llmload.record import RequestRecord
from llmload.selfcheck import SelfCheck
from llmload.selfcheck_rules import (
    CpuStats,
    ProcessStats,
    Thresholds,
    cpu_findings,
    judge,
    new_lag_distribution,
    oversleep_s,
    workers_to_add,
)
from tests.support.environments import (
    fire,
    local_environment,
    master_environment,
    new_plugin,
    worker_environment,
    worker_report,
)


def test_oversleep_is_time_slept_beyond_time_asked_and_never_negative():
    assert oversleep_s(asked_s=0.05, slept_s=0.0625) == pytest.approx(0.0125)
    assert oversleep_s(asked_s=0.05, slept_s=0.05) == 0.0
    assert oversleep_s(asked_s=0.05, slept_s=0.049) == 0.0  # a timer may fire a clock tick early


def test_lag_distribution_percentiles_in_seconds():
    lag = new_lag_distribution()
    lag.record_many([0.0002] * 98 + [0.030, 0.250])
    assert lag.percentile(50) == pytest.approx(0.0002, rel=1e-3)
    assert lag.percentile(99) == pytest.approx(0.030, rel=1e-3)
    assert lag.max == 0.250


def test_cpu_stats_counts_saturated_samples_and_streaks():
    cpu = CpuStats(90.0)
    streaks = [cpu.add(p) for p in (95.0, 99.0, 20.0, 91.0, 90.0)]
    assert streaks == [1, 2, 0, 1, 0]  # 90.0 is not above the limit
    assert cpu.summary() == {"mean": pytest.approx(79.0), "max": 99.0, "saturated_share": 0.6, "samples": 5}
    other = CpuStats(90.0)
    other.merge_wire(msgpack.unpackb(msgpack.packb(cpu.to_wire())))
    assert other.summary() == cpu.summary()
    cpu.reset()
    assert cpu.summary()["samples"] == 0 and cpu.summary()["mean"] is None


def test_process_stats_round_trip_through_msgpack_and_merge():
    a, b = ProcessStats(Thresholds()), ProcessStats(Thresholds())
    a.cpu.add(50.0)
    a.lag.record_many([0.001, 0.002])
    b.cpu.add(100.0)
    b.lag.record(0.040)
    merged = ProcessStats(Thresholds())
    for part in (a, b):
        merged.merge_wire(msgpack.unpackb(msgpack.packb(part.to_wire())))
    s = merged.summary()
    assert s["cpu_percent"]["samples"] == 2 and s["cpu_percent"]["max"] == 100.0
    assert s["loop_lag_s"]["count"] == 3 and s["loop_lag_s"]["max"] == 0.040


def _proc(*, mean=20.0, peak=30.0, share=0.0, samples=10, lag_p99=0.001):
    return {
        "cpu_percent": {"mean": mean, "max": peak, "saturated_share": share, "samples": samples},
        "loop_lag_s": {"p50": 0.0001, "p99": lag_p99, "max": lag_p99, "count": 100},
    }


def test_judge_light_run_is_trustworthy():
    assert judge({"local": _proc()}, None, Thresholds()) == (True, [])


def test_judge_names_each_reason():
    ok, reasons = judge({"w1": _proc(mean=97, peak=100, share=0.8), "w2": _proc(lag_p99=0.0305)}, 0.020, Thresholds())
    assert not ok
    assert reasons == [
        "w1: CPU above 90% of a core in 80% of samples (mean 97%, max 100%)",
        "w2: event-loop lag p99 30.5 ms > 10 ms",
        "open-loop dispatch lag p99 20.0 ms > 10 ms (requests left later than scheduled)",
    ]


def _late(proc, *, p99):
    return {**proc, "read_lateness_s": {"p50": p99 / 2, "p99": p99, "max": p99, "count": 100}}


def test_with_kernel_stamps_cpu_and_loop_lag_are_notes_and_read_lateness_decides():
    busy = _late(_proc(mean=97, peak=100, share=0.8, lag_p99=0.004), p99=0.004)
    # Kernel stamps keep TTFT/ITL true: a saturated CPU whose reads and loop stay within 10 ms is no reason.
    assert judge({"w1": busy}, None, Thresholds(), kernel_clock=True) == (True, [])
    assert cpu_findings({"w1": busy}, Thresholds()) == [
        "w1: CPU above 90% of a core in 80% of samples (mean 97%, max 100%)"
    ]
    # Loop lag stays a reason: events coalesced behind a late read only show there.
    lagging = _late(_proc(lag_p99=0.0305), p99=0.004)
    assert judge({"w1": lagging}, None, Thresholds(), kernel_clock=True) == (
        False,
        ["w1: event-loop lag p99 30.5 ms > 10 ms"],
    )
    ok, reasons = judge({"w1": _late(_proc(), p99=0.150)}, 0.020, Thresholds(), kernel_clock=True)
    assert not ok and reasons == [
        "w1: read lateness p99 150.0 ms > 10 ms "
        "(events queued that long share one kernel stamp; requests leave that late)",
        "open-loop dispatch lag p99 20.0 ms > 10 ms (requests left later than scheduled)",
    ]
    # Without kernel stamps, the same busy process is a reason and lateness is not judged.
    assert not judge({"w1": busy}, None, Thresholds())[0]


def test_kernel_stamped_requests_bring_their_read_lateness_to_the_self_check():
    plugin = new_plugin(local_environment(), selfcheck)
    check = plugin.extensions.get(SelfCheck)
    record = RequestRecord(backend="b", model="m", user_class="U", endpoint="/x", t_send=0.0, start_wall=0.0)
    record.token_times, record.completion_tokens, record.t_end = [0.1, 0.2], 2, 0.2
    record.clock, record.read_lateness_s = "kernel", [0.001, 0.003, 0.005]
    plugin.record(record)
    s = check.summary()
    assert s["clock"] == "kernel" and s["notes"] == [] and s["trustworthy"] is True
    assert s["read_lateness_s"]["count"] == 3 and s["read_lateness_s"]["max"] == 0.005
    assert s["read_lateness_s"]["p99"] == pytest.approx(0.005, rel=0.001)
    assert s["read_lateness_by_process_s"]["local"]["count"] == 3
    assert check.lateness_by_process()["local"]["max"] == 0.005
    assert "read lateness p50/p99/max 3.00/5.00/5.00 ms (kernel clock)" in check.console_line(s)


def test_judge_thresholds_are_strict_and_need_enough_cpu_samples():
    at_limit = _proc(share=0.25, lag_p99=0.010)
    assert judge({"local": at_limit}, 0.010, Thresholds()) == (True, [])
    assert judge({"local": _proc(share=1.0, samples=2)}, None, Thresholds())[0]  # too short to judge CPU
    assert not judge({"local": _proc(lag_p99=0.006)}, None, Thresholds(lag_s=0.005))[0]


def test_thresholds_from_options_and_one_line_errors():
    parsed = SimpleNamespace(llm_selfcheck_cpu="75", llm_selfcheck_lag_ms="25")
    assert Thresholds.from_parsed(parsed) == Thresholds(cpu_percent=75.0, lag_s=0.025)
    assert Thresholds.from_parsed(SimpleNamespace()) == Thresholds()
    with pytest.raises(ConfigError, match=r"--llm-selfcheck-cpu: expected a number from 1 to 100, got 'lots'"):
        Thresholds.from_parsed(SimpleNamespace(llm_selfcheck_cpu="lots"))
    with pytest.raises(ConfigError, match="--llm-selfcheck-lag-ms"):
        Thresholds.from_parsed(SimpleNamespace(llm_selfcheck_lag_ms="0"))


def test_master_summary_merges_workers_and_reads_dispatch_lag_from_the_store():
    with master_environment() as environment:
        plugin = new_plugin(environment, selfcheck)
        check = plugin.extensions.get(SelfCheck)
        busy, idle = ProcessStats(Thresholds()), ProcessStats(Thresholds())
        for _ in range(10):
            busy.cpu.add(99.0)
            idle.cpu.add(10.0)
        busy.lag.record_many([0.050] * 10)
        idle.lag.record_many([0.0005] * 990)
        events = environment.events
        fire(events.worker_report, client_id="w-busy", data=worker_report({"llmload_selfcheck": busy.to_wire()}))
        fire(events.worker_report, client_id="w-idle", data=worker_report({"llmload_selfcheck": idle.to_wire()}))
        fire(events.worker_report, client_id="w-old", data=worker_report())  # a worker without the self-check
        record = RequestRecord(
            backend="b", model="m", user_class="u", endpoint="/x", t_send=10.002, start_wall=0.0, t_intended=10.0
        )
        record.token_times, record.t_end, record.completion_tokens = [10.1], 10.1, 1
        plugin.record(record)
        s = check.summary()
    assert set(s["cpu_percent"]) == {"w-busy", "w-idle"}
    assert s["cpu_percent"]["w-busy"]["mean"] == 99.0 and s["cpu_percent"]["w-idle"]["max"] == 10.0
    assert s["loop_lag_s"]["p50"] == pytest.approx(0.0005, rel=1e-3)
    assert s["loop_lag_s"]["max"] == 0.050
    assert s["loop_lag_by_process_s"]["w-busy"]["p99"] == pytest.approx(0.050, rel=1e-3)
    assert s["dispatch_lag_s"]["p50"] == pytest.approx(0.002, rel=1e-3)
    assert s["trustworthy"] is False
    assert [r.split(":")[0] for r in s["reasons"]] == ["w-busy", "w-busy"]
    assert "WARNING" in check.console_line(s) and "w-busy: CPU above 90%" in check.console_line(s)
    assert plugin.extensions.results_sections()["generator"] == s
    # demand 99% + 10% of a core over 75% per worker = 2 workers, which the run had: a saturated
    # worker still needs at least one more (its demand is capped by its core)
    assert s["workers_to_add"] == 1


def test_workers_to_add_from_the_cpu_demand_and_only_when_saturated():
    t = Thresholds()
    assert workers_to_add({"w1": _proc(mean=60), "w2": _proc(mean=70)}, t) == 0  # not saturated
    saturated = {f"w{i}": _proc(mean=98, peak=100, share=0.9) for i in range(3)}
    assert workers_to_add(saturated, t) == 1  # ceil(294 / 75) = 4 workers for 3
    five = {f"w{i}": _proc(mean=99, peak=100, share=1.0) for i in range(5)} | {"w9": _proc(mean=95, share=0.8)}
    assert workers_to_add(five, t) == 2  # ceil(590 / 75) = 8 for 6
    assert workers_to_add({"w1": _proc(mean=80, peak=100, share=0.3)}, t) == 1  # never 0 once saturated
    assert workers_to_add(saturated, t, target_percent=50) == 3


def test_master_logs_how_many_workers_to_add(caplog, capsys):
    with master_environment() as environment:
        plugin = new_plugin(environment, selfcheck)
        check = plugin.extensions.get(SelfCheck)
        busy = ProcessStats(Thresholds())
        for _ in range(10):
            busy.cpu.add(100.0)
        fire(
            environment.events.worker_report, client_id="w1", data=worker_report({"llmload_selfcheck": busy.to_wire()})
        )
        plugin.started_at = time.time()
        check._on_quit()
    assert "llmload: the workers were CPU-saturated: add at least 1 worker(s) to the 1 this run had" in caplog.text
    assert "WARNING: the load generator was a bottleneck" in capsys.readouterr().out


def test_malformed_self_check_report_is_ignored_with_a_warning(caplog):
    plugin = new_plugin(local_environment(), selfcheck)
    fire(plugin.environment.events.worker_report, client_id="w7", data={"llmload_selfcheck": {"cpu": [1, 2]}})
    assert "llmload: ignored a malformed self-check report from worker w7 (" in caplog.text


def test_worker_ships_its_samples_as_a_delta():
    plugin = new_plugin(worker_environment(), selfcheck)
    check = plugin.extensions.get(SelfCheck)
    check.local.cpu.add(50.0)
    check.local.lag.record(0.002)
    data: dict = {}
    fire(plugin.environment.events.report_to_master, client_id="w1", data=data)
    shipped = ProcessStats(Thresholds())
    shipped.merge_wire(msgpack.unpackb(msgpack.packb(data["llmload_selfcheck"])))
    assert shipped.summary()["cpu_percent"]["samples"] == 1 and shipped.summary()["loop_lag_s"]["count"] == 1
    assert check.local.summary()["cpu_percent"]["samples"] == 0 and check.local.lag.count == 0


def test_local_summary_without_samples_is_trustworthy_and_says_so():
    check = new_plugin(local_environment(), selfcheck).extensions.get(SelfCheck)
    s = check.summary()
    assert s["trustworthy"] is True and s["dispatch_lag_s"] is None
    assert s["cpu_percent"] == {"local": {"mean": None, "max": None, "saturated_share": None, "samples": 0}}
    assert check.console_line(s) == "llmload: generator self-check OK (no CPU samples)"
    assert s["workers_to_add"] == 0


def test_sampler_measures_a_blocked_hub_as_loop_lag():
    check = new_plugin(local_environment(), selfcheck).extensions.get(SelfCheck)
    check.start()
    gevent.sleep(0.12)  # let the sampler run a couple of normal ticks
    end = time.perf_counter() + 0.25  # block the hub (busy: time.sleep may be gevent's once Locust is imported)
    while time.perf_counter() < end:
        pass
    gevent.sleep(0.12)
    check.stop()
    lag = check.local.lag
    assert lag.count >= 3
    assert lag.max >= 0.15  # lower bound only: blocking 250 ms cannot look shorter
    assert lag.percentile(50) < lag.max


def test_gc_freeze_once_per_test_and_undone_at_stop():
    environment = local_environment()
    new_plugin(environment, selfcheck)
    events = environment.events
    gc.unfreeze()  # whatever an earlier test in this process left frozen
    try:
        fire(events.spawning_complete, user_count=4)
        frozen = gc.get_freeze_count()
        assert frozen > 0
        fire(events.spawning_complete, user_count=8)  # a later ramp in the same test: no second freeze
        assert gc.get_freeze_count() == frozen
    finally:
        fire(events.test_stop, environment=environment)
    assert gc.get_freeze_count() == 0
    with master_environment() as master:
        new_plugin(master, selfcheck)
        fire(master.events.spawning_complete, user_count=4)
        assert gc.get_freeze_count() == 0  # the master runs no users


def test_the_rules_need_no_locust():
    import subprocess
    import sys

    code = "import sys, llmload.selfcheck_rules; print('locust' in sys.modules, 'gevent' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
