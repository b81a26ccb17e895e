"""Open-loop schedules: division among workers, Poisson fit, the executor's pool, backlog and skips, reports."""

from __future__ import annotations

import itertools
import random
import time
from types import SimpleNamespace

import gevent
import gevent.queue
import pytest

from llmload import arrivals
from llmload import open_loop as deal
from llmload import plugin as plugin_module
from llmload.arrivals import Arrivals
from llmload.errors import ConfigError
from llmload.open_loop import ArrivalExecutor, ArrivalStats, Assignment, exponential_fit, offsets
from llmload.options import LLMOptions
from llmload.record import RequestRecord
from tests.support.environments import (
    connect_worker,
    fire,
    local_environment,
    master_environment,
    new_plugin,
    worker_environment,
    worker_report,
)


def assignment(**kwargs) -> Assignment:
    base = dict(epoch=1, mode="poisson", rate_rps=100.0, slot=0, slots=1, t0_wall=0.0, seed=0)
    return Assignment(**{**base, **kwargs})


def take(a: Assignment, n: int) -> list[float]:
    return [t for t, _index in itertools.islice(offsets(a), n)]


def test_constant_slots_interleave_exactly():
    merged = sorted(
        t for slot in range(3) for t in take(assignment(mode="constant", rate_rps=30, slot=slot, slots=3), 100)
    )
    assert merged[:300] == pytest.approx([k / 30 for k in range(300)])


def test_poisson_slots_divide_the_rate_and_sum_to_a_poisson_process():
    rate, horizon = 100.0, 60.0
    merged = []
    for slot in range(2):
        times = [t for t in take(assignment(slot=slot, slots=2, rate_rps=rate), 10_000) if t < horizon]
        # Each slot runs at R/N: 3,000 expected in 60 s, sd 55; tolerance 4 sd.
        assert len(times) == pytest.approx(rate / 2 * horizon, abs=4 * (rate / 2 * horizon) ** 0.5)
        merged += times
    merged.sort()
    assert len(merged) == pytest.approx(rate * horizon, abs=4 * (rate * horizon) ** 0.5)
    gaps = [b - a for a, b in zip(merged, merged[1:], strict=False)]
    d, p = exponential_fit(gaps, rate)
    assert p > 0.01, (d, p)


def test_schedules_are_seeded():
    assert take(assignment(seed=5, slot=1, slots=2), 20) == take(assignment(seed=5, slot=1, slots=2), 20)
    assert take(assignment(seed=5), 20) != take(assignment(seed=6), 20)
    assert take(assignment(slot=0, slots=2), 20) != take(assignment(slot=1, slots=2), 20)
    # One global schedule: a new deal (epoch) goes on with the same arrivals, from its start_s.
    whole = list(itertools.islice(offsets(assignment(epoch=1)), 200))
    later = list(itertools.islice(offsets(assignment(epoch=2, start_s=whole[100][0])), 100))
    assert [k for _t, k in later] == [k for _t, k in whole[100:]]
    assert [t + whole[100][0] for t, _k in later] == pytest.approx([t for t, _k in whole[100:]])


def test_exponential_fit_rejects_wrong_rates_and_shapes():
    rng = random.Random(3)
    gaps = [rng.expovariate(50) for _ in range(2000)]
    assert exponential_fit(gaps, 50)[1] > 0.01
    assert exponential_fit(gaps, 60)[1] < 1e-4
    assert exponential_fit([0.02] * 2000, 50)[1] < 1e-10  # constant gaps are not Poisson
    with pytest.raises(ValueError):
        exponential_fit([], 1.0)


# -- the executor ---------------------------------------------------------------------------


