"""The one adapter around geventhttpclient (through Locust's ``FastHttpSession``), and its clocks.

The streaming read path needs what geventhttpclient keeps private: the
response's body buffer (``_body_buffer``), its connection socket (``_sock``)
and pool (``_pool``), the gevent socket's inner socket and read watcher
(``_sock``, ``_read_event``), the raw response behind Locust's
``FastResponse`` (``_response``), and the connection pool's socket factories
(``_create_tcp_socket``, ``_create_socket``, which geventhttpclient documents
as the place to set socket options). Reading the socket directly, as bytes
arrive, is what lets each event be stamped; no public API offers that. This
module is the only place that touches those names; pyproject.toml bounds
geventhttpclient from above, and the unit tests of the hot path run against
the installed version.

**Clocks.** Every time llmload reports is on the ``time.perf_counter`` clock:

* ``t_send``: when the request's last byte was handed to the kernel
  (``StampedSocket.sendall`` returned); connection set-up before it is the
  request's ``connect_s``, apart from TTFT. Over TLS the socket is not ours
  to stamp: ``t_send`` is then the request's start plus its connect time.
* **kernel receive stamps** (Linux, plain HTTP): each socket has
  ``SO_TIMESTAMPNS``; every read is a ``recvmsg`` whose ancillary data carries
  the ``CLOCK_REALTIME`` time the kernel received the last packet the read
  touched. The read notes ``perf_counter`` and ``CLOCK_REALTIME`` together;
  the data arrived ``realtime_at_read - stamp`` before the read (its
  *lateness*: how late the generator read it), so its ``perf_counter`` time
  is ``read_at - lateness``. Only differences of one clock are taken, over
  the read's own lateness: a step or a slew of the realtime clock at any
  other moment changes nothing (no offset between the clocks is kept). A
  step between a packet's arrival and its read makes the lateness
  implausible (negative, or above a minute): that read takes its own time.
  What the kernel allows: a TCP read reports the stamp of the last segment it
  touched, and while nobody reads, the kernel coalesces each arriving segment
  into the one queued before it, keeping the newer stamp (``tcp_try_coalesce``).
  So an event is stamped exactly when it is the newest data at the moment of
  the read (the common case: one event per read, however late); events that
  queued up behind a late reader share the newest one's stamp, the same
  grouping user-space stamps give them. Reading in smaller pieces (or after
  ``MSG_PEEK``) cannot separate them: the per-segment stamps are gone.
* The kernel turns stamping on asynchronously (a deferred static key) when
  the first socket asks for it: data arriving in that first moment carries no
  stamp. A read without a usable stamp takes its own time, and its request
  counts as user-clock (``RequestRecord.clock``).
* **user-space stamps** (``https://`` targets, other systems, a
  ``setsockopt`` that fails, ``--llm-timestamps user``): the time the read
  returned, as before.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from typing import Any

import gevent
import gevent.socket
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError

# Bytes asked of the socket per read while streaming (geventhttpclient's default is 4 KiB); a
# full-speed server writes up to tens of KiB at once, and each read costs a parser call.
READ_SIZE = 65536
# socket.timeout is TimeoutError, an OSError; gevent.Timeout is neither.
READ_ERRORS = (gevent.Timeout, HTTPConnectionClosed, HTTPParseError, OSError)
# A kernel stamp this much later than the read (beyond the two clock reads' jitter), or this much
# earlier, means the realtime clock stepped between the packet's arrival and the read.
STAMP_AHEAD_TOLERANCE_S = 0.0005
STAMP_MAX_LATENESS_S = 60.0

# Python's socket module has no SO_TIMESTAMPNS; its value is per Linux architecture (asm-generic
# 35; sparc 0x21; parisc 0x4013). SCM_TIMESTAMPNS has the same value.
_SO_TIMESTAMPNS_BY_MACHINE = {"sparc": 0x21, "sparc64": 0x21, "parisc": 0x4013, "parisc64": 0x4013}


def so_timestampns() -> int | None:
    """The ``SO_TIMESTAMPNS`` option number of this system, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    import platform

    return _SO_TIMESTAMPNS_BY_MACHINE.get(platform.machine(), 35)


