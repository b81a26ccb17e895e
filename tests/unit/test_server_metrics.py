"""Server metrics: parsing vLLM (new and old names) and llama.cpp pages, delta math, and the scraper."""

from __future__ import annotations

import http.server
import logging
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from llmload import collector, results
from llmload import server_metrics as sm
from llmload.options import LLMOptions
from llmload.plugin import LLMLoadPlugin
from llmload.targets import run_targets
from tests.support.environments import fire, local_environment, new_plugin, worker_environment
from tests.support.http_server import LocalHTTPServer

# A vLLM V1 page (two engines, trimmed to a few buckets), as vLLM's prometheus_client renders it.
VLLM_V1 = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="llama"}} {running}
vllm:num_requests_running{{engine="1",model_name="llama"}} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="llama"}} {waiting}
vllm:num_requests_waiting{{engine="1",model_name="llama"}} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="llama"}} {kv}
vllm:kv_cache_usage_perc{{engine="1",model_name="llama"}} 0.1
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{{engine="0",model_name="llama"}} {preemptions}
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{{engine="0",model_name="llama"}} {prompt}
vllm:prompt_tokens_total{{engine="1",model_name="llama"}} 100.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{engine="0",model_name="llama"}} {generation}
vllm:generation_tokens_total{{engine="1",model_name="llama"}} 1000.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{{engine="0",finished_reason="stop",model_name="llama"}} 12.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.1",model_name="llama"}} {t01}
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.5",model_name="llama"}} {t05}
vllm:time_to_first_token_seconds_bucket{{engine="0",le="1.0",model_name="llama"}} {t1}
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="llama"}} {tinf}
vllm:time_to_first_token_seconds_count{{engine="0",model_name="llama"}} {tinf}
vllm:time_to_first_token_seconds_sum{{engine="0",model_name="llama"}} {tsum}
vllm:time_to_first_token_seconds_bucket{{engine="1",le="0.1",model_name="llama"}} 1.0
vllm:time_to_first_token_seconds_bucket{{engine="1",le="0.5",model_name="llama"}} 1.0
vllm:time_to_first_token_seconds_bucket{{engine="1",le="1.0",model_name="llama"}} 1.0
vllm:time_to_first_token_seconds_bucket{{engine="1",le="+Inf",model_name="llama"}} 1.0
vllm:time_to_first_token_seconds_count{{engine="1",model_name="llama"}} 1.0
vllm:time_to_first_token_seconds_sum{{engine="1",model_name="llama"}} 0.05
# HELP vllm:inter_token_latency_seconds Histogram of inter-token latency in seconds.
# TYPE vllm:inter_token_latency_seconds histogram
vllm:inter_token_latency_seconds_bucket{{engine="0",le="0.01",model_name="llama"}} 0.0
vllm:inter_token_latency_seconds_bucket{{engine="0",le="0.05",model_name="llama"}} {i05}
vllm:inter_token_latency_seconds_bucket{{engine="0",le="+Inf",model_name="llama"}} {i05}
vllm:inter_token_latency_seconds_count{{engine="0",model_name="llama"}} {i05}
vllm:inter_token_latency_seconds_sum{{engine="0",model_name="llama"}} {isum}
# HELP vllm:request_queue_time_seconds Histogram of time spent in WAITING phase for request.
# TYPE vllm:request_queue_time_seconds histogram
vllm:request_queue_time_seconds_bucket{{engine="0",le="0.3",model_name="llama"}} {q03}
vllm:request_queue_time_seconds_bucket{{engine="0",le="1.0",model_name="llama"}} {qinf}
vllm:request_queue_time_seconds_bucket{{engine="0",le="+Inf",model_name="llama"}} {qinf}
vllm:request_queue_time_seconds_count{{engine="0",model_name="llama"}} {qinf}
vllm:request_queue_time_seconds_sum{{engine="0",model_name="llama"}} {qsum}
# HELP vllm:iteration_tokens_total Histogram of number of tokens per engine_step.
# TYPE vllm:iteration_tokens_total histogram
vllm:iteration_tokens_total_bucket{{engine="0",le="1.0",model_name="llama"}} 5.0
vllm:iteration_tokens_total_bucket{{engine="0",le="+Inf",model_name="llama"}} 9.0
vllm:iteration_tokens_total_count{{engine="0",model_name="llama"}} 9.0
vllm:iteration_tokens_total_sum{{engine="0",model_name="llama"}} 40.0
"""

BEFORE = dict(
    running=0,
    waiting=0,
    kv=0.0,
    preemptions=1,
    prompt=500,
    generation=2000,
    t01=2,
    t05=4,
    t1=5,
    tinf=5,
    tsum=1.5,
    i05=10,
    isum=0.2,
    q03=3,
    qinf=3,
    qsum=0.15,
)
PEAK = dict(BEFORE, running=7, waiting=3, kv=0.62)
AFTER = dict(
    running=2,
    waiting=0,
    kv=0.3,
    preemptions=4,
    prompt=1700,
    generation=7000,
    t01=4,
    t05=10,
    t1=12,
    tinf=13,
    tsum=6.5,
    i05=110,
    isum=2.2,
    q03=9,
    qinf=11,
    qsum=2.55,
)

# vLLM before 0.9: gpu_cache_usage_perc and time_per_output_token_seconds.
VLLM_OLD = """\
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{{model_name="llama"}} {kv}
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{model_name="llama"}} 2.0
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{model_name="llama"}} {generation}
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{{le="0.025",model_name="llama"}} {i1}
vllm:time_per_output_token_seconds_bucket{{le="0.05",model_name="llama"}} {i2}
vllm:time_per_output_token_seconds_bucket{{le="+Inf",model_name="llama"}} {i2}
vllm:time_per_output_token_seconds_count{{model_name="llama"}} {i2}
vllm:time_per_output_token_seconds_sum{{model_name="llama"}} {isum}
"""

LLAMACPP = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total {prompt}
# HELP llamacpp:prompt_seconds_total Prompt process time
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 1.25
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total {predicted}
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio {kv}
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing {processing}
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred {deferred}
"""