class ScriptedSchedule:
    """An executor's schedule that the test writes: ``dispatch(due)`` makes one arrival due now.

    ``llmload.open_loop`` gets a fake clock (``time.perf_counter``) and an ``offsets`` that
    waits for the test's next due time, moves the clock to it and hands it to the executor.
    """

    START = 1000.0

    def __init__(self, monkeypatch) -> None:
        self.now = self.START
        self.dues: gevent.queue.Queue = gevent.queue.Queue()
        self.spawned: list[str] = []
        fake_time = SimpleNamespace(time=lambda: 0.0, perf_counter=lambda: self.now)
        monkeypatch.setattr(deal, "time", fake_time)
        monkeypatch.setattr(deal, "offsets", self.offsets)

    def spawn(self, name, func, *args):
        self.spawned.append(name)
        return gevent.spawn(func, *args)

    def offsets(self, _assignment, trace=None):
        base = self.now  # the executor's base: the clock when its schedule started
        while True:
            due = self.dues.get()
            self.now = max(self.now, due)
            yield due - base, 0

    def start(self, executor: ArrivalExecutor, epoch: int = 1) -> None:
        executor.pool_ready.set()
        executor.assign(assignment(epoch=epoch, mode="constant", t0_wall=0.0))

    def dispatch(self, executor: ArrivalExecutor, due: float) -> None:
        scheduled = executor.stats.scheduled
        self.dues.put(due)
        for _ in range(100):
            if executor.stats.scheduled > scheduled:
                return
            gevent.sleep(0)
        raise AssertionError(f"the arrival due at {due} was never dispatched")


def test_arrival_goes_to_an_idle_user_else_waits_in_the_backlog_then_is_skipped(monkeypatch):
    schedule = ScriptedSchedule(monkeypatch)
    stats = ArrivalStats()
    executor = ArrivalExecutor(stats, spawn=schedule.spawn)
    schedule.start(executor)
    got = []
    user = gevent.spawn(lambda: got.append(executor.wait()[0]))
    gevent.sleep(0)
    assert executor.idle_users == 1
    schedule.dispatch(executor, 1001.0)
    user.join(timeout=1)
    assert got == [1001.0] and (stats.scheduled, stats.sent, stats.skipped) == (1, 1, 0)
    # No idle user: the arrival waits; a user that frees up in time takes it at once.
    now = 1002.0
    schedule.dispatch(executor, now)
    assert executor.idle_users == 0 and stats.sent == 1
    assert executor.wait()[0] == now and stats.sent == 2
    # An arrival older than SKIP_AFTER_S is skipped when a user finally asks.
    schedule.dispatch(executor, now - deal.SKIP_AFTER_S - 0.5)
    schedule.dispatch(executor, now)
    assert executor.wait()[0] == now and (stats.scheduled, stats.sent, stats.skipped) == (4, 3, 1)
    # The backlog never holds more than SKIP_AFTER_S of arrivals: of these five, the last two.
    for k in range(5):
        schedule.dispatch(executor, now + k * deal.SKIP_AFTER_S * 0.6)
    assert stats.skipped == 4 and stats.scheduled == 9
    assert [executor.wait()[0], executor.wait()[0]] == pytest.approx([now + 1.8, now + 2.4])
    waiting = gevent.spawn(executor.wait)
    gevent.sleep(0)
    assert executor.idle_users == 1 and (stats.scheduled, stats.sent, stats.skipped) == (9, 5, 4)
    # At the end of the test users still waiting for an arrival are released with the given exception...
    executor.stop(release=LookupError("stop"))
    waiting.join(timeout=1)
    assert isinstance(waiting.exception, LookupError) and executor.idle_users == 0
    # ... and the backlog is dropped: due, never sent, so counted as skipped.
    schedule.start(executor, epoch=2)
    schedule.dispatch(executor, schedule.now + 0.1)
    executor.stop()
    waiting = gevent.spawn(executor.wait)
    gevent.sleep(0)
    assert executor.idle_users == 1  # nothing left to take
    executor.stop(release=LookupError("stop"))
    waiting.join(timeout=1)
    assert stats.skipped == 5 and stats.scheduled == 10 and stats.sent == 5
    assert schedule.spawned == ["open-loop schedule", "open-loop schedule"]


def test_a_killed_waiting_user_leaves_the_pool(monkeypatch):
    schedule = ScriptedSchedule(monkeypatch)
    executor = ArrivalExecutor(ArrivalStats(), spawn=schedule.spawn)
    schedule.start(executor)
    user = gevent.spawn(executor.wait)
    gevent.sleep(0)
    user.kill()
    assert executor.idle_users == 0
    schedule.dispatch(executor, 1001.0)
    assert executor.stats.sent == 0 and executor.stats.skipped == 0
    assert executor.wait()[0] == 1001.0 and executor.stats.sent == 1  # it waited in the backlog
    executor.stop()


