"""Open-loop schedules: division among workers, Poisson fit, the executor's pool, backlog and skips, reports."""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import gevent
import pytest

from llmload import arrivals
from llmload.arrivals import Arrivals, ArrivalExecutor, ArrivalStats, Assignment, exponential_fit, offsets
from llmload.errors import ConfigError
from llmload.metrics import MetricsStore
from llmload.options import LLMOptions
from llmload.record import RequestRecord


def assignment(**kwargs) -> Assignment:
    base = dict(epoch=1, mode="poisson", rate_rps=100.0, slot=0, slots=1, t0_wall=0.0, seed=0)
    return Assignment(**{**base, **kwargs})


def take(a: Assignment, n: int) -> list[float]:
    return list(itertools.islice(offsets(a), n))


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
    gaps = [b - a for a, b in zip(merged, merged[1:])]
    d, p = exponential_fit(gaps, rate)
    assert p > 0.01, (d, p)


def test_schedules_are_seeded():
    assert take(assignment(seed=5, slot=1, slots=2), 20) == take(assignment(seed=5, slot=1, slots=2), 20)
    assert take(assignment(seed=5), 20) != take(assignment(seed=6), 20)
    assert take(assignment(epoch=1), 20) != take(assignment(epoch=2), 20)
    assert take(assignment(slot=0, slots=2), 20) != take(assignment(slot=1, slots=2), 20)


def test_exponential_fit_rejects_wrong_rates_and_shapes():
    rng = random.Random(3)
    gaps = [rng.expovariate(50) for _ in range(2000)]
    assert exponential_fit(gaps, 50)[1] > 0.01
    assert exponential_fit(gaps, 60)[1] < 1e-4
    assert exponential_fit([0.02] * 2000, 50)[1] < 1e-10  # constant gaps are not Poisson
    with pytest.raises(ValueError):
        exponential_fit([], 1.0)


# -- the executor ---------------------------------------------------------------------------


def test_arrival_goes_to_an_idle_user_else_waits_in_the_backlog_then_is_skipped():
    stats = ArrivalStats()
    executor = ArrivalExecutor(stats)
    got = []
    user = gevent.spawn(lambda: got.append(executor.wait()))
    gevent.sleep(0)
    assert executor.idle_users == 1
    executor._dispatch(123.0)
    user.join(timeout=1)
    assert got == [123.0] and (stats.scheduled, stats.sent, stats.skipped) == (1, 1, 0)
    # No idle user: the arrival waits; a user that frees up in time takes it at once.
    now = arrivals.time.perf_counter()
    executor._dispatch(now)
    assert executor.wait() == now and stats.sent == 2
    # An arrival older than SKIP_AFTER_S is skipped when a user finally asks.
    executor._dispatch(now - arrivals.SKIP_AFTER_S - 0.5)
    executor._dispatch(now)
    assert executor.wait() == now and (stats.scheduled, stats.sent, stats.skipped) == (4, 3, 1)
    # The backlog never holds more than SKIP_AFTER_S of arrivals.
    for k in range(5):
        executor._dispatch(now + k * arrivals.SKIP_AFTER_S * 0.6)
    assert len(executor._backlog) == 2 and stats.skipped == 4
    # At the end of the test the backlog is dropped (due after the test), not counted as skipped,
    # and users still waiting for an arrival are released with the given exception.
    executor._backlog.clear()
    waiting = gevent.spawn(executor.wait)
    gevent.sleep(0)
    executor._backlog.append(now + 10)
    executor.stop(release=LookupError("stop"))
    waiting.join(timeout=1)
    assert isinstance(waiting.exception, LookupError) and executor.idle_users == 0
    assert stats.skipped == 4 and stats.scheduled == 9 and stats.sent == 3 and not executor._backlog


