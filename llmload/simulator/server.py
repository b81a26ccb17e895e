"""The simulator application: OpenAI routes, per-request sinks, and ``serve()``.

Routes: ``GET /health``, ``/v1/models``, ``/version``, ``/metrics``;
``POST /v1/chat/completions`` and ``/v1/completions`` (streaming and not); the pooling
endpoints ``/v1/embeddings``, ``/score`` and ``/rerank`` (``pooling_api``).
A generation request is validated, may be picked for an injected fault, and
is then handed to the engine with a sink that turns the engine's tokens into
SSE events (or one JSON body) on its connection.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field

import orjson

from llmload._version import __version__
from llmload.simulator.engine import FixedEngine, StepEngine
from llmload.simulator.faults import HTTP_FAULTS, RETRY_AFTER_S, FaultConfig, FaultPlan
from llmload.simulator.httpserver import Connection, HttpRequest
from llmload.simulator.openai_api import (
    MALFORMED_EVENT,
    ApiError,
    GenRequest,
    StreamFormat,
    full_response,
    models_response,
    parse_request,
)
from llmload.simulator.perfmodel import PerfModel
from llmload.simulator.pooling_api import ROUTES as POOLING_ROUTES
from llmload.simulator.pooling_api import PoolRequest, parse_pool_request, pool_response
from llmload.simulator.prefix_cache import FIXED_PROFILE_CACHE_TOKENS, PrefixCache
from llmload.simulator.profiles import FIXED_PROFILE, get_gpu_profile, get_model_profile
from llmload.simulator.scheduler import Scheduler, SimRequest
from llmload.simulator.structured_answer import FixedAnswer
from llmload.simulator.tokens import HFTokenizer, Vocabulary, load_tokenizer
from llmload.simulator.vllm_metrics import SimMetrics

METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
NOT_FOUND = orjson.dumps({"detail": "Not Found"})
NOT_ALLOWED = orjson.dumps({"detail": "Method Not Allowed"})


@dataclass(frozen=True)
class SimConfig:
    """Everything ``llmload sim`` was asked to do."""

    profile: str = "rtx3090"
    model_profile: str = "llama-3.1-8b"
    served_model_name: str = "meta-llama/Llama-3.1-8B-Instruct"
    host: str = "127.0.0.1"
    port: int = 8000
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    seed: int | None = None
    fault: FaultConfig = field(default_factory=FaultConfig)
    reject_stream_options: bool = False
    answer_tokens: int | None = None
    reasoning_tokens: int = 0
    """Thinking tokens that open each chat answer (streamed as ``reasoning_field`` deltas)."""
    reasoning_field: str = "reasoning"
    vision_encode_ms: float = 0.0
    """Fixed profile: the vision encoder's time per image, added to TTFT (image tokens count as prompt)."""
    lora_modules: tuple[str, ...] = ()
    """LoRA adapter names served besides the model (requests may name them as their model)."""
    default_max_tokens: int = 256
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.9
    kv_cache_tokens: int | None = None
    max_model_len: int | None = None
    slow_after_s: float | None = None
    """Seconds after start when every request becomes ``slow_factor`` times slower (None: never)."""
    slow_factor: float = 1.0
    block_size: int = 16
    """KV-cache block size in tokens (paging and prefix-cache blocks), vLLM's ``--block-size``."""
    enable_prefix_caching: bool = True
    """Automatic prefix caching, on by default as in vLLM V1."""
    tokenizer: str | None = None
    """A local Hugging Face tokenizer (tokenizer.json or its folder) counting prompt tokens; None: the word rule."""

    def prefix_cache(self) -> PrefixCache | None:
        """A new prefix cache holding the KV cache's blocks, or None when prefix caching is off."""
        if not self.enable_prefix_caching:
            return None
        perf = self.perf_model()
        tokens = perf.kv_cache_tokens if perf is not None else (self.kv_cache_tokens or FIXED_PROFILE_CACHE_TOKENS)
        return PrefixCache(capacity_blocks=tokens // self.block_size, block_size=self.block_size)

    def perf_model(self) -> PerfModel | None:
        """Return the performance model, or None for the ``fixed`` profile."""
        if self.profile == FIXED_PROFILE:
            return None
        gpu = get_gpu_profile(self.profile)
        return PerfModel(
            gpu=gpu,
            model=get_model_profile(self.model_profile),
            gpu_memory_utilization=self.gpu_memory_utilization,
            block_size=self.block_size,
            max_num_seqs=self.max_num_seqs or gpu.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            kv_cache_tokens_override=self.kv_cache_tokens,
            max_model_len_override=self.max_model_len,
        )


class StreamSink:
    """Writes one streamed answer's events as the engine produces tokens."""

    __slots__ = ("app", "conn", "fmt", "req", "fault", "sent", "timer")

    def __init__(self, app: SimApp, conn: Connection, fmt: StreamFormat, req: SimRequest, fault: str | None) -> None:
        self.app, self.conn, self.fmt, self.req, self.fault = app, conn, fmt, req, fault
        self.sent = 0
        self.timer: asyncio.TimerHandle | None = None

    @property
    def paused(self) -> bool:
        """Whether the transport asked us to stop writing."""
        return self.conn.paused

    def on_tokens(self, count: int, done: bool) -> None:
        """Send ``count`` token events; after the last one, end the stream (or inject the fault)."""
        fmt, conn = self.fmt, self.conn
        if not done and count == 1 and not fmt.continuous:
            data = fmt.token(self.sent)
            self.sent += 1
            conn.write(b"%x\r\n%s\r\n" % (len(data), data))
            return
        reason = self.req.finish_reason if done else None
        data = fmt.tokens(self.sent, count, reason) if count else b""
        self.sent += count
        if not done:
            conn.write_chunk(data)
        elif reason is not None:
            conn.end_stream(data + self.fmt.tail(self.sent))
        else:
            self.app.stream_fault(self, data)


class FullSink:
    """Collects a non-streamed answer and sends it whole."""

    __slots__ = ("app", "conn", "gen", "req", "fault", "rid", "offset", "timer")
    paused = False

    def __init__(
        self, app: SimApp, conn: Connection, gen: GenRequest, req: SimRequest, fault: str | None, rid: str, offset: int
    ) -> None:
        self.app, self.conn, self.gen, self.req, self.fault, self.rid, self.offset = (
            app,
            conn,
            gen,
            req,
            fault,
            rid,
            offset,
        )
        self.timer: asyncio.TimerHandle | None = None

    def on_tokens(self, count: int, done: bool) -> None:
        """Send the response once the last token is generated."""
        if not done:
            return
        req = self.req
        if req.finish_reason is None:
            self.app.full_fault(self)
            return
        text = self.app.vocab.text(self.offset, req.generated)
        body = full_response(
            req=self.gen,
            rid=self.rid,
            created=int(time.time()),
            model=self.gen.model or self.app.model_name,
            text=text,
            completion_tokens=req.generated,
            finish_reason=req.finish_reason,
        )
        self.conn.send(200, body)


class PoolSink:
    """Sends a pooling answer once the engine has processed its inputs (its one "token")."""

    __slots__ = ("app", "conn", "pool", "req", "fault", "timer")
    paused = False

    def __init__(self, app: SimApp, conn: Connection, pool: PoolRequest, req: SimRequest, fault: str | None) -> None:
        self.app, self.conn, self.pool, self.req, self.fault = app, conn, pool, req, fault
        self.timer: asyncio.TimerHandle | None = None

    def on_tokens(self, count: int, done: bool) -> None:
        if not done:
            return
        body = pool_response(self.pool)
        fault, conn = self.fault, self.conn
        if fault is None:
            conn.send(200, body)
        elif fault == "malformed":
            conn.send(200, b"{not json")
        elif fault == "incomplete":
            conn.write(
                conn._head(200, [b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)])
                + body[: len(body) // 2]
            )
            conn.close()
        elif fault == "stall":
            self.timer = self.app.loop.call_later(self.app.config.fault.stall_s, conn.close)
        else:
            conn.close()


class SimApp:
    """Routes requests to the engine and owns the simulator's state."""

    def __init__(self, *, config: SimConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.model_name = config.served_model_name
        self.perf = config.perf_model()
        self.max_model_len = self.perf.max_model_len if self.perf else (config.max_model_len or 131072)
        self.metrics = SimMetrics(model_name=self.model_name, max_model_len=self.max_model_len)
        self.prefix_cache = config.prefix_cache()
        self.metrics.prefix_cache = self.prefix_cache
        self.tokenizer: HFTokenizer | None = load_tokenizer(config.tokenizer) if config.tokenizer else None
        if self.perf is None:
            self.engine: StepEngine | FixedEngine = FixedEngine(
                ttft_s=config.ttft_ms / 1e3,
                itl_s=config.itl_ms / 1e3,
                metrics=self.metrics,
                loop=loop,
                prefix_cache=self.prefix_cache,
            )
        else:
            self.engine = StepEngine(
                scheduler=Scheduler(perf=self.perf, prefix_cache=self.prefix_cache), metrics=self.metrics, loop=loop
            )
        self.metrics.gauges = self.engine.gauges
        self.vocab = Vocabulary(seed=config.seed)
        self.faults = FaultPlan(config=config.fault, seed=config.seed)
        self.connections: set[Connection] = set()
        self._next_id = 0
        if config.slow_after_s is not None and config.slow_factor != 1.0:
            loop.call_later(config.slow_after_s, self._slow_down)

    def _slow_down(self) -> None:
        self.engine.slow_down(self.config.slow_factor)
        print(f"llmload-sim: {self.config.slow_factor:g}x slower from now on", flush=True)

    def protocol(self) -> Connection:
        """Return a new connection protocol (the ``create_server`` factory)."""
        return Connection(self.handle, self.connections)

    def handle(self, conn: Connection, request: HttpRequest) -> None:
        """Answer one request."""
        path, method = request.path, request.method
        if path in ("/v1/chat/completions", "/v1/completions"):
            if method != "POST":
                return conn.send(405, NOT_ALLOWED)
            return self.generate(conn, request, chat=path == "/v1/chat/completions")
        kind = POOLING_ROUTES.get(path)
        if kind is not None:
            if method != "POST":
                return conn.send(405, NOT_ALLOWED)
            return self.pool(conn, request, kind)
        if method != "GET":
            known = path in ("/health", "/v1/models", "/version", "/metrics")
            return conn.send(405 if known else 404, NOT_ALLOWED if known else NOT_FOUND)
        if path == "/health":
            return conn.send(200, b"")
        if path == "/v1/models":
            return conn.send(
                200,
                models_response(
                    model=self.model_name, max_model_len=self.max_model_len, adapters=self.config.lora_modules
                ),
            )
        if path == "/version":
            return conn.send(200, orjson.dumps({"version": f"llmload-sim-{__version__}"}))
        if path == "/metrics":
            return conn.send(200, self.metrics.render(), content_type=METRICS_CONTENT_TYPE)
        return conn.send(404, NOT_FOUND)

    def generate(self, conn: Connection, request: HttpRequest, *, chat: bool) -> None:
        """Validate a generation request, maybe inject a fault, and hand it to the engine."""
        config = self.config
        try:
            gen = parse_request(
                chat=chat,
                body=request.body,
                served_model=self.model_name,
                max_model_len=self.max_model_len,
                default_max_tokens=config.default_max_tokens,
                reject_stream_options=config.reject_stream_options,
                adapters=frozenset(config.lora_modules),
                tokenizer=self.tokenizer,
                sequence=self.prefix_cache is not None,
            )
        except ApiError as exc:
            return conn.send(exc.status, exc.body(), extra=exc.headers)
        fault = self.faults.draw()
        if fault in HTTP_FAULTS:
            return self.http_fault(conn, fault)
        arrival = self.loop.time()
        natural = config.answer_tokens
        structured = gen.structured
        reason: str | None
        if structured is not None:  # a tool call or schema JSON: its length, unless max_tokens cuts it
            parts, tool = structured
            n_target, reason = min(len(parts), gen.max_tokens), "tool_calls" if tool else "stop"
            if len(parts) > gen.max_tokens:
                reason = "length"
        elif gen.ignore_eos or natural is None or natural >= gen.max_tokens:
            n_target, reason = gen.max_tokens, "length"
        else:
            n_target, reason = natural, "stop"
        if fault is not None and config.fault.after <= n_target:
            n_target, reason = config.fault.after, None
        elif fault is not None:
            reason = None
        self._next_id += 1
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        req = SimRequest(
            rid=self._next_id, prompt_tokens=gen.prompt_tokens, n_target=n_target, finish_reason=reason, arrival=arrival
        )
        req.encode_s = gen.images * config.vision_encode_ms / 1000
        cache = self.prefix_cache
        if cache is not None and gen.prompt_ids is not None:  # keyed by model: LoRA adapters share no blocks
            req.block_hashes = cache.block_hashes(gen.prompt_ids, seed=gen.model or self.model_name)
        offset = self.vocab.start_offset()
        if gen.stream:
            fmt = StreamFormat(
                req=gen,
                rid=rid,
                created=int(time.time()),
                model=gen.model or self.model_name,
                vocab=self.vocab
                if structured is None
                else FixedAnswer(structured[0], closing=b"}}]" * bool(structured[1])),
                offset=offset,
                thinking=config.reasoning_tokens if chat and structured is None else 0,
                thinking_field=config.reasoning_field,
                tool=structured[1] if structured is not None else None,
            )
            req.sink = StreamSink(self, conn, fmt, req, fault)
            conn.start_stream(first=fmt.head())
        else:
            req.sink = FullSink(self, conn, gen, req, fault, rid, offset)
        engine = self.engine
        conn.on_lost = lambda: self._lost(req)
        conn.on_resume = lambda: engine.unpark(req)
        if n_target == 0:
            self.loop.call_soon(self._cut_before_first_token, req)
        else:
            engine.submit(req)

    def pool(self, conn: Connection, request: HttpRequest, kind: str) -> None:
        """Validate an embeddings, score or rerank request and hand its prefill to the engine."""
        try:
            pool = parse_pool_request(
                kind, request.body, served_model=self.model_name, max_model_len=self.max_model_len
            )
        except ApiError as exc:
            return conn.send(exc.status, exc.body(), extra=exc.headers)
        fault = self.faults.draw()
        if fault in HTTP_FAULTS:
            return self.http_fault(conn, fault)
        self._next_id += 1
        req = SimRequest(
            rid=self._next_id,
            prompt_tokens=pool.prompt_tokens,
            n_target=1,
            finish_reason="stop",
            arrival=self.loop.time(),
        )
        req.pooled = True  # block_hashes stays None: pooling requests never use the prefix cache
        req.sink = PoolSink(self, conn, pool, req, fault)
        engine = self.engine
        conn.on_lost = lambda: self._lost(req)
        conn.on_resume = lambda: engine.unpark(req)
        engine.submit(req)

    def _cut_before_first_token(self, req: SimRequest) -> None:
        req.finished = True
        self.metrics.finished(req, "abort", self.loop.time())
        req.sink.on_tokens(0, True)

    def _lost(self, req: SimRequest) -> None:
        self.engine.abort(req)
        timer = req.sink.timer
        if timer is not None:
            timer.cancel()

    def http_fault(self, conn: Connection, fault: str) -> None:
        """Answer with the injected HTTP error."""
        status = HTTP_FAULTS[fault]
        headers = (("retry-after", str(RETRY_AFTER_S)),) if status in (429, 503) else ()
        err_type = {
            429: "RateLimitError",
            400: "BadRequestError",
            500: "InternalServerError",
            503: "ServiceUnavailableError",
        }[status]
        err = ApiError(status, f"llmload sim injected fault {fault}", err_type=err_type, headers=headers)
        conn.send(status, err.body(), extra=err.headers)

    def stream_fault(self, sink: StreamSink, data: bytes) -> None:
        """Break a stream after its allowed tokens, as ``--fault`` asked."""
        conn, fault = sink.conn, sink.fault
        if fault == "disconnect":
            conn.write_chunk(data)
            conn.close()
        elif fault == "malformed":
            conn.end_stream(data + MALFORMED_EVENT)
        elif fault == "incomplete":
            conn.end_stream(data)
        else:  # stall
            conn.write_chunk(data)
            sink.timer = self.loop.call_later(self.config.fault.stall_s, conn.close)

    def full_fault(self, sink: FullSink) -> None:
        """Break a non-streamed answer: no body, half a body, a non-JSON body, or a stall."""
        conn, fault = sink.conn, sink.fault
        if fault == "malformed":
            conn.send(200, b"{not json")
        elif fault == "incomplete":
            body = full_response(
                req=sink.gen,
                rid=sink.rid,
                created=int(time.time()),
                model=sink.gen.model or self.model_name,
                text="",
                completion_tokens=sink.req.generated,
                finish_reason="length",
            )
            conn.write(
                conn._head(200, [b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)])
                + body[: len(body) // 2]
            )
            conn.close()
        elif fault == "stall":
            sink.timer = self.loop.call_later(self.config.fault.stall_s, conn.close)
        else:
            conn.close()

    def close(self) -> None:
        """Stop the engine and drop every connection."""
        self.engine.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()


async def serve(config: SimConfig, *, ready: asyncio.Future[str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM; print the listening line once bound."""
    loop = asyncio.get_running_loop()
    app = SimApp(config=config, loop=loop)
    server = await loop.create_server(app.protocol, config.host, config.port, reuse_address=True, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{port}"
    print(f"llmload-sim listening on {url}", flush=True)
    if ready is not None:
        ready.set_result(url)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        server.close()
        app.close()
        await server.wait_closed()
        sys.stdout.flush()
