"""Length distributions (syntax, moments, clamps), dataset loaders and their one-line errors, shared prefixes."""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmload import datasets
from llmload.datasets import estimate_tokens, load_dataset, parse_distribution, shared_prefix
from llmload.errors import ConfigError
from llmload.options import LLMOptions

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
N = 20_000


def draws(spec: str, n: int = N, seed: int = 7) -> list[int]:
    dist = parse_distribution(spec)
    rng = random.Random(seed)
    return [dist.draw(rng) for _ in range(n)]


def test_estimate_tokens_matches_the_simulators_rule():
    assert estimate_tokens("What's 2+2?") == 7
    assert estimate_tokens("What is the capital of France?") == 7
    assert estimate_tokens("") == 0


@pytest.mark.parametrize(
    "spec, kind, mean",
    [
        ("250", "fixed", 250),
        ("fixed:250", "fixed", 250),
        ("fixed:value=250", "fixed", 250),
        ("100-300", "uniform", 200),
        ("uniform:min=100,max=300", "uniform", 200),
        ("normal:mean=200,sd=50,min=10,max=512", "normal", 200),
        ("lognormal:mean=200,sigma=0.5,min=10,max=1024", "lognormal", 200),
        ("LogNormal: median=180 , sigma=0.5", "lognormal", 180 * math.exp(0.125)),
    ],
)
def test_syntax(spec, kind, mean):
    dist = parse_distribution(spec)
    assert dist.kind == kind and dist.spec == spec.strip()
    assert dist.mean == pytest.approx(mean)


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "gamma:k=2",
            "--llm-input-tokens: unknown distribution 'gamma'; expected one of fixed, uniform, normal, lognormal",
        ),
        ("normal:mean=5,sigma=1", "--llm-input-tokens: unknown key 'sigma' for normal; expected mean, sd, min, max"),
        ("normal:mean=5", "--llm-input-tokens: normal needs sd in 'normal:mean=5'"),
        (
            "lognormal:sigma=0.5",
            "--llm-input-tokens: lognormal needs exactly one of mean, median in 'lognormal:sigma=0.5'",
        ),
        (
            "lognormal:mean=5,median=4,sigma=1",
            "--llm-input-tokens: lognormal needs exactly one of mean, median in 'lognormal:mean=5,median=4,sigma=1'",
        ),
        ("uniform:min=10,max=5", "--llm-input-tokens: expected 0 <= min <= max in 'uniform:min=10,max=5'"),
        ("normal:mean=x,sd=1", "--llm-input-tokens: mean='x' is not a number in 'normal:mean=x,sd=1'"),
        (
            "lots",
            "--llm-input-tokens: expected N, A-B or KIND:key=value,... "
            "with KIND one of fixed, uniform, normal, lognormal; got 'lots'",
        ),
        (
            "uniform:min=1.5,max=3",
            "--llm-input-tokens: uniform bounds must be whole numbers in 'uniform:min=1.5,max=3'",
        ),
    ],
)
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(ConfigError) as info:
        parse_distribution(spec)
    assert str(info.value) == message


def test_fixed_is_exact():
    assert set(draws("fixed:37", n=100)) == {37}


def test_uniform_moments_and_bounds():
    values = draws("uniform:min=100,max=300")
    assert min(values) == 100 and max(values) == 300
    # Discrete uniform: mean 200, variance ((b - a + 1)^2 - 1) / 12; tolerance 4 standard errors.
    variance = (201**2 - 1) / 12
    assert statistics.fmean(values) == pytest.approx(200, abs=4 * math.sqrt(variance / N))
    assert statistics.pvariance(values) == pytest.approx(variance, rel=0.04)


def test_normal_moments():
    values = draws("normal:mean=200,sd=30")
    assert statistics.fmean(values) == pytest.approx(200, abs=4 * 30 / math.sqrt(N))
    # Rounding to whole tokens adds 1/12 to the variance.
    assert statistics.pstdev(values) == pytest.approx(math.sqrt(30**2 + 1 / 12), rel=0.03)


