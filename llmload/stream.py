"""Reading one streamed OpenAI-compatible response into a ``RequestRecord``.

``read_stream`` reads the SSE body line by line as bytes arrive (never
Locust's ``iter_lines``, which batches 1 KiB) and timestamps every event with
``time.perf_counter()`` on arrival; ``StreamReader`` interprets each event.
Failures never raise: they are classified into ``record.error_kind`` (see
``llmload.errors.ERROR_KINDS``).

Per SSE event the hot path is: read a line, one ``orjson.loads``, one
timestamp, one list append. Metrics and histograms are computed once per
request, after the stream ends.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

import gevent
import orjson

from llmload.http_adapter import READ_ERRORS, HTTPConnectionClosed, StreamingBody
from llmload.record import RequestRecord
from llmload.sse import SSEDecoder

_ERROR_BODY_LIMIT = 160


def classify_status(status: int) -> str:
    """Map an HTTP error status to an error class."""
    if status == 429:
        return "http_429"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_5xx"


def _is_timeout(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, (socket.timeout, TimeoutError, gevent.Timeout)):
            return True
        if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:
            return True
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "last_error", None) or getattr(exc, "original", None)
        seen += 1
    return False


def classify_connect_error(exc: BaseException) -> str:
    """Classify an exception raised before any response arrived."""
    return "timeout" if _is_timeout(exc) else "connect"


def error_message(body: bytes) -> str:
    """Extract a short message from an OpenAI/vLLM error body."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:_ERROR_BODY_LIMIT].decode("utf-8", "replace").strip()
    if isinstance(obj, dict):
        inner = obj.get("error", obj)
        if isinstance(inner, dict):
            obj = inner.get("message", inner)
        else:
            obj = inner
    return str(obj)[:_ERROR_BODY_LIMIT]


class StreamReader:
    """Turn SSE data payloads into a ``RequestRecord``'s token timeline and usage."""

    __slots__ = ("record", "chat", "keep_text", "_pieces")

    def __init__(self, record: RequestRecord, *, chat: bool, keep_text: bool = False) -> None:
        self.record = record
        self.chat = chat
        self.keep_text = keep_text
        self._pieces: list[str] = []

    def on_event(self, data: bytes, t: float) -> bool:
        """Handle one event's data received at ``t``; return False when the stream must stop (error)."""
        record = self.record
        if data == b"[DONE]":
            record.saw_done = True
            return True
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self._fail("malformed_event", f"invalid JSON in event: {data[:60]!r}")
        if type(obj) is not dict:
            return self._fail("malformed_event", f"event is not a JSON object: {data[:60]!r}")
        choices = obj.get("choices")
        reasoning_share = 0.0
        finish = None
        if choices:
            choice = choices[0]
            if type(choice) is not dict:
                return self._fail("malformed_event", "choices[0] is not an object")
            if self.chat:
                delta = choice.get("delta") or {}
                piece = delta.get("content")
                # Reasoning text (vLLM renamed reasoning_content to reasoning): an event without
                # content carries it, or one at the end of thinking carries both.
                if piece:
                    answers = True
                    thought = (
                        delta.get("reasoning") or delta.get("reasoning_content") if record.answer_at is None else None
                    )
                    if self.keep_text and delta.get("tool_calls"):
                        self._keep_tool_calls(delta["tool_calls"])
                else:
                    calls = delta.get("tool_calls")
                    answers = bool(calls)
                    if calls and self.keep_text:
                        self._keep_tool_calls(calls)
                    thought = delta.get("reasoning") or delta.get("reasoning_content")
                if thought:
                    record.reasoning_events += 1
                    reasoning_share = self._split(thought, piece) if answers else 1.0
                if answers or thought:
                    record.token_times.append(t)
                    if answers and record.answer_at is None:
                        record.answer_at = len(record.token_times) - 1
                    if self.keep_text and isinstance(piece, str):
                        self._pieces.append(piece)
            else:
                piece = choice.get("text")
                if piece:
                    record.token_times.append(t)
                    if self.keep_text and isinstance(piece, str):
                        self._pieces.append(piece)
            finish = choice.get("finish_reason")
            if finish:
                record.finish_reason = finish
        usage = obj.get("usage")
        if usage:
            if choices:
                completion = usage.get("completion_tokens")
                if reasoning_share:  # this event's new tokens, or its share of them, are thinking
                    before = record.continuous_completion_tokens or 0
                    if type(completion) is int and type(before) is int:
                        record.reasoning_seen += reasoning_share * (completion - before)
                    else:
                        self._estimate(reasoning_share)
                record.continuous_completion_tokens = completion
                if record.prompt_tokens is None:
                    record.prompt_tokens = usage.get("prompt_tokens")
            else:
                record.completion_tokens = usage.get("completion_tokens")
                record.prompt_tokens = usage.get("prompt_tokens")
            if finish or not choices:  # the final usage: where reasoning tokens are reported, if they are
                details = usage.get("completion_tokens_details")
                if details and type(details) is dict:
                    reported = details.get("reasoning_tokens")
                    if type(reported) is int:
                        record.reasoning_tokens_reported = reported
        elif reasoning_share:
            self._estimate(reasoning_share)
        elif choices is None and "error" in obj:
            error = obj["error"]
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            return self._fail(classify_status(status), f"error event: {error_message(data)}")
        return True

    def _keep_tool_calls(self, calls: Any) -> None:
        """Join each tool call's streamed name and argument pieces (by ``index``) into the record."""
        kept = self.record.tool_calls
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict):
                continue
            index = call.get("index", len(kept) - 1 if kept else 0)
            if not isinstance(index, int) or index < 0 or index > len(kept):
                continue
            if index == len(kept):
                kept.append({"id": "", "name": "", "arguments": ""})
            if isinstance(call.get("id"), str):
                kept[index]["id"] = call["id"]
            function = call.get("function") or {}
            if isinstance(function, dict):
                if isinstance(function.get("name"), str):
                    kept[index]["name"] += function["name"]
                if isinstance(function.get("arguments"), str):
                    kept[index]["arguments"] += function["arguments"]

    def _split(self, thought: Any, answer: Any) -> float:
        """The reasoning share of an event carrying both texts (the end of thinking): by length, estimated."""
        self.record.reasoning_exact = False
        thought_len = len(thought) if isinstance(thought, str) else 1
        answer_len = len(answer) if isinstance(answer, str) else 1
        return thought_len / (thought_len + answer_len)

    def _estimate(self, share: float) -> None:
        """Count a reasoning event without a usage delta as one token (its share of one), estimated."""
        self.record.reasoning_seen += share
        self.record.reasoning_exact = False

    def finish(self) -> None:
        """Settle output counts and completeness once the stream has ended."""
        record = self.record
        if record.completion_tokens is None and record.continuous_completion_tokens is not None:
            record.completion_tokens = record.continuous_completion_tokens
        if self.keep_text:
            record.text = "".join(self._pieces)
        if record.error_kind is None and not record.saw_done and record.finish_reason is None:
            record.error_kind = "incomplete_stream"
            record.error_detail = "stream ended without [DONE] or finish_reason"

    def _fail(self, kind: str, detail: str) -> bool:
        self.record.error_kind = kind
        self.record.error_detail = detail
        return False


