"""The simulator as a real process: wire format, keep-alive, /metrics, faults and fixed timing.

A raw-socket HTTP/1.1 client (below) records when each SSE event arrives and
whether the body ended cleanly, so malformed framing or a premature close is
seen exactly as a load-test client would see it. Every simulator binds port 0
and is stopped by its context manager.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from llmload.simulator.process import SimulatorProcess
from llmload.simulator.tokens import count_text_tokens

pytestmark = pytest.mark.integration

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
PROMPT = "What is the capital of France?"
PROMPT_TOKENS = 26 + 5 + count_text_tokens(PROMPT)


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    events: list[tuple[float, bytes]] = field(default_factory=list)
    complete: bool = False
    t_send: float = 0.0

    @property
    def datas(self) -> list[bytes]:
        return [e for _, e in self.events]

    def chunks(self) -> list[dict]:
        return [json.loads(d) for d in self.datas if d != b"[DONE]"]

    def token_times(self) -> list[float]:
        """Arrival times (from send) of events carrying a generated token."""
        out = []
        for t, d in self.events:
            if d.startswith(b"{") and (b'"delta":{"content":"' in d and b'"content":""' not in d or b'"text":"' in d):
                out.append(t - self.t_send)
        return out


class RawClient:
    """One keep-alive HTTP/1.1 connection with SSE event timing."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _until(self, sep: bytes) -> bytes | None:
        while sep not in self.buf:
            if not self._fill():
                return None
        line, self.buf = self.buf.split(sep, 1)
        return line

    def _exact(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def request(
        self, method: str, path: str, body: dict | bytes | None = None, headers: dict | None = None
    ) -> Response:
        payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", "Host: sim", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        if payload is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        resp = Response(t_send=time.perf_counter())
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (payload or b""))
        return self.read(resp)

    def read(self, resp: Response) -> Response:
        head = self._until(b"\r\n\r\n")
        if head is None:
            return resp
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        resp.status = int(status_line.split(" ")[1])
        resp.headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        if resp.headers.get("transfer-encoding") != "chunked":
            body = self._exact(int(resp.headers.get("content-length", "0")))
            resp.complete, resp.body = body is not None, body or b""
            return resp
        pending = b""
        while True:
            size_line = self._until(b"\r\n")
            if size_line is None:
                return resp
            size = int(size_line, 16)
            data = self._exact(size + 2)
            if data is None:
                return resp
            if size == 0:
                resp.complete = True
                return resp
            now = time.perf_counter()
            resp.body += data[:-2]
            pending += data[:-2]
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                assert event.startswith(b"data: "), event
                resp.events.append((now, event[6:]))


def chat(stream: bool = True, max_tokens: int = 8, **extra) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "stream": stream,
        **extra,
    }


USAGE = {"stream_options": {"include_usage": True}}


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "50", "--itl-ms", "10", "--seed", "1"]) as s:
        yield s


@pytest.fixture
def client(sim):
    c = RawClient(sim.base_url)
    yield c
    c.close()


def test_health_models_version(client):
    r = client.request("GET", "/health")
    assert (r.status, r.body) == (200, b"")
    models = json.loads(client.request("GET", "/v1/models").body)
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [MODEL]
    assert models["data"][0]["object"] == "model" and models["data"][0]["owned_by"] == "vllm"
    assert "version" in json.loads(client.request("GET", "/version").body)
    assert client.request("GET", "/nope").status == 404


def test_chat_stream_format_role_tokens_usage_done(client):
    r = client.request("POST", "/v1/chat/completions", chat(max_tokens=8, **USAGE))
    assert r.status == 200 and r.complete
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks, datas = r.chunks(), r.datas
    assert datas[-1] == b"[DONE]"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = chunks[1:-1]
    assert len(tokens) == 8 and all(set(c["choices"][0]["delta"]) == {"content"} for c in tokens)
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None] * 7 + ["length"]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "total_tokens": PROMPT_TOKENS + 8,
        "completion_tokens": 8,
    }
    text = "".join(c["choices"][0]["delta"]["content"] for c in tokens)
    assert count_text_tokens(text) == 8


