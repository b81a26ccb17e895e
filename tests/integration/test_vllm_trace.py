"""Trace replay against a real vLLM: exact prompt lengths from the model's own tokenizer, and its prefix cache.

The tiny model's ``tokenizer.json`` is handed to ``--llm-tokenizer``: on ``/v1/completions``
each prompt's tokens (the begin-of-text token included) are the trace's input length exactly,
so vLLM's ``vllm:prompt_tokens_total`` grows by the trace's total. Rows share leading blocks
(``hash_ids``, 64-token blocks, a multiple of vLLM's 16), and vLLM's own prefix-cache hits
rise accordingly.
"""

from __future__ import annotations

import json

import pytest

from llmload.traces import block_reuse, load_trace
from tests.support.processes import run_locust, scrape
from tests.support.vllm import running_vllm

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def vllm():
    from llmload.target.process import VLLMProcess

    with running_vllm(lambda: VLLMProcess(shape="tiny")) as server:
        yield server


def test_trace_prompts_are_exact_in_tokens_and_hit_vllms_prefix_cache(vllm, tmp_path):
    trace = tmp_path / "trace.jsonl"
    rows = []
    for i in range(40):
        chain = [i % 4, 100 + i % 8] if i % 5 else [1000 + i]  # four roots, eight second blocks, some loners
        blocks = len(chain) + 1
        rows.append(
            {
                "timestamp": i * 0.1,
                "input_tokens": 64 * blocks + 1,
                "output_tokens": 4,
                "hash_ids": [*chain, 2000 + i],
            }
        )
    trace.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    reused, _total = block_reuse(load_trace(str(trace)).requests)
    assert vllm.model_path is not None
    before = scrape(vllm.base_url)
    run = run_locust(
        tmp_path,
        "chatbot.py",
        vllm.base_url,
        *("-u", "4", "-r", "4", "-t", "60s", "--stop-timeout", "30", "--llm-endpoint", "completions"),
        *("--llm-trace", str(trace), "--llm-block-tokens", "64", "--llm-tokenizer", str(vllm.model_path)),
        timeout=180,
    )
    after = scrape(vllm.base_url)
    assert run.returncode == 0, run.output[-3000:]
    arrivals = run.results["arrivals"]
    assert (arrivals["sent"], arrivals["skipped"], arrivals["lost"]) == (40, 0, 0)
    prompt = after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
    assert prompt == sum(row["input_tokens"] for row in rows) == run.results["total"]["tokens"]["prompt"]
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert generated == 4 * 40 == run.results["total"]["tokens"]["output"]
    hits = after["vllm:prefix_cache_hits_total"] - before.get("vllm:prefix_cache_hits_total", 0.0)
    assert reused >= 20 and hits >= 64 * reused * 0.9, (hits, reused)
