"""Embeddings, score and rerank against a real vLLM: its pooling runner on the tiny random-weight model.

vLLM's CPU build serves the test suite's tiny Llama as an embedding model (``--runner pooling
--convert embed``: last-token pooling, normalised), and answers ``/score`` and ``/rerank`` on it
with the cosine of the query's and each document's embeddings. Each run's prompt tokens (the
answers' ``usage.prompt_tokens``) must equal the delta of vLLM's own ``vllm:prompt_tokens``
counter. Images against a real vision-language model: ``test_vllm_vision.py``.
"""

from __future__ import annotations

import pytest

from tests.support.processes import run_locust, scrape
from tests.support.vllm import running_vllm

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.slow]

RUN = ["-u", "2", "-r", "2", "-t", "5s", "--stop-timeout", "30", "--llm-think-time", "0"]


@pytest.fixture(scope="module")
def vllm():
    from llmload.target.process import VLLMProcess

    with running_vllm(lambda: VLLMProcess(shape="tiny", extra_args=["--runner", "pooling", "--convert", "embed"])) as s:
        yield s


@pytest.mark.parametrize(
    ("locustfile", "kind", "args"),
    [
        ("embeddings.py", "embeddings", ["--llm-batch-size", "1-8", "--llm-input-tokens", "20-200"]),
        ("scorer.py", "score", ["--llm-batch-size", "4"]),
        ("reranker.py", "rerank", ["--llm-batch-size", "3-6"]),
    ],
)
def test_pooling_requests_to_vllm_count_prompt_tokens_exactly(vllm, tmp_path, locustfile, kind, args):
    before = scrape(vllm.base_url)
    run = run_locust(tmp_path, locustfile, vllm.base_url, *RUN, *args, timeout=180)
    after = scrape(vllm.base_url)
    assert run.returncode == 0, run.output[-3000:]
    (group,) = run.results["groups"]
    assert group["kind"] == kind
    ok = group["requests"]["ok"]
    assert ok >= 4 and group["requests"]["failed"] == 0, group["requests"]
    assert group["tokens"]["prompt"] == after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
    assert group["latency_s"]["count"] == ok and group["latency_s"]["p50"] > 0
    assert after.get("vllm:generation_tokens_total", 0.0) == before.get("vllm:generation_tokens_total", 0.0)
    if kind == "score":
        assert group["inputs"]["count"] == 4 * ok
