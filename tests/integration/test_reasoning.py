"""Reasoning models against the simulator's reasoning mode: real Locust master and workers.

The simulator (``--reasoning-tokens 5 --answer-tokens 12``, fixed profile) opens every chat
answer with 5 thinking tokens streamed as reasoning deltas, then 7 answer tokens, all counted
in usage and in its ``vllm:generation_tokens`` counter. So the truth per request is known:
5 reasoning and 7 answer tokens, the first answer token at TTFT + 5 ITL.
"""

from __future__ import annotations

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.processes import free_port, run_locust, scrape

pytestmark = pytest.mark.integration

THINKING, ANSWER = 5, 12
SIM = ["--ttft-ms", "30", "--itl-ms", "10", "--reasoning-tokens", str(THINKING), "--answer-tokens", str(ANSWER)]
RUN = ["-u", "6", "-r", "6", "-t", "5s", "--stop-timeout", "10", "--llm-think-time", "0", "--llm-max-tokens", "40"]


def test_thinking_and_answer_tokens_match_the_simulator_across_workers(tmp_path):
    with SimulatorProcess(profile="fixed", extra_args=SIM) as sim:
        before = scrape(sim.base_url)
        port = free_port()
        run = run_locust(
            tmp_path,
            "reasoning_chat.py",
            sim.base_url,
            *("--processes", "2", "--master-bind-port", str(port), "--master-port", str(port)),
            *RUN,
            "--llm-slo-ttft",
            "0.065",  # between the first token (30 ms) and the first answer token (80 ms)
        )
        after = scrape(sim.base_url)
    assert run.returncode == 0, run.output[-3000:]
    assert run.results["run"]["workers"] == 2
    total = run.results["total"]
    ok = total["requests"]["ok"]
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert ok > 20 and total["requests"]["failed"] == 0 and total["tokens"]["output"] == generated == ANSWER * ok
    reasoning = total["reasoning"]
    assert reasoning["requests"] == ok
    assert reasoning["tokens"] == {
        "reasoning": THINKING * ok,
        "answer": generated - THINKING * ok,
        "source": "usage",
        "estimated_requests": 0,
    }
    assert reasoning["ttfa_s"]["p50"] == pytest.approx(0.030 + THINKING * 0.010, abs=0.004)
    assert reasoning["reasoning_s"]["p50"] == pytest.approx(THINKING * 0.010, abs=0.003)
    # answer tokens over E2E: 7 / (30 ms + 11 x 10 ms)
    assert reasoning["answer_stream_rate_tps"]["p50"] == pytest.approx((ANSWER - THINKING) / 0.140, rel=0.05)
    # The ReasoningChatUser aims the TTFT SLO at the answer: 80 ms > 65 ms misses every request.
    assert total["slo"]["ttft_of"] == "answer" and total["slo"]["met"] == 0
    assert total["ttft_s"]["p50"] == pytest.approx(0.030, abs=0.004)  # TTFT keeps its meaning


def test_reasoning_content_without_usage_is_counted_per_event_and_marked_estimated(tmp_path):
    args = [*SIM, "--reasoning-field", "reasoning_content", "--reject-stream-options"]
    with SimulatorProcess(profile="fixed", extra_args=args) as sim:
        run = run_locust(tmp_path, "reasoning_chat.py", sim.base_url, *RUN, "--llm-slo-ttft-of", "any")
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    ok = total["requests"]["ok"]
    assert ok > 10 and total["tokens"]["output_source"] == "estimated"
    reasoning = total["reasoning"]
    # One token per event here, so counting events gives the truth; the results still say it is estimated.
    assert reasoning["tokens"] == {
        "reasoning": THINKING * ok,
        "answer": (ANSWER - THINKING) * ok,
        "source": "estimated",
        "estimated_requests": ok,
    }
    assert total["slo"]["ttft_of"] == "any"
