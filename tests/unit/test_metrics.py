"""Token metrics store: percentiles against known truth, exact merges, wire format."""

import random

import msgpack
import pytest

from llmload.distribution import Distribution
from llmload.metrics import MetricsStore
from llmload.record import RequestRecord

LATENCY = dict(scale=1e6, highest=3_600_000_000)


def test_percentiles_within_stated_precision():
    rng = random.Random(7)
    values = sorted(rng.uniform(0.005, 5.0) for _ in range(10_000))
    dist = Distribution(**LATENCY)
    dist.record_many(values)
    for q in (10, 50, 90, 99):
        truth = values[int(q / 100 * len(values)) - 1]
        assert dist.percentile(q) == pytest.approx(truth, rel=2e-3)  # 3 significant digits + rank rounding
    assert dist.mean == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert dist.max == values[-1] and dist.min == values[0] and dist.count == 10_000


def test_known_small_distribution():
    dist = Distribution(**LATENCY)
    dist.record_many([0.010, 0.020, 0.030, 0.040])
    summary = dist.summary()
    assert summary["count"] == 4
    assert summary["mean"] == pytest.approx(0.025)
    assert summary["p50"] == pytest.approx(0.020, rel=1e-3)
    assert summary["p99"] == pytest.approx(0.040, rel=1e-3)
    assert summary["max"] == 0.040


def test_merge_through_wire_equals_single_process():
    rng = random.Random(3)
    values = [rng.lognormvariate(-3, 1) for _ in range(5000)]
    single = Distribution(**LATENCY)
    single.record_many(values)
    merged = Distribution(**LATENCY)
    for part in (values[:1000], values[1000:3500], values[3500:]):
        worker = Distribution(**LATENCY)
        worker.record_many(part)
        merged.merge_wire(msgpack.unpackb(msgpack.packb(worker.to_wire())))
    for q in (10, 50, 90, 99, 99.9):
        assert merged.percentile(q) == single.percentile(q)
    assert merged.count == single.count and merged.max == single.max
    assert merged.total == pytest.approx(single.total, rel=1e-12)


def record(*, backend="b", user_class="U", times=(1.1, 1.2, 1.3), completion=3, error=None, prompt=7):
    r = RequestRecord(
        backend=backend, model="m", user_class=user_class, endpoint="/v1/chat/completions", t_send=1.0, start_wall=100.0
    )
    r.token_times = list(times)
    r.t_end = times[-1] if times else 1.0
    r.completion_tokens = completion
    r.prompt_tokens = prompt
    r.error_kind = error
    return r


def test_store_groups_counters_and_slo():
    store = MetricsStore(slo_ttft_s=0.15, slo_stream_rate_tps=5.0)
    store.record(record())  # TTFT 0.1, 3 tok / 0.3 s = 10 tok/s: meets
    store.record(record(times=(1.2, 1.3, 1.4)))  # TTFT 0.2: misses
    store.record(record(error="http_429", times=(), completion=None, prompt=None))
    store.record(record(user_class="V"))
    group = store.groups[("b", "m", "U")]
    assert group.counters["ok"] == 2 and group.counters["failed"] == 1
    assert group.errors == {"http_429": 1}
    assert group.counters["slo_met"] == 1
    assert group.counters["output_tokens"] == 6 and group.counters["prompt_tokens"] == 14
    assert group.dists["itl_s"].count == 4
    total = store.total()
    assert total.counters["ok"] == 3 and total.counters["slo_met"] == 2


def test_store_wire_round_trip_is_msgpack_safe_and_exact():
    worker = MetricsStore()
    for i in range(50):
        worker.record(record(times=(1.0 + 0.01 * (i + 1), 1.5, 2.0), user_class="U" if i % 2 else "V"))
    master = MetricsStore()
    master.merge_wire(msgpack.unpackb(msgpack.packb(worker.to_wire())))
    for key, group in worker.groups.items():
        other = master.groups[key]
        assert other.counters == group.counters
        assert other.dists["ttft_s"].summary() == group.dists["ttft_s"].summary()
        assert other.first_start == group.first_start and other.last_end == group.last_end


def test_cumulative_counts_at_bounds():
    dist = Distribution(**LATENCY)
    dist.record_many([0.001, 0.002, 0.002, 0.010, 0.5, 2.0])
    assert dist.cumulative_counts([0.0005, 0.002, 0.01, 1.0, 10.0]) == [0, 3, 4, 5, 6]


def test_cleared_store_is_a_new_one_in_the_same_memory():
    store = MetricsStore(slo_ttft_s=0.15)
    for i in range(20):
        store.record(record(times=(1.0 + 0.01 * (i + 1), 1.5, 2.0), user_class="U" if i % 2 else "V"))
    store.record(record(error="http_429", times=(), completion=None))
    before = store.groups[("b", "m", "U")]
    store.clear()
    assert store.groups == {} and store.is_empty()
    fresh = MetricsStore(slo_ttft_s=0.15)
    for target in (store, fresh):
        target.record(record(times=(1.3, 1.4, 1.6), user_class="U"))
    again = store.groups[("b", "m", "U")]
    assert again is before  # reused, not allocated
    other = fresh.groups[("b", "m", "U")]
    assert again.counters == other.counters and again.errors == other.errors == {}
    assert (again.first_start, again.last_end) == (other.first_start, other.last_end)
    for name, dist in again.dists.items():
        assert dist.summary() == other.dists[name].summary(), name
        mine, theirs = dist.histogram, other.dists[name].histogram
        assert mine.counts() == theirs.counts(), name
        assert (mine.total_count, mine.min_value, mine.max_value) == (
            theirs.total_count,
            theirs.min_value,
            theirs.max_value,
        ), name
    assert list(store.groups) == [("b", "m", "U")]  # group V stays out until it records again


def test_counter_totals_and_merged_equal_the_total():
    store = MetricsStore(slo_ttft_s=0.15)
    for i in range(30):
        store.record(record(times=(1.0 + 0.01 * (i + 1), 1.5), user_class=("U", "V", "W")[i % 3]))
    store.record(record(error="timeout", times=(), completion=None))
    total = store.total()
    assert store.counter_totals() == total.counters
    assert store.merged("ttft_s").summary() == total.dists["ttft_s"].summary()
    narrow = MetricsStore(distributions=("ttft_s", "itl_s"))
    narrow.record(record())
    assert set(narrow.total().dists) == {"ttft_s", "itl_s"}  # a window's total keeps what the window keeps
