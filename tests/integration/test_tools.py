"""Tool calls, structured output and agents against the simulator, with real Locust processes.

The simulator answers a request with tools by a tool call (arguments of the tool's parameters'
shape) and one with a JSON schema by JSON of the schema's shape, streamed 4 characters per
token; with ``tool_choice: auto`` after a tool result it answers in words. Token totals are
checked against its counters, and the share of valid answers against what it was made to send.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.processes import env, locust_command, run_locust, scrape

pytestmark = pytest.mark.integration

RUN = ["-u", "3", "-r", "3", "-t", "4s", "--stop-timeout", "10", "--llm-think-time", "0"]


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "10", "--itl-ms", "2"]) as sim:
        yield sim


def test_required_tool_calls_and_schema_answers_are_valid_and_counted(sim, tmp_path):
    for locustfile, name in (("tool_calls.py", "tools"), ("structured_output.py", "schema")):
        (tmp_path / name).mkdir()
        before = scrape(sim.base_url)
        run = run_locust(tmp_path / name, locustfile, sim.base_url, *RUN, "--llm-max-tokens", "100")
        after = scrape(sim.base_url)
        assert run.returncode == 0, run.output[-3000:]
        total = run.results["total"]
        ok = total["requests"]["ok"]
        assert ok > 20 and total["requests"]["failed"] == 0
        assert total["answers"] == {"checked": ok, "valid": ok, "valid_share": 1.0}, name
        assert (
            total["tokens"]["output"] == after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
        )
        assert total["slo"]["met"] == ok


def test_answers_cut_by_max_tokens_are_invalid_and_miss_the_slo_without_failing(sim, tmp_path):
    run = run_locust(tmp_path, "structured_output.py", sim.base_url, *RUN, "--llm-max-tokens", "5")
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    ok = total["requests"]["ok"]
    assert ok > 20 and total["requests"]["failed"] == 0  # not a transport failure
    assert total["answers"] == {"checked": ok, "valid": 0, "valid_share": 0.0}
    assert total["slo"]["met"] == 0 and total["slo"]["attainment"] == 0.0


def test_agent_feeds_tool_results_back_and_continues(sim, tmp_path):
    run = run_locust(tmp_path, "agent.py", sim.base_url, *RUN, "--llm-tool-latency", "0.05", "--llm-max-tokens", "60")
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    ok = total["requests"]["ok"]
    # Each turn: a tool call, then (after the tool's result) a text answer: two valid answers.
    assert ok > 20 and total["requests"]["failed"] == 0
    assert total["answers"]["valid"] == total["answers"]["checked"] == ok
    finish = run.row("/v1/chat/completions")
    assert finish["num_requests"] == ok


def test_bad_tools_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "tools.json"
    bad.write_text('[{"type": "function"')
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]))
    for args, message in (
        (["--llm-tools", str(bad)], "not valid JSON"),
        (["--llm-tools", str(good), "--llm-tool-choice", "g"], "no tool 'g'"),
    ):
        cmd = locust_command("chatbot.py", "http://127.0.0.1:9", "--headless", "-t", "1s", *args)
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env())
        assert done.returncode == 2, done.stderr[-2000:]
        assert message in done.stderr and "Traceback" not in done.stderr + done.stdout
