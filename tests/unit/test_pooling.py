"""Embeddings, score and rerank: request bodies, answers, records, group bodies, and every rendering of them."""

from __future__ import annotations

import random

import orjson
import pytest

from llmload import pooling
from llmload.errors import ConfigError
from llmload.figures import Slo, group_body, kind_totals, main_kind, store_bodies
from llmload.metrics import MetricsStore
from llmload.record import RequestRecord
from llmload.render import compare, html, pooled, table
from llmload.simulator import pooling_api
from llmload.webui import pooled_rows, table_rows

T0 = 1_795_000_000.0


def pooled_record(kind: str, i: int, *, latency: float, inputs: int, prompt: int, failed: bool = False):
    record = RequestRecord(
        backend="http://gpu:8000",
        model="m",
        user_class={"embeddings": "Embed", "score": "Score", "rerank": "Rank"}[kind],
        endpoint=pooling.PATHS[kind],
        t_send=10.0 * i,
        start_wall=T0 + 10.0 * i,
        kind=kind,
        inputs=inputs,
        completion_tokens=0,
        prompt_tokens=None if failed else prompt,
    )
    record.t_end = record.t_send + latency
    if failed:
        record.error_kind, record.status = "http_5xx", 500
    return record


def stream_record(i: int) -> RequestRecord:
    record = RequestRecord(
        backend="http://gpu:8000",
        model="m",
        user_class="Chat",
        endpoint="/v1/chat/completions",
        t_send=10.0 * i,
        start_wall=T0 + 10.0 * i,
        prompt_tokens=20,
        completion_tokens=3,
    )
    record.token_times = [record.t_send + 0.1, record.t_send + 0.2, record.t_send + 0.25]
    record.t_end = record.t_send + 0.25
    return record


def test_request_bodies_follow_vllm():
    assert pooling.request_body("embeddings", model="m", texts=["a", "b"]) == {
        "model": "m",
        "input": ["a", "b"],
        "encoding_format": "float",
    }
    assert pooling.request_body("score", model="m", texts=["d1"], query="q") == {
        "model": "m",
        "queries": "q",
        "documents": ["d1"],
    }
    assert pooling.request_body("rerank", model="m", texts=["d1", "d2"], query="q", top_n=1)["top_n"] == 1
    assert "top_n" not in pooling.request_body("rerank", model="m", texts=["d1"], query="q")


def test_answers_are_checked_and_give_prompt_tokens():
    embeddings = {
        "data": [{"index": 0, "embedding": [0.1]}, {"index": 1, "embedding": "AAAA"}],
        "usage": {"prompt_tokens": 9},
    }
    assert pooling.read_answer("embeddings", orjson.dumps(embeddings), inputs=2) == 9
    rerank = {"results": [{"index": 1, "relevance_score": 0.9}], "usage": {"prompt_tokens": 30, "total_tokens": 30}}
    assert pooling.read_answer("rerank", orjson.dumps(rerank), inputs=3, top_n=1) == 30
    score = {"data": [{"index": 0, "score": 0.5}] * 3, "usage": {"prompt_tokens": 12}}
    assert pooling.read_answer("score", orjson.dumps(score), inputs=3) == 12
    for kind, body, inputs, message in (
        ("embeddings", b"{not json", 1, "not JSON"),
        ("embeddings", b"[1]", 1, "not a JSON object"),
        ("embeddings", orjson.dumps({"data": [{"embedding": [1.0]}]}), 2, "1 data, expected 2"),
        (
            "embeddings",
            orjson.dumps({"data": [{"embedding": []}], "usage": {"prompt_tokens": 1}}),
            1,
            "missing or empty",
        ),
        ("score", orjson.dumps({"data": [{"score": 1.0}]}), 1, "usage.prompt_tokens"),
        ("rerank", orjson.dumps({"data": []}), 1, "no 'results' list"),
        ("rerank", orjson.dumps({"results": [{}] * 3, "usage": {"prompt_tokens": 1}}), 3 + 1, "3 results, expected 4"),
    ):
        with pytest.raises(pooling.AnswerError, match=message):
            pooling.read_answer(kind, body, inputs=inputs)


def test_batch_size_needs_at_least_one_input():
    assert pooling.batch_distribution("4").draw(random.Random(0)) == 4
    assert {pooling.batch_distribution("2-3").draw(random.Random(s)) for s in range(30)} == {2, 3}
    for bad in ("0", "0-4", "uniform:min=0,max=3", "normal:mean=4,sd=2,min=0"):
        with pytest.raises(ConfigError, match="--llm-batch-size: a request needs at least 1 input"):
            pooling.batch_distribution(bad)
    with pytest.raises(ConfigError, match="--llm-batch-size"):
        pooling.batch_distribution("many")


