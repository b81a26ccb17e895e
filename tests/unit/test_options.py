"""Option parsing: web-form strings, ranges, one-line errors, the secret key."""

from types import SimpleNamespace

import pytest

from llmload.errors import ConfigError
from llmload.options import LLMOptions, Range, parse_range


def parsed(**kwargs):
    return SimpleNamespace(**{f"llm_{k}": v for k, v in kwargs.items()})


def test_defaults():
    options = LLMOptions.from_parsed(parsed())
    assert options.slo_stream_rate_tps is None  # empty namespace: no option given
    assert options.stream_timeout_s == 60.0 and options.endpoint == ""


def test_values_from_web_form_strings():
    options = LLMOptions.from_parsed(
        parsed(
            max_tokens="100",
            think_time="0.5-2",
            slo_ttft="2",
            slo_stream_rate="10",
            ignore_eos="true",
            endpoint="completions",
            seed="3",
        )
    )
    assert options.max_tokens == Range(100, 100)
    assert options.think_time == Range(0.5, 2.0)
    assert options.slo_ttft_s == 2.0 and options.slo_stream_rate_tps == 10.0
    assert options.ignore_eos is True and options.endpoint == "completions" and options.seed == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_tokens="ten"), "--llm-max-tokens: expected a number or a range A-B, got 'ten'"),
        (dict(max_tokens="5-2"), "--llm-max-tokens: expected 1 <= A <= B, got '5-2'"),
        (dict(max_tokens="1.5"), "--llm-max-tokens: expected whole numbers, got '1.5'"),
        (dict(think_time="-1"), "--llm-think-time: expected 0 <= A <= B, got '-1'"),
        (dict(endpoint="embeddings"), "--llm-endpoint: expected one of chat, completions, got 'embeddings'"),
        (dict(slo_ttft="0"), "--llm-slo-ttft: expected a number > 0, got '0'"),
        (dict(seed="x"), "--llm-seed: expected an integer, got 'x'"),
    ],
)
def test_bad_values_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError) as info:
        LLMOptions.from_parsed(parsed(**kwargs))
    assert str(info.value) == message


def test_range_draws_within_bounds():
    import random

    rng = random.Random(1)
    draws = [parse_range("200-300", option="x", integer=True).draw_int(rng) for _ in range(200)]
    assert min(draws) >= 200 and max(draws) <= 300 and len(set(draws)) > 20


def test_api_key_from_env_and_never_in_public_dict(monkeypatch):
    monkeypatch.setenv("LLMLOAD_API_KEY", "sk-secret-123")
    options = LLMOptions.from_parsed(parsed())
    assert options.api_key == "sk-secret-123"
    assert "sk-secret-123" not in repr(options)
    assert "sk-secret-123" not in str(options.public_dict())
    assert options.public_dict()["api_key_set"] is True


def test_request_kind_options_from_env_vars_and_a_config_file(monkeypatch, tmp_path):
    """The reasoning, tools and LoRA options come in through Locust's usual doors: env vars and config files."""
    import json

    from locust.argument_parser import get_parser

    import llmload.hooks  # noqa: F401  (registers the --llm-* options)

    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]))
    monkeypatch.setenv("LOCUST_LLM_LORA", "a=2,b")
    monkeypatch.setenv("LOCUST_LLM_SLO_TTFT_OF", "answer")
    config = tmp_path / "run.conf"
    config.write_text(f"llm-tools = {tools}\nllm-tool-choice = f\nllm-tool-latency = 0.1-0.3\n")
    options = LLMOptions.from_parsed(get_parser(default_config_files=[str(config)]).parse_args([]))
    assert options.lora == (("a", 2.0), ("b", 1.0)) and options.slo_ttft_of == "answer"
    assert options.tools == str(tools) and options.tool_choice == "f" and options.tool_latency == Range(0.1, 0.3)
