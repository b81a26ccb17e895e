"""The one place that turns metrics into figures: the body every output shows.

Results, the console table, the web UI tab, the capacity steps, the timeline,
the exporter's SLO gauges and ``llmload compare`` all read figures built
here (or the results bodies built here), so that one name means one number
everywhere. Definitions are in docs/metrics.md.

SLO attainment is ``slo_met / finished``: requests that met every SLO over
all finished requests, failed ones counting as misses (``attainment``).
The share among successful requests only is ``attainment_of_ok``. A group
body is::

    {"requests": {"ok", "failed", "errors"},
     "tokens": {"prompt", "output", "output_source", "estimated_requests"},
     "ttft_s" | "itl_s" | "tpot_s" | "e2e_s" | "stream_rate_tps" | "decode_rate_tps":
         {"count", "mean", "min", "p10", "p50", "p90", "p99", "max"},
     "dispatch_lag_s": (open-loop runs only),
     "throughput": {"window_s", "output_tokens_per_s", "requests_per_s"},
     "slo": {"ttft_s", "ttft_of", "stream_rate_tps", "met", "attainment", "attainment_of_ok", "goodput_rps"},
     "answers": (tools or a schema asked for) {"checked", "valid", "valid_share"},
     "images": (requests with images) {"requests", "images", "pixels", "images_per_request", "pixels_per_image"},
     "reasoning": (groups whose model thought) {"requests", "tokens": {"reasoning", "answer",
         "source", "estimated_requests"}, "ttfa_s", "reasoning_s", "answer_stream_rate_tps"}}

A group of embeddings, score or rerank requests (``kind`` other than ``stream``; no token
stream, so no streaming distribution and no streaming SLO) has instead::

    {"kind": "embeddings" | "score" | "rerank",
     "requests": {"ok", "failed", "errors"},
     "tokens": {"prompt", "prompt_per_input"},
     "inputs": {"count", "per_request"},
     "latency_s": {"count", "mean", "min", "p10", "p50", "p90", "p99", "max"},
     "dispatch_lag_s" | "connect_s": (when measured),
     "timestamps": {"clock", "kernel_requests"},
     "throughput": {"window_s", "requests_per_s", "inputs_per_s", "prompt_tokens_per_s"}}

A streamed group's body says ``"kind": "stream"``; bodies of files written before the kinds
existed have no ``kind`` and are streamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmload.pooling import STREAM

if TYPE_CHECKING:
    from llmload.metrics import GroupMetrics, MetricsStore

REPORTED_DISTRIBUTIONS = ("ttft_s", "itl_s", "tpot_s", "e2e_s", "stream_rate_tps", "decode_rate_tps")


@dataclass(frozen=True)
class Slo:
    """The run's service-level objectives (None: no such objective)."""

    ttft_s: float | None = None
    stream_rate_tps: float | None = None
    ttft_of: str = "any"
    """The first token the TTFT objective targets: ``any`` or ``answer`` (reasoning models)."""

    @classmethod
    def of(cls, store: MetricsStore) -> Slo:
        return cls(ttft_s=store.slo_ttft_s, stream_rate_tps=store.slo_stream_rate_tps, ttft_of=store.slo_ttft_of)


def attainment(slo_met: int, finished: int) -> float | None:
    """SLO attainment: requests that met every SLO over all finished requests (None when none finished)."""
    return slo_met / finished if finished else None


def per_second(count: float, window_s: float) -> float:
    """A count over a window in seconds (0 for an empty window)."""
    return count / window_s if window_s > 0 else 0.0


