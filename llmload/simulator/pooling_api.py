"""vLLM's pooling endpoints in the simulator: ``/v1/embeddings``, ``/score`` and ``/rerank``.

A pooling request is a prefill without decode: the engine processes its tokens (every input,
or every query-document pair) like a prompt and the answer leaves when that prefill ends
(docs/simulator.md, "Embeddings, score and rerank"). Token counts follow the completions
rule: each input is its text's tokens plus the begin-of-text token; a pair is the query's and
the document's tokens plus that token. Embeddings, scores and relevance are deterministic
functions of the texts, so two runs answer alike.
"""

from __future__ import annotations

import math
import random
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from llmload.simulator.openai_api import ApiError
from llmload.simulator.tokens import COMPLETION_OVERHEAD, count_text_tokens

EMBEDDINGS, SCORE, RERANK = "embeddings", "score", "rerank"
ROUTES = {
    "/v1/embeddings": EMBEDDINGS,
    "/score": SCORE,
    "/v1/score": SCORE,
    "/rerank": RERANK,
    "/v1/rerank": RERANK,
    "/v2/rerank": RERANK,
}
EMBEDDING_DIM = 64


@dataclass(frozen=True)
class PoolRequest:
    """A validated embeddings, score or rerank request."""

    kind: str
    model: str
    query: str
    texts: list[str]
    """Inputs to embed, or documents to score or rank."""
    tokens: list[int]
    """Prompt tokens of each input (or of each query-document pair)."""
    top_n: int = 0

    @property
    def prompt_tokens(self) -> int:
        return sum(self.tokens)


def _texts(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ApiError(400, f"'{field}' must be a non-empty string or list of strings", param=field)
    return value


def parse_pool_request(kind: str, body: bytes, *, served_model: str, max_model_len: int) -> PoolRequest:
    """Validate a pooling body; raise ApiError with vLLM's status and message."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object")
    model = data.get("model")
    if model is not None and model != served_model:
        raise ApiError(404, f"The model `{model}` does not exist.", err_type="NotFoundError", param="model")
    top_n = 0
    if kind == EMBEDDINGS:
        query, texts = "", _texts(data.get("input"), "input")
        tokens = [COMPLETION_OVERHEAD + count_text_tokens(text) for text in texts]
    else:
        query_field, docs_field = ("query", "documents") if kind == RERANK else ("queries", "documents")
        if kind == SCORE and "text_1" in data:
            query_field, docs_field = "text_1", "text_2"
        queries = _texts(data.get(query_field), query_field)
        if len(queries) != 1:
            raise ApiError(400, "llmload sim scores one query per request", param=query_field)
        query, texts = queries[0], _texts(data.get(docs_field), docs_field)
        query_tokens = count_text_tokens(query)
        tokens = [COMPLETION_OVERHEAD + query_tokens + count_text_tokens(text) for text in texts]
        top_n = data.get("top_n") or 0
        if not isinstance(top_n, int) or top_n < 0:
            raise ApiError(400, "top_n must be an integer >= 0", param="top_n")
    longest = max(tokens)
    if longest > max_model_len:
        raise ApiError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{longest} tokens in the input for {kind}. Please reduce the length of the input.",
        )
    return PoolRequest(
        kind=kind,
        model=model if isinstance(model, str) else served_model,
        query=query,
        texts=texts,
        tokens=tokens,
        top_n=top_n,
    )


def _unit(text: str) -> float:
    """A deterministic number in [0, 1) for ``text``."""
    return zlib.crc32(text.encode()) / 2**32


def _embedding(text: str) -> list[float]:
    rng = random.Random(zlib.crc32(text.encode()))
    vector = [rng.gauss(0.0, 1.0) for _ in range(EMBEDDING_DIM)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def pool_response(req: PoolRequest) -> bytes:
    """The answer vLLM sends for ``req``, with its usage."""
    prompt = req.prompt_tokens
    created = int(time.time())
    if req.kind == RERANK:
        scored = sorted(
            ((_unit(req.query + "\n" + text), i, text) for i, text in enumerate(req.texts)), key=lambda s: -s[0]
        )
        if req.top_n:
            scored = scored[: req.top_n]
        return orjson.dumps(
            {
                "id": f"rerank-{uuid.uuid4().hex}",
                "model": req.model,
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
                "results": [
                    {"index": i, "document": {"text": text}, "relevance_score": score} for score, i, text in scored
                ],
            }
        )
    usage = {"prompt_tokens": prompt, "total_tokens": prompt, "completion_tokens": 0, "prompt_tokens_details": None}
    if req.kind == SCORE:
        data: list[dict[str, Any]] = [
            {"index": i, "object": "score", "score": _unit(req.query + "\n" + text)} for i, text in enumerate(req.texts)
        ]
    else:
        data = [{"index": i, "object": "embedding", "embedding": _embedding(text)} for i, text in enumerate(req.texts)]
    return orjson.dumps(
        {
            "id": f"embd-{uuid.uuid4().hex}",
            "object": "list",
            "created": created,
            "model": req.model,
            "data": data,
            "usage": usage,
        }
    )
