"""The run's targets: one label, URL and key per backend; keys never described; unset key variables said once."""

from __future__ import annotations

import logging

from llmload.backends import Backend
from llmload.options import LLMOptions
from llmload.targets import for_backend, for_host, warn_missing_keys


def test_a_backend_takes_its_key_from_its_variable_only(monkeypatch):
    monkeypatch.setenv("LLMLOAD_TEST_GPU_KEY", "sk-gpu")
    target = for_backend(Backend(name="gpu", base_url="http://gpu:8000", api_key_env="LLMLOAD_TEST_GPU_KEY"))
    assert (target.label, target.api_key, target.metrics_url) == ("gpu", "sk-gpu", "http://gpu:8000/metrics")
    described = target.describe()
    assert "sk-gpu" not in repr(described) and "sk-gpu" not in repr(target)
    assert described["api_key_set"] is True and described["label"] == "gpu"


def test_a_host_target_uses_the_run_key_and_redacts_credentials():
    target = for_host("http://user:pw@gpu:8000", label=None, options=LLMOptions(api_key="sk-run"))
    assert target.label == "http://user:pw@gpu:8000" and target.api_key == "sk-run"
    assert target.describe() == {"label": "http://user:pw@gpu:8000", "base_url": "http://gpu:8000", "api_key_set": True}


def test_an_unset_key_variable_is_one_line(monkeypatch, caplog):
    monkeypatch.delenv("LLMLOAD_TEST_UNSET", raising=False)
    backends = (
        Backend(name="a", base_url="http://a:1", api_key_env="LLMLOAD_TEST_UNSET"),
        Backend(name="b", base_url="http://b:1"),
    )
    with caplog.at_level(logging.WARNING, logger="llmload"):
        lines = warn_missing_keys(backends)
    assert lines == [
        "llmload: backend a: api_key_env LLMLOAD_TEST_UNSET is not set; "
        "its requests and /metrics scrapes go without an API key"
    ]
    assert [r.getMessage() for r in caplog.records] == lines
