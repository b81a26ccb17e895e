"""``--llm-tokenizer`` with real Locust processes against the simulator counting with the same tokenizer.

A byte-level BPE is trained here (``tests/support/tokenizer.py``); the simulator loads it too
(``--tokenizer``), so its ``vllm:prompt_tokens`` is the tokenizer's count of each prompt, special
tokens included. Synthetic prompts of ``--llm-input-tokens N`` on ``/v1/completions`` are then
exactly N tokens; dataset filters compare exact counts; and a server that sends no usage gets
its answers counted by the tokenizer (``output_source: tokenizer``).
"""

from __future__ import annotations

import json

import pytest

from llmload import datasets, token_text
from llmload.simulator.process import SimulatorProcess
from tests.support.processes import run_locust, scrape
from tests.support.tokenizer import train_tokenizer

pytestmark = pytest.mark.integration

RUN = ["-u", "3", "-r", "3", "-t", "4s", "--stop-timeout", "10", "--llm-think-time", "0", "--llm-max-tokens", "8"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def test_synthetic_prompts_are_exact_in_tokens_on_completions(tmp_path, tokenizer):
    sim_args = ["--ttft-ms", "5", "--itl-ms", "1", "--tokenizer", str(tokenizer)]
    with SimulatorProcess(profile="fixed", extra_args=sim_args) as sim:
        before = scrape(sim.base_url)
        run = run_locust(
            tmp_path,
            "chatbot.py",
            sim.base_url,
            *RUN,
            *("--llm-endpoint", "completions", "--llm-input-tokens", "137", "--llm-tokenizer", str(tokenizer)),
        )
        after = scrape(sim.base_url)
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    ok = total["requests"]["ok"]
    assert ok > 10 and total["requests"]["failed"] == 0
    assert (
        total["tokens"]["prompt"] == 137 * ok == after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
    )


def test_answers_without_usage_are_counted_by_the_tokenizer(tmp_path, tokenizer):
    sim_args = ["--ttft-ms", "5", "--itl-ms", "1", "--reject-stream-options"]
    with SimulatorProcess(profile="fixed", extra_args=sim_args) as sim:
        run = run_locust(tmp_path, "chatbot.py", sim.base_url, *RUN, "--llm-tokenizer", str(tokenizer))
    assert run.returncode == 0, run.output[-3000:]
    tokens = run.results["total"]["tokens"]
    ok = run.results["total"]["requests"]["ok"]
    assert ok > 10
    assert tokens["output_source"] == "tokenizer" and tokens["tokenizer_counted_requests"] == ok
    assert tokens["estimated_requests"] == 0 and tokens["output"] >= 8 * ok  # 8 words, at least a token each


def test_dataset_filters_compare_exact_counts(tmp_path, tokenizer):
    texts = ["the river and the city", "summer morning " * 40, "a question about water"]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": t, "output_tokens": 5}) for t in texts) + "\n")
    exact = token_text.count_content(str(tokenizer), texts)
    low, high = exact[0], exact[2]
    kept = datasets.load_dataset(str(path), input_tokens=(min(low, high), max(low, high)), tokenizer=str(tokenizer))
    assert sorted(e.input_tokens for e in kept.entries) == sorted([low, high]) and kept.skipped == 1


def test_chat_prompts_are_exact_after_the_first_answer_calibrates_the_template(tmp_path, tokenizer):
    """On chat the simulator adds 26 + 5 template tokens around a one-message content (its rule, like vLLM's
    template): the first request is 30 tokens long (the tokenizer's 1 special token is all the client knows),
    then the user has learnt the difference from the usage and every later prompt is exact."""
    sim_args = ["--ttft-ms", "5", "--itl-ms", "1", "--tokenizer", str(tokenizer)]
    with SimulatorProcess(profile="fixed", extra_args=sim_args) as sim:
        run = run_locust(
            tmp_path,
            "chatbot.py",
            sim.base_url,
            *("-u", "1", "-r", "1", "-t", "4s", "--stop-timeout", "10", "--llm-think-time", "0"),
            *("--llm-max-tokens", "4", "--llm-input-tokens", "137", "--llm-tokenizer", str(tokenizer)),
        )
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    ok = total["requests"]["ok"]
    assert ok > 10 and total["tokens"]["prompt"] == 137 * ok + 30
