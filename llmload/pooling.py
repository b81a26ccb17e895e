"""Requests without a token stream: embeddings, score and rerank (vLLM's pooling endpoints).

A pooling request sends several inputs at once (texts to embed, or documents to score against a
query) and gets one JSON answer: there is no first token, no inter-token gap and no output
token. Its figures are its latency (request sent to the last byte of the answer), its inputs
and its prompt tokens (``usage.prompt_tokens``); docs/metrics.md, "Embeddings, score and
rerank". This module builds the request bodies and checks the answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from llmload.errors import ConfigError

if TYPE_CHECKING:
    from llmload.datasets import LengthDistribution

STREAM = "stream"
"""The kind of every streamed chat or completion request."""

EMBEDDINGS, SCORE, RERANK = "embeddings", "score", "rerank"
POOLING_KINDS = (EMBEDDINGS, SCORE, RERANK)
KINDS = (STREAM, *POOLING_KINDS)

PATHS = {EMBEDDINGS: "/v1/embeddings", SCORE: "/score", RERANK: "/rerank"}
"""vLLM's paths (``/v1/score`` and ``/v1/rerank`` are aliases there)."""


def batch_distribution(spec: str, *, option: str = "llm-batch-size") -> LengthDistribution:
    """Parse inputs per request (``N``, ``A-B`` or a distribution); every draw must be at least 1."""
    from llmload.datasets import parse_distribution

    dist = parse_distribution(spec, option=option)
    smallest = dist.a if dist.kind in ("fixed", "uniform") else dist.low
    if smallest < 1:
        raise ConfigError(f"--{option}: a request needs at least 1 input; got {spec!r}")
    return dist


class AnswerError(ValueError):
    """A pooling answer that is not what its request asked for (one line)."""


def request_body(kind: str, *, model: str, texts: list[str], query: str = "", top_n: int = 0) -> dict[str, Any]:
    """The JSON body of one request: ``texts`` are the inputs to embed, or the documents to score or rank."""
    if kind == EMBEDDINGS:
        return {"model": model, "input": texts, "encoding_format": "float"}
    if kind == SCORE:
        return {"model": model, "queries": query, "documents": texts}
    if kind == RERANK:
        body: dict[str, Any] = {"model": model, "query": query, "documents": texts}
        if top_n:
            body["top_n"] = top_n
        return body
    raise ValueError(f"not a pooling kind: {kind!r}")


def read_answer(kind: str, body: bytes, *, inputs: int, top_n: int = 0) -> int:
    """Check a 200 answer of ``kind`` to a request of ``inputs`` inputs; return its ``usage.prompt_tokens``.

    Raises ``AnswerError`` when the body is not JSON, lacks the results or the usage, or holds
    another number of results than asked for (an embedding per input, a score per pair, the
    ``top_n`` best documents or all of them).
    """
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AnswerError(f"answer is not JSON: {body[:60]!r}") from None
    if not isinstance(answer, dict):
        raise AnswerError("answer is not a JSON object")
    field = "results" if kind == RERANK else "data"
    results = answer.get(field)
    if not isinstance(results, list):
        raise AnswerError(f"answer has no {field!r} list")
    expected = min(top_n, inputs) if kind == RERANK and top_n else inputs
    if len(results) != expected:
        raise AnswerError(f"answer has {len(results)} {field}, expected {expected}")
    if kind == EMBEDDINGS and not all(isinstance(item, dict) and item.get("embedding") for item in results):
        raise AnswerError("an embedding is missing or empty")
    usage = answer.get("usage")
    prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if not isinstance(prompt_tokens, int) or prompt_tokens < 0:
        raise AnswerError("answer has no usage.prompt_tokens")
    return prompt_tokens
