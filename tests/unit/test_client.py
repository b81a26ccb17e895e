"""The streaming client against a scripted socket server: timing, parsing, error classes.

The server runs in the test process and sends exact bytes with exact delays;
timing assertions allow 15 ms because client and server share one gevent hub.
"""

import pytest
from locust.contrib.fasthttp import FastHttpSession
from locust.event import EventHook

from llmload.client import HostCapabilities, LLMClient
from tests.support.chunks import DONE, chat_chunk, completion_chunk, usage_chunk
from tests.support.scripted_server import CLOSE, ScriptedServer, plain_response, sse_response

MESSAGES = [{"role": "user", "content": "hi"}]


class Harness:
    def __init__(self, script_for, *, timeout=5.0, api_key=""):
        self.server = ScriptedServer(script_for)
        self.events = []
        self.hook = EventHook()
        self.hook.add_listener(lambda **kw: self.events.append(kw))
        self.recorded = []
        self.caps = HostCapabilities()
        self.timeout = timeout
        self.api_key = api_key

    def __enter__(self):
        self.server.__enter__()
        session = FastHttpSession(
            self.server.base_url,
            request_event=self.hook,
            user=None,
            network_timeout=self.timeout,
            connection_timeout=self.timeout,
        )
        self.session = session
        self.client = LLMClient(
            session,
            request_event=self.hook,
            backend="be",
            user_class="U",
            capabilities=self.caps,
            api_key=self.api_key,
            recorder=self.recorded.append,
        )
        return self

    def __exit__(self, *exc):
        self.session.client.clientpool.close()
        self.server.__exit__(*exc)


def always(script):
    return lambda i, request: script


def test_role_chunk_is_not_a_token_and_timings_follow_the_server():
    script = sse_response(
        [
            chat_chunk("", role="assistant"),
            0.08,
            chat_chunk("Hel"),
            0.03,
            chat_chunk("lo"),
            0.03,
            chat_chunk("!", finish="stop"),
            usage_chunk(5, 3),
            DONE,
        ]
    )
    with Harness(always(script)) as h:
        record = h.client.chat(MESSAGES, model="m", max_tokens=3)
    assert record.ok and record.finish_reason == "stop" and record.saw_done
    assert record.output_tokens == 3 and record.prompt_tokens == 5 and not record.output_estimated
    assert record.ttft_s == pytest.approx(0.08, abs=0.015)
    assert record.itl_s == pytest.approx([0.03, 0.03], abs=0.015)
    assert len(h.events) == 1 and h.recorded == [record]
    event = h.events[0]
    assert event["response_time"] == pytest.approx(record.e2e_s * 1000)
    assert event["response_length"] == 3 and event["exception"] is None
    assert event["name"] == "/v1/chat/completions" and event["request_type"] == "POST"


def test_event_split_across_writes_is_stamped_when_complete():
    first, second = chat_chunk("abc")[:20], chat_chunk("abc")[20:]
    script = sse_response([first, 0.1, second, chat_chunk("d", finish="length"), usage_chunk(1, 2), DONE])
    with Harness(always(script)) as h:
        record = h.client.chat(MESSAGES, model="m")
    assert record.ok and record.output_tokens == 2
    assert record.ttft_s == pytest.approx(0.1, abs=0.015)


def test_utf8_split_across_writes_and_crlf_lines():
    event = chat_chunk("é世").replace(b"\n\n", b"\r\n\r\n")
    cut = event.index("世".encode()) + 1  # inside the 3-byte character
    script = sse_response(
        [
            event[:cut],
            0.02,
            event[cut:],
            chat_chunk("x", finish="stop").replace(b"\n", b"\r\n"),
            b"data: [DONE]\r\n\r\n",
        ]
    )
    with Harness(always(script)) as h:
        record = h.client.chat(MESSAGES, model="m", keep_text=True)
    assert record.ok and record.text == "é世x" and record.output_estimated and record.output_tokens == 2


