"""Builders for OpenAI-style streamed chunks, byte-exact as servers send them."""

from __future__ import annotations

import orjson


def chat_chunk(content=None, *, role=None, finish=None, usage=None, choices=True, extra_delta=None) -> bytes:
    delta = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if extra_delta:
        delta.update(extra_delta)
    obj = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m"}
    obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []
    if usage is not None:
        obj["usage"] = usage
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def completion_chunk(text, *, finish=None, usage=None) -> bytes:
    obj = {
        "id": "cmpl-1",
        "object": "text_completion",
        "choices": [{"index": 0, "text": text, "finish_reason": finish}],
    }
    if usage is not None:
        obj["usage"] = usage
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def usage_chunk(prompt: int, completion: int) -> bytes:
    return chat_chunk(
        choices=False,
        usage={"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    )


DONE = b"data: [DONE]\n\n"
