"""A fast streaming server that logs the true send time of every token (for client_bench.py).

It is the simulator's ``fixed`` profile, assembled from the simulator's own
parts (HTTP protocol, request validation, vLLM's exact SSE bytes, the
``FixedEngine`` schedule: token *k* due at ``received + ttft + (k-1)*itl``),
plus what a client benchmark needs and ``llmload sim`` has no reason to carry:

* every generation request is keyed by the first word of its last message
  (the benchmark's clients put a unique id there);
* with ``--log PATH``, each request's receive time and the ``perf_counter()``
  time of every write (with the number of tokens it carried) are kept and
  written to PATH as JSON when the server stops (SIGTERM/SIGINT). Linux's
  ``perf_counter`` is ``CLOCK_MONOTONIC``, shared by every process, so these
  times compare directly with a client's own timestamps;
* ``--no-continuous-usage`` ignores ``continuous_usage_stats`` (usage only in
  the final chunk, as servers without vLLM's extension do): each event is then
  a plain template copy, so the server outruns the clients at full speed;
* ``GET /stats`` returns the tokens and requests written so far, so a driver
  can count tokens over a measurement window without trusting the client.

    python benchmarks/_truth_server.py --port 0 --ttft-ms 50 --itl-ms 10 --log truth.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmload.simulator.engine import FixedEngine  # noqa: E402
from llmload.simulator.httpserver import Connection, HttpRequest  # noqa: E402
from llmload.simulator.openai_api import ApiError, StreamFormat, models_response, parse_request  # noqa: E402
from llmload.simulator.scheduler import SimRequest  # noqa: E402
from llmload.simulator.tokens import Vocabulary  # noqa: E402
from llmload.simulator.vllm_metrics import SimMetrics  # noqa: E402

MODEL = "bench-model"
MAX_MODEL_LEN = 131072


class TruthSink:
    """Write a stream's token events (as ``llmload sim`` does) and log when each write left."""

    __slots__ = ("app", "conn", "fmt", "req", "sent", "timer", "writes")

    def __init__(
        self, app: TruthApp, conn: Connection, fmt: StreamFormat, req: SimRequest, writes: list[float] | None
    ) -> None:
        self.app, self.conn, self.fmt, self.req = app, conn, fmt, req
        self.sent = 0
        self.timer = None
        self.writes = writes

    @property
    def paused(self) -> bool:
        """Whether the transport asked us to stop writing."""
        return self.conn.paused

    def on_tokens(self, count: int, done: bool) -> None:
        """Send ``count`` token events and log the write's time."""
        fmt = self.fmt
        reason = self.req.finish_reason if done else None
        data = fmt.tokens(self.sent, count, reason)
        self.sent += count
        if done:
            self.conn.end_stream(data + fmt.tail(self.sent))
        else:
            self.conn.write_chunk(data)
        self.app.tokens += count
        if self.writes is not None:
            self.writes.append(time.perf_counter())
            self.writes.append(count)


class TruthApp:
    """Route requests; feed generation requests to a ``FixedEngine``."""

    def __init__(
        self, *, ttft_s: float, itl_s: float, log: bool, continuous_usage: bool, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.loop = loop
        self.continuous_usage = continuous_usage
        self.metrics = SimMetrics(model_name=MODEL, max_model_len=MAX_MODEL_LEN)
        self.engine = FixedEngine(ttft_s=ttft_s, itl_s=itl_s, metrics=self.metrics, loop=loop)
        self.vocab = Vocabulary(seed=0)
        self.connections: set[Connection] = set()
        self.log: dict[str, list] | None = {} if log else None
        self.tokens = 0
        self.requests = 0
        self._next = 0

    def protocol(self) -> Connection:
        """Return a new connection protocol (the ``create_server`` factory)."""
        return Connection(self.handle, self.connections)

    def handle(self, conn: Connection, request: HttpRequest) -> None:
        """Answer one request."""
        t_recv = time.perf_counter()
        if request.path == "/v1/chat/completions" and request.method == "POST":
            return self.generate(conn, request, t_recv)
        if request.path == "/stats":
            return conn.send(
                200, orjson.dumps({"tokens": self.tokens, "requests": self.requests, "t": time.perf_counter()})
            )
        if request.path == "/v1/models":
            return conn.send(200, models_response(model=MODEL, max_model_len=MAX_MODEL_LEN))
        if request.path == "/health":
            return conn.send(200, b"")
        return conn.send(404, b'{"detail":"Not Found"}')

    def generate(self, conn: Connection, request: HttpRequest, t_recv: float) -> None:
        """Validate, key and schedule one streamed chat request."""
        try:
            gen = parse_request(
                chat=True,
                body=request.body,
                served_model=MODEL,
                max_model_len=MAX_MODEL_LEN,
                default_max_tokens=256,
                reject_stream_options=False,
            )
        except ApiError as exc:
            return conn.send(exc.status, exc.body())
        if not gen.stream:
            return conn.send(400, b'{"error":{"message":"the truth server streams only","code":400}}')
        if gen.continuous_usage and not self.continuous_usage:
            gen = dataclasses.replace(gen, continuous_usage=False)  # like servers without the extension
        self.requests += 1
        self._next += 1
        writes: list[float] | None = None
        if self.log is not None:
            content = orjson.loads(request.body)["messages"][-1]["content"]
            key = content.split(" ", 1)[0] if isinstance(content, str) else str(self._next)
            writes = []
            self.log[key] = [t_recv, writes]
        req = SimRequest(
            rid=self._next,
            prompt_tokens=gen.prompt_tokens,
            n_target=gen.max_tokens,
            finish_reason="length",
            arrival=self.loop.time(),
        )
        fmt = StreamFormat(
            req=gen,
            rid=f"chatcmpl-{self._next}",
            created=int(time.time()),
            model=MODEL,
            vocab=self.vocab,
            offset=self.vocab.start_offset(),
        )
        req.sink = TruthSink(self, conn, fmt, req, writes)
        conn.start_stream(first=fmt.head())
        conn.on_lost = lambda: self.engine.abort(req)
        conn.on_resume = lambda: self.engine.unpark(req)
        self.engine.submit(req)


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM/SIGINT, then write the log."""
    loop = asyncio.get_running_loop()
    app = TruthApp(
        ttft_s=args.ttft_ms / 1e3,
        itl_s=args.itl_ms / 1e3,
        log=bool(args.log),
        continuous_usage=not args.no_continuous_usage,
        loop=loop,
    )
    server = await loop.create_server(app.protocol, "127.0.0.1", args.port, reuse_address=True, backlog=4096)
    print(f"truth-server listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    app.engine.close()
    for conn in list(app.connections):
        if conn.transport is not None:
            conn.transport.abort()
    if args.log:
        Path(args.log).write_bytes(
            orjson.dumps({"ttft_s": args.ttft_ms / 1e3, "itl_s": args.itl_ms / 1e3, "requests": app.log})
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument(
        "--no-continuous-usage",
        action="store_true",
        help="ignore continuous_usage_stats (usage only in the final chunk): a cheaper stream",
    )
    parser.add_argument("--log", default=None, help="write every request's receive and write times here at exit")
    args = parser.parse_args()
    from _asyncio_main import run_main  # benchmarks/ is sys.path[0] when run as a script

    run_main(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
