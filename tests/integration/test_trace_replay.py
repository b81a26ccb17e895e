"""Trace replay with real Locust master and workers against the simulator: every request once, on time, exact.

- A 2,000-request Mooncake trace (10 requests/s recorded) replayed at 10x, so 100 requests/s,
  which these 2 cores keep with 3 worker processes, a master and the simulator: each request is
  sent exactly once (scheduled = sent, nothing skipped or lost; the simulator finished 2,000),
  output tokens are the trace's (``ignore_eos``), prompt tokens its input lengths, and the
  dispatch lag's p99 is reported (with the warning when it passes its threshold).
- A prefix-heavy trace: the simulator's prefix-cache hit rate equals the one the trace's block
  ids imply. The expectation: every prompt is the begin-of-text token and ``k`` full blocks of
  512 tokens (``input_length = 512 k + 1``, ``/v1/completions``); a request whose first ``j``
  blocks are a leading chain of an earlier request hits ``512 j`` tokens in the simulator's
  16-token blocks (the shared ``1 + 512 j`` tokens, rounded down to blocks; a fully cached prompt
  still computes its last token); the cache (1M tokens) never evicts. Hit rate = hits / prompt
  tokens, within 2% (it is exact here).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from llmload.arrivals import LAG_WARN_P99_S
from llmload.simulator.process import SimulatorProcess
from llmload.traces import block_reuse, load_trace
from tests.support.processes import run_locust, scrape

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from make_traces import mooncake_lines  # noqa: E402

pytestmark = pytest.mark.integration


def test_a_2000_request_trace_at_10x_with_3_workers_sends_each_request_once(tmp_path):
    trace = tmp_path / "trace.jsonl"
    lines = mooncake_lines(2000, seed=11, rate_per_s=10.0, input_range=(32, 200), output_range=(2, 12))
    trace.write_text("\n".join(lines) + "\n")
    rows = [json.loads(line) for line in lines]
    with SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "10", "--itl-ms", "2"]) as sim:
        before = scrape(sim.base_url)
        run = run_locust(
            tmp_path,
            "chatbot.py",
            sim.base_url,
            *("--processes", "3", "-u", "60", "-r", "60", "-t", "120s", "--stop-timeout", "10"),
            *("--llm-trace", str(trace), "--llm-trace-speed", "10", "--llm-endpoint", "completions"),
            timeout=180,
        )
        after = scrape(sim.base_url)
    assert run.returncode == 0, run.output[-3000:]
    doc = run.results
    arrivals = doc["arrivals"]
    assert doc["run"]["workers"] == 3
    assert (arrivals["scheduled"], arrivals["sent"], arrivals["skipped"], arrivals["lost"]) == (2000, 2000, 0, 0)
    assert arrivals["trace"]["requests"] == 2000 and arrivals["trace"]["format"] == "mooncake"
    assert doc["run"]["duration_s"] < 60  # the run ended with the trace, not at -t
    delta = {name: after[name] - before.get(name, 0.0) for name in after}
    total = doc["total"]
    assert total["requests"] == {"ok": 2000, "failed": 0, "errors": {}}
    assert delta["vllm:request_success_total"] == 2000
    assert (
        total["tokens"]["output"] == sum(row["output_length"] for row in rows) == delta["vllm:generation_tokens_total"]
    )
    assert total["tokens"]["prompt"] == sum(row["input_length"] for row in rows) == delta["vllm:prompt_tokens_total"]
    assert run.row("/v1/completions")["num_requests"] == 2000
    lag_p99 = arrivals["dispatch_lag_s"]["p99"]
    assert lag_p99 is not None and arrivals["dispatch_lag_s"]["count"] == 2000
    assert (arrivals["warning"] is not None) == (lag_p99 > LAG_WARN_P99_S)
    # The self-check flags the run when the dispatch lag passes its own (tighter) threshold.
    generator = doc["generator"]
    assert generator["dispatch_lag_s"]["p99"] == pytest.approx(lag_p99, rel=0.01)
    flagged = any("dispatch lag" in reason for reason in generator["reasons"])
    assert flagged == (lag_p99 > generator["thresholds"]["dispatch_lag_p99_s"]), (lag_p99, generator["reasons"])
    # Latency from the intended time: TTFT as measured plus the dispatch lag.
    assert arrivals["ttft_from_intended_s"]["p50"] >= total["ttft_s"]["p50"] - 0.002


def prefix_trace(path: Path, n: int, *, seed: int) -> None:
    """Mooncake rows of 1-4 full 512-token blocks (plus the begin-of-text token), reusing leading chains."""
    rng = random.Random(seed)
    chains: list[list[int]] = []
    next_id = 0
    lines = []
    for i in range(n):
        blocks = rng.randint(1, 4)
        ids = list(rng.choice(chains)[: rng.randint(1, blocks)]) if chains and rng.random() < 0.7 else []
        while len(ids) < blocks:
            ids.append(next_id)
            next_id += 1
        chains.append(ids)
        row = {"timestamp": i * 100, "input_length": 512 * blocks + 1, "output_length": 2, "hash_ids": ids}
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")


def test_prefix_cache_hit_rate_follows_the_traces_block_reuse(tmp_path):
    trace = tmp_path / "prefix.jsonl"
    prefix_trace(trace, 300, seed=4)
    requests = load_trace(str(trace)).requests
    reused, total_blocks = block_reuse(requests)
    expected_hits = 512 * reused
    prompt_tokens = sum(r.input_tokens or 0 for r in requests)
    with SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "5", "--itl-ms", "1"]) as sim:
        before = scrape(sim.base_url)
        run = run_locust(
            tmp_path,
            "chatbot.py",
            sim.base_url,
            *("-u", "10", "-r", "10", "-t", "60s", "--stop-timeout", "10", "--llm-endpoint", "completions"),
            *("--llm-trace", str(trace), "--llm-trace-speed", "20"),
        )
        after = scrape(sim.base_url)
    assert run.returncode == 0, run.output[-3000:]
    assert run.results["arrivals"]["sent"] == 300
    queries = after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"]
    hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    assert queries == prompt_tokens == run.results["total"]["tokens"]["prompt"]
    assert reused > 100 and total_blocks > reused
    assert hits / queries == pytest.approx(expected_hits / prompt_tokens, abs=0.02)
    assert hits == expected_hits  # exact: every shared chain is whole 16-token blocks


def test_sessions_carry_their_conversation_and_lengths_are_exact_on_chat(tmp_path):
    """The llmload-format sample (60 requests, 10 sessions of 3 turns) on chat: every turn of a session
    carries the real previous questions and answers. The simulator's chat rule (26 tokens, then 5 per
    message plus its words) gives the exact prompt tokens that implies; answers are the rows' lengths."""
    from llmload.simulator.tokens import count_text_tokens

    trace = Path(__file__).resolve().parents[1] / "fixtures" / "traces" / "llmload.jsonl"
    requests = load_trace(str(trace)).requests
    history: dict[str, int] = {}
    expected_prompt = 0
    for row in requests:
        content = count_text_tokens(row.prompt) if row.prompt is not None else (row.input_tokens or 2) - 1
        before = history.get(row.session, 0) if row.session is not None else 0
        expected_prompt += 26 + before + 5 + content
        if row.session is not None:
            history[row.session] = before + 5 + content + 5 + (row.output_tokens or 0)
    with SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "5", "--itl-ms", "1"]) as sim:
        before_counters = scrape(sim.base_url)
        run = run_locust(
            tmp_path,
            "chatbot.py",
            sim.base_url,
            *("--processes", "2", "-u", "10", "-r", "10", "-t", "60s", "--stop-timeout", "10"),
            *("--llm-trace", str(trace), "--llm-trace-speed", "8"),
        )
        after = scrape(sim.base_url)
    assert run.returncode == 0, run.output[-3000:]
    assert run.results["arrivals"]["sent"] == len(requests) == 60
    prompt = after["vllm:prompt_tokens_total"] - before_counters["vllm:prompt_tokens_total"]
    assert prompt == expected_prompt == run.results["total"]["tokens"]["prompt"]
    output = after["vllm:generation_tokens_total"] - before_counters["vllm:generation_tokens_total"]
    # A row without an output length gets the user class's max_tokens (ChatbotUser: 100).
    assert output == sum(row.output_tokens if row.output_tokens is not None else 100 for row in requests)