def test_completions_stream_format(client):
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 5, "stream": True, **USAGE}
    r = client.request("POST", "/v1/completions", body)
    chunks = r.chunks()
    assert r.datas[-1] == b"[DONE]" and len(chunks) == 6
    assert all(c["object"] == "text_completion" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:5]] == [None] * 4 + ["length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    assert chunks[-1]["usage"]["prompt_tokens"] == 5


def test_continuous_usage_counts_sum_correctly(client):
    options = {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    chunks = client.request("POST", "/v1/chat/completions", chat(max_tokens=6, **options)).chunks()
    assert [c["usage"]["completion_tokens"] for c in chunks[:-1]] == list(range(7))
    assert all(c["usage"]["prompt_tokens"] == PROMPT_TOKENS for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == 6


def test_non_streaming_chat_and_completions(client):
    r = client.request("POST", "/v1/chat/completions", chat(stream=False, max_tokens=4))
    body = json.loads(r.body)
    assert r.status == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["finish_reason"] == "length"
    assert count_text_tokens(body["choices"][0]["message"]["content"]) == 4 == body["usage"]["completion_tokens"]
    r = client.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 3})
    assert json.loads(r.body)["usage"] == {
        "prompt_tokens": 2,
        "total_tokens": 5,
        "completion_tokens": 3,
        "prompt_tokens_details": None,
    }


def test_keep_alive_and_connection_close(sim):
    c = RawClient(sim.base_url)
    try:
        first = c.request("POST", "/v1/chat/completions", chat(max_tokens=3))
        second = c.request("POST", "/v1/chat/completions", chat(stream=False, max_tokens=2))
        assert first.complete and second.status == 200 and "connection" not in second.headers
        last = c.request("GET", "/health", headers={"Connection": "close"})
        assert last.status == 200 and last.headers["connection"] == "close"
        assert c.sock.recv(10) == b""  # the server closed after answering
    finally:
        c.close()


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{broken", 400, "Invalid JSON"),
        ({"model": MODEL}, 400, "messages"),
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "The model `nope` does not exist."),
    ],
)
def test_errors(client, body, status, fragment):
    r = client.request("POST", "/v1/chat/completions", body)
    assert r.status == status and fragment in json.loads(r.body)["error"]["message"]
    assert client.request("GET", "/health").status == 200  # the connection survives


def test_metrics_count_exactly_what_was_sent(sim, client):
    before = client.request("GET", "/metrics").body.decode()
    sent = 0
    for n in (3, 7, 11):
        sent += len(client.request("POST", "/v1/chat/completions", chat(max_tokens=n)).token_times())
    sent += json.loads(client.request("POST", "/v1/completions", {"prompt": "a b", "max_tokens": 4}).body)["usage"][
        "completion_tokens"
    ]
    after = client.request("GET", "/metrics").body.decode()
    assert sent == 25
    for name, delta in (
        ("vllm:generation_tokens_total", 25),
        ("vllm:prompt_tokens_total", 3 * PROMPT_TOKENS + 3),
        ("vllm:time_to_first_token_seconds_count", 4),
        ("vllm:e2e_request_latency_seconds_count", 4),
        ("vllm:inter_token_latency_seconds_count", 21),
        ("vllm:request_generation_tokens_sum", 25),
    ):
        assert metric(after, name) - metric(before, name) == delta, name
    done = metric(after, "vllm:request_success_total", finished_reason="length")
    assert done - metric(before, "vllm:request_success_total", finished_reason="length") == 4
    assert metric(after, "vllm:num_requests_running", engine="0", model_name=MODEL) == 0


def test_fixed_profile_timing_is_absolute(client):
    # Tolerance: never early, at most ~1 ms of asyncio timer rounding plus loopback; 5 ms on a busy CI host.
    firsts, lasts = [], []
    for _ in range(5):
        times = client.request("POST", "/v1/chat/completions", chat(max_tokens=20)).token_times()
        assert len(times) == 20
        firsts.append(times[0])
        lasts.append(times[-1])
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert statistics.median(gaps) == pytest.approx(0.010, abs=0.002)
    assert 0.0495 <= statistics.median(firsts) <= 0.055
    assert 0.2395 <= statistics.median(lasts) <= 0.245  # 50 + 19 * 10 ms: no drift over the stream


def test_full_speed_and_answer_tokens():
    extra = ["--ttft-ms", "0", "--itl-ms", "0", "--answer-tokens", "5"]
    with SimulatorProcess(profile="fixed", extra_args=extra) as s:
        c = RawClient(s.base_url)
        r = c.request("POST", "/v1/chat/completions", chat(max_tokens=1000, **USAGE))
        assert (
            r.chunks()[-2]["choices"][0]["finish_reason"] == "stop"
            and r.chunks()[-1]["usage"]["completion_tokens"] == 5
        )
        r = c.request("POST", "/v1/chat/completions", chat(max_tokens=1000, ignore_eos=True, **USAGE))
        assert r.chunks()[-1]["usage"]["completion_tokens"] == 1000 and len(r.token_times()) == 1000
        c.close()
    assert s.stop() == 0  # already stopped by the context manager: SIGTERM exits cleanly with 0


def fault_sim(kind: str, *more: str) -> SimulatorProcess:
    return SimulatorProcess(profile="fixed", extra_args=["--itl-ms", "5", "--fault", kind, "--fault-after", "5", *more])


@pytest.mark.parametrize(
    ("kind", "status"), [("http_429", 429), ("http_500", 500), ("http_503", 503), ("http_400", 400)]
)
def test_http_faults(kind, status):
    with fault_sim(kind) as s:
        c = RawClient(s.base_url)
        r = c.request("POST", "/v1/chat/completions", chat())
        assert r.status == status and "error" in json.loads(r.body)
        assert ("retry-after" in r.headers) == (status in (429, 503))
        assert c.request("GET", "/health").status == 200
        c.close()


