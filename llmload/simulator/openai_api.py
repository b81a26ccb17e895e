"""OpenAI request validation and vLLM's exact response and SSE chunk layouts.

Streaming chunks are built from byte templates pre-encoded once per request,
so a token costs a few byte concatenations: ``prefix + word_json + suffix``.
Field order and null fields follow vLLM's pydantic serialisation (chat chunks
``exclude_unset``, completions chunks ``exclude_unset=False``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmload.simulator.structured_answer import FixedAnswer, structured_request
from llmload.simulator.tokens import (
    WORD_TOKENIZER,
    ApiInputError,
    PromptTokenizer,
    Vocabulary,
    chat_token_sequence,
    count_chat_tokens,
    count_images,
    count_prompt_tokens,
    prompt_token_sequence,
)

DONE_EVENT = b"data: [DONE]\n\n"
MALFORMED_EVENT = b"data: {not json\n\n"


class ApiError(Exception):
    """An error answer: HTTP status and vLLM's ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        err_type: str = "BadRequestError",
        param: str | None = None,
        code: int | str | None = -1,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type
        self.param = param
        self.code = status if code == -1 else code
        self.headers = headers

    def body(self) -> bytes:
        """Return the JSON error body."""
        error = {"message": self.message, "type": self.err_type, "param": self.param, "code": self.code}
        return orjson.dumps({"error": error})


@dataclass(frozen=True)
class GenRequest:
    """A validated generation request."""

    chat: bool
    stream: bool
    prompt_tokens: int
    max_tokens: int
    ignore_eos: bool
    include_usage: bool
    continuous_usage: bool
    model: str = ""
    """The model asked for: the served model, or one of its LoRA adapters (echoed in the answer)."""
    images: int = 0
    """Image content parts of a chat request (each charged the vision encoder's time)."""
    structured: tuple[list[str], str | None] | None = None
    """Tools or a JSON schema asked for: the answer's pieces and the tool it calls (None: JSON content)."""
    prompt_ids: list[Any] | None = field(default=None, compare=False, repr=False)
    """The prompt's token sequence (asked for with ``sequence`` or a tokenizer; else None)."""


