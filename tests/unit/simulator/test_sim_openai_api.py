"""Request validation and the exact SSE chunk layouts (vLLM's)."""

from __future__ import annotations

import json

import orjson
import pytest

from llmload.simulator.openai_api import ApiError, GenRequest, StreamFormat, full_response, parse_request
from llmload.simulator.tokens import Vocabulary

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def parse(body: dict | bytes, *, chat: bool = True, reject: bool = False, max_len: int = 4096) -> GenRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(
        chat=chat,
        body=raw,
        served_model=MODEL,
        max_model_len=max_len,
        default_max_tokens=256,
        reject_stream_options=reject,
    )


def events(data: bytes) -> list[bytes]:
    assert data.endswith(b"\n\n")
    out = data.split(b"\n\n")[:-1]
    assert all(e.startswith(b"data: ") for e in out)
    return [e[6:] for e in out]


def gen(*, chat: bool = True, usage: bool = False, continuous: bool = False) -> GenRequest:
    return GenRequest(
        chat=chat,
        stream=True,
        prompt_tokens=12,
        max_tokens=3,
        ignore_eos=False,
        include_usage=usage,
        continuous_usage=continuous,
    )


def fmt(req: GenRequest) -> StreamFormat:
    return StreamFormat(
        req=req, rid="chatcmpl-abc", created=1700000000, model=MODEL, vocab=Vocabulary(seed=1), offset=0
    )


def test_chat_stream_layout_is_vllms():
    f = fmt(gen(usage=True))
    head = f.head()
    assert head == (
        b'data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"'
        + MODEL.encode()
        + b'","choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        b'"logprobs":null,"finish_reason":null}]}\n\n'
    )
    body = [orjson.loads(e) for e in events(f.tokens(0, 2, None) + f.tokens(2, 1, "length") + f.tail(3))[:-1]]
    assert [list(c) for c in body] == [["id", "object", "created", "model", "choices"]] * 3 + [
        ["id", "object", "created", "model", "choices", "usage"]
    ]
    words = Vocabulary(seed=1).text(0, 3).split(" ")
    assert [c["choices"][0]["delta"] for c in body[:3]] == [
        {"content": words[0]},
        {"content": " " + words[1]},
        {"content": " " + words[2]},
    ]
    assert body[1]["choices"][0] == {
        "index": 0,
        "delta": {"content": " " + words[1]},
        "logprobs": None,
        "finish_reason": None,
    }
    assert body[2]["choices"][0]["finish_reason"] == "length" and body[2]["choices"][0]["stop_reason"] is None
    assert body[3]["choices"] == [] and body[3]["usage"] == {
        "prompt_tokens": 12,
        "total_tokens": 15,
        "completion_tokens": 3,
    }
    assert f.tail(3).endswith(b"\n\ndata: [DONE]\n\n")


def test_continuous_usage_counts_every_chunk():
    f = fmt(gen(usage=True, continuous=True))
    chunks = [orjson.loads(e) for e in events(f.head() + f.tokens(0, 2, None) + f.tokens(2, 1, "stop"))]
    assert [c["usage"]["completion_tokens"] for c in chunks] == [0, 1, 2, 3]
    assert all(c["usage"]["total_tokens"] == 12 + c["usage"]["completion_tokens"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_completions_stream_layout():
    f = fmt(gen(chat=False))
    assert f.head() == b""
    chunks = [orjson.loads(e) for e in events(f.tokens(0, 2, "length") + f.tail(2))[:-1]]
    assert chunks[0]["object"] == "text_completion"
    assert chunks[0]["choices"][0] == {
        "index": 0,
        "text": Vocabulary(seed=1).text(0, 1),
        "logprobs": None,
        "finish_reason": None,
        "stop_reason": None,
    }
    assert chunks[0]["usage"] is None and chunks[1]["choices"][0]["finish_reason"] == "length"
    assert events(f.tail(2)) == [b"[DONE]"]


def test_full_responses():
    chat = orjson.loads(
        full_response(
            req=gen(), rid="chatcmpl-x", created=1, model=MODEL, text="a b", completion_tokens=2, finish_reason="stop"
        )
    )
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "a b", "tool_calls": []}
    assert chat["usage"]["completion_tokens"] == 2 and chat["usage"]["total_tokens"] == 14
    text = orjson.loads(
        full_response(
            req=gen(chat=False),
            rid="cmpl-x",
            created=1,
            model=MODEL,
            text="a",
            completion_tokens=1,
            finish_reason="length",
        )
    )
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == "a"


def test_parse_defaults_and_options():
    r = parse(
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
    )
    assert (r.prompt_tokens, r.max_tokens, r.include_usage, r.continuous_usage) == (32, 256, True, True)
    r = parse({"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 7, "ignore_eos": True})
    assert (r.max_tokens, r.ignore_eos, r.stream) == (7, True, False)
    r = parse({"prompt": "x", "stream": True, "stream_options": {"continuous_usage_stats": True}}, chat=False)
    assert not r.continuous_usage  # vLLM only honours it together with include_usage
    assert parse({"prompt": "x"}, chat=False, max_len=100).max_tokens == 98


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "Invalid JSON"),
        (b"[]", 400, "JSON object"),
        ({"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404, "The model `other` does not exist."),
        ({"model": MODEL}, 400, "'messages'"),
        (
            {"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}},
            400,
            "Stream options can only be defined when `stream=True`.",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 5000}, 400, "maximum context length is 4096"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n=1"),
    ],
)
def test_parse_errors(body, status, fragment):
    with pytest.raises(ApiError) as info:
        parse(body)
    assert info.value.status == status and fragment in info.value.message
    err = orjson.loads(info.value.body())["error"]
    assert list(err) == ["message", "type", "param", "code"] and err["code"] == status


def test_reject_stream_options_answers_like_servers_that_do_not_know_it():
    with pytest.raises(ApiError) as info:
        parse({"messages": [{"role": "user", "content": "x"}], "stream": True, "stream_options": None}, reject=True)
    assert info.value.status == 400
    assert orjson.loads(info.value.body()) == {
        "error": {
            "message": "Unrecognized request argument supplied: stream_options",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