def test_executor_runs_the_schedule_after_the_pool_is_ready():
    stats = ArrivalStats()
    spawned = []

    def spawn(name, func, *args):
        spawned.append(name)
        return gevent.spawn(func, *args)

    executor = ArrivalExecutor(stats, spawn=spawn)
    got: list[float] = []

    def user():
        while True:
            got.append(executor.wait()[0])

    users = [gevent.spawn(user) for _ in range(3)]
    executor.assign(assignment(mode="constant", rate_rps=200, t0_wall=deal.time.time()))
    gevent.sleep(0.1)
    assert got == []  # users not all started yet (no spawning_complete)
    ready = deal.time.perf_counter()
    executor.pool_ready.set()
    gevent.sleep(0.25)
    executor.stop()
    elapsed = deal.time.perf_counter() - ready
    gevent.killall(users)
    # Arrivals due before the pool was ready are not part of the test; then 200/s (+-2 at the edges).
    assert got[0] >= ready - 0.001 and stats.skipped == 0
    assert len(got) == pytest.approx(200 * elapsed, abs=2)
    gaps = [b - a for a, b in zip(got, got[1:], strict=False)]
    assert gaps == pytest.approx([0.005] * len(gaps))
    assert spawned == ["open-loop schedule"]
    # After a stop the same assignment starts again; while it runs, the same epoch again is
    # ignored, and a new epoch replaces the schedule.
    first = executor.assignment
    executor.assign(first)
    executor.assign(first)
    assert len(spawned) == 2
    executor.assign(assignment(epoch=first.epoch + 1, mode="constant", rate_rps=200))
    assert len(spawned) == 3 and executor.assignment.epoch == first.epoch + 1
    executor.stop()


def open_loop_record() -> RequestRecord:
    """Sent 0.2 s after its intended time; first token 0.5 s and last 1.0 s after it."""
    return RequestRecord(
        backend="b",
        model="m",
        user_class="U",
        endpoint="/v1/chat/completions",
        t_send=10.2,
        start_wall=0.0,
        t_intended=10.0,
        token_times=[10.5, 10.6, 11.0],
        completion_tokens=3,
    )


def test_stats_observe_wire_and_merge():
    stats = ArrivalStats()
    record = open_loop_record()
    stats.observe(record)
    stats.observe(RequestRecord(backend="b", model="m", user_class="U", endpoint="/", t_send=1.0, start_wall=0.0))
    stats.merge_wire(counts(scheduled=5, sent=4, skipped=1))
    total = ArrivalStats()
    total.merge_wire(stats.to_wire())
    total.merge_wire(stats.to_wire())
    assert (total.scheduled, total.sent, total.skipped) == (10, 8, 2)
    assert total.dists["ttft_from_intended_s"].count == 2
    assert total.dists["ttft_from_intended_s"].mean == pytest.approx(0.5)
    assert total.dists["e2e_from_intended_s"].max == pytest.approx(1.0)
    assert record.ttft_s == pytest.approx(0.3) and record.dispatch_lag_s == pytest.approx(0.2)


# -- coordination ---------------------------------------------------------------------------


def counts(*, scheduled=0, sent=0, skipped=0) -> dict:
    """Arrival counts in the wire format, without latencies."""
    return {"scheduled": scheduled, "sent": sent, "skipped": skipped, "dists": {}}


def open_loop(arrival="poisson", rate=90.0, **parsed) -> SimpleNamespace:
    return SimpleNamespace(llm_arrival=arrival, llm_rate=str(rate), llm_seed="7", **parsed)


def recording_sends(monkeypatch, runner) -> list:
    """The open-loop assignments the master sends its workers: (message type, client id, data)."""
    sent = []

    def send_message(kind, data=None, client_id=None):
        if kind == arrivals.MESSAGE:
            sent.append((kind, client_id, data))

    monkeypatch.setattr(runner, "send_message", send_message)
    return sent


