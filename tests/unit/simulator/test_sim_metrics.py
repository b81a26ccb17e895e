"""The /metrics registry: vLLM V1 names, labels, buckets and exact counts."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from llmload.simulator.scheduler import SimRequest
from llmload.simulator.vllm_metrics import SimMetrics, build_1_2_5_buckets

LABELS = {"model_name": "m", "engine": "0"}


def samples(metrics: SimMetrics) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for s in fam.samples:
            key = s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
            out[key] = s.value
    return out


def finished_request(arrival: float, n: int) -> SimRequest:
    r = SimRequest(rid=1, prompt_tokens=40, n_target=n, finish_reason="length", arrival=arrival)
    r.queued_at, r.scheduled_at, r.first_token_at, r.last_token_at, r.generated = (
        arrival,
        arrival + 0.1,
        arrival + 0.3,
        arrival + 1.3,
        n,
    )
    return r


def test_build_1_2_5_buckets():
    assert build_1_2_5_buckets(100) == (1, 2, 5, 10, 20, 50, 100)
    assert build_1_2_5_buckets(4096)[-1] == 2000


def test_exposition_names_labels_and_exact_counts():
    m = SimMetrics(model_name="m", max_model_len=4096, gauges=lambda: (3, 2, 0.25))
    r = finished_request(10.0, 11)
    m.first_token(r)
    m.itl(0.1, 10)
    m.generation_tokens += 11
    m.finished(r, "length", 11.5)
    m.preemptions += 1
    s = samples(m)
    lab = "{engine=0,model_name=m}"
    assert s["vllm:num_requests_running" + lab] == 3
    assert s["vllm:num_requests_waiting" + lab] == 2
    assert s["vllm:kv_cache_usage_perc" + lab] == 0.25
    assert s["vllm:generation_tokens_total" + lab] == 11
    assert s["vllm:prompt_tokens_total" + lab] == 40
    assert s["vllm:num_preemptions_total" + lab] == 1
    assert s["vllm:request_success_total{engine=0,finished_reason=length,model_name=m}"] == 1
    assert s["vllm:request_success_total{engine=0,finished_reason=abort,model_name=m}"] == 0
    assert s["vllm:time_to_first_token_seconds_count" + lab] == 1
    assert abs(s["vllm:time_to_first_token_seconds_sum" + lab] - 0.3) < 1e-9
    assert s["vllm:time_to_first_token_seconds_bucket{engine=0,le=0.25,model_name=m}"] == 0
    assert s["vllm:time_to_first_token_seconds_bucket{engine=0,le=0.5,model_name=m}"] == 1
    assert s["vllm:inter_token_latency_seconds_count" + lab] == 10
    assert abs(s["vllm:request_time_per_output_token_seconds_sum" + lab] - 0.1) < 1e-9
    assert abs(s["vllm:e2e_request_latency_seconds_sum" + lab] - 1.5) < 1e-9
    assert abs(s["vllm:request_queue_time_seconds_sum" + lab] - 0.1) < 1e-9
    assert abs(s["vllm:request_prefill_time_seconds_sum" + lab] - 0.2) < 1e-9
    assert abs(s["vllm:request_decode_time_seconds_sum" + lab] - 1.0) < 1e-9
    assert s["vllm:request_prompt_tokens_sum" + lab] == 40
    assert s["vllm:request_generation_tokens_bucket{engine=0,le=20.0,model_name=m}"] == 1


def test_every_required_family_is_exposed_with_vllm_buckets():
    text = SimMetrics(model_name="m", max_model_len=131072).render().decode()
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
        "vllm:num_preemptions_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:request_time_per_output_token_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:request_queue_time_seconds_bucket",
        "vllm:request_prefill_time_seconds_bucket",
        "vllm:request_decode_time_seconds_bucket",
        "vllm:request_prompt_tokens_bucket",
        "vllm:request_generation_tokens_bucket",
    ):
        assert re.search(rf"^{re.escape(name)}\{{", text, re.M), name
    les = re.findall(r'vllm:time_to_first_token_seconds_bucket\{engine="0",le="([^"]+)"', text)
    assert les[:3] == ["0.001", "0.005", "0.01"] and les[-2:] == ["2560.0", "+Inf"]


def test_registry_is_private():
    from prometheus_client import REGISTRY

    m = SimMetrics(model_name="m", max_model_len=100)
    assert m.registry is not REGISTRY
    assert "vllm:generation_tokens" not in {n for n in REGISTRY._names_to_collectors}
