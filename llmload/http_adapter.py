"""The one adapter around geventhttpclient (through Locust's ``FastHttpSession``).

The streaming read path needs what geventhttpclient keeps private: the
response's body buffer (``_body_buffer``), its connection socket (``_sock``)
and pool (``_pool``), the gevent socket's inner socket and read watcher
(``_sock``, ``_read_event``), and the raw response behind Locust's
``FastResponse`` (``_response``). Reading the socket directly, as bytes
arrive, is what lets each event be stamped with the time its read returned;
no public API offers that. This module is the only place that touches those
names; pyproject.toml bounds geventhttpclient from above, and the unit tests
of the hot path run against the installed version.
"""

from __future__ import annotations

from typing import Any

import gevent
import gevent.socket
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError

# Bytes asked of the socket per read while streaming (geventhttpclient's default is 4 KiB); a
# full-speed server writes up to tens of KiB at once, and each read costs a parser call.
READ_SIZE = 65536
# socket.timeout is TimeoutError, an OSError; gevent.Timeout is neither.
READ_ERRORS = (gevent.Timeout, HTTPConnectionClosed, HTTPParseError, OSError)

__all__ = [
    "READ_ERRORS",
    "READ_SIZE",
    "HTTPConnectionClosed",
    "StreamingBody",
    "abort_connection",
    "host_reachable",
    "raw_response",
]


def raw_response(response: Any) -> Any | None:
    """Return the geventhttpclient response behind a Locust ``FastResponse`` (None when none came)."""
    return getattr(response, "_response", None)


class StreamingBody:
    """A response body read straight from its connection: the buffer, the socket, one read at a time."""

    __slots__ = ("_raw", "buffer", "_socket", "_inner", "_read_event", "_wait", "_drained")

    def __init__(self, raw: Any, buffer: bytearray) -> None:
        self._raw = raw
        self.buffer = buffer
        sock = getattr(raw, "_sock", None)  # None when the whole body came with the headers
        self._socket = sock
        # A plain gevent socket is read directly: wait for readability, then one non-blocking recv
        # (gevent's recv tries first, fails with EAGAIN once per paced token, then waits).
        inner = getattr(sock, "_sock", None) if type(sock) is gevent.socket.socket else None
        read_event = getattr(sock, "_read_event", None)
        self._inner = inner if read_event is not None else None
        self._read_event = read_event
        self._wait = gevent.get_hub().wait
        self._drained = False  # the last read returned less than asked: the kernel buffer is likely empty

    @classmethod
    def of(cls, raw: Any) -> StreamingBody | None:
        """Wrap a geventhttpclient response, or return None for any other response object."""
        buffer = getattr(raw, "_body_buffer", None)
        if type(buffer) is not bytearray or not hasattr(raw, "feed") or not hasattr(raw, "message_complete"):
            return None
        return cls(raw, buffer)

    @property
    def complete(self) -> bool:
        return bool(self._raw.message_complete)

    def stall_timeout(self) -> float | None:
        """The connection's read timeout in seconds (None: none, or no connection)."""
        sock = self._socket
        timeout = sock.gettimeout() if sock is not None and hasattr(sock, "gettimeout") else None
        return float(timeout) if timeout is not None else None

    def set_timeout(self, seconds: float | None) -> None:
        if self._socket is not None:
            self._socket.settimeout(seconds)

    def recv(self) -> bytes | None:
        """Read once from the connection; None when nothing was ready (call again).

        Raises ``HTTPConnectionClosed`` when the connection is gone; on any error the response
        is released.
        """
        raw = self._raw
        try:
            if raw._sock is None:
                raise HTTPConnectionClosed("connection closed.")
            inner = self._inner
            if inner is None:
                return bytes(raw._sock.recv(READ_SIZE))
            if self._drained:
                self._wait(self._read_event)
            try:
                chunk: bytes = inner.recv(READ_SIZE)
            except BlockingIOError:
                self._drained = True
                return None
            self._drained = len(chunk) < READ_SIZE
            return chunk
        except BaseException:
            raw.release()
            raise

    def feed(self, chunk: bytes) -> None:
        """Hand a read to the HTTP parser, which appends the body bytes to ``buffer``."""
        try:
            self._raw.feed(chunk)
        except BaseException:
            self._raw.release()
            raise


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


def host_reachable(host: str) -> str | None:
    """Check that ``host`` accepts an HTTP request; return None, or why it does not (one line)."""
    from geventhttpclient import HTTPClient
    from geventhttpclient.url import URL

    try:
        client = HTTPClient.from_url(URL(host), connection_timeout=5, network_timeout=5)
        try:
            client.get(URL(host).request_uri or "/").read()
        finally:
            client.close()
    except Exception as exc:
        return str(exc).split("\n", 1)[0] or type(exc).__name__
    return None