def test_a_killed_waiting_user_leaves_the_pool():
    executor = ArrivalExecutor(ArrivalStats())
    user = gevent.spawn(executor.wait)
    gevent.sleep(0)
    user.kill()
    assert executor.idle_users == 0
    executor._dispatch(1.0)
    assert executor.stats.sent == 0 and len(executor._backlog) == 1


def test_executor_runs_the_schedule_after_the_pool_is_ready():
    stats = ArrivalStats()
    executor = ArrivalExecutor(stats)
    got: list[float] = []

    def user():
        while True:
            got.append(executor.wait())

    users = [gevent.spawn(user) for _ in range(3)]
    executor.assign(assignment(mode="constant", rate_rps=200, t0_wall=arrivals.time.time()))
    gevent.sleep(0.1)
    assert got == []  # users not all started yet (no spawning_complete)
    ready = arrivals.time.perf_counter()
    executor.pool_ready.set()
    gevent.sleep(0.25)
    executor.stop()
    elapsed = arrivals.time.perf_counter() - ready
    gevent.killall(users)
    # Arrivals due before the pool was ready are not part of the test; then 200/s (+-2 at the edges).
    assert got[0] >= ready - 0.001 and stats.skipped == 0
    assert len(got) == pytest.approx(200 * elapsed, abs=2)
    gaps = [b - a for a, b in zip(got, got[1:])]
    assert gaps == pytest.approx([0.005] * len(gaps))
    # A new epoch replaces the schedule; the same epoch again is ignored.
    first = executor.assignment
    executor.assign(first)
    assert executor._greenlet is not None
    executor.stop()


def test_stats_observe_wire_and_merge():
    stats = ArrivalStats()
    record = RequestRecord(
        backend="b",
        model="m",
        user_class="U",
        endpoint="/v1/chat/completions",
        t_send=10.2,
        start_wall=0.0,
        t_intended=10.0,
        token_times=[10.5, 10.6, 11.0],
    )
    stats.observe(record)
    stats.observe(RequestRecord(backend="b", model="m", user_class="U", endpoint="/", t_send=1.0, start_wall=0.0))
    stats.scheduled, stats.sent, stats.skipped = 5, 4, 1
    total = ArrivalStats()
    total.merge_wire(stats.to_wire())
    total.merge_wire(stats.to_wire())
    assert (total.scheduled, total.sent, total.skipped) == (10, 8, 2)
    assert total.dists["ttft_from_intended_s"].count == 2
    assert total.dists["ttft_from_intended_s"].mean == pytest.approx(0.5)
    assert total.dists["e2e_from_intended_s"].max == pytest.approx(1.0)
    assert record.ttft_s == pytest.approx(0.3) and record.dispatch_lag_s == pytest.approx(0.2)


# -- coordination ---------------------------------------------------------------------------


class FakeRunner:
    def __init__(self, ids):
        self.clients = SimpleNamespace(ready=[SimpleNamespace(id=i) for i in ids], spawning=[], running=[])
        self.indexes = {i: n for n, i in enumerate(sorted(ids, reverse=True))}
        self.sent = []

    def get_worker_index(self, client_id):
        return self.indexes[client_id]

    def send_message(self, msg_type, data=None, client_id=None):
        self.sent.append((msg_type, client_id, data))


def fake_plugin(*, master: bool, arrival="poisson", rate=90.0):
    options = SimpleNamespace(arrival=arrival, rate_rps=rate, seed=7)
    return SimpleNamespace(
        options=options, is_master=master, is_worker=False, store=MetricsStore(), started_at=100.0, ended_at=110.0
    )


