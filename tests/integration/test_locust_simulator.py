"""Real headless Locust processes against the simulator: timing, exact token counts, errors.

The simulator's ``fixed`` profile sends the first token exactly TTFT after it
receives a request and each next one ITL later, so the client's figures have a
known truth; its ``/metrics`` counts every token it streamed. ``--stop-timeout``
lets every user finish its request at the end, so token totals must match
exactly.
"""

from __future__ import annotations

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.processes import run_locust, scrape

pytestmark = pytest.mark.integration

FIXED = ["--ttft-ms", "50", "--itl-ms", "10"]
COMMON = [
    "-u",
    "10",
    "-r",
    "10",
    "-t",
    "8s",
    "--stop-timeout",
    "10",
    "--llm-think-time",
    "0",
    "--llm-max-tokens",
    "20",
    "--llm-ignore-eos",
]


@pytest.fixture(scope="module")
def fixed_sim():
    with SimulatorProcess(profile="fixed", extra_args=FIXED) as sim:
        yield sim


def test_timing_and_tokens_match_the_simulator(fixed_sim, tmp_path):
    before = scrape(fixed_sim.base_url)
    run = run_locust(tmp_path, "chatbot.py", fixed_sim.base_url, *COMMON)
    after = scrape(fixed_sim.base_url)
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    # Known truth: TTFT 50 ms, ITL 10 ms; tolerance 2 ms at p50 (loopback + scheduling).
    assert total["ttft_s"]["p50"] == pytest.approx(0.050, abs=0.002)
    assert total["itl_s"]["p50"] == pytest.approx(0.010, abs=0.002)
    assert total["tpot_s"]["p50"] == pytest.approx(0.010, abs=0.002)
    assert total["e2e_s"]["p50"] == pytest.approx(0.050 + 19 * 0.010, abs=0.004)
    # Exact token accounting against the server's own counters.
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    prompted = after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
    assert total["tokens"]["output"] == generated
    assert total["tokens"]["prompt"] == prompted
    assert total["tokens"]["output_source"] == "usage"
    ok = total["requests"]["ok"]
    assert ok > 100 and total["requests"]["failed"] == 0
    assert total["tokens"]["output"] == 20 * ok
    assert total["itl_s"]["count"] == 19 * ok
    # Each request is in Locust's own statistics exactly once, with E2E as its time.
    row = run.row("/v1/chat/completions")
    assert row["num_requests"] == ok and row["num_failures"] == 0
    assert row["total_content_length"] == 20 * ok
    assert row["total_response_time"] / ok == pytest.approx(total["e2e_s"]["mean"] * 1000, rel=1e-6)
    assert len(run.stats) == 1  # no fake "METRIC" requests
    # The console table is printed.
    assert "LLM token metrics" in run.output and "TTFT p50" in run.output


def test_completions_endpoint_and_summarization_prompts(fixed_sim, tmp_path):
    run = run_locust(
        tmp_path,
        "summarization.py",
        fixed_sim.base_url,
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "4s",
        "--stop-timeout",
        "10",
        "--llm-think-time",
        "0",
        "--llm-endpoint",
        "completions",
        "--llm-max-tokens",
        "5",
    )
    assert run.returncode == 0, run.output[-3000:]
    group = run.results["groups"][0]
    assert group["user_class"] == "Summarization" and group["requests"]["ok"] > 0
    assert run.row("/v1/completions")
    per_request_prompt = group["tokens"]["prompt"] / group["requests"]["ok"]
    assert 900 <= per_request_prompt <= 4400  # 1k-4k-token documents, by the simulator's tokenizer


