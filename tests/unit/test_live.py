"""Live figures: exact percentiles over the sliding window and the whole run, and the exporter's budget."""

from __future__ import annotations

import random

from locust.env import Environment
from locust.event import Events
from prometheus_client import CollectorRegistry, generate_latest

from llmload import collector
from llmload.distribution import Distribution
from llmload.hdr import ScaledHistogram
from llmload.live import SLICES, LiveFigures
from llmload.options import LLMOptions
from llmload.plugin import LLMLoadPlugin
from llmload.record import RequestRecord


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(ttft: float, *, user_class: str = "Chat", backend: str = "gpu-a", n: int = 4) -> RequestRecord:
    times = [ttft + 0.01 * i for i in range(n)]
    return RequestRecord(
        backend=backend,
        model="m",
        user_class=user_class,
        endpoint="/v1/chat/completions",
        t_send=0.0,
        start_wall=1.0,
        token_times=times,
        t_end=times[-1],
        completion_tokens=n,
        prompt_tokens=5,
    )


def new_plugin() -> tuple[LLMLoadPlugin, LiveFigures, Clock]:
    environment = Environment(events=Events())
    environment.create_local_runner()
    plugin = LLMLoadPlugin(environment).register()
    plugin.set_options(LLMOptions())
    clock = Clock()
    live = plugin.extensions.add(LiveFigures(plugin, span_s=60, clock=clock))
    live.start()
    live.stop()  # the test rotates by hand
    return plugin, live, clock


def exact(values: list[float], q: float) -> float:
    dist = Distribution(scale=1e6, highest=3_600_000_000)
    dist.record_many(values)
    value = dist.percentile(q)
    assert value is not None
    return value


def test_sliding_window_keeps_the_last_slices_and_matches_the_hdr_figures_of_that_window():
    plugin, live, clock = new_plugin()
    rng = random.Random(7)
    per_slice: list[list[float]] = []
    for _slice in range(SLICES + 3):
        values = [rng.lognormvariate(-3, 0.6) for _ in range(200)]
        per_slice.append(values)
        for value in values:
            plugin.record(request(value))
        clock.now += 10
        live.rotate()
    # One more, open slice: the window is the last SLICES closed slices plus this one.
    current = [rng.lognormvariate(-1, 0.2) for _ in range(50)]
    for value in current:
        plugin.record(request(value))
    clock.now += 5
    snap = live.compute()
    in_window = [v for values in per_slice[-SLICES:] for v in values] + current
    everything = [v for values in per_slice for v in values] + current
    key = ("gpu-a", "m", "Chat")
    for q in (50.0, 90.0, 99.0):
        assert snap.window[key]["ttft_s"][q] == exact(in_window, q)
        assert snap.run[key]["ttft_s"][q] == exact(everything, q)
    # The results' figure of the whole run is the same number.
    assert snap.run[key]["ttft_s"][99.0] == plugin.store.groups[key].dists["ttft_s"].percentile(99)
    assert snap.covers_s == 65.0
    # The oldest slices are gone: their values no longer move the window's low end.
    assert snap.window[key]["ttft_s"][50.0] != snap.run[key]["ttft_s"][50.0]


def test_compute_is_cached_for_a_second():
    plugin, live, clock = new_plugin()
    plugin.record(request(0.1))
    first = live.compute()
    plugin.record(request(5.0))
    assert live.compute() is first
    clock.now += 1.0
    assert live.compute() is not first


def test_fast_percentiles_equal_hdrh_own():
    rng = random.Random(3)
    for digits in (2, 3):
        hist = ScaledHistogram(highest=3_600_000_000, significant_digits=digits)
        for _ in range(5000):
            hist.record(int(rng.lognormvariate(11, 1.5)))
        qs = [0.0, 10.0, 50.0, 90.0, 99.0, 99.9, 100.0]
        own = {q: int(v) for q, v in hist._hist.get_percentile_to_value_dict(qs).items()}  # hdrh's reference
        assert hist.values_at_percentiles(qs) == own


