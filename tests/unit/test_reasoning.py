"""Reasoning models: attribution of thinking and answer tokens per event, and the figures built on it.

Hand-computed cases: each feeds SSE event payloads to ``StreamReader`` at known times and
checks the record's TTFA, reasoning time, reasoning/answer tokens (exact or estimated) and
the answer's stream rate (docs/metrics.md, "Reasoning models").
"""

from __future__ import annotations

import orjson
import pytest

from llmload.figures import Slo, group_body
from llmload.metrics import MetricsStore
from llmload.record import RequestRecord
from llmload.stream import StreamReader


def event(delta: dict | None = None, *, completion: int | None = None, finish: str | None = None, **extra) -> bytes:
    obj: dict = {}
    if delta is not None:
        obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    else:
        obj["choices"] = []
    if completion is not None:
        obj["usage"] = {"prompt_tokens": 7, "completion_tokens": completion, **extra}
    return orjson.dumps(obj)


def read(events: list[tuple[float, bytes]], *, keep_text: bool = False) -> RequestRecord:
    record = RequestRecord(
        backend="b", model="m", user_class="U", endpoint="/v1/chat/completions", t_send=10.0, start_wall=1000.0
    )
    reader = StreamReader(record, chat=True, keep_text=keep_text)
    for t, data in events:
        assert reader.on_event(data, t)
    reader.on_event(b"[DONE]", events[-1][0])
    reader.finish()
    record.t_end = events[-1][0]
    return record


def test_continuous_usage_attributes_thinking_exactly():
    # 3 thinking tokens (one event carries 2), then 2 answer tokens; the reasoning field as vLLM now names it
    record = read(
        [
            (10.0, event({"role": "assistant", "content": ""}, completion=0)),
            (10.5, event({"reasoning": "Let"}, completion=1)),
            (11.0, event({"reasoning": " me think"}, completion=3)),
            (14.0, event({"content": "Yes"}, completion=4)),
            (14.5, event({"content": "."}, completion=5, finish="stop")),
            (14.5, event(completion=5)),
        ],
        keep_text=True,
    )
    assert record.ttft_s == 0.5 and record.ttfa_s == 4.0 and record.reasoning_s == 3.5
    assert record.thinks and not record.reasoning_estimated
    assert (record.reasoning_tokens, record.answer_tokens, record.output_tokens) == (3, 2, 5)
    assert record.answer_stream_rate_tps == pytest.approx(2 / 4.5)  # answer tokens over E2E (4.5 s)
    assert record.text == "Yes."  # the kept text is the answer only (it goes back into a conversation)


def test_reasoning_content_field_and_no_usage_are_counted_per_event_as_estimated():
    record = read(
        [
            (10.1, event({"reasoning_content": "a"})),
            (10.2, event({"reasoning_content": "b"})),
            (10.4, event({"content": "c"})),
            (10.6, event({"content": "d"}, finish="stop")),
        ]
    )
    assert record.reasoning_estimated and record.output_estimated
    assert (record.reasoning_tokens, record.answer_tokens) == (2, 2)
    assert record.ttfa_s == pytest.approx(0.4) and record.reasoning_s == pytest.approx(0.3)


def test_reported_reasoning_tokens_win():
    details = {"completion_tokens_details": {"reasoning_tokens": 40}}
    record = read(
        [
            (10.1, event({"reasoning": "x"})),
            (10.3, event({"content": "y"}, finish="stop")),
            (10.3, event(completion=50, **details)),
        ]
    )
    assert not record.reasoning_estimated
    assert (record.reasoning_tokens, record.answer_tokens) == (40, 10)


def test_an_event_with_both_texts_is_split_by_length_and_estimated():
    # The end of thinking: 4 tokens in one event, reasoning text 6 chars and answer text 2 chars.
    record = read(
        [
            (10.1, event({"reasoning": "abc"}, completion=2)),
            (10.2, event({"reasoning": "thinks", "content": "Hi"}, completion=6)),
            (10.3, event({"content": "!"}, completion=7, finish="stop")),
        ]
    )
    assert record.reasoning_estimated
    assert record.reasoning_tokens == 5  # 2 + 4 * 6/8 = 5
    assert record.answer_tokens == 2
    assert record.ttfa_s == pytest.approx(0.2)


