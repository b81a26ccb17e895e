"""Real Locust master and worker processes against a real vLLM (CPU build, tiny random model).

Exactness is checked against vLLM's own Prometheus counters: the client's
output and prompt tokens must equal the deltas of
``vllm:generation_tokens_total`` and ``vllm:prompt_tokens_total`` over the run.
"""

from __future__ import annotations

import time

import pytest

from tests.support.processes import ProcessGroup, collect, free_port, locust_command, run_locust, scrape
from tests.support.vllm import running_vllm

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def vllm():
    from llmload.target.process import VLLMProcess

    with running_vllm(lambda: VLLMProcess(shape="tiny")) as server:
        yield server


def histogram_delta(before, after, name):
    count = after[f"{name}_count"] - before.get(f"{name}_count", 0.0)
    total = after[f"{name}_sum"] - before.get(f"{name}_sum", 0.0)
    return count, total


def server_median(base_url_text_before, base_url_text_after, name):
    """p50 of a vLLM histogram over the run, by linear interpolation in the bucket deltas."""
    from prometheus_client.parser import text_string_to_metric_families

    def buckets(text):
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{name}_bucket":
                    le = float(sample.labels["le"])
                    out[le] = out.get(le, 0.0) + sample.value
        return out

    before, after = buckets(base_url_text_before), buckets(base_url_text_after)
    edges = sorted(after)
    counts = [after[le] - before.get(le, 0.0) for le in edges]
    target = counts[-1] / 2
    prev_le, prev_count = 0.0, 0.0
    for le, count in zip(edges, counts, strict=True):
        if count >= target:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (target - prev_count) / max(count - prev_count, 1e-12)
        prev_le, prev_count = le, count
    return prev_le


def metrics_text(base_url):
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        return response.read().decode()


@pytest.mark.parametrize(
    "locustfile, extra",
    [
        ("chatbot.py", ["--llm-max-tokens", "32"]),
        ("summarization.py", ["--llm-max-tokens", "24", "--llm-prompt-tokens", "300-600"]),
    ],
)
def test_master_worker_tokens_equal_vllm_counters(vllm, tmp_path, locustfile, extra):
    port = free_port()
    text_before = metrics_text(vllm.base_url)
    before = scrape(vllm.base_url)
    cmd = locust_command(
        locustfile,
        vllm.base_url,
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        "1",
        "--headless",
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        "12s",
        "--stop-timeout",
        "30",
        "--llm-think-time",
        "0",
        "--llm-ignore-eos",
        "--llm-results",
        str(tmp_path / "results.json"),
        "--json-file",
        str(tmp_path / "stats"),
        *extra,
    )
    worker = locust_command(
        locustfile, vllm.base_url, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)
    )
    with ProcessGroup() as group:
        master = group.start(cmd, tmp_path, tmp_path / "master.log")
        group.start(worker, tmp_path, tmp_path / "worker.log")
        master.wait(timeout=120)
    time.sleep(0.5)
    after = scrape(vllm.base_url)
    text_after = metrics_text(vllm.base_url)
    run = collect(
        master.returncode, (tmp_path / "master.log").read_text(), tmp_path / "results.json", tmp_path / "stats"
    )
    assert run.returncode == 0, run.output[-3000:] + (tmp_path / "worker.log").read_text()[-2000:]
    total = run.results["total"]
    assert total["requests"]["ok"] > 0 and total["requests"]["failed"] == 0
    assert total["tokens"]["output_source"] == "usage"
    assert total["tokens"]["output"] == after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert total["tokens"]["prompt"] == after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]

    # Client TTFT can never be below the server's: the client's clock starts earlier and stops later.
    count, _ = histogram_delta(before, after, "vllm:time_to_first_token_seconds")
    assert count == total["requests"]["ok"]
    server_p50 = server_median(text_before, text_after, "vllm:time_to_first_token_seconds")
    client_p50 = total["ttft_s"]["p50"]
    assert client_p50 >= server_p50 * 0.95, (client_p50, server_p50)  # 5%: bucket interpolation error
    print(
        f"\n{locustfile}: client TTFT p50 {client_p50 * 1000:.1f} ms, vLLM p50 ~{server_p50 * 1000:.1f} ms, "
        f"gap {(client_p50 - server_p50) * 1000:.1f} ms; {total['throughput']['output_tokens_per_s']:.0f} tok/s"
    )


def test_continuous_usage_per_event_counts_sum_to_final_usage(vllm):
    from locust.contrib.fasthttp import FastHttpSession
    from locust.event import EventHook

    from llmload.client import HostCapabilities, LLMClient

    hook = EventHook()
    session = FastHttpSession(vllm.base_url, request_event=hook, user=None)
    client = LLMClient(session, request_event=hook, backend="vllm", user_class="T", capabilities=HostCapabilities())
    for _ in range(3):
        record = client.chat(
            [{"role": "user", "content": "Tell me a story."}], model=vllm.model, max_tokens=40, ignore_eos=True
        )
        assert record.ok, record.error_detail
        assert record.completion_tokens == 40
        assert record.continuous_completion_tokens == record.completion_tokens
    session.client.clientpool.close()


def test_vllm_4xx_are_classified(vllm, tmp_path):
    from locust.contrib.fasthttp import FastHttpSession
    from locust.event import EventHook

    from llmload.client import HostCapabilities, LLMClient

    hook = EventHook()
    session = FastHttpSession(vllm.base_url, request_event=hook, user=None)
    client = LLMClient(
        session, request_event=hook, backend="vllm", user_class="T", capabilities=HostCapabilities(stream_options=True)
    )
    unknown = client.chat([{"role": "user", "content": "hi"}], model="no-such-model", max_tokens=5)
    assert unknown.error_kind == "http_4xx" and unknown.status == 404, unknown.error_detail
    malformed = client.chat(
        [{"role": "user", "content": "hi"}], model=vllm.model, max_tokens=5, extra_body={"temperature": "hot"}
    )
    assert malformed.error_kind == "http_4xx" and malformed.status == 400, malformed.error_detail
    session.client.clientpool.close()

    run = run_locust(
        tmp_path,
        "chatbot.py",
        vllm.base_url,
        "-u",
        "1",
        "-r",
        "1",
        "-t",
        "3s",
        "--llm-model",
        "no-such-model",
        "--llm-think-time",
        "0.2",
    )
    assert run.returncode == 1
    assert set(run.results["total"]["requests"]["errors"]) == {"http_4xx"}