def mixed_store() -> MetricsStore:
    store = MetricsStore(slo_stream_rate_tps=10.0)
    # Embeddings: latencies 0.1, 0.2, 0.3 s; 2, 4, 6 inputs; 20, 40, 60 prompt tokens; one failure.
    for i, latency in enumerate((0.1, 0.2, 0.3)):
        store.record(pooled_record("embeddings", i, latency=latency, inputs=2 * (i + 1), prompt=20 * (i + 1)))
    store.record(pooled_record("embeddings", 3, latency=0.05, inputs=8, prompt=0, failed=True))
    store.record(pooled_record("rerank", 0, latency=0.5, inputs=10, prompt=300))
    store.record(stream_record(0))
    store.record(stream_record(1))
    return store


def test_pooled_group_body_is_exact_and_has_no_streaming_figures():
    store = mixed_store()
    body = group_body(store.groups[("http://gpu:8000", "m", "Embed")], slo=Slo.of(store))
    assert body["kind"] == "embeddings"
    assert body["requests"] == {"ok": 3, "failed": 1, "errors": {"http_5xx": 1}}
    assert body["tokens"] == {"prompt": 120, "prompt_per_input": 10.0}
    assert body["inputs"] == {"count": 12, "per_request": 4.0}
    assert body["latency_s"]["count"] == 3
    assert body["latency_s"]["mean"] == pytest.approx(0.2)
    assert body["latency_s"]["p50"] == pytest.approx(0.2, rel=1e-3)
    assert body["latency_s"]["max"] == pytest.approx(0.3)
    # Window: first sent at T0, last finished at T0 + 30 + 0.05 s.
    assert body["throughput"]["window_s"] == pytest.approx(30.05)
    assert body["throughput"]["requests_per_s"] == pytest.approx(4 / 30.05)
    assert body["throughput"]["inputs_per_s"] == pytest.approx(12 / 30.05)
    assert body["throughput"]["prompt_tokens_per_s"] == pytest.approx(120 / 30.05)
    for streaming in ("ttft_s", "itl_s", "tpot_s", "e2e_s", "stream_rate_tps", "decode_rate_tps", "slo"):
        assert streaming not in body


def test_totals_are_per_kind_and_stream_total_is_unchanged():
    store = mixed_store()
    assert store.kinds() == ["stream", "embeddings", "rerank"]
    assert main_kind(store) == "stream"
    totals = kind_totals(store)
    assert set(totals) == {"stream", "embeddings", "rerank"}
    assert totals["stream"]["requests"]["ok"] == 2 and totals["stream"]["slo"]["attainment"] == 1.0
    assert totals["rerank"]["inputs"]["count"] == 10 and totals["embeddings"]["requests"]["failed"] == 1
    only = MetricsStore()
    only.record(pooled_record("score", 0, latency=0.1, inputs=4, prompt=40))
    assert main_kind(only) == "score" and group_body(only.total(kind=main_kind(only)), slo=Slo())["kind"] == "score"


def test_the_kind_survives_the_wire_and_a_merge():
    worker = mixed_store()
    master = MetricsStore()
    master.merge_wire(worker.to_wire())
    assert {key: g.kind for key, g in master.groups.items()} == {key: g.kind for key, g in worker.groups.items()}
    assert master.groups[("http://gpu:8000", "m", "Embed")].dists["latency_s"].count == 3
    assert master.total(kind="embeddings").counters["inputs"] == 12


def mixed_doc() -> dict:
    store = mixed_store()
    return {
        "schema": "llmload.results/2",
        "run": {"duration_s": 30.0, "peak_users": 3, "backends": [{"name": "http://gpu:8000", "price_per_hour": 2.0}]},
        "groups": store_bodies(store),
        "total": group_body(store.total(kind=main_kind(store)), slo=Slo.of(store)),
        "kind_totals": kind_totals(store),
    }


def test_console_table_shows_each_kind_with_its_columns():
    text = table.format_table(mixed_doc())
    token_table, pooled_table = text.split("Embeddings, score and rerank", 1)
    assert "Chat" in token_table and "Embed" not in token_table and "Rank" not in token_table
    assert "latency p50" in pooled_table and "TTFT" not in pooled_table
    embed_line = next(line for line in pooled_table.splitlines() if "Embed" in line)
    assert "embeddings" in embed_line and " 200." in embed_line  # latency p50 in ms
    assert "Total" not in pooled_table  # one group per kind: no total row
    only = {**mixed_doc()}
    only["groups"] = [g for g in only["groups"] if g["kind"] == "rerank"]
    del only["kind_totals"]
    only["total"] = {key: value for key, value in only["groups"][0].items() if key not in ("backend", "model")}
    text = table.format_table(only)
    assert "TTFT" not in text and "rerank" in text


