"""Embeddings, score and rerank against the simulator, with real Locust master and worker processes.

One run mixes a chat user with the three pooling users; the simulator's counters are the truth:
its prompt-token counter equals the prompt tokens of every group, its generated tokens those of
the chat group alone, and its finished requests every successful request.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.processes import env, locust_command, run_locust, scrape

pytestmark = pytest.mark.integration

MIXED = """
from llmload import ChatbotUser, EmbeddingsUser, RerankUser, ScoreUser


class Chat(ChatbotUser):
    max_tokens = 12
    ignore_eos = True


class Embedder(EmbeddingsUser):
    batch_size = (1, 6)
    prompt_tokens = (20, 60)


class Scorer(ScoreUser):
    batch_size = 3


class Reranker(RerankUser):
    batch_size = (4, 9)
    top_n = 3
"""


def test_mixed_kinds_across_workers_match_the_simulator(tmp_path):
    locustfile = tmp_path / "mixed_kinds.py"
    locustfile.write_text(MIXED)
    with SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "20", "--itl-ms", "2"]) as sim:
        before = scrape(sim.base_url)
        run = run_locust(
            tmp_path,
            str(locustfile),
            sim.base_url,
            *("--processes", "2", "-u", "8", "-r", "8", "-t", "6s", "--stop-timeout", "10"),
            *("--llm-think-time", "0.05", "--llm-html", str(tmp_path / "report.html")),
            timeout=120,
        )
        after = scrape(sim.base_url)
    assert run.returncode == 0, run.output[-3000:]
    doc = run.results
    assert doc["run"]["workers"] == 2
    groups = {g["user_class"]: g for g in doc["groups"]}
    assert {name: g["kind"] for name, g in groups.items()} == {
        "Chat": "stream",
        "Embedder": "embeddings",
        "Scorer": "score",
        "Reranker": "rerank",
    }
    delta = {name: after[name] - before[name] for name in after if name in before}
    assert sum(g["tokens"]["prompt"] for g in groups.values()) == delta["vllm:prompt_tokens_total"]
    assert groups["Chat"]["tokens"]["output"] == delta["vllm:generation_tokens_total"]
    assert sum(g["requests"]["ok"] for g in groups.values()) == delta["vllm:request_success_total"]
    for name, path in (("Embedder", "/v1/embeddings"), ("Scorer", "/score"), ("Reranker", "/rerank")):
        body = groups[name]
        ok = body["requests"]["ok"]
        assert ok > 10 and body["requests"]["failed"] == 0, name
        assert run.row(path)["num_requests"] == ok
        assert "ttft_s" not in body and "slo" not in body
        assert body["latency_s"]["count"] == ok
        assert body["latency_s"]["p50"] == pytest.approx(0.020, abs=0.006), name  # the fixed profile's prefill
        assert body["throughput"]["inputs_per_s"] > 0
    assert groups["Scorer"]["inputs"]["count"] == 3 * groups["Scorer"]["requests"]["ok"]
    assert groups["Reranker"]["inputs"]["per_request"] >= 4
    assert 1 <= groups["Embedder"]["inputs"]["per_request"] <= 6
    assert doc["total"]["kind"] == "stream" and doc["total"]["requests"]["ok"] == groups["Chat"]["requests"]["ok"]
    assert doc["kind_totals"]["rerank"]["inputs"] == groups["Reranker"]["inputs"]
    assert "Embeddings, score and rerank" in run.output  # the console's pooled table
    assert '<section id="pooled">' in (tmp_path / "report.html").read_text()


def test_prefill_cost_grows_with_the_batch_on_a_gpu_profile(tmp_path):
    """On a performance-model profile a pooling request is a prefill: 64 long inputs take longer than 1."""
    latencies = {}
    with SimulatorProcess(profile="rtx3090") as sim:
        for batch in ("1", "64"):
            out = tmp_path / batch
            out.mkdir()
            run = run_locust(
                out,
                "embeddings.py",
                sim.base_url,
                *("-u", "1", "-r", "1", "-t", "3s", "--stop-timeout", "10", "--llm-think-time", "0"),
                *("--llm-batch-size", batch, "--llm-input-tokens", "500"),
            )
            assert run.returncode == 0, run.output[-3000:]
            latencies[batch] = run.results["groups"][0]["latency_s"]["p50"]
            time.sleep(0.2)
    assert latencies["64"] > 5 * latencies["1"], latencies


def test_a_batch_size_of_0_is_one_line_and_exit_2(tmp_path):
    for args, message in (
        (["--llm-batch-size", "0"], "--llm-batch-size: a request needs at least 1 input"),
        (["--llm-batch-size", "lots"], "--llm-batch-size"),
    ):
        cmd = locust_command("embeddings.py", "http://127.0.0.1:9", "--headless", "-t", "1s", *args)
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env())
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert message in done.stderr and "Traceback" not in done.stderr + done.stdout, done.stderr[-2000:]