def series_of(*pages: str) -> sm.BackendSeries:
    series = sm.BackendSeries(metrics_url="http://gpu:8000/metrics")
    for at, page in enumerate(pages):
        series.add(sm.parse(page, at=float(at)))
    return series


def test_parse_vllm_v1_sums_engines():
    snap = sm.parse(VLLM_V1.format(**AFTER), at=1.0)
    assert snap.engine == "vllm"
    assert snap.counters == {"generation_tokens": 8000.0, "prompt_tokens": 1800.0, "preemptions": 4.0}
    assert snap.gauges == {"running": 3.0, "waiting": 0.0, "kv_cache_usage": 0.3}  # KV: the highest engine
    ttft = snap.histograms["ttft_s"]
    assert ttft.buckets == {0.1: 5.0, 0.5: 11.0, 1.0: 13.0, float("inf"): 14.0}
    assert (ttft.count, ttft.sum) == (14.0, 6.55)
    assert set(snap.histograms) == {"ttft_s", "itl_s", "queue_time_s"}


def test_vllm_run_summary_is_deltas_and_peaks():
    body = series_of(VLLM_V1.format(**BEFORE), VLLM_V1.format(**PEAK), VLLM_V1.format(**AFTER)).summary()
    assert body["engine"] == "vllm" and body["scrapes"] == 3
    assert body["generation_tokens"] == 5000.0 and body["prompt_tokens"] == 1200.0 and body["preemptions"] == 3.0
    assert body["peak_running"] == 8.0 and body["peak_waiting"] == 3.0 and body["peak_kv_cache_usage"] == 0.62
    # TTFT delta buckets (engine 1 did not move): le 0.1: 2, 0.5: 6, 1.0: 7, +Inf: 8; sum 5.0.
    ttft = body["ttft_s"]
    assert ttft["count"] == 8 and ttft["mean"] == pytest.approx(0.625)
    assert ttft["p50"] == pytest.approx(0.1 + 0.4 * (4 - 2) / (6 - 2))  # rank 4 inside (0.1, 0.5]
    assert ttft["p90"] == 1.0 and ttft["p99"] == 1.0  # rank past the last finite bucket: its bound
    itl = body["itl_s"]
    assert itl["count"] == 100 and itl["mean"] == pytest.approx(0.02)
    assert itl["p50"] == pytest.approx(0.01 + 0.04 * 50 / 100)
    queue = body["queue_time_s"]
    assert queue["count"] == 8 and queue["mean"] == pytest.approx(0.3)
    assert queue["p50"] == pytest.approx(0.3 * 4 / 6)  # first bucket starts at 0


