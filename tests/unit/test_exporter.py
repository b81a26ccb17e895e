"""Prometheus exporter: exact exposition of a known store, options, and the server's lifecycle."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from types import SimpleNamespace

import pytest
from locust.env import Environment
from locust.event import Events
from prometheus_client import CollectorRegistry, generate_latest

from llmload import collector, exporter, selfcheck, series
from llmload.distribution import Distribution
from llmload.errors import ConfigError
from llmload.options import LLMOptions
from llmload.plugin import LLMLoadPlugin
from llmload.record import RequestRecord
from llmload.render.text import redact_url
from tests.support.environments import local_environment, new_plugin

BACKEND = "http://user:hunter2@gpu-a:8000"
LABELS = 'backend="http://gpu-a:8000",model="m",user_class="Chat"'


def record(times=(), *, error=None, user_class="Chat", prompt=7):
    return RequestRecord(
        backend=BACKEND,
        model="m",
        user_class=user_class,
        endpoint="/v1/chat/completions",
        t_send=0.0,
        start_wall=100.0,
        token_times=list(times),
        t_end=times[-1] if times else 0.0,
        completion_tokens=len(times) if error is None else None,
        prompt_tokens=prompt,
        error_kind=error,
    )


@pytest.fixture
def plugin():
    environment = Environment(events=Events())
    environment.create_local_runner()
    plugin = LLMLoadPlugin(environment).register()
    # The options also set the store's SLO (it applies to requests recorded from then on).
    plugin.set_options(LLMOptions(api_key="sk-do-not-leak", slo_ttft_s=0.5, slo_stream_rate_tps=6.0))
    # Binary-exact times: TTFT 0.125 and 0.25 s; ITL 0.125 x2 and 0.25 x2; E2E 0.375 and 0.75 s; 8 and 4 tok/s.
    plugin.record(record((0.125, 0.25, 0.375)))
    plugin.record(record((0.25, 0.5, 0.75)))
    plugin.record(record(error="http_429"))
    # Known load-generator gauges, delivered the way the plugin receives a process's gauges: a report
    # (no token metrics in it) through Locust's worker_report event.
    gauges = {"in_flight": 2.0, "cpu_percent": 12.5}
    environment.events.worker_report.fire(client_id="local", data={"llmload": {"groups": [], "gauges": gauges}})
    assert plugin.generator_gauges == {"local": gauges}
    yield plugin
    environment.runner.quit()


def exposition(plugin, **kwargs) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector.LLMLoadCollector(plugin, **kwargs))
    return generate_latest(registry).decode()


def lines_of(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def with_le(le: str) -> str:
    return LABELS.replace(",model", f',le="{le}",model')


def test_ttft_histogram_exact(plugin):
    text = exposition(plugin)
    # 0.125 s lands in le=0.2, 0.25 s in le=0.5.
    counts = [0] * 5 + [1] + [2] * 9
    expected = [
        f"llmload_ttft_seconds_bucket{{{with_le(series.floatToGoString(le))}}} {float(n)}"
        for le, n in zip(series.TTFT_BUCKETS, counts, strict=True)
    ]
    expected += [
        f"llmload_ttft_seconds_bucket{{{with_le('+Inf')}}} 2.0",
        f"llmload_ttft_seconds_count{{{LABELS}}} 2.0",
        f"llmload_ttft_seconds_sum{{{LABELS}}} 0.375",
    ]
    assert lines_of(text, "llmload_ttft_seconds_") == expected
    assert (
        expected[5]
        == 'llmload_ttft_seconds_bucket{backend="http://gpu-a:8000",le="0.2",model="m",user_class="Chat"} 1.0'
    )
    assert "# TYPE llmload_ttft_seconds histogram" in text


def test_other_histograms_counts_and_sums(plugin):
    text = exposition(plugin)

    def sample(name: str, le: str | None = None) -> str:
        labels = LABELS if le is None else with_le(le)
        line = next(x for x in text.splitlines() if x.startswith(f"{name}{{{labels}}} "))
        return line.rsplit(" ", 1)[1]

    assert sample("llmload_itl_seconds_bucket", "0.1") == "0.0"
    assert sample("llmload_itl_seconds_bucket", "0.2") == "2.0"
    assert sample("llmload_itl_seconds_bucket", "0.5") == "4.0"
    assert sample("llmload_itl_seconds_count") == "4.0" and sample("llmload_itl_seconds_sum") == "0.75"
    assert sample("llmload_e2e_seconds_bucket", "0.5") == "1.0" and sample("llmload_e2e_seconds_sum") == "1.125"
    # TPOT and stream rate have exact percentile gauges only (the series budget).
    assert "llmload_tpot_seconds" not in text and "llmload_stream_rate_tokens_per_second" not in text


def test_counters_and_gauges_exact(plugin):
    text = exposition(plugin)
    kinds = [
        "http_429",
        "http_4xx",
        "http_5xx",
        "connect",
        "timeout",
        "disconnect",
        "malformed_event",
        "incomplete_stream",
    ]
    assert lines_of(text, "llmload_requests_total") == [
        'llmload_requests_total{backend="http://gpu-a:8000",error="",model="m",outcome="ok",user_class="Chat"} 2.0',
        *(
            f'llmload_requests_total{{backend="http://gpu-a:8000",error="{kind}",model="m",outcome="failed",'
            f'user_class="Chat"}} {1.0 if kind == "http_429" else 0.0}'
            for kind in kinds
        ),
    ]
    assert lines_of(text, "llmload_output_tokens_total") == [f"llmload_output_tokens_total{{{LABELS}}} 6.0"]
    assert lines_of(text, "llmload_prompt_tokens_total") == [f"llmload_prompt_tokens_total{{{LABELS}}} 21.0"]
    # 0.125 s TTFT and 8 tok/s meets (TTFT <= 0.5, rate >= 6); 4 tok/s does not.
    assert lines_of(text, "llmload_slo_met_requests_total") == [f"llmload_slo_met_requests_total{{{LABELS}}} 1.0"]
    # Per SLO: both TTFTs are <= 0.5 s; only the 8 tok/s request meets the stream rate.
    assert lines_of(text, "llmload_slo_ttft_met_requests_total") == [
        f"llmload_slo_ttft_met_requests_total{{{LABELS}}} 2.0"
    ]
    assert lines_of(text, "llmload_slo_stream_rate_met_requests_total") == [
        f"llmload_slo_stream_rate_met_requests_total{{{LABELS}}} 1.0"
    ]
    assert lines_of(text, "llmload_slo_objective_ratio") == ["llmload_slo_objective_ratio 0.99"]
    assert lines_of(text, "llmload_workers_missing") == ["llmload_workers_missing 0.0"]
    assert lines_of(text, "llmload_users ") == ["llmload_users 0.0"]
    assert lines_of(text, "llmload_workers ") == ["llmload_workers 1.0"]
    assert lines_of(text, "llmload_in_flight_requests") == ['llmload_in_flight_requests{worker="local"} 2.0']
    assert lines_of(text, "llmload_generator_cpu_percent") == ['llmload_generator_cpu_percent{worker="local"} 12.5']
    assert lines_of(text, "llmload_slo_ttft_seconds") == ["llmload_slo_ttft_seconds 0.5"]
    assert lines_of(text, "llmload_slo_stream_rate_tokens_per_second") == [
        "llmload_slo_stream_rate_tokens_per_second 6.0"
    ]
    assert lines_of(text, "llmload_info") == [f'llmload_info{{version="{collector.__version__}"}} 1.0']


def test_no_secret_in_the_exposition(plugin):
    text = exposition(plugin)
    assert "sk-do-not-leak" not in text and "hunter2" not in text and "user:" not in text


def test_unset_slo_has_no_threshold_series(plugin):
    plugin.set_options(LLMOptions(slo_ttft_s=None, slo_stream_rate_tps=None))
    text = exposition(plugin)
    assert "llmload_slo_ttft_seconds" not in text and "llmload_slo_stream_rate_tokens_per_second" not in text


def test_group_cap(plugin, caplog):
    for i in range(5):
        plugin.record(record((0.125,), user_class=f"C{i}"))
    text = exposition(plugin, max_groups=3)
    classes = {line.split('user_class="')[1].split('"')[0] for line in lines_of(text, "llmload_output_tokens_total")}
    assert classes == {"C0", "C1", "C2"}
    assert "Prometheus gets the first 3" in caplog.text


def test_empty_store_exposes_no_group_series(plugin):
    plugin.store.reset()
    text = exposition(plugin)
    assert not lines_of(text, "llmload_ttft_seconds_bucket") and "# TYPE llmload_requests_total counter" in text


def test_buckets_are_cumulative_and_end_at_the_exact_count():
    dist = Distribution(scale=1e6, highest=3_600_000_000)
    values = [0.0004, 0.0005, 0.001, 0.0011, 0.05, 0.2, 9.0, 99.0]
    dist.record_many(values)
    buckets = series.cumulative_buckets(dist, series.ITL_BUCKETS)
    counts = [n for _, n in buckets]
    assert counts == sorted(counts) and buckets[-1] == ("+Inf", 8.0)
    for le, n in buckets[:-1]:
        assert n == sum(v <= float(le) for v in values), le


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make prometheus)")
def test_promtool_finds_nothing_to_lint(plugin):
    result = subprocess.run(["promtool", "check", "metrics"], input=exposition(plugin), capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# -- options and lifecycle ----------------------------------------------------------------------------


def parsed(**kwargs):
    base = {
        "llm_prometheus_port": "",
        "llm_prometheus_host": "127.0.0.1",
        "llm_prometheus_grace": "10",
        "llm_server_metrics": False,
    }
    base.update(kwargs)
    return SimpleNamespace(**base)


def test_options_parse_and_one_line_errors():
    assert exporter.ExporterOptions.from_parsed(parsed()).port is None
    opts = exporter.ExporterOptions.from_parsed(parsed(llm_prometheus_port="9646", llm_prometheus_grace="2.5"))
    assert (opts.port, opts.host, opts.grace_s) == (9646, "127.0.0.1", 2.5)
    with pytest.raises(ConfigError) as info:
        exporter.ExporterOptions.from_parsed(parsed(llm_prometheus_port="http"))
    assert str(info.value) == "--llm-prometheus-port: expected a port 0-65535 (0 = any free port), got 'http'"
    with pytest.raises(ConfigError, match="--llm-prometheus-grace: expected seconds between 0 and 3600"):
        exporter.ExporterOptions.from_parsed(parsed(llm_prometheus_grace="-1"))
    assert exporter.ExporterOptions.from_parsed(parsed()).buckets == "coarse"
    assert exporter.ExporterOptions.from_parsed(parsed(llm_prometheus_buckets="Fine")).buckets == "fine"
    with pytest.raises(ConfigError) as info:
        exporter.ExporterOptions.from_parsed(parsed(llm_prometheus_buckets="2%"))
    assert str(info.value) == "--llm-prometheus-buckets: expected coarse or fine, got '2%'"


def test_fine_buckets_are_at_most_1_25_apart_and_count_exactly(plugin):
    for name, bounds in series.BUCKET_SCHEMES["fine"].items():
        coarse = series.BUCKET_SCHEMES["coarse"][name]
        assert bounds[0] == coarse[0] and bounds[-1] >= coarse[-1], name
        assert all(1 < b / a <= 1.25 + 1e-12 for a, b in zip(bounds, bounds[1:], strict=False)), name
    text = exposition(plugin, buckets="fine")
    buckets = lines_of(text, "llmload_ttft_seconds_bucket")
    assert len(buckets) == len(series.BUCKET_SCHEMES["fine"]["ttft_s"]) + 1
    # TTFTs 0.125 and 0.25 s: counted from the first bound at or above each.
    for line, le in zip(buckets[:-1], series.BUCKET_SCHEMES["fine"]["ttft_s"], strict=True):
        expected = (le >= 0.125) + (le >= 0.25)
        assert line.endswith(f" {float(expected)}"), line


def test_start_serve_and_stop(plugin):
    handle = exporter.start_exporter(plugin, port=0)
    try:
        assert handle.port > 0 and handle.url == f"http://127.0.0.1:{handle.port}/metrics"
        with urllib.request.urlopen(handle.url, timeout=5) as response:
            body = response.read().decode()
        assert "llmload_ttft_seconds_bucket" in body and "python_gc_objects" not in body  # own registry only
    finally:
        handle.stop()
    handle.stop()  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(handle.url, timeout=2)


def test_register_starts_on_master_or_local_and_stops_after_quit_grace():
    environment = Environment(events=Events(), parsed_options=parsed(llm_prometheus_port="0", llm_prometheus_grace="0"))
    environment.create_local_runner()
    plugin = LLMLoadPlugin(environment).register()
    exporter.register(environment, plugin)
    exp = plugin.extensions.get(exporter.Exporter)
    assert exp is not None and exp.handle is not None
    url = exp.handle.url
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
    environment.events.quit.fire(exit_code=0)
    assert exp.handle is None
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
    environment.runner.quit()


def test_register_does_nothing_on_a_worker_or_without_the_option():
    for options in (parsed(llm_prometheus_port="0", worker=True), parsed()):
        environment = Environment(events=Events(), parsed_options=options)
        plugin = LLMLoadPlugin(environment).register()
        exporter.register(environment, plugin)
        # No exporter (nor anything else) registered with the plugin.
        assert plugin.extensions.get(exporter.Exporter) is None and list(plugin.extensions) == []


def test_port_in_use_exits_with_one_line(capsys):
    handle = exporter.start_exporter(SimpleNamespace(), port=0)
    try:
        environment = Environment(events=Events(), parsed_options=parsed(llm_prometheus_port=str(handle.port)))
        plugin = LLMLoadPlugin(environment).register()
        with pytest.raises(SystemExit) as info:
            exporter.register(environment, plugin)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"llmload: error: --llm-prometheus-port: cannot listen on 127.0.0.1:{handle.port} (")
        assert err.count("\n") == 1
    finally:
        handle.stop()


def test_redact_url():
    assert redact_url("https://u:p@h:1/v1") == "https://h:1/v1"
    assert redact_url("gpu-a") == "gpu-a"


def test_quit_keeps_serving_for_the_grace_period():
    import gevent

    environment = Environment(
        events=Events(), parsed_options=parsed(llm_prometheus_port="0", llm_prometheus_grace="0.5")
    )
    environment.create_local_runner()
    plugin = LLMLoadPlugin(environment).register()
    exporter.register(environment, plugin)
    exp = plugin.extensions.get(exporter.Exporter)
    assert exp is not None and exp.options.grace_s == 0.5 and exp.handle is not None
    url = exp.handle.url
    scraped = []
    gevent.spawn_later(0.2, lambda: scraped.append(urllib.request.urlopen(url, timeout=2).status))
    started = time.monotonic()
    environment.events.quit.fire(exit_code=0)
    assert scraped == [200] and exp.handle is None
    assert time.monotonic() - started >= 0.45
    environment.runner.quit()


def test_self_check_limits_in_force_are_exported():
    parsed = SimpleNamespace(worker=False, llm_selfcheck_cpu="80", llm_selfcheck_lag_ms="25")
    plugin = new_plugin(local_environment(parsed), selfcheck)
    text = exposition(plugin)
    assert lines_of(text, "llmload_generator_limit") == [
        'llmload_generator_limit{check="cpu_percent"} 80.0',
        'llmload_generator_limit{check="cpu_saturated_share"} 0.25',
        'llmload_generator_limit{check="dispatch_lag_p99_s"} 0.025',
        'llmload_generator_limit{check="loop_lag_p99_s"} 0.025',
        'llmload_generator_limit{check="read_lateness_p99_s"} 0.01',
    ]
    assert lines_of(text, "llmload_generator_trustworthy") == ['llmload_generator_trustworthy{worker="local"} 1.0']


def test_pooling_groups_export_latency_and_inputs_not_streaming_series(plugin):
    embed = RequestRecord(
        backend=BACKEND,
        model="m",
        user_class="Embed",
        endpoint="/v1/embeddings",
        t_send=0.0,
        start_wall=100.0,
        t_end=0.125,
        completion_tokens=0,
        prompt_tokens=40,
        kind="embeddings",
        inputs=4,
    )
    plugin.record(embed)
    text = exposition(plugin)
    embed_labels = 'backend="http://gpu-a:8000",model="m",user_class="Embed"'
    assert lines_of(text, "llmload_inputs_total") == [
        'llmload_inputs_total{backend="http://gpu-a:8000",kind="embeddings",model="m",user_class="Embed"} 4.0'
    ]
    assert lines_of(text, f"llmload_prompt_tokens_total{{{embed_labels}") == [
        f"llmload_prompt_tokens_total{{{embed_labels}}} 40.0"
    ]
    assert (
        'llmload_request_latency_seconds_bucket{backend="http://gpu-a:8000",le="0.2",model="m",user_class="Embed"} 1.0'
        in text
    )
    assert f"llmload_request_latency_seconds_sum{{{embed_labels}}} 0.125" in text
    for streaming in ("llmload_ttft_seconds", "llmload_output_tokens_total", "llmload_slo_met_requests_total"):
        assert lines_of(text, streaming), streaming
        assert not [line for line in lines_of(text, streaming) if 'user_class="Embed"' in line], streaming
    latency = lines_of(text, "llmload_request_latency_seconds")
    assert latency and all('user_class="Embed"' in line for line in latency)  # streamed groups have none
    embed_lines = [line for line in lines_of(text, "llmload_requests_total") if 'user_class="Embed"' in line]
    errors = {line.split('error="')[1].split('"')[0] for line in embed_lines}
    assert "malformed_answer" in errors and "incomplete_stream" not in errors