def test_lognormal_mean_and_median_parameterizations():
    sigma = 0.5
    values = draws("lognormal:mean=200,sigma=0.5")
    sd = 200 * math.sqrt(math.exp(sigma**2) - 1)
    assert statistics.fmean(values) == pytest.approx(200, abs=4 * sd / math.sqrt(N))
    logs = [math.log(v) for v in values]
    assert statistics.pstdev(logs) == pytest.approx(sigma, rel=0.03)
    medians = draws("lognormal:median=180,sigma=0.5")
    assert statistics.median(medians) == pytest.approx(180, rel=0.03)


def test_clamps_hold_and_take_the_clamped_mass():
    values = draws("normal:mean=100,sd=50,min=80,max=120")
    assert min(values) == 80 and max(values) == 120
    # P(round(x) <= 80) = P(x < 80.5) = Phi(-0.39) = 0.348; same at the top by symmetry.
    phi = 0.5 * (1 + math.erf(-0.39 / math.sqrt(2)))
    for bound in (80, 120):
        share = values.count(bound) / N
        assert share == pytest.approx(phi, abs=4 * math.sqrt(phi * (1 - phi) / N))
    heavy = draws("lognormal:mean=200,sigma=1.5,min=10,max=1024")
    assert min(heavy) >= 10 and max(heavy) == 1024
    assert min(draws("normal:mean=0,sd=5")) >= 1  # min defaults to 1


def test_draws_are_reproducible_with_the_seed():
    assert draws("lognormal:mean=50,sigma=1", n=50, seed=3) == draws("lognormal:mean=50,sigma=1", n=50, seed=3)
    assert draws("lognormal:mean=50,sigma=1", n=50, seed=3) != draws("lognormal:mean=50,sigma=1", n=50, seed=4)


# -- files ------------------------------------------------------------------------------------


def test_sharegpt_loader():
    data = load_dataset(str(FIXTURES / "sharegpt_small.json"))
    assert data.format == "sharegpt"
    assert len(data.entries) == 4 and data.skipped == 1  # conv-3 has no human turn
    first = data.entries[0]
    assert first.prompt == "What is the capital of France?"
    assert first.user_turns() == ["What is the capital of France?", "And how many people live there?"]
    assert (first.input_tokens, first.output_tokens) == (7, 7)
    system = data.entries[1]
    assert system.turns[0] == ("system", "You are a helpful assistant.")
    # The system prompt (6 tokens) counts towards the input, as it is sent with the question.
    assert system.input_tokens == 6 + estimate_tokens("Write a haiku about the sea.")


def test_jsonl_loader_accepts_every_form():
    data = load_dataset(str(FIXTURES / "prompts.jsonl"))
    assert data.format == "jsonl" and len(data.entries) == 5
    prompts = [e.prompt for e in data.entries]
    assert prompts[0] == "Give me three tips for better sleep."
    assert prompts[2] == "Why is the sky blue during the day?"
    assert prompts[3] == "Suggest a name for a coffee shop."
    assert [e.output_tokens for e in data.entries] == [
        64,
        16,
        None,
        3,
        estimate_tokens(
            "It pumps heat out of the cabinet with a refrigerant that evaporates inside and condenses outside."
        ),
    ]


def test_length_filters():
    data = load_dataset(str(FIXTURES / "sharegpt_small.json"), input_tokens=(4, 20), output_tokens=(4, 20))
    assert [(e.input_tokens, e.output_tokens) for e in data.entries] == [(7, 7), (13, 17)]
    assert data.skipped == 3
    with pytest.raises(ConfigError) as info:
        load_dataset(str(FIXTURES / "sharegpt_small.json"), input_tokens=(1000, 2000))
    assert str(info.value).endswith("sharegpt_small.json: no usable entries after the length filters (5 dropped)")


def test_format_can_be_forced():
    assert load_dataset(str(FIXTURES / "prompts.jsonl"), format="jsonl").format == "jsonl"
    with pytest.raises(ConfigError) as info:
        load_dataset(str(FIXTURES / "prompts.jsonl"), format="sharegpt")
    assert (
        str(info.value)
        == f"--llm-dataset {FIXTURES / 'prompts.jsonl'} line 1: expected a JSON array of ShareGPT entries"
    )


