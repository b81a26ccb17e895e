"""Server-side metrics: scrape each backend's ``/metrics`` during a run and summarize the deltas.

With ``--llm-server-metrics`` the master (or local) process scrapes every
backend host at test start, every ``SCRAPE_INTERVAL_S`` seconds in a gevent
greenlet, and at test stop. It reads vLLM's names (V1 and the older ones) and
llama.cpp's ``llamacpp:`` names, summed over every model and engine a server
reports, and keeps the first and last snapshot plus the peaks of the gauges.
``summary()`` is what the results JSON shows under ``"server"``, keyed by
backend label::

    {"engine", "metrics_url", "scrapes",
     "generation_tokens", "prompt_tokens", "preemptions",     # counter deltas over the run
     "ttft_s", "itl_s", "queue_time_s": {"count", "mean", "p50", "p90", "p99"},
     "peak_running", "peak_waiting", "peak_kv_cache_usage"}

Histogram figures come from bucket deltas: mean = delta sum / delta count,
quantiles by linear interpolation inside a bucket, as PromQL's
``histogram_quantile`` does. A host that cannot be scraped costs one warning
line for the run, never an error.
"""

from __future__ import annotations

import http.client
import logging
import math
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gevent
from prometheus_client.parser import text_string_to_metric_families

from llmload.extension import Extension
from llmload.render.text import redact_url
from llmload.targets import Target, run_targets

if TYPE_CHECKING:
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

logger = logging.getLogger("llmload")

SCRAPE_INTERVAL_S = 5.0
SCRAPE_TIMEOUT_S = 3.0
QUANTILES = (0.5, 0.9, 0.99)

# Summary key -> sample names, newest first; the first one a server exposes is used.
COUNTERS: dict[str, tuple[str, ...]] = {
    "generation_tokens": ("vllm:generation_tokens_total", "llamacpp:tokens_predicted_total"),
    "prompt_tokens": ("vllm:prompt_tokens_total", "llamacpp:prompt_tokens_total"),
    "preemptions": ("vllm:num_preemptions_total",),
}
GAUGES: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running", "llamacpp:requests_processing"),
    "waiting": ("vllm:num_requests_waiting", "llamacpp:requests_deferred"),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "llamacpp:kv_cache_usage_ratio"),
}
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft_s": ("vllm:time_to_first_token_seconds",),
    "itl_s": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "queue_time_s": ("vllm:request_queue_time_seconds",),
}
_WANTED = tuple(
    sorted({name for names in (*COUNTERS.values(), *GAUGES.values(), *HISTOGRAMS.values()) for name in names})
)
# Gauges summed over series (one per engine or model); the KV-cache usage takes the highest.
_MAX_GAUGES = ("kv_cache_usage",)


def add_arguments(parser: Any) -> None:
    """Register ``--llm-server-metrics`` on Locust's parser."""
    parser.add_argument(
        "--llm-server-metrics",
        env_var="LOCUST_LLM_SERVER_METRICS",
        default=False,
        action="store_true",
        help="Scrape each backend's /metrics (vLLM, llama.cpp) during the run and add a 'server' section "
        "to the results",
    )


# -- parsing ------------------------------------------------------------------------------------------


@dataclass
class Histogram:
    """A histogram summed over label sets: cumulative counts by upper bound, sum and count."""

    buckets: dict[float, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0

    def plus(self, other: Histogram) -> Histogram:
        """Return the observations of both (same bucket bounds, or a subset)."""
        bounds = set(self.buckets) | set(other.buckets)
        return Histogram(
            buckets={le: self.buckets.get(le, 0.0) + other.buckets.get(le, 0.0) for le in bounds},
            sum=self.sum + other.sum,
            count=self.count + other.count,
        )

    def minus(self, earlier: Histogram | None) -> Histogram:
        """Return the observations made since ``earlier`` (all of them after a counter reset)."""
        if earlier is None or self.count < earlier.count:
            return self
        return Histogram(
            buckets={le: value - earlier.buckets.get(le, 0.0) for le, value in self.buckets.items()},
            sum=self.sum - earlier.sum,
            count=self.count - earlier.count,
        )

    def quantile(self, q: float) -> float | None:
        """Estimate quantile ``q`` (0-1) like PromQL's ``histogram_quantile``; None without observations."""
        bounds = sorted(self.buckets)
        if not bounds or not math.isinf(bounds[-1]):
            return None
        total = self.buckets[bounds[-1]]
        if total <= 0:
            return None
        rank = q * total
        previous_bound, previous_count = 0.0, 0.0
        for index, bound in enumerate(bounds):
            count = self.buckets[bound]
            if count >= rank:
                if math.isinf(bound):
                    return bounds[index - 1] if index else None
                if index == 0 and bound <= 0:
                    return bound
                return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
            previous_bound, previous_count = bound, count
        return None

    def summary(self) -> dict[str, float | None]:
        """Return count, mean, p50, p90 and p99."""
        out: dict[str, float | None] = {"count": int(self.count), "mean": self.sum / self.count if self.count else None}
        for q in QUANTILES:
            out[f"p{q * 100:g}"] = self.quantile(q)
        return out


@dataclass
class Snapshot:
    """The figures llmload reads from one scrape of a server's ``/metrics``."""

    at: float
    engine: str = ""
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.counters or self.gauges or self.histograms)