def test_master_divides_the_rate_by_worker_index_and_again_when_workers_change(monkeypatch):
    with master_environment(open_loop()) as environment:
        runner = environment.runner
        new_plugin(environment, arrivals)
        sent = recording_sends(monkeypatch, runner)
        for worker in ("w-b", "w-a"):  # worker indexes: w-b 0, w-a 1
            connect_worker(runner, worker)
        assert sent == []  # not before the test starts
        events = environment.events
        fire(events.test_start, environment=environment)
        assert [(m, c, d["slot"], d["slots"], d["rate_rps"], d["epoch"]) for m, c, d in sent] == [
            ("llmload_arrivals", "w-b", 0, 2, 90.0, 1),
            ("llmload_arrivals", "w-a", 1, 2, 90.0, 1),
        ]
        assert {d["mode"] for _, _, d in sent} == {"poisson"} and {d["seed"] for _, _, d in sent} == {7}
        sent.clear()
        fire(events.worker_report, client_id="w-a", data=worker_report())
        assert sent == []  # same workers: nothing to do
        connect_worker(runner, "w-c")
        fire(events.worker_report, client_id="w-c", data=worker_report())
        assert [(c, d["slot"], d["slots"], d["epoch"]) for _, c, d in sent] == [
            ("w-b", 0, 3, 2),
            ("w-a", 1, 3, 2),
            ("w-c", 2, 3, 2),
        ]
        # The new deal goes on from the schedule's offset at its t0 (HANDOVER_S later), never from 0.
        first, second = arrivals.get_arrivals(environment.llmload).deals
        assert second[0] >= first[0] and second[1] == pytest.approx(second[0] - first[0])
        assert [d["start_s"] for _, _, d in sent] == [second[1]] * 3
        assert {d["t0_wall"] for _, _, d in sent} == {second[0]}
        sent.clear()
        arrivals.get_arrivals(environment.llmload).set_rate(30.0)
        assert {d["rate_rps"] for _, _, d in sent} == {30.0} and len(sent) == 3
        assert {d["start_s"] for _, _, d in sent} == {0.0}  # a new rate: a new schedule
        sent.clear()
        fire(events.test_stop, environment=environment)
        fire(events.worker_report, client_id="w-a", data=worker_report())
        assert sent == []
        environment.llmload.supervisor.kill_all()


def test_worker_follows_its_assignment_from_the_master():
    plugin = new_plugin(worker_environment(**vars(open_loop())), arrivals)
    coordinator = arrivals.get_arrivals(plugin)
    wire = assignment(epoch=3, mode="constant", rate_rps=30.0, slot=1, slots=2, seed=7).to_wire()
    plugin.environment.runner.deliver(arrivals.MESSAGE, wire)
    try:
        assert coordinator.executor.assignment == Assignment(**wire)
    finally:
        fire(plugin.environment.events.test_stop, environment=plugin.environment)
        plugin.supervisor.kill_all()


def test_worker_reports_deltas_and_master_merges_them():
    plugin = new_plugin(worker_environment(**vars(open_loop())), arrivals)
    worker = plugin.extensions.get(Arrivals)
    worker.delta.merge_wire(counts(scheduled=3, sent=3))
    data: dict = {}
    fire(plugin.environment.events.report_to_master, client_id="w", data=data)
    assert data["llmload_arrivals"]["scheduled"] == 3 and worker.delta.scheduled == 0
    assert worker.executor.stats is worker.delta
    empty: dict = {}
    fire(plugin.environment.events.report_to_master, client_id="w", data=empty)
    assert "llmload_arrivals" not in empty  # nothing new: no arrivals section
    with master_environment(open_loop()) as environment:
        master = arrivals.get_arrivals(new_plugin(environment, arrivals))
        fire(environment.events.worker_report, client_id="w", data=worker_report(data))
        fire(environment.events.worker_report, client_id="w", data=worker_report(data))
        assert master.total.scheduled == 6 and master.totals().sent == 6


def test_malformed_arrivals_report_is_ignored_with_a_warning(caplog):
    plugin = new_plugin(local_environment(open_loop()), arrivals)
    fire(plugin.environment.events.worker_report, client_id="w3", data={"llmload_arrivals": {"scheduled": 1}})
    assert "llmload: ignored a malformed arrivals report from worker w3 (" in caplog.text


