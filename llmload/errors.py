"""Exceptions raised by llmload.

    LLMLoadError
    ├── ConfigError (ValueError)       bad option, config or data file
    ├── TargetError (RuntimeError)     a local target (simulator, vLLM) could not start
    └── LLMRequestError                one failed LLM request; ``kind`` is its error class
        (http_429, http_4xx, http_5xx, connect, timeout, disconnect,
         malformed_event, incomplete_stream, malformed_answer)

Request errors are reported to Locust through the request event's
``exception=`` so they show in its failure table; their message is stable
(no request ids) so Locust groups them.
"""

from __future__ import annotations

ERROR_KINDS = (
    "http_429",
    "http_4xx",
    "http_5xx",
    "connect",
    "timeout",
    "disconnect",
    "malformed_event",
    "incomplete_stream",
    "malformed_answer",
)
STREAM_ERROR_KINDS = tuple(kind for kind in ERROR_KINDS if kind != "malformed_answer")
"""What can go wrong with a streamed request."""
POOLING_ERROR_KINDS = tuple(kind for kind in ERROR_KINDS if kind not in ("malformed_event", "incomplete_stream"))
"""What can go wrong with an embeddings, score or rerank request (one JSON answer, no events)."""


class LLMLoadError(Exception):
    """Base class of every llmload error."""


class ConfigError(LLMLoadError, ValueError):
    """A bad option, configuration or data file."""


class TargetError(LLMLoadError, RuntimeError):
    """A local target server could not be installed or started."""


class LLMRequestError(LLMLoadError):
    """One failed LLM request, classified by ``kind``."""

    def __init__(self, kind: str, detail: str = "", *, status: int = 0) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}; expected one of {', '.join(ERROR_KINDS)}")
        self.kind = kind
        self.detail = detail
        self.status = status
        super().__init__(f"{kind}: {detail}" if detail else kind)