def test_tool_call_is_an_answer_and_plain_models_do_not_think():
    record = read(
        [
            (10.1, event({"reasoning": "call it"}, completion=1)),
            (10.2, event({"tool_calls": [{"index": 0, "function": {"name": "f"}}]}, completion=2, finish="tool_calls")),
        ]
    )
    assert record.answer_at == 1 and record.reasoning_tokens == 1 and record.answer_tokens == 1
    plain = read([(10.1, event({"content": "a"}, completion=1)), (10.2, event({"content": "b"}, completion=2))])
    assert not plain.thinks and plain.ttfa_s == pytest.approx(0.1) and plain.reasoning_s is None
    assert plain.reasoning_tokens == 0 and plain.answer_tokens == 2


def test_thinking_cut_by_max_tokens_has_no_answer():
    record = read([(10.1, event({"reasoning": "a"}, completion=1)), (10.3, event({"reasoning": "b"}, completion=2))])
    assert record.ttfa_s is None and record.answer_stream_rate_tps is None
    assert record.reasoning_s == pytest.approx(0.2) and record.answer_tokens == 0


def thinking_record(ttft: float, ttfa: float) -> RequestRecord:
    return read(
        [
            (10.0 + ttft, event({"reasoning": "r"}, completion=1)),
            (10.0 + ttfa, event({"content": "a"}, completion=2)),
            (10.0 + ttfa + 0.1, event({"content": "b"}, completion=3, finish="stop")),
        ]
    )


def test_ttft_slo_on_the_answer_and_the_group_figures():
    store = MetricsStore(slo_ttft_s=1.0, slo_stream_rate_tps=None)
    store.slo_ttft_of = "answer"
    store.record(thinking_record(0.1, 0.5))  # answers in 0.5 s: met
    store.record(thinking_record(0.1, 3.0))  # first token fast, answer after 3 s: missed
    group = next(iter(store.groups.values()))
    assert group.counters["slo_met"] == 1
    body = group_body(group, slo=Slo.of(store))
    assert body["slo"]["ttft_of"] == "answer" and body["slo"]["attainment"] == 0.5
    reasoning = body["reasoning"]
    assert reasoning["requests"] == 2
    assert reasoning["tokens"] == {"reasoning": 2, "answer": 4, "source": "usage", "estimated_requests": 0}
    assert reasoning["ttfa_s"]["max"] == pytest.approx(3.0) and reasoning["reasoning_s"]["min"] == pytest.approx(0.4)
    any_store = MetricsStore(slo_ttft_s=1.0, slo_stream_rate_tps=None)  # on the first token both meet it
    for ttfa in (0.5, 3.0):
        any_store.record(thinking_record(0.1, ttfa))
    assert next(iter(any_store.groups.values())).counters["slo_met"] == 2


def test_groups_without_thinking_have_no_reasoning_section():
    store = MetricsStore()
    store.record(read([(10.1, event({"content": "a"}, completion=1))]))
    assert "reasoning" not in group_body(next(iter(store.groups.values())), slo=Slo.of(store))


def reasoning_doc() -> dict:
    store = MetricsStore(slo_ttft_s=1.0)
    store.slo_ttft_of = "answer"
    store.record(thinking_record(0.1, 0.5))
    store.record(thinking_record(0.1, 3.0))
    body = group_body(next(iter(store.groups.values())), slo=Slo.of(store))
    return {
        "groups": [{"backend": "http://u:secret@gpu-a:8000", "model": "m", "user_class": "U", **body}],
        "total": body,
    }


def test_console_and_report_show_the_reasoning_figures_of_groups_that_thought():
    from llmload.render import reasoning
    from llmload.render.text import slo_sentence

    doc = reasoning_doc()
    lines = reasoning.text_lines(doc)
    row = lines[-1].split()
    # group ("backend · model · class"), requests, TTFA p50/p99, reasoning p50, think/answer tok, rate, source
    assert row[-8:] == ["2", "500.2", "3000.3", "400.1", "1.0", "2.0", "0.6", "usage"]
    assert "secret" not in "\n".join(lines)
    section = reasoning.html_section(doc)
    assert 'data-key="reasoning.ttfa_s.p99"' in section and ">3000.3<" in section and "secret" not in section
    assert slo_sentence(doc["total"]["slo"]) == "TTFA (first answer token) <= 1 s"
    plain = {"groups": [], "total": {}}
    assert reasoning.text_lines(plain) == [] and reasoning.html_section(plain) == ""
