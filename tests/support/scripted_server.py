"""A raw-socket HTTP server that answers each request with a scripted byte sequence.

Tests use it to produce exactly the bytes, timing and connection behaviour
they need (events split across TCP writes, CRLF, UTF-8 split across reads,
abrupt closes), which no real server produces on demand. It runs in a thread
of the test process on 127.0.0.1, port 0. A script is a list of steps:
``bytes`` (sent as is), ``float`` (sleep seconds), ``CLOSE`` (abort) or
``FIN`` (close cleanly).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

CLOSE = object()  # abort: reset the connection
FIN = object()  # end a read-until-close body: close the connection cleanly


def sse_response(events: list, *, status: str = "200 OK", chunked: bool = True) -> list:
    """Build a script for a streamed response from event payloads and delays."""
    steps: list = []
    header = f"HTTP/1.1 {status}\r\nContent-Type: text/event-stream\r\n"
    header += "Transfer-Encoding: chunked\r\n\r\n" if chunked else "Connection: close\r\n\r\n"
    steps.append(header.encode())
    for item in events:
        if isinstance(item, (float, int)) and not isinstance(item, bool):
            steps.append(float(item))
        elif item is CLOSE:
            steps.append(CLOSE)
        else:
            data = item if isinstance(item, bytes) else item.encode()
            steps.append(_chunk(data) if chunked else data)
    if not steps or steps[-1] is not CLOSE:
        steps.append(b"0\r\n\r\n" if chunked else FIN)
    return steps


def plain_response(status: str, body: bytes, *, content_type: str = "application/json") -> list:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return [head.encode() + body]


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class ScriptedServer:
    """Serve ``script_for(request_number, request_bytes)`` to each request; record requests."""

    def __init__(self, script_for: Callable[[int, bytes], list]) -> None:
        self._script_for = script_for
        self.requests: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(rest) < length:
                    rest += conn.recv(65536)
                request, buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
                self.requests.append(request)
                for step in self._script_for(len(self.requests) - 1, request):
                    if step is FIN:
                        return
                    if step is CLOSE:
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        return
                    if isinstance(step, float):
                        time.sleep(step)
                    else:
                        conn.sendall(step)
        except OSError:
            return
        finally:
            conn.close()