def test_comments_multiline_data_reasoning_and_tool_calls_count():
    script = sse_response(
        [
            b": ping\n\n",
            chat_chunk(None, extra_delta={"reasoning_content": "think"}),
            b'data: {"choices": [{"index": 0,\ndata:  "delta": {"content": "a"}, "finish_reason": null}]}\n\n',
            chat_chunk(
                None, extra_delta={"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}, finish="tool_calls"
            ),
            usage_chunk(4, 3),
            DONE,
        ]
    )
    with Harness(always(script)) as h:
        record = h.client.chat(MESSAGES, model="m")
    assert record.ok and len(record.token_times) == 3 and record.finish_reason == "tool_calls"


def test_completions_endpoint_and_continuous_usage_without_final_usage():
    usage = lambda n: {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n}  # noqa: E731
    script = sse_response(
        [
            completion_chunk("a", usage=usage(1)),
            completion_chunk("b", usage=usage(2)),
            completion_chunk("c", finish="length", usage=usage(3)),
            DONE,
        ]
    )
    with Harness(always(script)) as h:
        record = h.client.complete("hi", model="m", max_tokens=3)
    assert record.ok and record.endpoint == "/v1/completions"
    assert record.output_tokens == 3 and record.prompt_tokens == 9 and not record.output_estimated
    assert b'"prompt":"hi"' in h.server.requests[0]


def test_request_body_and_headers():
    script = sse_response([chat_chunk("a", finish="stop"), usage_chunk(1, 1), DONE])
    with Harness(always(script), api_key="sk-test-key") as h:
        h.client.chat(MESSAGES, model="m", max_tokens=7, ignore_eos=True)
    request = h.server.requests[0]
    assert b"Authorization: Bearer sk-test-key" in request
    assert b"Accept-Encoding: identity" in request
    assert b'"stream":true' in request and b'"max_tokens":7' in request and b'"ignore_eos":true' in request
    assert b'"stream_options":{"include_usage":true,"continuous_usage_stats":true}' in request
    assert "sk-test-key" not in repr(h.events[0])


@pytest.mark.parametrize(
    "script, kind",
    [
        (plain_response("429 Too Many Requests", b'{"error": {"message": "slow down"}}'), "http_429"),
        (plain_response("404 Not Found", b'{"object": "error", "message": "no such model"}'), "http_4xx"),
        (plain_response("503 Service Unavailable", b"overloaded", content_type="text/plain"), "http_5xx"),
        (sse_response([chat_chunk("a"), 0.01, chat_chunk("b"), CLOSE]), "disconnect"),
        (
            sse_response([chat_chunk("a"), b"data: {not json\n\n", chat_chunk("b", finish="stop"), DONE]),
            "malformed_event",
        ),
        (sse_response([chat_chunk("a"), b"data: [1, 2]\n\n", DONE]), "malformed_event"),
        (sse_response([chat_chunk("a"), chat_chunk("b")]), "incomplete_stream"),
        (sse_response([chat_chunk("a"), 2.0, chat_chunk("b", finish="stop"), DONE]), "timeout"),
        (sse_response([chat_chunk("a"), b'data: {"error": {"message": "oom", "code": 500}}\n\n']), "http_5xx"),
    ],
)
def test_error_classes(script, kind):
    with Harness(always(script), timeout=0.5) as h:
        record = h.client.chat(MESSAGES, model="m")
    assert record.error_kind == kind, record.error_detail
    assert len(h.events) == 1 and h.events[0]["exception"].kind == kind
    assert h.recorded == [record]


def test_connection_refused_is_connect():
    hook = EventHook()
    session = FastHttpSession("http://127.0.0.1:1", request_event=hook, user=None)
    client = LLMClient(session, request_event=hook, backend="be", user_class="U", capabilities=HostCapabilities())
    assert client.chat(MESSAGES, model="m").error_kind == "connect"
    session.client.clientpool.close()


def test_keep_alive_connection_survives_and_errors_do_not_poison_it():
    ok = sse_response([chat_chunk("a", finish="stop"), usage_chunk(1, 1), DONE])
    bad = sse_response([chat_chunk("a"), b"data: {oops\n\n", chat_chunk("b", finish="stop"), DONE])
    with Harness(lambda i, request: bad if i == 1 else ok) as h:
        kinds = [h.client.chat(MESSAGES, model="m").error_kind for _ in range(4)]
    assert kinds == [None, "malformed_event", None, None]


def test_stream_options_rejected_retries_once_and_remembers_host():
    def script(i, request):
        if b"stream_options" in request:
            return plain_response("400 Bad Request", b'{"error": {"message": "unknown field stream_options"}}')
        return sse_response([chat_chunk("a"), chat_chunk("b", finish="stop"), DONE])

    with Harness(script) as h:
        first = h.client.chat(MESSAGES, model="m")
        second = h.client.chat(MESSAGES, model="m")
    assert first.ok and second.ok and first.output_estimated and first.output_tokens == 2
    assert h.caps.stream_options is False
    assert [b"stream_options" in r for r in h.server.requests] == [True, False, False]
    assert len(h.events) == 2 and all(e["exception"] is None for e in h.events)


def test_list_models_is_cached_and_not_a_locust_request():
    body = b'{"object": "list", "data": [{"id": "first-model"}, {"id": "second"}]}'
    with Harness(always(plain_response("200 OK", body))) as h:
        assert h.client.list_models() == ["first-model", "second"]
        assert h.client.list_models() == ["first-model", "second"]
    assert len(h.server.requests) == 1 and h.events == []