@pytest.mark.parametrize(
    "name, message",
    [
        ("malformed.jsonl", "line 3: not valid JSON (Expecting property name enclosed in double quotes, column 36)"),
        ("malformed_sharegpt.json", "line 4: unknown speaker 'robot'; expected human, gpt or system"),
    ],
)
def test_malformed_files_name_the_file_and_line(name, message):
    with pytest.raises(ConfigError) as info:
        load_dataset(str(FIXTURES / name))
    assert str(info.value) == f"--llm-dataset {FIXTURES / name} {message}"


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"prompt": "a"}\n[1, 2]\n', "line 2: expected a JSON object, got list"),
        ('{"prompt": "a"}\n{"question": "b"}\n', 'line 2: expected "prompt", "text", "messages" or "conversations"'),
        ('{"prompt": "a", "output_tokens": 0}\n', "line 1: output_tokens must be a positive integer, got 0"),
        ('[\n{"conversations": "hello"}\n]', 'line 2: "conversations" must be a list of {"from", "value"} objects'),
        (
            '[\n  {"conversations": []},\n  {"conversations": []} oops\n]',
            "line 3: not valid JSON (expected ',' or ']' between array elements)",
        ),
        (
            '{"messages": [{"role": "bot", "content": "x"}]}\n',
            'line 1: "messages" must be a list of {"role": user|assistant|system, "content": str}',
        ),
    ],
)
def test_structural_errors(tmp_path, text, message):
    path = tmp_path / "data.txt"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_dataset(str(path))
    assert str(info.value) == f"--llm-dataset {path} {message}"


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_dataset(str(tmp_path / "nope.json"))
    assert str(info.value) == f"--llm-dataset {tmp_path / 'nope.json'}: no such file"
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"prompt": "ok"}\n\xff\xfe\n')
    with pytest.raises(ConfigError) as info:
        load_dataset(str(binary))
    assert str(info.value) == f"--llm-dataset {binary} line 2: not UTF-8 text"


def test_file_is_read_once_per_process(tmp_path, monkeypatch):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "hello there"}\n')
    first = load_dataset(str(path))
    reads = []
    monkeypatch.setattr(datasets, "_iter_jsonl", lambda *a: reads.append(a) or iter(()))
    assert load_dataset(str(path)) is first and reads == []


def test_options_validate_the_dataset_at_start_up():
    bad = SimpleNamespace(llm_dataset=str(FIXTURES / "malformed.jsonl"))
    with pytest.raises(ConfigError) as info:
        LLMOptions.from_parsed(bad)
    assert "malformed.jsonl line 3: not valid JSON" in str(info.value)
    options = LLMOptions.from_parsed(
        SimpleNamespace(
            llm_dataset=str(FIXTURES / "sharegpt_small.json"),
            llm_dataset_input_tokens="4-256",
            llm_input_tokens="lognormal:mean=200,sigma=0.5",
            llm_output_tokens="50-100",
            llm_turns="2-4",
        )
    )
    assert options.dataset_input_tokens.low == 4 and options.input_tokens == "lognormal:mean=200,sigma=0.5"
    public = options.public_dict()
    assert public["dataset_input_tokens"] == [4.0, 256.0] and public["turns"] == "2-4"
    with pytest.raises(ConfigError) as info:
        LLMOptions.from_parsed(SimpleNamespace(llm_output_tokens="normal:mean=5"))
    assert str(info.value) == "--llm-output-tokens: normal needs sd in 'normal:mean=5'"
    with pytest.raises(ConfigError) as info:
        LLMOptions.from_parsed(SimpleNamespace(llm_dataset_format="csv"))
    assert str(info.value) == "--llm-dataset-format: expected one of auto, sharegpt, jsonl, got 'csv'"
    with pytest.raises(ConfigError) as info:
        LLMOptions.from_parsed(SimpleNamespace(llm_shared_prefix_tokens="-5"))
    assert str(info.value) == "--llm-shared-prefix-tokens: expected a whole number >= 0, got '-5'"


def test_shared_prefix_is_the_same_everywhere_for_a_seed():
    text = shared_prefix(500, 0)
    assert text == shared_prefix(500, 0) != shared_prefix(500, 1)
    assert estimate_tokens(text) == pytest.approx(500, rel=0.1)
    assert shared_prefix(0, 0) == ""
