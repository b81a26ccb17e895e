"""llmload.figures: the one definition of each figure, checked against hand-computed values."""

import pytest

from llmload.figures import Slo, attainment, group_body, per_second, store_bodies
from llmload.metrics import MetricsStore
from llmload.record import RequestRecord


def record(*, ttft: float, e2e: float, tokens: int, start: float, error: str | None = None) -> RequestRecord:
    r = RequestRecord(
        backend="b", model="m", user_class="U", endpoint="/v1/chat/completions", t_send=0.0, start_wall=start
    )
    if error is None:
        gap = (e2e - ttft) / (tokens - 1)
        r.token_times = [ttft + i * gap for i in range(tokens)]
        r.completion_tokens = tokens
        r.t_end = e2e
    else:
        r.error_kind, r.t_end = error, e2e
    return r


def store_of(records: list[RequestRecord]) -> MetricsStore:
    store = MetricsStore(slo_ttft_s=0.5, slo_stream_rate_tps=10.0)
    for r in records:
        store.record(r)
    return store


def test_attainment_counts_failed_requests_as_misses():
    # 4 ok: 2 meet both SLOs, 1 is too slow (5 tok/s), 1 starts too late (TTFT 0.8 s); 1 failed.
    store = store_of(
        [
            record(ttft=0.1, e2e=1.0, tokens=20, start=100.0),  # 20 tok/s, TTFT 0.1: met
            record(ttft=0.2, e2e=2.0, tokens=30, start=101.0),  # 15 tok/s: met
            record(ttft=0.1, e2e=4.0, tokens=20, start=102.0),  # 5 tok/s: missed
            record(ttft=0.8, e2e=2.0, tokens=40, start=103.0),  # TTFT 0.8 > 0.5: missed
            record(ttft=0.0, e2e=0.3, tokens=0, start=104.0, error="http_5xx"),
        ]
    )
    body = group_body(store.total(), slo=Slo.of(store))
    assert body["requests"] == {"ok": 4, "failed": 1, "errors": {"http_5xx": 1}}
    assert body["slo"]["met"] == 2
    assert body["slo"]["attainment"] == pytest.approx(2 / 5)
    assert body["slo"]["attainment_of_ok"] == pytest.approx(2 / 4)
    # Window: first start 100.0 to the last end, 102.0 + 4.0 = 106.0: 6 s.
    assert body["throughput"]["window_s"] == pytest.approx(6.0)
    assert body["throughput"]["output_tokens_per_s"] == pytest.approx(110 / 6)
    assert body["throughput"]["requests_per_s"] == pytest.approx(5 / 6)
    assert body["slo"]["goodput_rps"] == pytest.approx(2 / 6)
    assert body["slo"]["ttft_s"] == 0.5 and body["slo"]["stream_rate_tps"] == 10.0


def test_skipped_arrivals_and_an_explicit_window():
    store = store_of([record(ttft=0.1, e2e=1.0, tokens=20, start=0.0) for _ in range(3)])
    body = group_body(store.total(), slo=Slo.of(store), window_s=10.0, skipped=1)
    assert body["slo"]["attainment"] == pytest.approx(3 / 4)
    assert body["slo"]["attainment_of_ok"] == pytest.approx(1.0)
    assert body["throughput"]["output_tokens_per_s"] == pytest.approx(60 / 10)


def test_no_requests_no_ratio_and_only_the_asked_distributions():
    empty = MetricsStore()
    body = group_body(empty.total(), slo=Slo(), distributions=("ttft_s",))
    assert body["slo"]["attainment"] is None and body["slo"]["attainment_of_ok"] is None
    assert body["throughput"] == {"window_s": 0.0, "output_tokens_per_s": 0.0, "requests_per_s": 0.0}
    assert "ttft_s" in body and "itl_s" not in body and "dispatch_lag_s" not in body
    assert body["ttft_s"]["count"] == 0 and body["ttft_s"]["p50"] is None


def test_helpers_and_group_labels():
    assert attainment(3, 4) == 0.75 and attainment(0, 0) is None
    assert per_second(10, 4.0) == 2.5 and per_second(10, 0.0) == 0.0
    store = store_of([record(ttft=0.1, e2e=1.0, tokens=20, start=0.0)])
    store.record(
        RequestRecord(
            backend="a", model="m", user_class="U", endpoint="/x", t_send=0, start_wall=0, error_kind="connect"
        )
    )
    bodies = store_bodies(store)
    assert [(b["backend"], b["model"], b["user_class"]) for b in bodies] == [("a", "m", "U"), ("b", "m", "U")]
    assert bodies[0]["slo"]["attainment"] == 0.0 and bodies[1]["slo"]["attainment"] == 1.0


def test_timestamps_clock_and_connect_time_per_group():
    store = MetricsStore()
    kernel = record(ttft=0.1, e2e=1.0, tokens=10, start=0.0)
    kernel.clock, kernel.connect_s = "kernel", 0.004
    user = record(ttft=0.1, e2e=1.0, tokens=10, start=0.0)
    store.record(kernel)
    body = group_body(store.total(), slo=Slo())
    assert body["timestamps"] == {"clock": "kernel", "kernel_requests": 1}
    assert body["connect_s"]["count"] == 1 and body["connect_s"]["max"] == 0.004
    store.record(user)
    body = group_body(store.total(), slo=Slo())
    assert body["timestamps"] == {"clock": "mixed", "kernel_requests": 1}
    assert group_body(store_of([user]).total(), slo=Slo())["timestamps"]["clock"] == "user"
    assert "connect_s" not in group_body(store_of([user]).total(), slo=Slo())