def test_report_and_compare_show_pooled_groups_apart():
    doc = mixed_doc()
    page = html.build_html(doc)
    assert '<section id="pooled">' in page and 'data-key="latency_s.p50"' in page
    summary = page.split('<section id="summary">', 1)[1].split("</section>", 1)[0]
    assert "Chat" in summary and "Embed" not in summary
    rows = compare.rows_from_results(doc, source="run.json")
    by_kind = {row.kind: row for row in rows}
    assert set(by_kind) == {"stream", "embeddings", "rerank"}
    rerank = by_kind["rerank"]
    assert rerank.prompt_tokens_per_s == pytest.approx(
        next(g for g in doc["groups"] if g["kind"] == "rerank")["throughput"]["prompt_tokens_per_s"]
    )
    assert rerank.cost_per_million_prompt_tokens == pytest.approx(2.0 / (rerank.prompt_tokens_per_s * 3600) * 1e6)
    markdown = compare.to_markdown(rows)
    assert "## Backend comparison" in markdown and "## Embeddings, score and rerank" in markdown
    assert "rerank" in markdown.split("## Embeddings, score and rerank", 1)[1]
    assert ",rerank," in compare.to_csv(rows)


def test_files_without_kinds_read_as_streamed():
    body = {"requests": {"ok": 1}}
    assert pooled.is_streamed(body) and not pooled.pooled_groups({"groups": [body]})
    assert pooled.streamed_view({"groups": [body], "total": body}) == {"groups": [body], "total": body}


def test_web_ui_tabs_split_streamed_and_pooled_groups():
    store = mixed_store()
    assert [row["group"] for row in table_rows(store)] == ["http://gpu:8000 · m · Chat"]
    rows = {row["group"]: row for row in pooled_rows(store)}
    embed = rows["http://gpu:8000 · m · Embed"]
    body = group_body(store.groups[("http://gpu:8000", "m", "Embed")], slo=Slo())
    assert embed["kind"] == "embeddings" and embed["requests"] == 4 and embed["failures"] == 1
    assert embed["latency_p50_ms"] == round(body["latency_s"]["p50"] * 1000, 1)
    assert embed["inputs_per_s"] == round(body["throughput"]["inputs_per_s"], 1)
    assert embed["prompt_tokens_per_s"] == round(body["throughput"]["prompt_tokens_per_s"], 1)
    assert "Total embeddings" not in rows  # one group of the kind


def test_simulator_counts_pooling_tokens_and_answers_in_vllm_layouts():
    req = pooling_api.parse_pool_request(
        "embeddings", orjson.dumps({"input": ["one two", "three"]}), served_model="m", max_model_len=100
    )
    assert req.tokens == [3, 2] and req.prompt_tokens == 5
    answer = orjson.loads(pooling_api.pool_response(req))
    assert answer["usage"]["prompt_tokens"] == 5 and len(answer["data"]) == 2
    assert sum(v * v for v in answer["data"][0]["embedding"]) == pytest.approx(1.0)
    rerank = pooling_api.parse_pool_request(
        "rerank",
        orjson.dumps({"query": "why", "documents": ["a b", "c", "d e f"], "top_n": 2}),
        served_model="m",
        max_model_len=100,
    )
    assert rerank.tokens == [4, 3, 5]
    ranked = orjson.loads(pooling_api.pool_response(rerank))["results"]
    assert len(ranked) == 2 and ranked[0]["relevance_score"] >= ranked[1]["relevance_score"]
    assert pooling.read_answer("rerank", pooling_api.pool_response(rerank), inputs=3, top_n=2) == 12
    score = pooling_api.parse_pool_request(
        "score", orjson.dumps({"text_1": "q", "text_2": ["x", "y z"]}), served_model="m", max_model_len=100
    )
    assert score.tokens == [3, 4]
    for body, status in (
        ({"input": []}, 400),
        ({"input": "x", "model": "other"}, 404),
        ({"queries": ["a", "b"], "documents": ["x"]}, 400),
        ({"input": "word " * 200}, 400),
    ):
        kind = "score" if "queries" in body else "embeddings"
        with pytest.raises(pooling_api.ApiError) as info:
            pooling_api.parse_pool_request(kind, orjson.dumps(body), served_model="m", max_model_len=100)
        assert info.value.status == status