def test_old_vllm_names():
    before = VLLM_OLD.format(kv=0.5, generation=10, i1=1, i2=2, isum=0.05)
    after = VLLM_OLD.format(kv=0.25, generation=110, i1=11, i2=22, isum=0.55)
    body = series_of(before, after).summary()
    assert body["engine"] == "vllm"
    assert body["peak_kv_cache_usage"] == 0.5 and body["generation_tokens"] == 100.0
    assert body["itl_s"]["count"] == 20 and body["itl_s"]["mean"] == pytest.approx(0.025)
    assert body["itl_s"]["p50"] == pytest.approx(0.025)  # rank 10 of 10 in the first bucket
    assert body["ttft_s"] is None and body["queue_time_s"] is None and body["prompt_tokens"] is None


def test_new_names_win_when_both_are_exposed():
    both = VLLM_OLD.format(kv=0.9, generation=1, i1=0, i2=0, isum=0) + (
        '# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name="llama"} 0.2\n'
    )
    assert sm.parse(both).gauges["kv_cache_usage"] == 0.2


def test_llamacpp():
    before = LLAMACPP.format(prompt=100, predicted=1000, kv=0.1, processing=0, deferred=0)
    peak = LLAMACPP.format(prompt=300, predicted=1500, kv=0.8, processing=4, deferred=2)
    after = LLAMACPP.format(prompt=400, predicted=2600, kv=0.2, processing=1, deferred=0)
    body = series_of(before, peak, after).summary()
    assert body["engine"] == "llamacpp"
    assert body["prompt_tokens"] == 300.0 and body["generation_tokens"] == 1600.0
    assert body["peak_running"] == 4.0 and body["peak_waiting"] == 2.0 and body["peak_kv_cache_usage"] == 0.8
    assert body["ttft_s"] is None and body["preemptions"] is None


def test_counter_reset_uses_the_last_value():
    assert sm.counter_delta(500.0, 120.0) == 120.0
    assert sm.counter_delta(None, 7.0) == 7.0 and sm.counter_delta(3.0, None) is None
    before = sm.parse(VLLM_V1.format(**AFTER))
    after = sm.parse(VLLM_V1.format(**BEFORE))  # restarted server: lower counts
    hist = after.histograms["ttft_s"].minus(before.histograms["ttft_s"])
    assert hist.count == after.histograms["ttft_s"].count


def test_quantile_edge_cases():
    empty = sm.Histogram(buckets={0.1: 0.0, float("inf"): 0.0})
    assert empty.quantile(0.5) is None and empty.summary()["mean"] is None
    assert sm.Histogram(buckets={0.1: 3.0}).quantile(0.5) is None  # no +Inf bucket: not a histogram
    only_inf = sm.Histogram(buckets={float("inf"): 4.0}, sum=2.0, count=4.0)
    assert only_inf.quantile(0.5) is None and only_inf.summary()["mean"] == 0.5


