"""The series llmload exports: names, help texts, labels and bucket bounds (built by ``llmload.collector``).

Every series is listed in docs/prometheus-grafana.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from prometheus_client.utils import floatToGoString

from llmload.distribution import Distribution

# Groups are (backend, model, user class): bounded in practice, but a label per group must stay bounded.
MAX_GROUPS = 200
GROUP_LABELS = ("backend", "model", "user_class")

# Upper bounds in seconds, for heatmaps and aggregation across groups only: the percentile panels
# read the exact gauges (``llmload.live``). Two schemes (``--llm-prometheus-buckets``, see
# docs/prometheus-grafana.md for their series counts): ``coarse`` (1-2-5 steps, the default, within
# the budget of 5,000 series at 50 groups) and ``fine`` (consecutive bounds at most 1.25 apart).
TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)
ITL_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
E2E_BUCKETS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
DELAY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
FINE_RATIO = 1.25


def ratio_bounds(low: float, high: float, *, ratio: float = FINE_RATIO) -> tuple[float, ...]:
    """Bounds from ``low`` up to at least ``high``, each at most ``ratio`` times the one before.

    Each is rounded down to three significant figures, so the ratio never exceeds ``ratio``.
    """
    bounds = [low]
    while bounds[-1] < high:
        step = bounds[-1] * ratio
        magnitude = 10 ** (math.floor(math.log10(step)) - 2)
        bounds.append(round(math.floor(step / magnitude + 1e-9) * magnitude, 12))
    return tuple(bounds)


BUCKET_SCHEMES: dict[str, dict[str, tuple[float, ...]]] = {
    "coarse": {"ttft_s": TTFT_BUCKETS, "itl_s": ITL_BUCKETS, "e2e_s": E2E_BUCKETS, "latency_s": TTFT_BUCKETS},
    "fine": {
        "ttft_s": ratio_bounds(TTFT_BUCKETS[0], TTFT_BUCKETS[-1]),
        "latency_s": ratio_bounds(TTFT_BUCKETS[0], TTFT_BUCKETS[-1]),
        "itl_s": ratio_bounds(ITL_BUCKETS[0], ITL_BUCKETS[-1]),
        "e2e_s": ratio_bounds(E2E_BUCKETS[0], E2E_BUCKETS[-1]),
    },
}
"""Bucket scheme -> distribution -> upper bounds of the group histograms (and the from-intended ones)."""

# metric name -> (distribution in the store, help)
HISTOGRAMS: dict[str, tuple[str, str]] = {
    "llmload_ttft_seconds": (
        "ttft_s",
        "Time to first token: first token-carrying event minus send time (bucketed).",
    ),
    "llmload_itl_seconds": (
        "itl_s",
        "Inter-token latency: gap between consecutive token-carrying events (bucketed).",
    ),
    "llmload_e2e_seconds": (
        "e2e_s",
        "End-to-end latency: last token-carrying event minus send time (bucketed).",
    ),
    "llmload_request_latency_seconds": (
        "latency_s",
        "Embeddings, score and rerank requests: the answer's last byte minus send time (bucketed).",
    ),
}
"""Each family has the groups whose kind fills its distribution: streamed groups, or pooling ones (latency)."""

# metric name -> (distribution, help) of the exact percentile gauges (``llmload.live``)
PERCENTILE_GAUGES: dict[str, tuple[str, str]] = {
    "llmload_ttft_percentile_seconds": ("ttft_s", "Time to first token, exact percentile"),
    "llmload_itl_percentile_seconds": ("itl_s", "Inter-token latency, exact percentile"),
    "llmload_tpot_percentile_seconds": ("tpot_s", "Time per output token after the first, exact percentile"),
    "llmload_e2e_percentile_seconds": ("e2e_s", "End-to-end latency, exact percentile"),
    "llmload_stream_rate_percentile_tokens_per_second": (
        "stream_rate_tps",
        "Per-request stream rate, exact percentile",
    ),
    "llmload_ttfa_percentile_seconds": (
        "ttfa_s",
        "Time to first answer token (reasoning models; groups that thought only), exact percentile",
    ),
    "llmload_request_latency_percentile_seconds": (
        "latency_s",
        "Embeddings, score and rerank requests: latency to the answer's last byte, exact percentile",
    ),
}

# Server series re-exported under the backend label: name -> (summary key, help).
SERVER_GAUGES: dict[str, tuple[str, str]] = {
    "llmload_server_requests_running": ("running", "Requests the server is running (its own gauge)."),
    "llmload_server_requests_waiting": ("waiting", "Requests waiting in the server's queue (its own gauge)."),
    "llmload_server_kv_cache_usage_ratio": ("kv_cache_usage", "Server KV-cache usage, 0-1 (its own gauge)."),
}
SERVER_COUNTERS: dict[str, tuple[str, str]] = {
    "llmload_server_generation_tokens": ("generation_tokens", "The server's generated-token counter, as scraped."),
    "llmload_server_prompt_tokens": ("prompt_tokens", "The server's prompt-token counter, as scraped."),
    "llmload_server_preemptions": ("preemptions", "The server's preemption counter, as scraped."),
}
SERVER_HISTOGRAMS: dict[str, tuple[str, str]] = {
    "llmload_server_ttft_seconds": ("ttft_s", "The server's time-to-first-token histogram, as scraped."),
    "llmload_server_itl_seconds": ("itl_s", "The server's inter-token latency histogram, as scraped."),
    "llmload_server_queue_time_seconds": ("queue_time_s", "The server's queue-time histogram, as scraped."),
}


def cumulative_buckets(dist: Distribution, bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Return Prometheus ``(le, cumulative count)`` pairs of ``dist``, ending with ``+Inf``.

    A bound falls inside one HdrHistogram cell (3 significant digits); the
    whole cell counts as below the bound, so a bucket may include values up to
    0.1% above its bound. ``+Inf`` is the exact sample count.
    """
    counts = dist.cumulative_counts(bounds) if dist.count else [0] * len(bounds)
    out = [(floatToGoString(bound), float(n)) for bound, n in zip(bounds, counts, strict=True)]
    out.append(("+Inf", float(dist.count)))
    return out
