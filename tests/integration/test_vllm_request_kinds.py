"""Structured output, required and named tool calls, and LoRA adapters against a real vLLM.

vLLM's CPU build serves the tiny random-weight model with structured outputs (xgrammar, no
free whitespace, so a random model's JSON closes in a few tokens), tool choice (a parser must be
named; ``required`` and a named tool are served by structured outputs, whatever the parser) and
two LoRA adapters built here with random weights. Each run's token totals must equal the deltas
of vLLM's own counters. Not possible here: ``tool_choice: auto`` and reasoning, which need a
model trained to call tools or to think (a random model does neither).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import run_locust, scrape
from tests.support.vllm import running_vllm

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.slow]

BUILD_LORA = Path(__file__).resolve().parents[1] / "support" / "build_lora.py"
SCHEMA = {
    "title": "verdict",
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["yes", "no"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 9},
    },
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "enum": ["Oslo", "Lima"]},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    }
]
RUN = ["-u", "2", "-r", "2", "-t", "6s", "--stop-timeout", "30", "--llm-think-time", "0", "--llm-max-tokens", "80"]


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    from llmload.target.process import VLLMProcess

    adapters = tmp_path_factory.mktemp("adapters")

    def make() -> VLLMProcess:
        base = VLLMProcess(shape="tiny")
        base.prepare()  # the venv and the model, cached
        assert base.vllm is not None and base.model_path is not None
        for seed, name in enumerate(("sql-lora", "chat-lora"), start=1):
            subprocess.run(
                [str(base.vllm.python), str(BUILD_LORA), str(base.model_path), str(adapters / name), str(seed)],
                check=True,
                timeout=120,
            )
        return VLLMProcess(
            shape="tiny",
            extra_args=[
                *("--enable-auto-tool-choice", "--tool-call-parser", "pythonic"),
                *("--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}'),
                *("--enable-lora", "--max-lora-rank", "8", "--max-loras", "2"),
                *("--lora-modules", f"sql-lora={adapters / 'sql-lora'}", f"chat-lora={adapters / 'chat-lora'}"),
            ],
        )

    with running_vllm(make) as server:
        yield server


def run_and_count(vllm, tmp_path: Path, locustfile: str, *args: str):
    before = scrape(vllm.base_url)
    run = run_locust(tmp_path, locustfile, vllm.base_url, *RUN, *args, timeout=180)
    after = scrape(vllm.base_url)
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    generated = after["vllm:generation_tokens_total"] - before.get("vllm:generation_tokens_total", 0.0)
    assert total["requests"]["failed"] == 0 and total["requests"]["ok"] >= 4
    assert total["tokens"]["output"] == generated and total["tokens"]["output_source"] == "usage"
    return run, total


def test_schema_answers_from_vllm_are_valid_and_tokens_exact(vllm, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    _run, total = run_and_count(vllm, tmp_path, "structured_output.py", "--llm-response-format", str(schema))
    ok = total["requests"]["ok"]
    assert total["answers"] == {"checked": ok, "valid": ok, "valid_share": 1.0}


@pytest.mark.parametrize("choice", ["required", "get_weather"])
def test_required_and_named_tool_calls_from_vllm_are_complete(vllm, tmp_path, choice):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    _run, total = run_and_count(vllm, tmp_path, "tool_calls.py", "--llm-tools", str(tools), "--llm-tool-choice", choice)
    ok = total["requests"]["ok"]
    assert total["answers"] == {"checked": ok, "valid": ok, "valid_share": 1.0}


def test_lora_adapters_are_separate_groups_with_exact_tokens(vllm, tmp_path):
    run, _total = run_and_count(vllm, tmp_path, "chatbot.py", "--llm-lora", "sql-lora=3,chat-lora=1")
    groups = {g["model"]: g["requests"]["ok"] for g in run.results["groups"]}
    assert set(groups) == {"sql-lora", "chat-lora"}
    assert abs(groups["sql-lora"] - 3 * groups["chat-lora"]) <= 3