def parse_request(
    *,
    chat: bool,
    body: bytes,
    served_model: str,
    max_model_len: int,
    default_max_tokens: int,
    reject_stream_options: bool,
    adapters: frozenset[str] = frozenset(),
    tokenizer: PromptTokenizer | None = None,
    sequence: bool = False,
) -> GenRequest:
    """Validate a chat or completions body; raise ApiError with vLLM's status and message.

    With ``sequence`` (or a ``tokenizer``) the prompt's token sequence is kept in
    ``prompt_ids`` and its length is the prompt's token count.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object")
    if reject_stream_options and "stream_options" in data:
        raise ApiError(
            400, "Unrecognized request argument supplied: stream_options", err_type="invalid_request_error", code=None
        )
    model = data.get("model")
    if model is not None and model != served_model and model not in adapters:
        raise ApiError(404, f"The model `{model}` does not exist.", err_type="NotFoundError", param="model")
    prompt_ids: list[Any] | None = None
    try:
        if sequence or tokenizer is not None:
            tok = tokenizer or WORD_TOKENIZER
            prompt_ids = (
                chat_token_sequence(data.get("messages"), tok)
                if chat
                else prompt_token_sequence(data.get("prompt"), tok)
            )
            prompt_tokens = len(prompt_ids)
        else:
            prompt_tokens = count_chat_tokens(data.get("messages")) if chat else count_prompt_tokens(data.get("prompt"))
    except ApiInputError as exc:
        raise ApiError(400, str(exc)) from None
    stream = data.get("stream") is True
    options = data.get("stream_options")
    if options is not None and not stream:
        raise ApiError(400, "Stream options can only be defined when `stream=True`.")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object")
    include_usage = bool(options and options.get("include_usage"))
    continuous = include_usage and bool(options and options.get("continuous_usage_stats"))
    n = data.get("n")
    if n not in (None, 1):
        raise ApiError(400, "llmload sim supports n=1 only")
    max_tokens = (data.get("max_completion_tokens") if chat else None) or data.get("max_tokens")
    if max_tokens is None:
        max_tokens = max(1, min(default_max_tokens, max_model_len - prompt_tokens))
    elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ApiError(400, f"max_tokens must be at least 1, got {max_tokens}.", param="max_tokens")
    if prompt_tokens + max_tokens > max_model_len:
        where = "messages" if chat else "prompt"
        raise ApiError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, {max_tokens} in the "
            f"completion). Please reduce the length of the {where} or completion.",
        )
    return GenRequest(
        chat=chat,
        stream=stream,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        ignore_eos=data.get("ignore_eos") is True,
        include_usage=include_usage,
        continuous_usage=continuous,
        model=model if isinstance(model, str) else served_model,
        structured=structured_request(data) if chat else None,
        images=count_images(data.get("messages")) if chat else 0,
        prompt_ids=prompt_ids,
    )


def _usage(prompt: int, completion: int, *, details: bool = False) -> bytes:
    tail = b',"prompt_tokens_details":null}' if details else b"}"
    return (
        b'{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d' % (prompt, prompt + completion, completion)
        + tail
    )


class StreamFormat:
    """Byte templates of one streamed answer."""

    __slots__ = (
        "chat",
        "head_prefix",
        "prefix",
        "mid",
        "close",
        "final",
        "prompt_tokens",
        "continuous",
        "include_usage",
        "vocab",
        "offset",
        "thinking",
        "thinking_prefix",
        "first_prefix",
    )

    def __init__(
        self,
        *,
        req: GenRequest,
        rid: str,
        created: int,
        model: str,
        vocab: Vocabulary | FixedAnswer,
        offset: int,
        thinking: int = 0,
        thinking_field: str = "reasoning",
        tool: str | None = None,
    ) -> None:
        self.chat = req.chat
        self.prompt_tokens = req.prompt_tokens
        self.continuous = req.continuous_usage
        self.include_usage = req.include_usage
        self.vocab = vocab
        self.offset = offset
        obj = b"chat.completion.chunk" if req.chat else b"text_completion"
        self.head_prefix = b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":' % (
            rid.encode(),
            obj,
            created,
            orjson.dumps(model),
        )
        self.thinking = thinking
        """Tokens ``0 .. thinking-1`` are reasoning: streamed in ``thinking_field`` instead of ``content``."""
        self.thinking_prefix = self.head_prefix + b'[{"index":0,"delta":{"%s":' % thinking_field.encode()
        if req.chat:
            self.prefix = self.head_prefix + b'[{"index":0,"delta":{"content":'
            self.mid = b'},"logprobs":null,"finish_reason":null}]'
            self.final = b'},"logprobs":null,"finish_reason":"%s","stop_reason":null}]'
        else:
            self.prefix = self.head_prefix + b'[{"index":0,"text":'
            self.mid = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]'
            self.final = b',"logprobs":null,"finish_reason":"%s","stop_reason":null}]'
        self.close = self.mid + (b"}\n\n" if req.chat else b',"usage":null}\n\n')
        self.first_prefix: bytes | None = None
        """A tool call's first token opens the call (id, type, name); the others carry argument pieces."""
        if tool is not None:
            call = b'[{"index":0,"delta":{"tool_calls":[{"index":0,'
            self.first_prefix = (
                self.head_prefix
                + call
                + b'"id":"call_%s","type":"function","function":{"name":%s,"arguments":'
                % (rid.rpartition("-")[2][:24].encode(), orjson.dumps(tool))
            )
            self.prefix = self.head_prefix + call + b'"function":{"arguments":'

    def head(self) -> bytes:
        """Return the role chunk that opens a chat stream (empty for completions)."""
        if not self.chat:
            return b""
        usage = b',"usage":' + _usage(self.prompt_tokens, 0) if self.continuous else b""
        return (
            self.head_prefix + b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
            b'"finish_reason":null}]' + usage + b"}\n\n"
        )

    def token(self, k: int) -> bytes:
        """Return the event of token ``k`` when it is neither the last nor carries usage (the hot path)."""
        prefix = self.thinking_prefix if k < self.thinking else self.prefix
        if k == 0 and self.first_prefix is not None:
            prefix = self.first_prefix
        return prefix + self.vocab.word_json(self.offset, k) + self.close

    def tokens(self, first: int, count: int, finish_reason: str | None) -> bytes:
        """Return events for tokens ``first .. first+count-1``; the last carries ``finish_reason`` if given."""
        frags = self.vocab.fragments(self.offset, first, count)
        prefix, mid = self.prefix, self.mid
        thought = max(0, min(count, self.thinking - first))  # how many of these tokens are thinking (they lead)
        prefixes = [self.thinking_prefix] * thought + [prefix] * (count - thought) if thought else None
        if first == 0 and self.first_prefix is not None:
            prefixes = [self.first_prefix] + [prefix] * (count - 1)
        if self.continuous:
            p, details = self.prompt_tokens, not self.chat
            parts = [
                (prefixes[i] if prefixes else prefix)
                + f
                + mid
                + b',"usage":'
                + _usage(p, first + i + 1, details=details)
                + b"}\n\n"
                for i, f in enumerate(frags)
            ]
        else:
            close = self.close
            if prefixes:
                parts = [pre + f + close for pre, f in zip(prefixes, frags, strict=True)]
            else:
                parts = [prefix + f + close for f in frags]
        if prefixes:
            prefix = prefixes[-1]
        if finish_reason is not None:
            last = self.final % finish_reason.encode()
            if self.continuous:
                last += b',"usage":' + _usage(self.prompt_tokens, first + count, details=not self.chat)
            elif not self.chat:
                last += b',"usage":null'
            parts[-1] = prefix + frags[-1] + last + b"}\n\n"
        return b"".join(parts)

    def tail(self, completion_tokens: int) -> bytes:
        """Return the usage-only chunk (when asked for) and ``[DONE]``."""
        if not self.include_usage:
            return DONE_EVENT
        usage = _usage(self.prompt_tokens, completion_tokens)
        return self.head_prefix + b'[],"usage":' + usage + b"}\n\n" + DONE_EVENT


def full_response(
    *, req: GenRequest, rid: str, created: int, model: str, text: str, completion_tokens: int, finish_reason: str
) -> bytes:
    """Return the non-streaming chat or completions response body."""
    usage = {
        "prompt_tokens": req.prompt_tokens,
        "total_tokens": req.prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }
    if req.chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "tool_calls": []},
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
        }
        return orjson.dumps(
            {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
                "prompt_logprobs": None,
            }
        )
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": None,
        "prompt_logprobs": None,
    }
    return orjson.dumps(
        {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    )


def models_response(
    *, model: str, max_model_len: int, created: int | None = None, adapters: tuple[str, ...] = ()
) -> bytes:
    """Return the ``/v1/models`` body listing the served model and its LoRA adapters (vLLM's cards)."""
    created = int(time.time()) if created is None else created
    permission = {
        "id": f"modelperm-{created:x}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    card = {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": model,
        "parent": None,
        "max_model_len": max_model_len,
        "permission": [permission],
    }
    cards = [card] + [{**card, "id": name, "root": name, "parent": model} for name in adapters]
    return orjson.dumps({"object": "list", "data": cards})
