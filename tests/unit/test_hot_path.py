"""The optimised measurement path gives exactly what the straightforward one gave.

* ``Distribution.record`` and ``record_many`` (HdrHistogram's indexing
  inlined) must leave the histogram bit-identical to hdrh's own
  ``record_value``, and count, sum, min and max identical to each other;
* ``read_stream`` decodes SSE from the response buffer itself: on random
  streams split at random byte positions (CRLF, comments, multi-line data,
  other fields, ``data`` without a colon, split UTF-8, an unterminated last
  event) it must yield the events ``SSEDecoder`` yields line by line;
* the per-request stall timer must fail a stream only after a whole
  ``--llm-stream-timeout`` without a byte, not after that long in total.
"""

from __future__ import annotations

import random

import pytest
from hdrh.histogram import HdrHistogram
from locust.contrib.fasthttp import FastHttpSession
from locust.event import EventHook

from llmload.client import HostCapabilities, LLMClient
from llmload.distribution import Distribution
from llmload.record import RequestRecord
from llmload.sse import SSEDecoder
from llmload.stream import StreamReader, read_stream
from tests.support.chunks import DONE, chat_chunk, usage_chunk
from tests.support.scripted_server import ScriptedServer, sse_response

LATENCY = dict(scale=1e6, highest=3_600_000_000)
RATE = dict(scale=1e3, highest=1_000_000_000)


@pytest.mark.parametrize("kind", [LATENCY, RATE])
def test_record_and_record_many_are_identical_to_hdrh(kind):
    rng = random.Random(11)
    values = [
        rng.choice([0.0, -0.5, 1e-9, 4e9, 2.5e-7, rng.lognormvariate(-4, 2), rng.uniform(0, 300)])
        for _ in range(20_000)
    ]
    one, many = Distribution(**kind), Distribution(**kind)
    for value in values:
        one.record(value)
    # Both inline HdrHistogram's indexing; the reference is hdrh's own record_value.
    reference = HdrHistogram(1, kind["highest"], 3)
    for value in values:
        reference.record_value(min(max(int(round(value * kind["scale"])), 1), kind["highest"]))
    assert one.histogram.encode() == reference.encode()
    assert (one.histogram.total_count, one.histogram.min_value, one.histogram.max_value) == (
        reference.total_count,
        reference.min_value,
        reference.max_value,
    )
    many.record_many(values[:5000])
    many.record_many(iter(values[5000:12000]))  # any iterable
    many.record_many([])
    many.record_many(tuple(values[12000:]))
    assert many.histogram.encode() == one.histogram.encode()
    assert many.histogram.counts() == one.histogram.counts()
    assert (many.histogram.total_count, many.histogram.min_value, many.histogram.max_value) == (
        one.histogram.total_count,
        one.histogram.min_value,
        one.histogram.max_value,
    )
    assert (many.count, many.total, many.min, many.max) == (one.count, one.total, one.min, one.max)
    for q in (1, 10, 50, 90, 99, 99.9):
        assert many.percentile(q) == one.percentile(q)


class _FakeSocket:
    """A socket whose reads return scripted chunks (then EOF)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    def gettimeout(self) -> None:
        return None

    def settimeout(self, value: float | None) -> None:
        pass

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


class _FakeResponse:
    """The parts of geventhttpclient's response that ``read_stream`` uses; the body arrives unframed."""

    def __init__(self, chunks: list[bytes], *, pre_buffered: bytes = b"") -> None:
        self._body_buffer = bytearray(pre_buffered)
        self._sock = _FakeSocket(chunks)
        self.message_complete = False
        self.released = False

    def feed(self, data: bytes) -> None:
        if data:
            self._body_buffer += data
        else:
            self.message_complete = True

    def release(self) -> None:
        self.released = True


class _Collector(StreamReader):
    def __init__(self) -> None:
        super().__init__(
            RequestRecord(
                backend="b", model="m", user_class="u", endpoint="/v1/chat/completions", t_send=0.0, start_wall=0.0
            ),
            chat=True,
        )
        self.events: list[bytes] = []

    def on_event(self, data: bytes, t: float) -> bool:
        self.events.append(data)
        return True


def _reference_events(body: bytes) -> list[bytes]:
    """Decode as the line-by-line reader did: ``readline(b"\\n")`` lines, then the unterminated rest."""
    decoder, out = SSEDecoder(), []
    pieces = body.split(b"\n")
    for i, piece in enumerate(pieces):
        line = piece + b"\n" if i < len(pieces) - 1 else piece
        if not line:
            continue
        data = decoder.feed_line(line)
        if data is not None:
            out.append(data)
    data = decoder.flush()
    if data is not None:
        out.append(data)
    return out


