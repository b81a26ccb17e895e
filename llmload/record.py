"""One LLM request as measured on the client, and every per-request metric.

Each formula is written once, here, as a property with its unit in the name.
Definitions (docs/metrics.md, field notes section 1):

- ``t_send``: perf-counter time the request's last byte was handed to the kernel
  (connection set-up before it is ``connect_s``);
- TTFT: first token-carrying event minus ``t_send``;
- ITL: every gap between consecutive token-carrying events;
- E2E: last token-carrying event minus ``t_send`` (the ``[DONE]`` line does not count);
- TPOT: ``(E2E - TTFT) / (n_out - 1)`` when ``n_out >= 2``;
- stream rate: ``n_out / E2E``; decode rate: ``(n_out - 1) / (E2E - TTFT)``;
- ``n_out``: server-reported ``usage.completion_tokens`` when present, else the
  number of token-carrying events (then ``output_estimated`` is true).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestRecord:
    """What one streamed request produced; filled by the client, read by the metrics store."""

    backend: str
    model: str
    user_class: str
    endpoint: str
    t_send: float
    start_wall: float
    t_intended: float | None = None
    token_times: list[float] = field(default_factory=list)
    t_end: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    continuous_completion_tokens: int | None = None
    finish_reason: str | None = None
    saw_done: bool = False
    status: int = 0
    error_kind: str | None = None
    error_detail: str = ""
    text: str | None = None
    connect_s: float | None = None
    """Connection set-up (TCP, and TLS for https) before this request, when it opened a connection."""
    clock: str = "user"
    """Where event times come from: "kernel" (receive stamps) or "user" (when the read returned)."""
    read_lateness_s: list[float] = field(default_factory=list)
    """Per kernel-stamped read: when it returned minus when its data arrived (the generator's delay)."""
    tokens_reported: int = 0
    """Output tokens already counted while streaming (``llmload.streamed``)."""

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def output_estimated(self) -> bool:
        return self.completion_tokens is None

    @property
    def output_tokens(self) -> int:
        if self.completion_tokens is not None:
            return self.completion_tokens
        return len(self.token_times)

    @property
    def ttft_s(self) -> float | None:
        if not self.token_times:
            return None
        return self.token_times[0] - self.t_send

    @property
    def e2e_s(self) -> float | None:
        if not self.token_times:
            return None
        return self.token_times[-1] - self.t_send

    @property
    def itl_s(self) -> list[float]:
        times = self.token_times
        return [times[i] - times[i - 1] for i in range(1, len(times))]

    @property
    def tpot_s(self) -> float | None:
        n_out = self.output_tokens
        if n_out < 2 or not self.token_times:
            return None
        return (self.token_times[-1] - self.token_times[0]) / (n_out - 1)

    @property
    def stream_rate_tps(self) -> float | None:
        e2e = self.e2e_s
        if not e2e or e2e <= 0:
            return None
        return self.output_tokens / e2e

    @property
    def decode_rate_tps(self) -> float | None:
        n_out = self.output_tokens
        if n_out < 2 or not self.token_times:
            return None
        decode_s = self.token_times[-1] - self.token_times[0]
        if decode_s <= 0:
            return None
        return (n_out - 1) / decode_s

    @property
    def dispatch_lag_s(self) -> float | None:
        if self.t_intended is None:
            return None
        return self.t_send - self.t_intended

    def meets_slo(self, *, ttft_s: float | None, stream_rate_tps: float | None) -> bool:
        """Whether this request succeeded and met every configured SLO."""
        if not self.ok or not self.token_times:
            return False
        if ttft_s is not None and self.token_times[0] - self.t_send > ttft_s:
            return False
        if stream_rate_tps is not None:
            rate = self.stream_rate_tps
            if rate is None or rate < stream_rate_tps:
                return False
        return True
