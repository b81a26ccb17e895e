"""LoRA adapters against the simulator: requests spread by weight, results grouped per adapter.

The simulator serves three adapters besides its model (``--lora-modules``), lists them in
``/v1/models`` and echoes the adapter as the answer's model; its counters count every token.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.processes import env, locust_command, run_locust, scrape

pytestmark = pytest.mark.integration

SIM = ["--ttft-ms", "10", "--itl-ms", "2", "--lora-modules", "sql-lora=/adapters/sql", "chat-lora", "unused-lora"]


def test_requests_spread_over_adapters_by_weight_and_group_per_adapter(tmp_path):
    with SimulatorProcess(profile="fixed", extra_args=SIM) as sim:
        listed = json.loads(urllib.request.urlopen(f"{sim.base_url}/v1/models", timeout=5).read())
        before = scrape(sim.base_url)
        run = run_locust(
            tmp_path,
            "chatbot.py",
            sim.base_url,
            *("-u", "4", "-r", "4", "-t", "4s", "--stop-timeout", "10", "--llm-think-time", "0"),
            *("--llm-max-tokens", "8", "--llm-lora", "sql-lora=3,chat-lora=1,unused-lora=0"),
        )
        after = scrape(sim.base_url)
    assert [card["id"] for card in listed["data"]][1:] == ["sql-lora", "chat-lora", "unused-lora"]
    assert run.returncode == 0, run.output[-3000:]
    groups = {g["model"]: g for g in run.results["groups"]}
    assert set(groups) == {"sql-lora", "chat-lora"}  # weight 0: never asked for
    sql, chat = (groups[name]["requests"]["ok"] for name in ("sql-lora", "chat-lora"))
    assert chat > 20 and abs(sql - 3 * chat) <= 3  # one process: exact shares, at most one round apart
    total = run.results["total"]
    assert total["requests"]["failed"] == 0
    assert total["tokens"]["output"] == after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert run.results["run"]["options"]["lora"] == [["sql-lora", 3.0], ["chat-lora", 1.0], ["unused-lora", 0.0]]


def test_all_adapter_weights_zero_is_one_line_and_exit_2(tmp_path):
    cmd = locust_command("chatbot.py", "http://127.0.0.1:9", "--headless", "-t", "1s", "--llm-lora", "a=0,b=0")
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env())
    assert done.returncode == 2
    assert "--llm-lora: every weight is 0" in done.stderr and "Traceback" not in done.stderr + done.stdout