def test_disconnect_fault_closes_mid_body():
    with fault_sim("disconnect") as s:
        c = RawClient(s.base_url)
        r = c.request("POST", "/v1/chat/completions", chat(max_tokens=20, **USAGE))
        assert r.status == 200 and not r.complete and len(r.token_times()) == 5 and b"[DONE]" not in r.datas
        c.close()


def test_malformed_fault_sends_a_broken_event_then_ends_the_body():
    with fault_sim("malformed") as s:
        c = RawClient(s.base_url)
        r = c.request("POST", "/v1/chat/completions", chat(max_tokens=20))
        assert r.complete and r.datas[-1] == b"{not json" and len(r.token_times()) == 5
        assert c.request("GET", "/health").status == 200
        c.close()


def test_incomplete_fault_ends_cleanly_without_finish_or_done():
    with fault_sim("incomplete") as s:
        c = RawClient(s.base_url)
        r = c.request("POST", "/v1/chat/completions", chat(max_tokens=20, **USAGE))
        assert r.complete and len(r.token_times()) == 5 and b"[DONE]" not in r.datas
        assert all(ch["choices"][0]["finish_reason"] is None for ch in r.chunks())
        text = c.request("GET", "/metrics").body.decode()
        assert metric(text, "vllm:generation_tokens_total") == 5
        assert metric(text, "vllm:request_success_total", finished_reason="abort") == 1
        c.close()


def test_stall_fault_goes_silent_then_closes():
    with fault_sim("stall", "--stall-s", "0.6") as s:
        c = RawClient(s.base_url)
        r = c.request("POST", "/v1/chat/completions", chat(max_tokens=20))
        assert not r.complete and len(r.token_times()) == 5
        assert time.perf_counter() - r.t_send >= 0.6
        c.close()


def test_fault_rate_is_seeded():
    def statuses() -> list[int]:
        with fault_sim("http_500", "--fault-rate", "0.5", "--seed", "42") as s:
            c = RawClient(s.base_url)
            out = [
                c.request("POST", "/v1/chat/completions", chat(stream=False, max_tokens=1)).status for _ in range(20)
            ]
            c.close()
            return out

    first = statuses()
    assert set(first) == {200, 500} and first == statuses()


def test_reject_stream_options():
    with SimulatorProcess(profile="fixed", extra_args=["--reject-stream-options"]) as s:
        c = RawClient(s.base_url)
        r = c.request("POST", "/v1/chat/completions", chat(**USAGE))
        assert r.status == 400 and json.loads(r.body)["error"]["type"] == "invalid_request_error"
        assert c.request("POST", "/v1/chat/completions", chat()).datas[-1] == b"[DONE]"
        c.close()


def test_perf_profile_queues_beyond_max_num_seqs():
    with SimulatorProcess(profile="rtx3090", extra_args=["--max-num-seqs", "1"]) as s:
        results: list[Response] = []

        def one() -> None:
            c = RawClient(s.base_url)
            results.append(c.request("POST", "/v1/chat/completions", chat(max_tokens=25)))
            c.close()

        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        c = RawClient(s.base_url)
        text = c.request("GET", "/metrics").body.decode()
        assert metric(text, "vllm:num_requests_running") == 1 and metric(text, "vllm:num_requests_waiting") == 1
        assert 0 < metric(text, "vllm:kv_cache_usage_perc") < 0.01
        for t in threads:
            t.join()
        first, second = sorted((r.token_times() for r in results), key=lambda t: t[0])
        # One 3090 step with one sequence is ~22 ms; the second request waits for the first to finish.
        gaps = [b - a for a, b in zip(first, first[1:], strict=False)]
        assert statistics.median(gaps) == pytest.approx(0.022, abs=0.003)
        assert second[0] > first[-1]
        text = c.request("GET", "/metrics").body.decode()
        assert metric(text, "vllm:generation_tokens_total") == 50
        assert metric(text, "vllm:request_queue_time_seconds_count") == 2
        c.close()


def test_client_disconnect_aborts_the_request_and_sigint_exits_cleanly():
    import os
    import signal

    with SimulatorProcess(profile="rtx3090") as s:
        c = RawClient(s.base_url)
        c.sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nContent-Length: %d\r\n\r\n%s"
            % (len(json.dumps(chat(max_tokens=500))), json.dumps(chat(max_tokens=500)).encode())
        )
        while c.buf.count(b'"delta":{"content":"') < 4:
            c._fill()
        c.close()
        probe = RawClient(s.base_url)
        for _ in range(50):
            text = probe.request("GET", "/metrics").body.decode()
            if metric(text, "vllm:request_success_total", finished_reason="abort") == 1:
                break
            time.sleep(0.02)
        assert metric(text, "vllm:request_success_total", finished_reason="abort") == 1
        assert metric(text, "vllm:num_requests_running") == 0 and metric(text, "vllm:kv_cache_usage_perc") == 0
        assert 3 <= metric(text, "vllm:generation_tokens_total") < 10
        probe.close()
        os.kill(s.pid, signal.SIGINT)
        assert s._proc.wait(timeout=5) == 0