def test_malformed_text_raises_value_error():
    with pytest.raises(ValueError):
        sm.parse('vllm:num_requests_running{model_name="x" 1\n')


def test_irrelevant_families_are_not_parsed():
    # Only the families llmload reads are parsed: a malformed line of any other family is never looked at.
    snap = sm.parse("# TYPE python_gc gauge\npython_gc{broken 1\nvllm:num_requests_running 2\n", at=1.0)
    assert snap.gauges == {"running": 2.0} and snap.engine == "vllm"


# -- the scraper against a live local server ----------------------------------------------------------


class Pages(LocalHTTPServer):
    """A /metrics server on 127.0.0.1 whose page the test changes between scrapes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.hits = 0
        self.authorization: list[str | None] = []
        pages = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                pages.hits += 1
                pages.authorization.append(self.headers.get("Authorization"))
                body = pages.text.encode() if self.path == "/metrics" else b"not found"
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


def make_plugin(host: str, *, user_classes=(), server_metrics: bool = True) -> LLMLoadPlugin:
    environment = local_environment(
        SimpleNamespace(llm_server_metrics=server_metrics), host=host, user_classes=list(user_classes)
    )
    return new_plugin(environment, sm)


def test_scrapes_at_start_and_stop_and_attaches_to_results():
    with Pages(VLLM_V1.format(**BEFORE)) as pages:
        plugin = make_plugin(pages.url)
        metrics = plugin.extensions.get(sm.ServerMetrics)
        assert metrics is not None
        events = plugin.environment.events
        try:
            fire(events.test_start, environment=plugin.environment)
            pages.text = VLLM_V1.format(**AFTER)
            fire(events.test_stop, environment=plugin.environment)
        finally:
            plugin.supervisor.kill_all()
        assert pages.hits == 2
    summary = metrics.summary()
    assert list(summary) == [pages.url]
    assert summary[pages.url]["generation_tokens"] == 5000.0
    assert summary[pages.url]["metrics_url"] == f"{pages.url}/metrics"
    assert results.build(plugin)["server"] == summary


def test_only_with_the_option_and_never_on_a_worker():
    assert make_plugin("http://gpu:8000", server_metrics=False).extensions.get(sm.ServerMetrics) is None
    assert results.build(make_plugin("http://gpu:8000", server_metrics=False))["server"] is None
    worker = new_plugin(worker_environment(llm_server_metrics=True), sm)
    assert worker.extensions.get(sm.ServerMetrics) is None


def test_targets_from_user_classes_and_groups():
    class Gpu:
        host = "http://gpu-b:8000/"
        backend = "rtx3090"
        weight, fixed_count = 1, 0

    plugin = make_plugin("", user_classes=[Gpu])
    plugin.store.group("http://gpu-c:9000", "m", "U")
    plugin.store.group("not-a-url", "m", "U")
    found = run_targets(plugin)
    assert {label: t.base_url for label, t in found.items()} == {
        "rtx3090": "http://gpu-b:8000/",
        "http://gpu-c:9000": "http://gpu-c:9000",
    }
    assert found["rtx3090"].metrics_url == "http://gpu-b:8000/metrics"


def test_every_backend_of_a_backends_file_is_scraped_with_its_own_key(tmp_path, monkeypatch):
    with Pages(VLLM_V1.format(**BEFORE)) as gpu_a, Pages(VLLM_V1.format(**BEFORE)) as gpu_b:
        backends = tmp_path / "backends.toml"
        backends.write_text(
            f'[[backend]]\nname = "a"\nbase_url = "{gpu_a.url}"\napi_key_env = "LLMLOAD_TEST_KEY_A"\n'
            f'[[backend]]\nname = "b"\nbase_url = "{gpu_b.url}"\n'
        )
        monkeypatch.setenv("LLMLOAD_TEST_KEY_A", "sk-backend-a")
        plugin = make_plugin("http://127.0.0.1:1")
        plugin.set_options(LLMOptions(backends=str(backends), api_key="sk-not-for-backends"))
        metrics = plugin.extensions.get(sm.ServerMetrics)
        assert metrics is not None
        metrics.scrape_all()
    assert gpu_a.authorization == ["Bearer sk-backend-a"] and gpu_b.authorization == [None]
    assert set(metrics.series) == {"a", "b"} and all(s.up for s in metrics.series.values())


def test_a_restart_is_counted_and_its_deltas_are_summed():
    early, late = dict(BEFORE), dict(AFTER)
    restarted = {**BEFORE, "generation": 0}  # the server came back: its counters start again
    series = sm.BackendSeries(metrics_url="http://gpu:8000/metrics")
    assert not series.add(sm.parse(VLLM_V1.format(**early), at=0.0))
    assert not series.add(sm.parse(VLLM_V1.format(**late), at=1.0))
    assert series.add(sm.parse(VLLM_V1.format(**restarted), at=2.0))
    body = series.summary()
    assert body is not None and body["restarts"] == 1
    # 5000 before the restart, then everything the restarted server counted (its engine 1: 1000).
    assert body["generation_tokens"] == 5000.0 + 1000.0
    assert sm.restarted(sm.parse(VLLM_V1.format(**late)), sm.parse(VLLM_V1.format(**restarted)))


def test_server_series_are_re_exported_under_the_backend_label():
    with Pages(VLLM_V1.format(**AFTER)) as pages:
        plugin = make_plugin(pages.url)
        metrics = plugin.extensions.get(sm.ServerMetrics)
        assert metrics is not None
        metrics.scrape_all()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector.LLMLoadCollector(plugin))
    text = generate_latest(registry).decode()
    label = f'backend="{pages.url}"'
    assert f"llmload_server_up{{{label}}} 1.0" in text
    assert f"llmload_server_generation_tokens_total{{{label}}} 8000.0" in text
    assert f"llmload_server_requests_running{{{label}}} 3.0" in text
    assert f"llmload_server_kv_cache_usage_ratio{{{label}}} 0.3" in text
    assert f'llmload_server_ttft_seconds_bucket{{{label},le="+Inf"}} 14.0' in text
    assert f"llmload_server_restarts_total{{{label}}} 0.0" in text


def test_unreachable_or_foreign_host_is_one_warning_per_run(caplog):
    with Pages("# TYPE other gauge\nother 1\n") as pages:
        plugin = make_plugin(pages.url)
        metrics = sm.ServerMetrics(plugin, timeout_s=2)
        with caplog.at_level(logging.WARNING, logger="llmload"):
            for _ in range(3):
                metrics.scrape_all()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"llmload: cannot read server metrics from {pages.url}/metrics "
        "(no vLLM or llama.cpp metrics there); skipping it"
    ]
    assert metrics.summary() == {}

    caplog.clear()
    plugin = make_plugin(pages.url)  # the server is gone now
    metrics = sm.ServerMetrics(plugin, timeout_s=2)
    with caplog.at_level(logging.WARNING, logger="llmload"):
        metrics.scrape_all()
        metrics.scrape_all()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"llmload: cannot read server metrics from {pages.url}/metrics ("
    )
    assert plugin.supervisor.errors == []  # a scrape that fails is a warning, never a crash


def test_periodic_scrapes_run_in_a_greenlet_and_stop():
    import gevent

    with Pages(VLLM_V1.format(**BEFORE)) as pages:
        plugin = make_plugin(pages.url, server_metrics=False)
        events = plugin.environment.events
        sm.ServerMetrics(plugin, interval_s=0.05).listen(events)
        try:
            fire(events.test_start, environment=plugin.environment)
            gevent.sleep(0.3)
            fire(events.test_stop, environment=plugin.environment)
            hits = pages.hits
            gevent.sleep(0.2)
        finally:
            plugin.supervisor.kill_all()
        assert pages.hits == hits >= 4