class _StallWatch:
    """Fail a stream that receives no byte for ``seconds``: one timer per request, not one per read.

    gevent arms and cancels a ``Timeout`` around every blocking socket read when the socket
    has a timeout; a stream of paced tokens blocks once per token. Here the socket's timeout
    is lifted while the body streams, and this timer, armed once, checks when it expires
    whether a byte arrived since (``last``, set by the reader); if so it re-arms for the rest
    of the interval, otherwise it throws ``socket.timeout`` into the reading greenlet, exactly
    as gevent's own timeout would have.
    """

    __slots__ = ("seconds", "last", "_glet", "_loop", "_timer")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = time.perf_counter()
        self._glet = gevent.getcurrent()
        self._loop = gevent.get_hub().loop
        self._timer: Any = None
        self._arm(seconds)

    def _arm(self, delay: float) -> None:
        timer = self._timer = self._loop.timer(delay)
        timer.start(self._expired)

    def _expired(self) -> None:
        self._timer.close()
        remaining = self.seconds - (time.perf_counter() - self.last)
        if remaining > 0.0005:
            self._arm(remaining)
        else:
            self._timer = None
            self._glet.throw(TimeoutError("timed out"))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None


def read_stream(raw: Any, reader: StreamReader) -> None:
    """Read SSE events from a geventhttpclient response until the body ends or an error is recorded.

    The body is taken from the response's buffer as it arrives: every event completed by one
    socket read is stamped with the time that read returned, and the lines are split and
    decoded here, in one pass (the rules of ``llmload.sse.SSEDecoder``), instead of two
    ``readline`` calls and two decoder calls per event.
    """
    body = StreamingBody.of(raw)
    if body is None:
        _read_stream_by_line(raw, reader)
        return
    buf = body.buffer
    on_event = reader.on_event
    perf_counter = time.perf_counter
    record = reader.record
    tail = b""  # an incomplete last line, completed by the next read
    pending: bytes | None = None  # data of the event being assembled
    stall_s = body.stall_timeout()
    watch = None
    try:
        if stall_s:
            watch = _StallWatch(stall_s)
            body.set_timeout(None)
        t = perf_counter()
        while True:
            if buf:
                data = tail + buf if tail else bytes(buf)
                del buf[:]
                lines = data.split(b"\n")
                tail = lines.pop()
                for line in lines:
                    if line and line[-1] == 13:  # CRLF (or stray CRs) before the LF
                        line = line.rstrip(b"\r")
                    if not line:  # blank line: dispatch the event
                        if pending is not None:
                            event, pending = pending, None
                            if not on_event(event, t):
                                return
                    elif line[:5] == b"data:":
                        value = line[6:] if line[5:6] == b" " else line[5:]
                        pending = value if pending is None else pending + b"\n" + value
                    elif line == b"data":
                        pending = b"" if pending is None else pending + b"\n"
                    # anything else is a comment (":...") or a field llmload ignores
            if body.complete:
                break
            chunk = body.recv()
            if chunk is None:
                continue
            t = body.arrived_at
            if watch is not None:
                watch.last = body.read_at
            body.feed(chunk)
            if not chunk and not body.complete:
                raise HTTPConnectionClosed("connection closed mid-body.")
        # The body is complete; an unterminated last line or event may remain.
        decoder = SSEDecoder(pending=pending)
        if tail:
            decoder.feed_line(tail)
        last = decoder.flush()
        if last is not None and not on_event(last, perf_counter()):
            return
    except READ_ERRORS as exc:
        _classify_read_error(record, exc)
    finally:
        if watch is not None:
            watch.close()
            body.set_timeout(stall_s)
        record.t_end = perf_counter()
        if body.kernel:
            record.read_lateness_s = body.lateness
            if not body.unstamped:
                record.clock = "kernel"