SO_TIMESTAMPNS = so_timestampns()
_CMSG_SPACE = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 0
_TIMESPEC = struct.Struct("qq")

__all__ = [
    "READ_ERRORS",
    "READ_SIZE",
    "SO_TIMESTAMPNS",
    "HTTPConnectionClosed",
    "PoolTiming",
    "StampedSocket",
    "StreamingBody",
    "abort_connection",
    "arrival_time",
    "host_reachable",
    "instrument",
    "raw_response",
]


def arrival_time(stamp_s: float, read_at: float, read_real: float) -> float | None:
    """The ``perf_counter`` time of data the kernel stamped ``stamp_s`` (realtime), read at ``read_at``.

    ``read_real`` is the realtime clock read together with ``read_at``. None when the lateness
    is implausible (the realtime clock stepped between the arrival and the read).
    """
    lateness = read_real - stamp_s
    if lateness < 0.0:
        if lateness < -STAMP_AHEAD_TOLERANCE_S:
            return None
        return read_at
    if lateness > STAMP_MAX_LATENESS_S:
        return None
    return read_at - lateness


class StampedSocket(gevent.socket.socket):
    """A gevent socket that notes when a request's last byte was handed to the kernel."""

    __slots__ = ("t_sent", "kernel_stamps")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.t_sent: float | None = None
        """perf_counter time the last ``sendall`` returned (None: nothing sent since it was taken)."""
        self.kernel_stamps = False
        """``SO_TIMESTAMPNS`` is on: reads carry the kernel's receive time."""

    def sendall(self, data: Any, flags: int = 0) -> None:
        super().sendall(data, flags)
        self.t_sent = time.perf_counter()

    def enable_kernel_stamps(self) -> bool:
        """Ask the kernel to stamp received data; False where it cannot."""
        if SO_TIMESTAMPNS is None or not _CMSG_SPACE:
            return False
        try:
            self.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            return False
        self.kernel_stamps = True
        return True


_PLAIN_SOCKETS = (gevent.socket.socket, StampedSocket)


class PoolTiming:
    """The timing side of one host's connection pool: new sockets are stamped, their set-up timed.

    Each Locust user has its own session and pool and sends one request at a time, so the
    socket created during a request is that request's.
    """

    def __init__(self, pool: Any, *, kernel_stamps: bool) -> None:
        from geventhttpclient.connectionpool import SSLConnectionPool

        self.secure = isinstance(pool, SSLConnectionPool)
        """TLS hides the TCP stream: no kernel stamps, no send stamp."""
        self.kernel_stamps = kernel_stamps and not self.secure
        self._pending_connect: float | None = None
        create_socket = pool._create_socket

        def create_tcp_socket(family: int, socktype: int, protocol: int) -> StampedSocket:
            sock = StampedSocket(family, socktype, protocol)
            if self.kernel_stamps:
                sock.enable_kernel_stamps()
            return sock

        def timed_create_socket() -> Any:
            started = time.perf_counter()
            sock = create_socket()
            self._pending_connect = time.perf_counter() - started
            return sock

        pool._create_tcp_socket = create_tcp_socket
        pool._create_socket = timed_create_socket

    def take(self, raw: Any) -> tuple[float | None, float | None]:
        """Return (when the request's last byte was sent, its connect time) for a response, each once."""
        connect_s, self._pending_connect = self._pending_connect, None
        sock = getattr(raw, "_sock", None)
        t_sent = None
        if isinstance(sock, StampedSocket):
            t_sent, sock.t_sent = sock.t_sent, None
        return t_sent, connect_s