def _relevant_lines(text: str) -> str:
    """Keep only the lines of the families llmload reads: parsing a full vLLM page costs the event loop."""
    keep = []
    for line in text.splitlines():
        name = line[7:] if line.startswith(("# HELP ", "# TYPE ")) else line
        if name.startswith(_WANTED):
            keep.append(line)
    return "\n".join(keep) + "\n"


def parse(text: str, *, at: float | None = None) -> Snapshot:
    """Parse a Prometheus text exposition into a ``Snapshot``; raise ValueError on malformed text."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(_relevant_lines(text)):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    snap = Snapshot(at=time.time() if at is None else at)

    def first(names: tuple[str, ...], suffix: str = "") -> str | None:
        return next((name for name in names if name + suffix in samples), None)

    for key, names in COUNTERS.items():
        name = first(names)
        if name is not None:
            snap.counters[key] = sum(value for _, value in samples[name])
    for key, names in GAUGES.items():
        name = first(names)
        if name is not None:
            values = [value for _, value in samples[name]]
            snap.gauges[key] = max(values) if key in _MAX_GAUGES else sum(values)
    for key, names in HISTOGRAMS.items():
        name = first(names, "_bucket")
        if name is None:
            continue
        hist = Histogram()
        for labels, value in samples[name + "_bucket"]:
            le = float(labels["le"])
            hist.buckets[le] = hist.buckets.get(le, 0.0) + value
        hist.sum = sum(value for _, value in samples.get(name + "_sum", ()))
        hist.count = sum(value for _, value in samples.get(name + "_count", ()))
        snap.histograms[key] = hist
    names_seen = " ".join(samples)
    snap.engine = "vllm" if "vllm:" in names_seen else "llamacpp" if "llamacpp:" in names_seen else ""
    return snap


def counter_delta(first: float | None, last: float | None) -> float | None:
    """Return ``last - first``; after a counter reset (a server restart) the last value alone."""
    if last is None:
        return None
    if first is None or last < first:
        return last
    return last - first


# -- one backend over a run ---------------------------------------------------------------------------


def restarted(earlier: Snapshot, later: Snapshot) -> bool:
    """Whether the server restarted between two scrapes: one of its counters went down."""
    for key, value in later.counters.items():
        before = earlier.counters.get(key)
        if before is not None and value < before:
            return True
    for key, hist in later.histograms.items():
        before_hist = earlier.histograms.get(key)
        if before_hist is not None and hist.count < before_hist.count:
            return True
    return False


@dataclass
class BackendSeries:
    """What was scraped from one backend during a run: the sums of its deltas, gauge peaks, restarts.

    Counters and histograms are summed scrape to scrape, so a server restart (its
    counters start again at zero) loses only what it counted between the last
    scrape before and its restart.
    """

    metrics_url: str
    first: Snapshot | None = None
    last: Snapshot | None = None
    peaks: dict[str, float] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    scrapes: int = 0
    restarts: int = 0
    up: bool = False
    """Whether the latest scrape succeeded."""
    warned: bool = False

    def add(self, snap: Snapshot) -> bool:
        """Fold one successful scrape in; return whether the server restarted since the previous one.

        A late answer to an older scrape only counts for the peaks.
        """
        self.scrapes += 1
        self.up = True
        for key, value in snap.gauges.items():
            if value > self.peaks.get(key, float("-inf")):
                self.peaks[key] = value
        previous = self.last
        if previous is not None and snap.at < previous.at:
            return False
        if self.first is None:
            self.first = snap
        self.last = snap
        if previous is None:
            self.histograms = {key: hist.minus(hist) for key, hist in snap.histograms.items()}
            return False
        for key, value in snap.counters.items():
            delta = counter_delta(previous.counters.get(key), value)
            if delta is not None:
                self.totals[key] = self.totals.get(key, 0.0) + delta
        for key, hist in snap.histograms.items():
            delta_hist = hist.minus(previous.histograms.get(key))
            known = self.histograms.get(key)
            self.histograms[key] = delta_hist if known is None else known.plus(delta_hist)
        if restarted(previous, snap):
            self.restarts += 1
            return True
        return False

    def summary(self) -> dict[str, Any] | None:
        """Return the run's server figures, or None when nothing was scraped."""
        last = self.last
        if last is None:
            return None
        out: dict[str, Any] = {
            "engine": last.engine,
            "metrics_url": redact_url(self.metrics_url),
            "scrapes": self.scrapes,
        }
        for key in ("generation_tokens", "prompt_tokens"):
            out[key] = self.totals.get(key, 0.0) if key in last.counters else None
        for key in HISTOGRAMS:
            hist = self.histograms.get(key)
            out[key] = hist.summary() if hist is not None else None
        out["peak_running"] = self.peaks.get("running")
        out["peak_waiting"] = self.peaks.get("waiting")
        out["peak_kv_cache_usage"] = self.peaks.get("kv_cache_usage")
        out["preemptions"] = self.totals.get("preemptions", 0.0) if "preemptions" in last.counters else None
        out["restarts"] = self.restarts
        return out