@pytest.mark.parametrize(
    "fault, kind",
    [
        ("http_429", "http_429"),
        ("http_400", "http_4xx"),
        ("http_503", "http_5xx"),
        ("disconnect", "disconnect"),
        ("malformed", "malformed_event"),
        ("incomplete", "incomplete_stream"),
        ("stall", "timeout"),
    ],
)
def test_each_error_class_from_a_faulty_server(tmp_path, fault, kind):
    extra = [*FIXED, "--fault", fault, "--fault-rate", "1.0", "--fault-after", "3"]
    if fault == "stall":
        extra += ["--stall-s", "5"]
    with SimulatorProcess(profile="fixed", extra_args=extra) as sim:
        run = run_locust(
            tmp_path,
            "chatbot.py",
            sim.base_url,
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "3s",
            "--stop-timeout",
            "5",
            "--llm-think-time",
            "0.1",
            "--llm-max-tokens",
            "10",
            "--llm-stream-timeout",
            "1",
        )
    assert run.returncode == 1, run.output[-3000:]  # Locust's exit code on failures
    errors = run.results["total"]["requests"]["errors"]
    assert set(errors) == {kind} and errors[kind] > 0
    assert run.results["total"]["requests"]["ok"] == 0
    row = run.row("/v1/chat/completions")
    assert row["num_failures"] == row["num_requests"] == errors[kind]
    assert "Traceback" not in run.output


def test_stream_options_rejected_falls_back_to_estimated_counts(tmp_path):
    with SimulatorProcess(profile="fixed", extra_args=[*FIXED, "--reject-stream-options"]) as sim:
        run = run_locust(
            tmp_path,
            "chatbot.py",
            sim.base_url,
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "3s",
            "--stop-timeout",
            "5",
            "--llm-think-time",
            "0",
            "--llm-max-tokens",
            "10",
            "--llm-ignore-eos",
        )
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    assert total["requests"]["failed"] == 0 and total["requests"]["ok"] > 0
    assert total["tokens"]["output_source"] == "estimated"
    assert total["tokens"]["output"] == 10 * total["requests"]["ok"]


def test_bad_option_is_one_line_and_exit_code_2(fixed_sim, tmp_path):
    run = run_locust(tmp_path, "chatbot.py", fixed_sim.base_url, "-u", "1", "-t", "2s", "--llm-max-tokens", "lots")
    assert run.returncode == 2
    assert "llmload: error: --llm-max-tokens: expected a number or a range A-B, got 'lots'" in run.output
    assert "Traceback" not in run.output


def test_api_key_never_reaches_output_or_results(fixed_sim, tmp_path):
    secret = "sk-llmload-test-SECRET-7f3a"
    run = run_locust(
        tmp_path,
        "chatbot.py",
        fixed_sim.base_url,
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "2s",
        "--llm-think-time",
        "0",
        "--llm-max-tokens",
        "3",
        "--llm-api-key",
        secret,
        "--loglevel",
        "DEBUG",
    )
    assert run.returncode == 0, run.output[-3000:]
    assert secret not in run.output
    assert secret not in (tmp_path / "results.json").read_text()
    assert secret not in (tmp_path / "stats.json").read_text()
    assert run.results["run"]["options"]["api_key_set"] is True


def test_unreachable_host_is_one_line_and_non_zero_exit(tmp_path):
    from tests.support.processes import free_port

    host = f"http://127.0.0.1:{free_port()}"
    run = run_locust(tmp_path, "chatbot.py", host, "-u", "2", "-r", "2", "-t", "5s")
    assert run.returncode == 1
    assert f"llmload: cannot reach {host}: [Errno 111] Connection refused" in run.output
    assert "Traceback" not in run.output


def test_a_slow_start_does_not_cut_the_run_short(fixed_sim, tmp_path):
    from tests.support.processes import ROOT

    locustfile = str(ROOT / "tests" / "support" / "slow_start_locustfile.py")
    run = run_locust(
        tmp_path,
        locustfile,
        fixed_sim.base_url,
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "3s",
        "--llm-think-time",
        "0",
        "--llm-max-tokens",
        "5",
    )
    assert run.returncode == 0, run.output[-3000:]
    assert run.results["run"]["duration_s"] >= 2.9
    assert run.results["total"]["requests"]["ok"] > 20