def instrument(user_agent: Any, base_url: str, *, kernel_stamps: bool) -> PoolTiming | None:
    """Stamp and time the connections a Locust ``FastHttpSession`` user agent opens to ``base_url``."""
    clientpool = getattr(user_agent, "clientpool", None)
    if clientpool is None or not base_url:
        return None
    from geventhttpclient.url import URL

    client = clientpool.get_client(URL(base_url))
    pool = getattr(client, "_connection_pool", None)
    if pool is None:
        return None
    return PoolTiming(pool, kernel_stamps=kernel_stamps)


def raw_response(response: Any) -> Any | None:
    """Return the geventhttpclient response behind a Locust ``FastResponse`` (None when none came)."""
    return getattr(response, "_response", None)


class StreamingBody:
    """A response body read straight from its connection: the buffer, the socket, one read at a time.

    After each ``recv``, ``arrived_at`` is when the data read arrived (the kernel's stamp
    where there is one, else ``read_at``, when the read returned), and ``lateness`` holds
    each kernel-stamped read's delay (``read_at - arrived_at``).
    """

    __slots__ = (
        "_raw",
        "buffer",
        "_socket",
        "_inner",
        "_read_event",
        "_wait",
        "_drained",
        "kernel",
        "arrived_at",
        "read_at",
        "lateness",
        "unstamped",
    )

    def __init__(self, raw: Any, buffer: bytearray) -> None:
        self._raw = raw
        self.buffer = buffer
        sock = getattr(raw, "_sock", None)  # None when the whole body came with the headers
        self._socket = sock
        # A plain gevent socket is read directly: wait for readability, then one non-blocking recv
        # (gevent's recv tries first, fails with EAGAIN once per paced token, then waits).
        # (Not a TLS socket, which is a gevent socket too: its inner socket carries ciphertext.)
        inner = getattr(sock, "_sock", None) if type(sock) in _PLAIN_SOCKETS else None
        read_event = getattr(sock, "_read_event", None)
        self._inner = inner if read_event is not None else None
        self._read_event = read_event
        self._wait = gevent.get_hub().wait
        self._drained = False  # the last read returned less than asked: the kernel buffer is likely empty
        self.kernel = self._inner is not None and isinstance(sock, StampedSocket) and sock.kernel_stamps
        """Reads carry kernel receive stamps."""
        self.read_at = self.arrived_at = time.perf_counter()
        self.lateness: list[float] = []
        self.unstamped = 0
        """Reads that carried no usable kernel stamp (their data is stamped with ``read_at``)."""

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
                chunk = bytes(raw._sock.recv(READ_SIZE))
                self.read_at = self.arrived_at = time.perf_counter()
                return chunk
            if self._drained:
                self._wait(self._read_event)
            try:
                if self.kernel:
                    return self._recv_stamped(inner)
                chunk = inner.recv(READ_SIZE)
            except BlockingIOError:
                self._drained = True
                return None
            self.read_at = self.arrived_at = time.perf_counter()
            self._drained = len(chunk) < READ_SIZE
            return bytes(chunk)
        except BaseException:
            raw.release()
            raise

    def _recv_stamped(self, inner: socket.socket) -> bytes:
        chunk, ancillary, _flags, _address = inner.recvmsg(READ_SIZE, _CMSG_SPACE)
        read_at = self.read_at = time.perf_counter()
        read_real = time.time()
        arrived = None
        if ancillary:  # one control message at most: the stamp
            level, kind, data = ancillary[0]
            if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET and len(data) >= 16:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                arrived = arrival_time(seconds + nanoseconds * 1e-9, read_at, read_real)
        if arrived is None:  # no stamp (data stamped before the option was on), or an implausible one
            self.arrived_at = read_at
            self.unstamped += 1
        else:
            self.arrived_at = arrived
            self.lateness.append(read_at - arrived)
        self._drained = len(chunk) < READ_SIZE
        return bytes(chunk)

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
