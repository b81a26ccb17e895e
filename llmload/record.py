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

Reasoning models (their thinking arrives as ``reasoning`` or ``reasoning_content``
deltas, the answer as ``content`` or ``tool_calls``):

- TTFA (time to first answer token): first answer-carrying event minus ``t_send``;
- reasoning time: first answer-carrying event minus the first token-carrying event;
- reasoning tokens: ``usage.completion_tokens_details.reasoning_tokens`` when the
  server reports it; else the continuous-usage deltas of the reasoning events
  (exact); else one per reasoning event (estimated); an event carrying both
  texts is split by their lengths (estimated);
- answer tokens: ``n_out`` minus reasoning tokens;
- answer stream rate: answer tokens / E2E.

Embeddings, score and rerank requests (``kind`` other than ``stream``; ``llmload.pooling``)
have no token events: their latency is the answer's last byte minus ``t_send``, their inputs
the texts embedded or the documents scored, their prompt tokens ``usage.prompt_tokens``.
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
    answer_at: int | None = None
    """Index in ``token_times`` of the first answer-carrying event (content or a tool call)."""
    reasoning_events: int = 0
    """Token-carrying events with reasoning text."""
    reasoning_seen: float = 0.0
    """Reasoning tokens attributed while streaming (usage deltas of reasoning events, else one per event)."""
    reasoning_exact: bool = True
    """False once an attribution was estimated (an event without usage, or one with both texts)."""
    reasoning_tokens_reported: int | None = None
    """``usage.completion_tokens_details.reasoning_tokens``, when the server sends it."""
    images: int = 0
    """Images the request carried (vision chat)."""
    image_pixels: int = 0
    """Their pixels, summed."""
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    """Tool calls of the answer (kept with the text): ``{"id", "name", "arguments"}`` each, pieces joined."""
    answer_valid: bool | None = None
    """With tools or a schema asked for: whether a complete tool call or valid answer came (``llmload.structured``)."""
    output_tokenized: bool = False
    """``completion_tokens`` was counted with ``--llm-tokenizer`` from the answer's text (no usage came)."""
    kind: str = "stream"
    """``stream`` (chat, completions) or a pooling kind: ``embeddings``, ``score``, ``rerank``."""
    inputs: int = 0
    """Pooling requests: the texts embedded, or the documents scored or ranked."""

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
    def latency_s(self) -> float | None:
        """Pooling requests: from the request sent to the last byte of its answer."""
        if self.t_end is None:
            return None
        return self.t_end - self.t_send

    @property
    def dispatch_lag_s(self) -> float | None:
        if self.t_intended is None:
            return None
        return self.t_send - self.t_intended

    @property
    def thinks(self) -> bool:
        """Whether the model reasoned before (or while) answering."""
        return self.reasoning_events > 0 or bool(self.reasoning_tokens_reported)

    @property
    def ttfa_s(self) -> float | None:
        """Time to the first answer token: the wait a reader sees."""
        if self.answer_at is None:
            return None
        return self.token_times[self.answer_at] - self.t_send

    @property
    def reasoning_s(self) -> float | None:
        """From the first token to the first answer token (to the last token when no answer came)."""
        times = self.token_times
        if not times or not self.thinks:
            return None
        end = times[self.answer_at] if self.answer_at is not None else times[-1]
        return end - times[0]

    @property
    def reasoning_estimated(self) -> bool:
        return self.reasoning_tokens_reported is None and not self.reasoning_exact

    @property
    def reasoning_tokens(self) -> int:
        if self.reasoning_tokens_reported is not None:
            return min(self.reasoning_tokens_reported, self.output_tokens)
        return min(round(self.reasoning_seen), self.output_tokens)

    @property
    def answer_tokens(self) -> int:
        return self.output_tokens - self.reasoning_tokens

    @property
    def answer_stream_rate_tps(self) -> float | None:
        """Answer tokens over E2E: what a reader of the answer received per second of waiting."""
        e2e = self.e2e_s
        if self.answer_at is None or not e2e or e2e <= 0:
            return None
        return self.answer_tokens / e2e

    def first_token_s(self, of: str = "any") -> float | None:
        """TTFT (``of="any"``) or TTFA (``of="answer"``): the first token an SLO on it targets."""
        return self.ttfa_s if of == "answer" else self.ttft_s

    def meets_slo(self, *, ttft_s: float | None, stream_rate_tps: float | None, ttft_of: str = "any") -> bool:
        """Whether this request succeeded with a valid answer and met every configured SLO (TTFT on ``ttft_of``)."""
        if not self.ok or not self.token_times or self.answer_valid is False:
            return False
        if ttft_s is not None:
            first = self.first_token_s(ttft_of)
            if first is None or first > ttft_s:
                return False
        if stream_rate_tps is not None:
            rate = self.stream_rate_tps
            if rate is None or rate < stream_rate_tps:
                return False
        return True