def test_percentile_gauges_are_exported_per_window():
    plugin, live, clock = new_plugin()
    values = [0.05, 0.1, 0.2, 0.4]
    for value in values:
        plugin.record(request(value))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector.LLMLoadCollector(plugin))
    text = generate_latest(registry).decode()
    p99 = exact(values, 99)
    for window in ("60s", "run"):
        line = (
            f'llmload_ttft_percentile_seconds{{backend="gpu-a",model="m",percentile="99",user_class="Chat",'
            f'window="{window}"}} {p99!r}'
        )
        assert line in text.splitlines(), text


def test_series_budget_at_fifty_groups():
    """docs/prometheus-grafana.md: at most 5,000 series at 50 groups (4 workers, 2 backends)."""
    plugin, live, clock = new_plugin()
    for i in range(50):
        plugin.record(request(0.1 + i / 100, user_class=f"C{i % 25}", backend=f"gpu-{i // 25}"))
    for worker in range(4):
        plugin.generator_gauges[f"w{worker}"] = {"in_flight": 1.0, "cpu_percent": 10.0}
        plugin.backend_gauges[f"w{worker}"] = {"gpu-0": {"users": 1.0, "in_flight": 1.0}}
    counts = {}
    for scheme in ("coarse", "fine"):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector.LLMLoadCollector(plugin, buckets=scheme))
        text = generate_latest(registry).decode()
        counts[scheme] = sum(1 for line in text.splitlines() if line and line[0] != "#")
    assert len(plugin.store.groups) == 50
    assert counts["coarse"] <= 5000, counts
    # The fine scheme (bounds at most 1.25 apart) costs 94 more series per group, as the docs state.
    assert counts["fine"] - counts["coarse"] == 50 * 94, counts


def test_the_ring_reuses_its_slices_memory_and_stays_exact():
    """After the first span the open slice takes the store of the slice leaving the ring: no new histograms."""
    plugin, live, clock = new_plugin()
    stores = []
    rng = random.Random(11)
    per_slice: list[list[float]] = []
    for _slice in range(3 * SLICES):
        values = [rng.lognormvariate(-3, 0.6) for _ in range(50)]
        per_slice.append(values)
        for value in values:
            plugin.record(request(value))
        window = plugin.window("live")
        assert window is not None
        stores.append(window.store)
        clock.now += 10
        live.rotate()
    assert len({id(store) for store in stores}) == SLICES + 1
    snap = live.compute()
    in_window = [v for values in per_slice[-SLICES:] for v in values]
    for q in (50.0, 99.0):
        assert snap.window[("gpu-a", "m", "Chat")]["ttft_s"][q] == exact(in_window, q)


def test_concurrent_computes_share_one_answer():
    import gevent

    plugin, live, clock = new_plugin()
    for value in (0.1, 0.2, 0.3):
        plugin.record(request(value))
    snaps = [g.value for g in gevent.joinall([gevent.spawn(live.compute) for _ in range(3)])]
    assert snaps[0] is snaps[1] is snaps[2]
    assert snaps[0].window[("gpu-a", "m", "Chat")]["ttft_s"][50.0] == exact([0.1, 0.2, 0.3], 50)