def _random_stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(0, 12)):
        eol = rng.choice([b"\n", b"\r\n", b"\r\r\n"])
        kind = rng.random()
        if kind < 0.1:
            parts.append(b": keep-alive" + eol)
        elif kind < 0.15:
            parts.append(b"event: message" + eol + b"id: 7" + eol)
        lines = rng.randint(1, 3)
        for _ in range(lines):
            value = rng.choice(["tok", "é世", "", "a:b", " lead", "[DONE]"]).encode()
            prefix = rng.choice([b"data: ", b"data:", b"data:  "]) if value or rng.random() < 0.5 else b"data"
            parts.append(prefix + value + eol)
        parts.append(eol)  # dispatch
    if rng.random() < 0.3:
        parts.append(b"data: unterminated")
    return b"".join(parts)


def _split(body: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(0, 8)))) if len(body) > 1 else []
    edges = [0, *cuts, len(body)]
    return [body[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


def test_buffer_decoder_matches_the_line_decoder_on_random_splits():
    rng = random.Random(5)
    for _ in range(3000):
        body = _random_stream(rng)
        chunks = _split(body, rng)
        pre = b""
        if chunks and rng.random() < 0.3:  # part of the body arrived with the headers
            pre = chunks.pop(0)
        reader = _Collector()
        read_stream(_FakeResponse(chunks, pre_buffered=pre), reader)
        assert reader.events == _reference_events(body), body
        assert reader.record.error_kind is None and reader.record.t_end is not None


def test_events_completed_by_one_read_share_its_timestamp():
    body = [b"data: a\n\ndata: b\n\n", b"data: c\n", b"\n"]
    stamps = []

    class Stamping(_Collector):
        def on_event(self, data: bytes, t: float) -> bool:
            stamps.append((data, t))
            return True

    read_stream(_FakeResponse(body), Stamping())
    assert [d for d, _ in stamps] == [b"a", b"b", b"c"]
    assert stamps[0][1] == stamps[1][1] < stamps[2][1]


def test_stall_timeout_counts_silence_between_bytes_not_the_whole_stream():
    events = [chat_chunk("", role="assistant")]
    for word in ("a", "b", "c", "d"):
        events += [0.25, chat_chunk(word)]
    script = sse_response([*events, chat_chunk(None, finish="stop"), usage_chunk(1, 4), DONE])
    recorded: list[RequestRecord] = []
    with ScriptedServer(lambda i, request: script) as server:
        session = FastHttpSession(
            server.base_url, request_event=EventHook(), user=None, network_timeout=0.6, connection_timeout=0.6
        )
        client = LLMClient(
            session,
            request_event=EventHook(),
            backend="be",
            user_class="U",
            capabilities=HostCapabilities(),
            recorder=recorded.append,
        )
        ok = client.chat([{"role": "user", "content": "hi"}], model="m")
        assert ok.ok, ok.error_detail
        assert ok.t_end - ok.t_send > 0.9 and len(ok.token_times) == 4  # 1 s in all, 0.25 s silences
        session.client.clientpool.close()


def _one_request(script) -> RequestRecord:
    with ScriptedServer(lambda i, request: script) as server:
        session = FastHttpSession(
            server.base_url, request_event=EventHook(), user=None, network_timeout=2, connection_timeout=2
        )
        client = LLMClient(
            session, request_event=EventHook(), backend="be", user_class="U", capabilities=HostCapabilities()
        )
        try:
            return client.chat([{"role": "user", "content": "hi"}], model="m")
        finally:
            session.client.clientpool.close()


def test_body_read_until_the_server_closes():
    events = [
        chat_chunk("", role="assistant"),
        chat_chunk("a"),
        0.05,
        chat_chunk("b", finish="stop"),
        usage_chunk(1, 2),
        DONE,
    ]
    record = _one_request(sse_response(events, chunked=False))
    assert record.ok, record.error_detail
    assert len(record.token_times) == 2 and record.output_tokens == 2 and record.saw_done


def test_body_with_content_length_arrives_whole_with_the_headers():
    body = chat_chunk("a") + chat_chunk("b", finish="stop") + usage_chunk(1, 2) + DONE
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    record = _one_request([head + body])
    assert record.ok, record.error_detail
    assert len(record.token_times) == 2 and record.output_tokens == 2
