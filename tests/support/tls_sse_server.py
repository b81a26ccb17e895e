"""A tiny HTTPS server that streams SSE chat chunks, for the user-space fallback and connect-time tests.

Run as a separate process (the test process's gevent hub must not serve it)::

    python tests/support/tls_sse_server.py CERT KEY --handshake-delay 0.1 --ttft 0.05 --itl 0.01 --tokens 8

It prints ``listening on https://127.0.0.1:PORT`` and then, for each
connection, waits ``--handshake-delay`` seconds before the TLS handshake (so
that the client's connection set-up takes that long), reads one request, and
streams ``--tokens`` chat chunks (the first ``--ttft`` seconds after the
request arrived, then one every ``--itl``), a usage chunk and ``[DONE]``,
over HTTP/1.1 chunked encoding. It serves connections until killed.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import threading
import time


def chunk(payload: bytes) -> bytes:
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def event(obj: object) -> bytes:
    return chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")


def serve_one(conn: socket.socket, context: ssl.SSLContext, args: argparse.Namespace) -> None:
    time.sleep(args.handshake_delay)
    with context.wrap_socket(conn, server_side=True) as tls:
        while True:
            data = b""
            while b"\r\n\r\n" not in data:
                more = tls.recv(65536)
                if not more:
                    return
                data += more
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(body) < length:
                body += tls.recv(65536)
            received = time.perf_counter()
            tls.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                + event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
            )
            for k in range(args.tokens):
                due = received + args.ttft + k * args.itl
                time.sleep(max(due - time.perf_counter(), 0))
                tls.sendall(event({"choices": [{"index": 0, "delta": {"content": f" t{k}"}}]}))
            usage = {"prompt_tokens": 3, "completion_tokens": args.tokens, "total_tokens": 3 + args.tokens}
            tls.sendall(event({"choices": [], "usage": usage}) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cert")
    parser.add_argument("key")
    parser.add_argument("--handshake-delay", type=float, default=0.0)
    parser.add_argument("--ttft", type=float, default=0.05)
    parser.add_argument("--itl", type=float, default=0.01)
    parser.add_argument("--tokens", type=int, default=8)
    args = parser.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    print(f"listening on https://127.0.0.1:{server.getsockname()[1]}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve_one, args=(conn, context, args), daemon=True).start()


if __name__ == "__main__":
    main()