def test_each_closed_slice_becomes_one_chart_point_of_that_slice_only():
    from llmload.chart_history import FIELDS

    plugin, live, clock = new_plugin()
    plugin.backend_gauges["local"] = {"gpu-a": {"users": 3.0, "in_flight": 2.0}}
    slices = [[0.1, 0.2, 0.3, 0.4], [1.0, 2.0]]
    for values in slices:
        for value in values:
            plugin.record(request(value, n=5))
        clock.now += 10
        live.rotate()
    plugin.record(request(9.0))  # the open slice: not a point yet
    failed = request(0.5)
    failed.error_kind, failed.completion_tokens, failed.token_times = "http_429", None, []
    clock.now += 10
    plugin.record(failed)
    live.rotate()
    doc = live.history.as_json()
    assert doc["fields"] == list(FIELDS)
    (group,) = doc["groups"]
    assert (group["backend"], group["model"], group["user_class"]) == ("gpu-a", "m", "Chat")
    points = [dict(zip(FIELDS, p, strict=True)) for p in group["points"]]
    assert [p["t"] for p in points] == [1010.0, 1020.0, 1030.0]
    for point, values in zip(points, slices + [[9.0]], strict=True):
        assert point["ttft_p50_s"] == exact(values, 50) and point["ttft_p99_s"] == exact(values, 99)
        assert point["requests"] == len(values) + (point["t"] == 1030.0)
    assert points[0]["output_tokens_per_s"] == 4 * 5 / 10  # tokens of the slice's requests over its 10 s
    assert points[2]["failed"] == 1 and group["errors"] == [[1030.0, {"http_429": 1}]]
    assert doc["load"][-1] == [1030.0, {"gpu-a": {"users": 3.0, "in_flight": 2.0}}]
    assert [p[0] for p in live.history.as_json(since=1010.0)["groups"][0]["points"]] == [1020.0, 1030.0]


def test_fast_add_and_cumulative_counts_equal_hdrh_own():
    rng = random.Random(4)
    for digits in (2, 3):
        ours = ScaledHistogram(highest=3_600_000_000, significant_digits=digits)
        reference = ScaledHistogram(highest=3_600_000_000, significant_digits=digits)
        for part in range(4):
            other = ScaledHistogram(highest=3_600_000_000, significant_digits=digits)
            for _ in range(2000 if part != 2 else 0):  # one empty part
                other.record(int(rng.lognormvariate(11 + part, 1.2)))
            ours.add(other)
            reference._hist.add(other._hist)  # hdrh's own add, over every cell
        assert ours.counts() == reference.counts()
        assert ours.total_count == reference.total_count
        # The extremes are in the cells of the smallest and largest values (hdrh's add into an empty
        # histogram leaves its min at 0; ours keeps the smallest value's cell)
        occupied = [index for index, count in enumerate(ours.counts()) if count]
        assert ours._index_of(ours.min_value) == occupied[0] and ours._index_of(ours.max_value) == occupied[-1]
        bounds = [-1, 0, 1, 10_000, 60_000, 100_000, 1_000_000, 10**8, 3_600_000_000]
        counts = reference.counts()
        expected = []
        for bound in bounds:
            index = min(reference._hist.get_counts_array_index(max(bound, 0)), len(counts) - 1)
            expected.append(0 if bound < 0 else sum(counts[: index + 1]))
        assert ours.cumulative_counts(bounds, limit=reference.total_count) == expected


def test_reasoning_groups_export_ttfa_percentiles_and_token_parts():
    from tests.unit.test_reasoning import thinking_record

    plugin, live, clock = new_plugin()
    plugin.record(request(0.1, user_class="Plain"))
    for ttfa in (0.5, 3.0):
        plugin.record(thinking_record(0.1, ttfa))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector.LLMLoadCollector(plugin))
    lines = generate_latest(registry).decode().splitlines()
    thinking = 'backend="b",model="m",percentile="99",user_class="U",window="run"'
    assert f"llmload_ttfa_percentile_seconds{{{thinking}}} {exact([0.5, 3.0], 99)!r}" in lines
    assert 'llmload_reasoning_tokens_total{backend="b",model="m",part="reasoning",user_class="U"} 2.0' in lines
    assert 'llmload_reasoning_tokens_total{backend="b",model="m",part="answer",user_class="U"} 4.0' in lines
    plain = [line for line in lines if 'user_class="Plain"' in line]
    assert plain and not [line for line in plain if "ttfa" in line or "reasoning_tokens" in line]