def test_master_divides_the_rate_by_worker_index_and_again_when_workers_change():
    runner = FakeRunner(["w-a", "w-b"])
    plugin = fake_plugin(master=True)
    coordinator = Arrivals(SimpleNamespace(runner=runner), plugin)
    coordinator._on_test_start(environment=None)
    assert [(m, c, d["slot"], d["slots"], d["rate_rps"], d["epoch"]) for m, c, d in runner.sent] == [
        ("llmload_arrivals", "w-b", 0, 2, 90.0, 1),
        ("llmload_arrivals", "w-a", 1, 2, 90.0, 1),
    ]
    runner.sent.clear()
    coordinator._on_worker_report(client_id="w-a", data={})
    assert runner.sent == []  # same workers: nothing to do
    runner.clients.running.append(SimpleNamespace(id="w-c"))
    runner.indexes["w-c"] = 2
    coordinator._on_worker_report(client_id="w-c", data={})
    assert [(c, d["slot"], d["slots"], d["epoch"]) for _, c, d in runner.sent] == [
        ("w-b", 0, 3, 2),
        ("w-a", 1, 3, 2),
        ("w-c", 2, 3, 2),
    ]
    runner.sent.clear()
    coordinator.set_rate(30.0)
    assert {d["rate_rps"] for _, _, d in runner.sent} == {30.0} and len(runner.sent) == 3
    runner.sent.clear()
    coordinator._on_test_stop(environment=None)
    coordinator._on_worker_report(client_id="w-a", data={})
    assert runner.sent == []


def test_worker_reports_deltas_and_master_merges_them():
    plugin = fake_plugin(master=False)
    worker = Arrivals(SimpleNamespace(runner=None), plugin)
    worker.delta.scheduled, worker.delta.sent = 3, 3
    data: dict = {}
    worker._on_report_to_master(client_id="w", data=data)
    assert data["llmload_arrivals"]["scheduled"] == 3 and worker.delta.scheduled == 0
    assert worker.executor.stats is worker.delta
    empty: dict = {}
    worker._on_report_to_master(client_id="w", data=empty)
    assert empty == {}
    master = Arrivals(SimpleNamespace(runner=FakeRunner([])), fake_plugin(master=True))
    master._on_worker_report(client_id="w", data=data)
    master._on_worker_report(client_id="w", data=data)
    assert master.total.scheduled == 6


def test_summary_and_warnings():
    plugin = fake_plugin(master=False, rate=10.0)
    coordinator = Arrivals(SimpleNamespace(runner=None), plugin)
    coordinator.delta.scheduled, coordinator.delta.sent = 100, 100
    summary = coordinator.summary()
    assert summary["warning"] is None and summary["sent"] == 100 and summary["sent_rps"] == pytest.approx(10.0)
    assert summary["mode"] == "poisson" and summary["rate_rps"] == 10.0 and summary["lag_warn_p99_s"] == 0.1
    coordinator.delta.scheduled, coordinator.delta.skipped = 5, 5
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
    plugin.store.record(lagging)
    warning = coordinator.summary()["warning"]
    assert warning == (
        "open-loop schedule not kept: 5 of 105 arrivals skipped because no user was free within 1 s "
        "(raise -u, the pool of users); dispatch lag p99 300 ms exceeds 100 ms "
        "(the load generator is short of CPU: add workers)"
    )
    assert Arrivals(SimpleNamespace(runner=None), fake_plugin(master=False, arrival="closed")).summary() is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(llm_arrival="burst"), "--llm-arrival: expected one of closed, poisson, constant, got 'burst'"),
        (dict(llm_arrival="poisson"), "--llm-arrival poisson: needs --llm-rate (requests/s for the whole test)"),
        (dict(llm_rate="5"), "--llm-rate: only with --llm-arrival poisson or constant"),
        (dict(llm_arrival="constant", llm_rate="0"), "--llm-rate: expected a number > 0, got '0'"),
    ],
)
def test_arrival_options(kwargs, message):
    with pytest.raises(ConfigError) as info:
        LLMOptions.from_parsed(SimpleNamespace(**kwargs))
    assert str(info.value) == message
    options = LLMOptions.from_parsed(SimpleNamespace(llm_arrival="Poisson", llm_rate="12.5"))
    assert options.arrival == "poisson" and options.rate_rps == 12.5