def _classify_read_error(record: RequestRecord, exc: BaseException) -> None:
    if _is_timeout(exc):
        record.error_kind, record.error_detail = "timeout", f"no data for too long ({type(exc).__name__})"
    else:
        record.error_kind, record.error_detail = "disconnect", f"connection lost mid-stream ({type(exc).__name__})"


def _read_stream_by_line(raw: Any, reader: StreamReader) -> None:
    """Read SSE lines through ``raw.readline`` (any response object that has one)."""
    readline = raw.readline
    decoder = SSEDecoder()
    feed_line = decoder.feed_line
    on_event = reader.on_event
    perf_counter = time.perf_counter
    record = reader.record
    try:
        while True:
            line = readline(b"\n")
            if not line:
                break
            data = feed_line(line)
            if data is not None and not on_event(data, perf_counter()):
                return
        # The body is complete; an unterminated last line or event may remain buffered.
        rest = raw.read()
        if rest:
            decoder.feed_line(rest)
        data = decoder.flush()
        if data is not None and not on_event(data, perf_counter()):
            return
    except READ_ERRORS as exc:
        _classify_read_error(record, exc)
    finally:
        record.t_end = perf_counter()


def read_body(raw: Any, record: RequestRecord, *, received_at: float) -> bytes | None:
    """Read a whole (non-streamed) answer; ``record.t_end`` becomes when its last byte arrived.

    ``received_at`` is when the response's head was read (the bytes that came with it arrived
    then). A broken connection, or no byte for the read timeout, is classified into the record
    and None returned.
    """
    body = StreamingBody.of(raw)
    record.t_end = received_at
    if body is None:
        try:
            data = bytes(raw.read())
        except READ_ERRORS as exc:
            _classify_read_error(record, exc)
            data = None
        record.t_end = time.perf_counter()
        return data
    stall_s = body.stall_timeout()
    watch = None
    try:
        if stall_s and not body.complete:
            watch = _StallWatch(stall_s)
            body.set_timeout(None)
        while not body.complete:
            chunk = body.recv()
            if chunk is None:
                continue
            record.t_end = body.arrived_at
            if watch is not None:
                watch.last = body.read_at
            body.feed(chunk)
            if not chunk and not body.complete:
                raise HTTPConnectionClosed("connection closed mid-body.")
        data = bytes(body.buffer)
        del body.buffer[:]
        return data
    except READ_ERRORS as exc:
        _classify_read_error(record, exc)
        record.t_end = time.perf_counter()
        return None
    finally:
        if watch is not None:
            watch.close()
            body.set_timeout(stall_s)
        if body.kernel:
            record.read_lateness_s = body.lateness
            if not body.unstamped:
                record.clock = "kernel"
