"""The simulator's ``/metrics``: vLLM V1 metric names, labels and buckets.

The engines update plain integers and bucket arrays (a token costs an integer
add, not a locked ``Histogram.observe``); a custom collector on the
simulator's own ``CollectorRegistry`` turns them into metric families at each
scrape, and reads the scheduler gauges live. Every series carries
``model_name`` and ``engine="0"``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from llmload.simulator.prefix_cache import PrefixCache
    from llmload.simulator.scheduler import SimRequest

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
FINISHED_REASONS = ("stop", "length", "abort")


def build_1_2_5_buckets(max_value: int) -> tuple[int, ...]:
    """Return 1, 2, 5, 10, 20, 50, ... up to ``max_value``, as vLLM sizes token histograms."""
    out: list[int] = []
    scale = 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_value:
                return tuple(out)
            out.append(m * scale)
        scale *= 10


class Histo:
    """A cumulative-on-export histogram: per-bucket counts and a sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        """Record ``count`` observations of ``value``."""
        self.counts[bisect_left(self.bounds, value)] += count
        self.total += value * count

    @property
    def count(self) -> int:
        """Number of observations."""
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Return cumulative ``(le, count)`` pairs ending with ``+Inf``."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, c in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += c
            out.append((floatToGoString(float(bound)), running))
        return out


_HISTOGRAMS = (
    # attribute, metric name, help, buckets (None: 1-2-5 up to max_model_len)
    ("ttft", "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS),
    ("itl_h", "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS),
    (
        "tpot",
        "vllm:request_time_per_output_token_seconds",
        "Histogram of time_per_output_token_seconds per request.",
        ITL_BUCKETS,
    ),
    (
        "e2e",
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        REQUEST_LATENCY_BUCKETS,
    ),
    (
        "queue",
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        REQUEST_LATENCY_BUCKETS,
    ),
    (
        "inference",
        "vllm:request_inference_time_seconds",
        "Histogram of time spent in RUNNING phase for request.",
        REQUEST_LATENCY_BUCKETS,
    ),
    (
        "prefill",
        "vllm:request_prefill_time_seconds",
        "Histogram of time spent in PREFILL phase for request.",
        REQUEST_LATENCY_BUCKETS,
    ),
    (
        "decode",
        "vllm:request_decode_time_seconds",
        "Histogram of time spent in DECODE phase for request.",
        REQUEST_LATENCY_BUCKETS,
    ),
    ("prompt_h", "vllm:request_prompt_tokens", "Number of prefill tokens processed.", None),
    ("generation_h", "vllm:request_generation_tokens", "Number of generation tokens processed.", None),
    (
        "iteration_h",
        "vllm:iteration_tokens_total",
        "Histogram of number of tokens per engine_step.",
        ITERATION_TOKEN_BUCKETS,
    ),
    # Not a vLLM metric: the simulator's own health. How long after their modelled time tokens were
    # written; large values mean the simulator host, not the model, is the bottleneck.
    (
        "lateness_h",
        "llmload_sim_token_lateness_seconds",
        "Delay between a token's modelled time and its write (simulator self-monitoring).",
        LATENESS_BUCKETS,
    ),
)


class SimMetrics:
    """Counters and histograms of one simulator, exposed in vLLM's names."""

    # The histograms, one per row of _HISTOGRAMS (set in __init__ by attribute name).
    ttft: Histo
    itl_h: Histo
    tpot: Histo
    e2e: Histo
    queue: Histo
    inference: Histo
    prefill: Histo
    decode: Histo
    prompt_h: Histo
    generation_h: Histo
    iteration_h: Histo
    lateness_h: Histo

    def __init__(
        self, *, model_name: str, max_model_len: int, gauges: Callable[[], tuple[int, int, float]] | None = None
    ) -> None:
        self.labels = [model_name, "0"]
        self.gauges = gauges or (lambda: (0, 0, 0.0))
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.preemptions = 0
        self.prefix_cache: PrefixCache | None = None
        """Source of ``vllm:prefix_cache_queries``/``_hits`` (None: prefix caching off, both stay 0, as vLLM)."""
        self.success = dict.fromkeys(FINISHED_REASONS, 0)
        token_buckets = build_1_2_5_buckets(max_model_len)
        for attr, _, _, bounds in _HISTOGRAMS:
            setattr(self, attr, Histo(bounds if bounds is not None else token_buckets))
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- updates from the engines -------------------------------------------------

    def first_token(self, req: SimRequest) -> None:
        """Record ``req``'s first token (its prompt is now fully processed)."""
        assert req.first_token_at is not None  # the engines set it before calling
        self.ttft.observe(req.first_token_at - req.arrival)
        self.prompt_tokens += req.prompt_tokens

    def itl(self, gap_s: float, count: int = 1) -> None:
        """Record ``count`` inter-token gaps of ``gap_s``."""
        self.itl_h.observe(gap_s, count)

    def iteration(self, tokens: int) -> None:
        """Record the tokens one engine step processed."""
        self.iteration_h.observe(tokens)

    def finished(self, req: SimRequest, reason: str, now: float) -> None:
        """Record a finished (or aborted) request."""
        # The engine finished a tool call's text with "stop"; "tool_calls" is the API's reading of it.
        self.success["stop" if reason == "tool_calls" else reason] += 1
        self.e2e.observe(now - req.arrival)
        scheduled = req.scheduled_at if req.scheduled_at is not None else now
        self.queue.observe(max(0.0, scheduled - req.queued_at))
        n = req.generated
        if n:
            first, last = req.first_token_at, req.last_token_at
            assert first is not None and last is not None  # set when its first token was emitted
            self.prefill.observe(first - scheduled)
            self.decode.observe(last - first)
            self.inference.observe(last - scheduled)
            self.tpot.observe((last - first) / (n - 1) if n > 1 else 0.0)
        else:
            self.prefill.observe(0.0)
            self.decode.observe(0.0)
            self.inference.observe(max(0.0, now - scheduled))
            self.tpot.observe(0.0)
        self.prompt_h.observe(req.prompt_tokens)
        self.generation_h.observe(0 if req.pooled else n)

    # -- exposition -----------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Build fresh metric families (prometheus_client collector protocol)."""
        labels = self.labels
        names = ["model_name", "engine"]
        running, waiting, kv_usage = self.gauges()
        cache = self.prefix_cache
        queries, hits = (cache.queries, cache.hits) if cache is not None else (0, 0)
        for name, doc, value in (
            ("vllm:num_requests_running", "Number of requests in model execution batches.", running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv_usage),
        ):
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(labels, value)
            yield g
        for name, doc, value in (
            ("vllm:num_preemptions", "Cumulative number of preemption from the engine.", self.preemptions),
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", self.prompt_tokens),
            ("vllm:generation_tokens", "Number of generation tokens processed.", self.generation_tokens),
            (
                "vllm:prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens.",
                queries,
            ),
            ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", hits),
        ):
            c = CounterMetricFamily(name, doc, labels=names)
            c.add_metric(labels, value)
            yield c
        c = CounterMetricFamily(
            "vllm:request_success", "Count of successfully processed requests.", labels=[*names, "finished_reason"]
        )
        for reason, value in self.success.items():
            c.add_metric([*labels, reason], value)
        yield c
        for attr, name, doc, _ in _HISTOGRAMS:
            h: Histo = getattr(self, attr)
            fam = HistogramMetricFamily(name, doc, labels=names)
            fam.add_metric(labels, h.buckets(), h.total)
            yield fam

    def render(self) -> bytes:
        """Return the Prometheus text exposition."""
        return generate_latest(self.registry)