def fetch(url: str, *, timeout: float, api_key: str = "") -> str:
    """GET ``url`` and return its text (cooperative under gevent's monkey-patching)."""
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
        return body.decode("utf-8", errors="replace")


# -- Locust wiring ------------------------------------------------------------------------------------


class ServerMetrics(Extension):
    """Scrape the backends of one master or local process's run."""

    results_key = "server"

    def __init__(
        self, plugin: LLMLoadPlugin, *, interval_s: float = SCRAPE_INTERVAL_S, timeout_s: float = SCRAPE_TIMEOUT_S
    ) -> None:
        self.plugin = plugin
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.series: dict[str, BackendSeries] = {}
        self._greenlet: gevent.Greenlet | None = None

    def listen(self, events: Any) -> ServerMetrics:
        """Listen to the run's ``test_start`` and ``test_stop``."""
        events.test_start.add_listener(self._on_test_start)
        events.test_stop.add_listener(self._on_test_stop)
        return self

    def scrape_all(self) -> None:
        """Scrape every target of the run once, concurrently."""
        jobs = [
            self.plugin.supervisor.spawn(f"scrape of {label}", self._scrape, target)
            for label, target in run_targets(self.plugin).items()
        ]
        gevent.joinall(jobs)

    def _scrape(self, target: Target) -> None:
        series = self.series.get(target.label)
        if series is None:
            series = self.series[target.label] = BackendSeries(metrics_url=target.metrics_url)
        started = time.time()
        try:
            text = fetch(series.metrics_url, timeout=self.timeout_s, api_key=target.api_key)
            snap = parse(text, at=started)
            if snap.empty:
                raise ValueError("no vLLM or llama.cpp metrics there")
        except (OSError, ValueError, KeyError, http.client.HTTPException) as exc:
            series.up = False
            if not series.warned:
                series.warned = True
                reason = getattr(exc, "reason", None) or exc
                logger.warning(
                    "llmload: cannot read server metrics from %s (%s); skipping it", series.metrics_url, reason
                )
            return
        if series.add(snap):
            logger.warning("llmload: backend %s restarted (its server counters went down)", target.label)
            self.plugin.run_events.emit("backend_restarted", backend=target.label)

    def _scrape_forever(self) -> None:
        while True:
            gevent.sleep(self.interval_s)
            self.scrape_all()

    def _on_test_start(self, **_kwargs: Any) -> None:
        self.stop()
        self.series = {}
        self.scrape_all()
        self._greenlet = self.plugin.supervisor.spawn("server-metrics scraper", self._scrape_forever)

    def _on_test_stop(self, **_kwargs: Any) -> None:
        if self._greenlet is None:
            return
        self.stop()
        self.scrape_all()

    def stop(self) -> None:
        """Stop the periodic scrapes."""
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def results_section(self) -> dict[str, Any]:
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Return ``{backend label: server figures}`` for the results JSON."""
        out = {}
        for label, series in sorted(self.series.items()):
            body = series.summary()
            if body is not None:
                out[label] = body
        return out


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    """With ``--llm-server-metrics``, scrape the run's backends on the master or local process."""
    parsed = environment.parsed_options
    if parsed is None or plugin.is_worker or not getattr(parsed, "llm_server_metrics", False):
        return
    plugin.extensions.add(ServerMetrics(plugin)).listen(environment.events)
