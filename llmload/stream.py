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
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError

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
        if choices:
            choice = choices[0]
            if type(choice) is not dict:
                return self._fail("malformed_event", "choices[0] is not an object")
            if self.chat:
                delta = choice.get("delta") or {}
                piece = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
                carries_token = bool(piece) or bool(delta.get("tool_calls"))
            else:
                piece = choice.get("text")
                carries_token = bool(piece)
            if carries_token:
                record.token_times.append(t)
                if self.keep_text and isinstance(piece, str):
                    self._pieces.append(piece)
            finish = choice.get("finish_reason")
            if finish:
                record.finish_reason = finish
        usage = obj.get("usage")
        if usage:
            if choices:
                record.continuous_completion_tokens = usage.get("completion_tokens")
                if record.prompt_tokens is None:
                    record.prompt_tokens = usage.get("prompt_tokens")
            else:
                record.completion_tokens = usage.get("completion_tokens")
                record.prompt_tokens = usage.get("prompt_tokens")
        elif choices is None and "error" in obj:
            error = obj["error"]
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            return self._fail(classify_status(status), f"error event: {error_message(data)}")
        return True

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


def read_stream(raw: Any, reader: StreamReader) -> None:
    """Read SSE lines from a geventhttpclient response until the body ends or an error is recorded."""
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
    except (socket.timeout, TimeoutError, gevent.Timeout) as exc:
        record.error_kind, record.error_detail = "timeout", f"no data for too long ({type(exc).__name__})"
    except (HTTPConnectionClosed, HTTPParseError, ConnectionError, OSError) as exc:
        if _is_timeout(exc):
            record.error_kind, record.error_detail = "timeout", f"no data for too long ({type(exc).__name__})"
        else:
            record.error_kind, record.error_detail = "disconnect", f"connection lost mid-stream ({type(exc).__name__})"
    finally:
        record.t_end = perf_counter()


def abort_connection(raw: Any) -> None:
    """Close a response's connection instead of returning it, unread, to the pool."""
    sock, pool = getattr(raw, "_sock", None), getattr(raw, "_pool", None)
    if sock is None:
        return
    try:
        if pool is not None:
            pool.release_socket(sock)
        else:
            sock.close()
    finally:
        raw._sock = None
        raw._pool = None
