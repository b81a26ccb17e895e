"""Kernel receive timestamps keep TTFT true when the generator reads late; TLS falls back; connect time apart.

The servers run in their own processes (the test's gevent hub is the client's,
and it is blocked on purpose): ``benchmarks/_truth_server.py`` logs the true
time of every token write on the shared ``CLOCK_MONOTONIC`` (``perf_counter``),
and ``tests/support/tls_sse_server.py`` serves HTTPS with a slow handshake.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import gevent
import orjson
import pytest
from locust.contrib.fasthttp import FastHttpSession
from locust.event import EventHook

from llmload.client import HostCapabilities, LLMClient
from llmload.record import RequestRecord
from tests.support.processes import ROOT, ProcessGroup

pytestmark = pytest.mark.integration

# The loop is blocked for BLOCK_S while the first token arrives; the next token comes after the block
# (ITL_S > BLOCK_S), so the late read holds one event. (Events that queue up behind a late reader are
# coalesced by the kernel and share the newest stamp: llmload/http_adapter.py.)
TTFT_S, ITL_S, TOKENS = 0.05, 0.1, 4
BLOCK_S = 0.05


def start(group: ProcessGroup, cmd: list[str], tmp_path: Path, name: str) -> str:
    """Start a server process and return the URL it prints."""
    log = tmp_path / f"{name}.log"
    proc = group.start(cmd, ROOT, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "http" in line and "127.0.0.1" in line:
                return "http" + line.split("http", 1)[1].strip()
        if proc.poll() is not None:
            pytest.fail(f"{name} exited: {log.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"{name} did not start: {log.read_text()}")


SESSIONS: list[FastHttpSession] = []


@pytest.fixture(autouse=True)
def close_sessions():
    yield
    while SESSIONS:
        SESSIONS.pop().client.clientpool.close()


def make_client(base_url: str, *, kernel_stamps: bool, records: list[RequestRecord]) -> LLMClient:
    hook = EventHook()
    session = FastHttpSession(base_url, request_event=hook, user=None, network_timeout=10, connection_timeout=10)
    SESSIONS.append(session)
    return LLMClient(
        session,
        request_event=hook,
        backend="truth",
        user_class="U",
        capabilities=HostCapabilities(),
        recorder=records.append,
        kernel_stamps=kernel_stamps,
    )


def block_the_loop(after_s: float, for_s: float) -> None:
    """Keep the gevent hub busy (no greenlet runs) for ``for_s`` seconds, ``after_s`` from now."""
    gevent.sleep(after_s)
    end = time.perf_counter() + for_s
    while time.perf_counter() < end:
        pass


def late_requests(client: LLMClient, prefix: str, n: int) -> list[RequestRecord]:
    out = []
    for i in range(n):
        # The first token is due TTFT_S after the request; the loop is blocked from just before
        # until BLOCK_S later, so the client reads it about BLOCK_S - 5 ms late.
        blocker = gevent.spawn(block_the_loop, TTFT_S - 0.005, BLOCK_S)
        record = client.chat(
            [{"role": "user", "content": f"{prefix}{i} hello"}], model="bench-model", max_tokens=TOKENS
        )
        blocker.join()
        out.append(record)
    return out


def test_kernel_stamps_keep_ttft_true_while_user_space_stamps_include_the_block(tmp_path):
    truth_log = tmp_path / "truth.json"
    with ProcessGroup() as group:
        base_url = start(
            group,
            [
                sys.executable,
                "benchmarks/_truth_server.py",
                "--ttft-ms",
                str(TTFT_S * 1e3),
                "--itl-ms",
                str(ITL_S * 1e3),
                "--log",
                str(truth_log),
            ],
            tmp_path,
            "truth",
        )
        kernel_records: list[RequestRecord] = []
        user_records: list[RequestRecord] = []
        kernel = make_client(base_url, kernel_stamps=True, records=kernel_records)
        user = make_client(base_url, kernel_stamps=False, records=user_records)
        # A first request on each client opens its connection (and turns kernel stamping on).
        late_requests(kernel, "warm-k", 1)
        late_requests(user, "warm-u", 1)
        del kernel_records[:], user_records[:]
        late_requests(kernel, "k", 5)
        late_requests(user, "u", 5)
    truth = orjson.loads(truth_log.read_bytes())["requests"]

    def errors(records: list[RequestRecord], prefix: str) -> list[float]:
        out = []
        for i, record in enumerate(records):
            assert record.ok and record.output_tokens == TOKENS, record
            received, writes = truth[f"{prefix}{i}"]
            # writes: [time, tokens, time, tokens, ...]; the role chunk went with the headers, unlogged.
            true_ttft = writes[0] - received
            out.append(record.ttft_s - true_ttft)
        return out

    kernel_errors, user_errors = errors(kernel_records, "k"), errors(user_records, "u")
    assert all(r.clock == "kernel" for r in kernel_records)
    assert all(r.clock == "user" for r in user_records)
    assert max(abs(e) for e in kernel_errors) < 0.002, kernel_errors
    assert statistics.median(user_errors) > (BLOCK_S - 0.005) * 0.8, user_errors
    # The kernel path measured its own lateness: about the block on the late read.
    lateness = [max(r.read_lateness_s) for r in kernel_records]
    assert statistics.median(lateness) > (BLOCK_S - 0.005) * 0.8, lateness
    # The first gap, from the late-read token to the next, is the server's ITL with kernel stamps
    # and short by the block with user-space ones.
    assert statistics.median(r.itl_s[0] for r in kernel_records) == pytest.approx(ITL_S, abs=0.002)
    assert statistics.median(r.itl_s[0] for r in user_records) < ITL_S - (BLOCK_S - 0.005) * 0.8


def test_connect_time_is_apart_from_ttft_and_only_on_a_new_connection(tmp_path):
    with ProcessGroup() as group:
        base_url = start(
            group,
            [sys.executable, "benchmarks/_truth_server.py", "--ttft-ms", "50", "--itl-ms", "5"],
            tmp_path,
            "truth",
        )
        records: list[RequestRecord] = []
        client = make_client(base_url, kernel_stamps=True, records=records)
        for i in range(2):
            client.chat([{"role": "user", "content": f"c{i} hi"}], model="bench-model", max_tokens=4)
    first, second = records
    assert first.connect_s is not None and 0 < first.connect_s < 0.05
    assert second.connect_s is None  # the same connection, kept alive
    for record in records:
        assert record.ok and record.ttft_s == pytest.approx(0.05, abs=0.01)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_falls_back_to_user_space_stamps_and_reports_the_handshake_as_connect_time(tmp_path, certificate):
    cert, key = certificate
    with ProcessGroup() as group:
        base_url = start(
            group,
            [
                sys.executable,
                "tests/support/tls_sse_server.py",
                str(cert),
                str(key),
                "--handshake-delay",
                "0.1",
                "--ttft",
                "0.05",
                "--itl",
                "0.01",
                "--tokens",
                "6",
            ],
            tmp_path,
            "tls",
        )
        records: list[RequestRecord] = []
        client = make_client(base_url, kernel_stamps=True, records=records)
        for i in range(2):
            client.chat([{"role": "user", "content": f"s{i} hi"}], model="m", max_tokens=6)
    first, second = records
    assert first.ok and second.ok, (first.error_detail, second.error_detail)
    assert first.clock == "user" and second.clock == "user" and not first.read_lateness_s
    assert first.output_tokens == 6
    # The 100 ms handshake is connect time; TTFT is the server's 50 ms on both requests.
    assert first.connect_s == pytest.approx(0.1, abs=0.03)
    assert second.connect_s is None
    assert first.ttft_s == pytest.approx(0.05, abs=0.015) and second.ttft_s == pytest.approx(0.05, abs=0.015)


def test_a_connection_opened_by_the_model_lookup_is_not_the_first_requests_connect_time(tmp_path):
    with ProcessGroup() as group:
        base_url = start(
            group,
            [sys.executable, "benchmarks/_truth_server.py", "--ttft-ms", "20", "--itl-ms", "5"],
            tmp_path,
            "truth",
        )
        records: list[RequestRecord] = []
        client = make_client(base_url, kernel_stamps=True, records=records)
        assert client.list_models() == ["bench-model"]
        client.chat([{"role": "user", "content": "m0 hi"}], model="bench-model", max_tokens=3)
    assert records[0].ok and records[0].connect_s is None
