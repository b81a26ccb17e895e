"""A stdlib HTTP server on 127.0.0.1, port 0, in a thread of the test process, as a context manager."""

from __future__ import annotations

import http.server
import threading


class LocalHTTPServer:
    """Serve ``handler`` (a ``BaseHTTPRequestHandler`` class) until the ``with`` block ends."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
