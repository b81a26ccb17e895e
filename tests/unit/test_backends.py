"""The backends file: parsing, one-line errors with line numbers, weighted assignment, keys never recorded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmload.backends import Backend, BackendPicker, describe, load_backends
from llmload.errors import ConfigError
from llmload.options import LLMOptions

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXAMPLE = str(FIXTURES / "backends.toml")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "backends.toml"
    path.write_text(text)
    return str(path)


def test_example_file():
    rtx, a100, h100 = load_backends(EXAMPLE)
    assert rtx == Backend(
        name="rtx3090",
        base_url="http://127.0.0.1:8001",
        model="meta-llama/Llama-3.1-8B-Instruct",
        gpu="RTX 3090 24GB",
        engine="vLLM 0.8.5",
        quantization="fp16",
        price_per_hour=0.22,
        api_key_env="RTX3090_API_KEY",
        weight=1.0,
    )
    assert (a100.weight, h100.weight, h100.model, h100.api_key_env) == (2.0, 3.0, "", "")


def test_only_some_backends():
    assert [b.name for b in load_backends(EXAMPLE, only="h100, rtx3090")] == ["h100", "rtx3090"]
    with pytest.raises(ConfigError) as info:
        load_backends(EXAMPLE, only="tpu")
    assert str(info.value) == f"--llm-backend: no backend 'tpu' in {EXAMPLE}; expected one of rtx3090, a100, h100"


def test_trailing_slash_is_dropped(tmp_path):
    (backend,) = load_backends(write(tmp_path, '[[backend]]\nname = "x"\nbase_url = "http://h:1/"\n'))
    assert backend.base_url == "http://h:1" and backend.weight == 1.0 and backend.price_per_hour is None


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[[backend]]\nname = "a"\nbase_url = "http://h"\n\n'
            '[[backend]]\nname = "b"\nbase_url = "http://h"\ncolour = "red"\n',
            "line 5: unknown key 'colour'; expected name, base_url, model, gpu, engine, quantization, "
            "price_per_hour, api_key_env, weight",
        ),
        ('[[backend]]\nbase_url = "http://h"\n', "line 1: name is required (a non-empty string)"),
        ('[[backend]]\nname = "a"\n', "line 1: base_url is required (a non-empty string)"),
        (
            '[[backend]]\nname = "a"\nbase_url = "h:8000"\n',
            "line 1: base_url must start with http:// or https://, got 'h:8000'",
        ),
        (
            '[[backend]]\nname = "a"\nbase_url = "http://h"\nweight = -1\n',
            "line 1: weight must be a number >= 0, got -1",
        ),
        (
            '[[backend]]\nname = "a"\nbase_url = "http://h"\nprice_per_hour = "cheap"\n',
            "line 1: price_per_hour must be a number >= 0, got 'cheap'",
        ),
        ('[[backend]]\nname = "a"\nbase_url = "http://h"\ngpu = 3090\n', "line 1: gpu must be a string"),
        (
            '[[backend]]\nname = "a"\nbase_url = "http://h"\n[[backend]]\nname = "a"\nbase_url = "http://i"\n',
            "line 4: duplicate backend name 'a'",
        ),
    ],
)
def test_bad_tables_name_the_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_backends(path)
    assert str(info.value) == f"--llm-backends {path} {message}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[server]\nport = 1\n", "unknown key 'server'; expected [[backend]] tables"),
        ("# nothing\n", "no [[backend]] table"),
        ('[[backend]]\nname = "a"\nbase_url = "http://h"\nweight = 0\n', "every weight is 0"),
    ],
)
def test_bad_files(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_backends(path)
    assert str(info.value) == f"--llm-backends {path}: {message}"


def test_toml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, '[[backend]]\nname = "a\n')
    with pytest.raises(ConfigError) as info:
        load_backends(path)
    message = str(info.value)
    assert message.startswith(f"--llm-backends {path}: not valid TOML: ") and "(at line 2, column" in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_backends(str(tmp_path / "none.toml"))
    assert str(info.value) == f"--llm-backends {tmp_path / 'none.toml'}: no such file"


def test_weighted_round_robin_is_exact_and_smooth():
    backends = load_backends(EXAMPLE)
    picker = BackendPicker(backends)
    names = [picker.next().name for _ in range(600)]
    assert Counter(names) == {"rtx3090": 100, "a100": 200, "h100": 300}
    assert names[:6].count("h100") == 3 and names[:6].count("rtx3090") == 1  # every 6 users: 1:2:3
    even = BackendPicker((Backend("a", "http://a"), Backend("b", "http://b")))
    assert [even.next().name for _ in range(6)] == ["a", "b", "a", "b", "a", "b"]
    skip_zero = BackendPicker((Backend("a", "http://a", weight=0), Backend("b", "http://b")))
    assert {skip_zero.next().name for _ in range(5)} == {"b"}


def test_api_key_from_env_and_never_described(monkeypatch):
    monkeypatch.setenv("RTX3090_API_KEY", "sk-rtx-secret")
    rtx = load_backends(EXAMPLE)[0]
    assert rtx.api_key == "sk-rtx-secret"
    described = describe(SimpleNamespace(backends=EXAMPLE, backend_names=""))
    assert "sk-rtx-secret" not in repr(described)
    assert described[0]["api_key_env"] == "RTX3090_API_KEY" and described[0]["api_key_set"] is True
    assert described[1]["api_key_set"] is False
    monkeypatch.delenv("RTX3090_API_KEY")
    assert rtx.api_key == ""
    assert describe(SimpleNamespace(backends="", backend_names="")) is None


def test_options_validate_the_file():
    options = LLMOptions.from_parsed(SimpleNamespace(llm_backends=EXAMPLE, llm_backend="a100"))
    assert options.backends == EXAMPLE and options.backend_names == "a100"
    with pytest.raises(ConfigError) as info:
        LLMOptions.from_parsed(SimpleNamespace(llm_backend="a100"))
    assert str(info.value) == "--llm-backend: only with --llm-backends FILE"
    with pytest.raises(ConfigError):
        LLMOptions.from_parsed(SimpleNamespace(llm_backends="/nonexistent/backends.toml"))