def group_body(
    group: GroupMetrics,
    *,
    slo: Slo,
    window_s: float | None = None,
    skipped: int = 0,
    distributions: Sequence[str] = REPORTED_DISTRIBUTIONS,
) -> dict[str, Any]:
    """Return the figures of one group (or of a total) as the results document shows them.

    ``window_s`` is the span the rates are over (default: the group's own, from its first
    request sent to its last one finished). ``skipped`` open-loop arrivals that were never
    sent count as finished requests that missed the SLO (a capacity step in rate mode).
    """
    if group.kind != STREAM:
        return pooled_body(group, window_s=window_s)
    counters = group.counters
    ok, failed, met = counters["ok"], counters["failed"], counters["slo_met"]
    window = group.window_s if window_s is None else window_s
    body: dict[str, Any] = {
        "kind": STREAM,
        "requests": {"ok": ok, "failed": failed, "errors": dict(sorted(group.errors.items()))},
        "tokens": {
            "prompt": counters["prompt_tokens"],
            "output": counters["output_tokens"],
            "output_source": "estimated"
            if counters["estimated_requests"]
            else "tokenizer"
            if counters["tokenized_requests"]
            else "usage",
            "estimated_requests": counters["estimated_requests"],
            "tokenizer_counted_requests": counters["tokenized_requests"],
        },
    }
    for name in distributions:
        body[name] = group.dists[name].summary()
    _measured_extras(group, body)
    body["throughput"] = {
        "window_s": window,
        "output_tokens_per_s": per_second(counters["output_tokens"], window),
        "requests_per_s": per_second(ok + failed, window),
    }
    if counters["reasoning_requests"]:
        body["reasoning"] = reasoning_body(group)
    if counters["image_requests"]:
        n_images = counters["images"]
        body["images"] = {
            "requests": counters["image_requests"],
            "images": n_images,
            "pixels": counters["image_pixels"],
            "images_per_request": n_images / counters["image_requests"],
            "pixels_per_image": counters["image_pixels"] / n_images,
        }
    checked = counters["answers_checked"]
    if checked:
        body["answers"] = {
            "checked": checked,
            "valid": counters["answers_valid"],
            "valid_share": counters["answers_valid"] / checked,
        }
    body["slo"] = {
        "ttft_s": slo.ttft_s,
        "ttft_of": slo.ttft_of,
        "stream_rate_tps": slo.stream_rate_tps,
        "met": met,
        "attainment": attainment(met, ok + failed + skipped),
        "attainment_of_ok": attainment(met, ok),
        "goodput_rps": per_second(met, window),
    }
    return body


def _measured_extras(group: GroupMetrics, body: dict[str, Any]) -> None:
    """Dispatch lag and connection set-up when measured (and kept by the group's store); the clock."""
    for name in ("dispatch_lag_s", "connect_s"):
        dist = group.dists.get(name)
        if dist is not None and dist.count:
            body[name] = dist.summary()
    counters = group.counters
    kernel, finished = counters["kernel_clock_requests"], counters["ok"] + counters["failed"]
    body["timestamps"] = {
        "clock": "kernel" if kernel and kernel == finished else "mixed" if kernel else "user",
        "kernel_requests": kernel,
    }


def pooled_body(group: GroupMetrics, *, window_s: float | None = None) -> dict[str, Any]:
    """The figures of a group of embeddings, score or rerank requests (docs/metrics.md)."""
    counters = group.counters
    ok, failed = counters["ok"], counters["failed"]
    window = group.window_s if window_s is None else window_s
    inputs, prompt = counters["inputs"], counters["prompt_tokens"]
    body: dict[str, Any] = {
        "kind": group.kind,
        "requests": {"ok": ok, "failed": failed, "errors": dict(sorted(group.errors.items()))},
        "tokens": {"prompt": prompt, "prompt_per_input": prompt / inputs if inputs else None},
        "inputs": {"count": inputs, "per_request": inputs / ok if ok else None},
        "latency_s": group.dists["latency_s"].summary(),
    }
    _measured_extras(group, body)
    body["throughput"] = {
        "window_s": window,
        "requests_per_s": per_second(ok + failed, window),
        "inputs_per_s": per_second(inputs, window),
        "prompt_tokens_per_s": per_second(prompt, window),
    }
    return body


def reasoning_body(group: GroupMetrics) -> dict[str, Any]:
    """The reasoning figures of a group whose model thought (docs/metrics.md, "Reasoning models")."""
    counters = group.counters
    estimated = counters["reasoning_estimated_requests"]
    out: dict[str, Any] = {
        "requests": counters["reasoning_requests"],
        "tokens": {
            "reasoning": counters["reasoning_tokens"],
            "answer": counters["answer_tokens"],
            "source": "estimated" if estimated else "usage",
            "estimated_requests": estimated,
        },
    }
    for name in ("ttfa_s", "reasoning_s", "answer_stream_rate_tps"):
        dist = group.dists.get(name)
        if dist is not None:
            out[name] = dist.summary()
    return out


def store_bodies(store: MetricsStore, *, max_groups: int | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Return every group's body (sorted by group key, at most ``max_groups``), labelled with its key."""
    groups = sorted(store.groups.values(), key=lambda g: g.key)
    if max_groups is not None:
        groups = groups[:max_groups]
    slo = Slo.of(store)
    return [
        {"backend": g.backend, "model": g.model, "user_class": g.user_class, **group_body(g, slo=slo, **kwargs)}
        for g in groups
    ]


def main_kind(store: MetricsStore) -> str:
    """The kind of a run's ``total``: streamed requests when there are any, else the run's first pooling kind."""
    kinds = store.kinds()
    return kinds[0] if kinds else STREAM


def kind_totals(store: MetricsStore) -> dict[str, dict[str, Any]]:
    """The total of each kind of request of a store (a run that mixes kinds shows one per kind)."""
    slo = Slo.of(store)
    return {kind: group_body(store.total(kind=kind), slo=slo) for kind in store.kinds()}
