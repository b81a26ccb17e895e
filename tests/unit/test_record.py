"""Per-request metric formulas against hand-computed values (field notes section 1)."""

import pytest

from llmload.record import RequestRecord


def make(token_times, *, t_send=10.0, completion=None, error=None, t_intended=None):
    record = RequestRecord(
        backend="b", model="m", user_class="U", endpoint="/v1/chat/completions", t_send=t_send, start_wall=0.0
    )
    record.token_times = list(token_times)
    record.completion_tokens = completion
    record.error_kind = error
    record.t_intended = t_intended
    return record


def test_formulas_with_server_usage():
    # first token 0.5 s after send, then 4 more events 0.1 s apart; the server reports 5 tokens
    record = make([10.5, 10.6, 10.7, 10.8, 10.9], completion=5)
    assert record.ttft_s == pytest.approx(0.5)
    assert record.itl_s == pytest.approx([0.1, 0.1, 0.1, 0.1])
    assert record.e2e_s == pytest.approx(0.9)
    assert record.tpot_s == pytest.approx((0.9 - 0.5) / 4)
    assert record.stream_rate_tps == pytest.approx(5 / 0.9)
    assert record.decode_rate_tps == pytest.approx(4 / 0.4)
    assert record.output_tokens == 5 and not record.output_estimated


def test_usage_counts_win_over_event_counts():
    # 3 events carried 6 tokens (e.g. speculative decoding): rates use the server's count
    record = make([11.0, 11.5, 12.0], completion=6)
    assert record.output_tokens == 6
    assert record.stream_rate_tps == pytest.approx(6 / 2.0)
    assert record.tpot_s == pytest.approx(1.0 / 5)
    assert record.itl_s == pytest.approx([0.5, 0.5])


def test_estimated_output_counts_events():
    record = make([10.2, 10.4], completion=None)
    assert record.output_tokens == 2 and record.output_estimated


def test_single_token_has_no_tpot_or_decode_rate():
    record = make([10.25], completion=1)
    assert record.ttft_s == pytest.approx(0.25) and record.e2e_s == pytest.approx(0.25)
    assert record.tpot_s is None and record.decode_rate_tps is None
    assert record.stream_rate_tps == pytest.approx(4.0)
    assert record.itl_s == []


def test_no_tokens_has_no_latencies():
    record = make([], completion=0)
    assert record.ttft_s is None and record.e2e_s is None and record.stream_rate_tps is None


def test_slo_checks_every_threshold():
    record = make([10.5, 10.6, 10.7, 10.8, 10.9], completion=5)  # TTFT 0.5 s, 5.56 tok/s
    assert record.meets_slo(ttft_s=None, stream_rate_tps=None)
    assert record.meets_slo(ttft_s=0.5, stream_rate_tps=5.0)
    assert not record.meets_slo(ttft_s=0.4, stream_rate_tps=None)
    assert not record.meets_slo(ttft_s=None, stream_rate_tps=10.0)
    assert not make([10.5], completion=1, error="disconnect").meets_slo(ttft_s=None, stream_rate_tps=None)


def test_dispatch_lag():
    assert make([10.5], t_intended=9.75).dispatch_lag_s == pytest.approx(0.25)
    assert make([10.5]).dispatch_lag_s is None
