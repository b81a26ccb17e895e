"""A minimal HTTP/1.1 server protocol on asyncio, just what the simulator needs.

One ``Connection`` per TCP connection parses requests (``Content-Length``
bodies, ``Expect: 100-continue``), hands each to a handler, and serves the
next one on the same connection only when the current response is complete
(keep-alive and pipelining, like uvicorn). Responses are either whole
(``send``) or chunked streams (``start_stream``, ``write_chunk``,
``end_stream``). ``Connection: close`` and HTTP/1.0 close after the response.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
SERVER_NAME = b"llmload-sim"


class HttpRequest:
    """One parsed request."""

    __slots__ = ("method", "path", "query", "version", "headers", "body", "keep_alive")

    def __init__(self, method: str, target: str, version: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path, _, self.query = target.partition("?")
        self.version = version
        self.headers = headers
        self.body = body
        conn = headers.get("connection", "").lower()
        self.keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn


class _DateCache:
    """The Date header, formatted at most once a second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second, self.value = now, formatdate(now, usegmt=True).encode()
        return self.value


_DATE = _DateCache()


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())


class Connection(asyncio.Protocol):
    """The server side of one TCP connection."""

    def __init__(self, handler: Callable[[Connection, HttpRequest], None], registry: set[Connection]) -> None:
        self.handler = handler
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.paused = False
        self.keep_alive = True
        self.continue_sent = False
        self.on_lost: Callable[[], None] | None = None
        self.on_resume: Callable[[], None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport  # type: ignore[assignment]  # a stream protocol always gets a Transport
        self.registry.add(self)

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self.buf += data
        if not self.busy:
            self._drain()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.closed = True
        self.registry.discard(self)
        callback, self.on_lost = self.on_lost, None
        if callback is not None:
            callback()

    def pause_writing(self) -> None:  # noqa: D102
        self.paused = True

    def resume_writing(self) -> None:  # noqa: D102
        self.paused = False
        if self.on_resume is not None:
            self.on_resume()

    # -- request parsing ------------------------------------------------------------

    def _drain(self) -> None:
        while not self.busy and not self.closed and self.buf:
            request = self._parse()
            if request is None:
                return
            self.busy = True
            self.keep_alive = request.keep_alive
            try:
                self.handler(self, request)
            except Exception:  # a simulator bug must not take the server down, only this connection
                traceback.print_exc(file=sys.stderr)
                self.close()

    def _parse(self) -> HttpRequest | None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                self._reject(431)
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            self._reject(400)
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._reject(411)
            return None
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._reject(400)
            return None
        if length > MAX_BODY_BYTES or length < 0:
            self._reject(413)
            return None
        start = end + 4
        if len(buf) < start + length:
            if headers.get("expect", "").lower() == "100-continue" and not self.continue_sent:
                self.continue_sent = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]  # set before data
            return None
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        self.continue_sent = False
        return HttpRequest(method, target, version, headers, body)

    def _reject(self, status: int) -> None:
        self.keep_alive = False
        self.busy = True
        self.buf.clear()
        self.send(status, b"", content_type=b"text/plain")

    # -- responses --------------------------------------------------------------------

    def _head(self, status: int, headers: list[bytes]) -> bytes:
        lines = [_status_line(status), b"date: ", _DATE.get(), b"\r\nserver: ", SERVER_NAME, b"\r\n", *headers]
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: bytes = b"application/json",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Send a whole response and finish it."""
        headers = [b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type, len(body))]
        headers += [f"{k}: {v}\r\n".encode("latin-1") for k, v in extra]
        self.write(self._head(status, headers) + body)
        self.finish()

    def start_stream(
        self, status: int = 200, *, content_type: bytes = b"text/event-stream; charset=utf-8", first: bytes = b""
    ) -> None:
        """Send the headers of a chunked response, and ``first`` as its first chunk."""
        head = self._head(status, [b"content-type: %s\r\ntransfer-encoding: chunked\r\n" % content_type])
        self.write(head + (b"%x\r\n%s\r\n" % (len(first), first) if first else b""))

    def write_chunk(self, data: bytes) -> None:
        """Send ``data`` as one chunk of the body."""
        if data:
            self.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self, data: bytes = b"") -> None:
        """Send ``data`` as a last chunk, the terminating chunk, and finish the response."""
        self.write((b"%x\r\n%s\r\n" % (len(data), data) if data else b"") + b"0\r\n\r\n")
        self.finish()

    def write(self, data: bytes) -> None:
        """Write raw bytes unless the connection is gone."""
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]  # set in connection_made, before any request

    def finish(self) -> None:
        """Mark the response complete; close or serve the next pipelined request."""
        self.on_lost = self.on_resume = None
        self.busy = False
        if not self.keep_alive:
            self.close()
        elif self.buf:
            asyncio.get_running_loop().call_soon(self._drain)

    def close(self) -> None:
        """Close after the buffered bytes are flushed (FIN, not RST)."""
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