def test_summary_and_warnings(monkeypatch):
    wall = [100.0]
    monkeypatch.setattr(plugin_module, "time", SimpleNamespace(time=lambda: wall[0], monotonic=time.monotonic))
    plugin = new_plugin(local_environment(open_loop(rate=10.0)), arrivals)
    coordinator = arrivals.get_arrivals(plugin)
    events = plugin.environment.events
    fire(events.test_start, environment=plugin.environment)
    coordinator.delta.merge_wire(counts(scheduled=100, sent=100))
    wall[0] = 110.0
    fire(events.test_stop, environment=plugin.environment)
    plugin.supervisor.kill_all()
    summary = coordinator.summary()
    assert summary["warning"] is None and summary["sent"] == 100 and summary["sent_rps"] == pytest.approx(10.0)
    assert summary["mode"] == "poisson" and summary["rate_rps"] == 10.0 and summary["lag_warn_p99_s"] == 0.1
    coordinator.delta.merge_wire(counts(scheduled=5, skipped=5))
    lagging = RequestRecord(
        backend="b",
        model="m",
        user_class="U",
        endpoint="/",
        t_send=1.3,
        start_wall=0.0,
        t_intended=1.0,
        token_times=[1.4],
    )
    plugin.record(lagging)
    warning = coordinator.summary()["warning"]
    assert warning == (
        "open-loop schedule not kept: 5 of 105 arrivals skipped because no user was free within 1 s "
        "(raise -u, the pool of users); dispatch lag p99 300 ms exceeds 100 ms "
        "(the load generator is short of CPU: add workers)"
    )
    assert plugin.extensions.results_sections()["arrivals"]["warning"] == warning
    closed = new_plugin(local_environment(open_loop(arrival="closed", rate="")), arrivals)
    assert arrivals.get_arrivals(closed).summary() is None
    assert closed.extensions.results_sections()["arrivals"] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(llm_arrival="burst"),
            "--llm-arrival: expected one of closed, poisson, constant, gamma, trace, got 'burst'",
        ),
        (
            dict(llm_arrival="poisson"),
            "--llm-arrival poisson: needs --llm-rate (requests/s for the whole test) or --llm-rate-profile",
        ),
        (dict(llm_arrival="trace"), "--llm-arrival trace: needs --llm-trace FILE"),
        (
            dict(llm_arrival="poisson", llm_rate="5", llm_trace="t.jsonl"),
            "--llm-trace: replays at the trace's times; it cannot be combined with --llm-arrival poisson",
        ),
        (
            dict(llm_arrival="poisson", llm_rate="5", llm_burstiness="0.5"),
            "--llm-burstiness: only with --llm-arrival gamma",
        ),
        (
            dict(llm_arrival="gamma", llm_rate_profile="ramp:5=1"),
            "--llm-rate-profile: the first point must be at time 0; got 'ramp:5=1'",
        ),
        (dict(llm_rate="5"), "--llm-rate: only with --llm-arrival poisson, constant or gamma"),
        (dict(llm_arrival="constant", llm_rate="0"), "--llm-rate: expected a number > 0, got '0'"),
    ],
)
def test_arrival_options(kwargs, message):
    with pytest.raises(ConfigError) as info:
        LLMOptions.from_parsed(SimpleNamespace(**kwargs))
    assert str(info.value) == message
    options = LLMOptions.from_parsed(SimpleNamespace(llm_arrival="Poisson", llm_rate="12.5"))
    assert options.arrival == "poisson" and options.rate_rps == 12.5


def test_the_exporter_shows_dispatch_lag_and_from_intended_latencies_of_an_open_loop_run():
    from prometheus_client import CollectorRegistry, generate_latest

    from llmload import collector

    stats = ArrivalStats()
    record = open_loop_record()
    stats.observe(record)
    with master_environment(open_loop()) as environment:
        plugin = new_plugin(environment, arrivals)
        master = arrivals.get_arrivals(plugin)
        assert master is not None
        fire(environment.events.worker_report, client_id="w", data=worker_report({"llmload_arrivals": stats.to_wire()}))
        plugin.store.record(record)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector.LLMLoadCollector(plugin))
        text = generate_latest(registry).decode().splitlines()
    # Dispatch lag 0.2 s lands in le=0.2; TTFT from intended 0.5 s in le=0.5, E2E from intended 1.0 s in le=1.0.
    assert 'llmload_dispatch_lag_seconds_bucket{le="0.1"} 0.0' in text
    assert 'llmload_dispatch_lag_seconds_bucket{le="0.2"} 1.0' in text
    assert 'llmload_ttft_from_intended_seconds_bucket{le="0.2"} 0.0' in text
    assert 'llmload_ttft_from_intended_seconds_bucket{le="0.5"} 1.0' in text
    assert 'llmload_e2e_from_intended_seconds_bucket{le="1.0"} 1.0' in text
    assert "llmload_ttft_from_intended_seconds_count 1.0" in text
