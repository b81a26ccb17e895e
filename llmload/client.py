"""Streaming OpenAI-compatible client on top of Locust's FastHttpSession.

``LLMClient.chat`` and ``LLMClient.complete`` send one streamed request and
return its ``RequestRecord``; each request is reported to Locust's request
event exactly once, with ``response_time`` = E2E in ms and
``response_length`` = output tokens, and handed to a recorder (the token
metrics store). Failures are classified, reported as failed requests, and
never raise, so the user goes on.

Streams ask for ``stream_options: {"include_usage": true,
"continuous_usage_stats": true}``. A host that answers 400 to that is retried
once without it; if the retry succeeds the host is remembered as not
supporting it (token counts then come from counting events, and are marked
estimated).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmload import pooling
from llmload.errors import LLMRequestError
from llmload.http_adapter import abort_connection, instrument, raw_response
from llmload.record import RequestRecord
from llmload.stream import (
    StreamReader,
    classify_connect_error,
    classify_status,
    error_message,
    read_body,
    read_stream,
)
from llmload.streamed import StreamsInFlight

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
STREAM_OPTIONS = {"include_usage": True, "continuous_usage_stats": True}
# The session accepts every status so that error bodies can be read and classified here.
ALL_STATUS_CODES = frozenset(range(100, 600))


@dataclass
class HostCapabilities:
    """What one host is known to accept; shared by every user of a process."""

    stream_options: bool | None = None
    models: list[str] = field(default_factory=list)


class LLMClient:
    """Send streamed LLM requests through a Locust ``FastHttpSession``."""

    def __init__(
        self,
        session: Any,
        *,
        request_event: Any,
        backend: str,
        user_class: str,
        capabilities: HostCapabilities,
        api_key: str = "",
        recorder: Callable[[RequestRecord], None] | None = None,
        streams: StreamsInFlight | None = None,
        context: Callable[[], dict] | None = None,
        kernel_stamps: bool = True,
        count_output: Callable[[str], int] | None = None,
    ) -> None:
        self.session = session
        self.request_event = request_event
        self.backend = backend
        self.user_class = user_class
        self.capabilities = capabilities
        self.recorder = recorder
        self.streams = streams
        self._context = context
        self._count_output = count_output
        """Counts an answer's tokens when the server sent no usage (``--llm-tokenizer``)."""
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            # FastHttp asks for gzip by default and would not decode a raw stream.
            "Accept-Encoding": "identity",
        }
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        elif getattr(session, "auth_header", None):
            # user:password@ in the host URL: the Basic auth FastHttpSession.request would add.
            self._headers["Authorization"] = session.auth_header
        session.client.valid_response_codes = ALL_STATUS_CODES
        self._timing = instrument(session.client, getattr(session, "base_url", ""), kernel_stamps=kernel_stamps)

    def list_models(self) -> list[str]:
        """Return the host's model ids from ``GET /v1/models`` (cached; not a Locust request)."""
        if self.capabilities.models:
            return self.capabilities.models
        url = f"{self.session.base_url}{MODELS_PATH}"
        try:
            response = self.session.client.urlopen(url, method="GET", headers=self._headers)
            if self._timing is not None:
                self._timing.take(raw_response(response))  # a connection it opened is not the next request's
            status, body = response.status_code, response.content
        except Exception as exc:
            raise LLMRequestError(classify_connect_error(exc), f"GET {MODELS_PATH}: {type(exc).__name__}") from exc
        if status != 200:
            raise LLMRequestError(
                classify_status(status), f"GET {MODELS_PATH}: HTTP {status}: {error_message(body)}", status=status
            )
        try:
            models = [entry["id"] for entry in orjson.loads(body)["data"]]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise LLMRequestError("malformed_event", f"GET {MODELS_PATH}: unexpected body") from exc
        if not models:
            raise LLMRequestError("http_4xx", f"GET {MODELS_PATH}: the server lists no model")
        self.capabilities.models = models
        return models

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str,
        max_tokens: int | None = None,
        ignore_eos: bool = False,
        extra_body: dict[str, Any] | None = None,
        name: str | None = None,
        keep_text: bool = False,
        t_intended: float | None = None,
        judge: Callable[[RequestRecord], bool] | None = None,
        media: tuple[int, int] = (0, 0),
    ) -> RequestRecord:
        """Stream one chat completion and return its record.

        ``media`` is the (images, pixels) the messages carry, noted in the record.

        ``judge`` (tools or a schema asked for) decides, on the kept answer of a successful
        request, ``record.answer_valid`` before the record is counted.
        """
        body = {"model": model, "messages": messages, "stream": True}
        return self._request(
            CHAT_PATH,
            body,
            model,
            max_tokens,
            ignore_eos,
            extra_body,
            name,
            keep_text or judge is not None,
            t_intended,
            judge,
            media,
        )

    def complete(
        self,
        prompt: str,
        *,
        model: str,
        max_tokens: int | None = None,
        ignore_eos: bool = False,
        extra_body: dict[str, Any] | None = None,
        name: str | None = None,
        keep_text: bool = False,
        t_intended: float | None = None,
    ) -> RequestRecord:
        """Stream one text completion and return its record."""
        body = {"model": model, "prompt": prompt, "stream": True}
        return self._request(
            COMPLETIONS_PATH, body, model, max_tokens, ignore_eos, extra_body, name, keep_text, t_intended
        )

    def pool(
        self,
        kind: str,
        texts: list[str],
        *,
        model: str,
        query: str = "",
        top_n: int = 0,
        name: str | None = None,
        t_intended: float | None = None,
    ) -> RequestRecord:
        """Send one embeddings, score or rerank request of ``texts`` (``llmload.pooling``); return its record."""
        path = pooling.PATHS[kind]
        body = pooling.request_body(kind, model=model, texts=texts, query=query, top_n=top_n)
        record = RequestRecord(
            backend=self.backend,
            model=model,
            user_class=self.user_class,
            endpoint=path,
            t_send=0.0,
            start_wall=time.time(),
            t_intended=t_intended,
            kind=kind,
            inputs=len(texts),
            completion_tokens=0,
        )
        _response, raw = self._post(record, path, orjson.dumps(body))
        if raw is not None:
            answer = read_body(raw, record, received_at=time.perf_counter())
            if answer is None:
                abort_connection(raw)
            else:
                try:
                    record.prompt_tokens = pooling.read_answer(kind, answer, inputs=len(texts), top_n=top_n)
                except pooling.AnswerError as exc:
                    record.error_kind, record.error_detail = "malformed_answer", str(exc)
        self._report(record, name or path)
        return record

    def _post(self, record: RequestRecord, path: str, payload: bytes) -> tuple[Any, Any]:
        """POST ``payload``; return the 200 response and its raw one, or Nones with the failure in ``record``."""
        url = f"{self.session.base_url}{path}"
        started = record.t_send = time.perf_counter()
        try:
            response = self.session.client.urlopen(url, method="POST", payload=payload, headers=self._headers)
        except Exception as exc:  # geventhttpclient raises more than Locust's FAILURE_EXCEPTIONS
            self._failed_before_response(record, exc)
            return None, None
        raw = raw_response(response)
        if self._timing is not None:
            t_sent, record.connect_s = self._timing.take(raw)
            if t_sent is not None:
                record.t_send = t_sent
            elif record.connect_s is not None:
                record.t_send = started + record.connect_s
        status = response.status_code
        if not status or raw is None:
            self._failed_before_response(record, getattr(response, "error", None))
            return None, None
        record.status = status
        if status != 200:
            try:
                detail = error_message(raw.read())
            except Exception:
                detail = ""
                abort_connection(raw)
            record.error_kind = classify_status(status)
            record.error_detail = f"HTTP {status}" + (f": {detail}" if detail else "")
            record.t_end = time.perf_counter()
            return None, None
        return response, raw

    def _request(
        self,
        path: str,
        body: dict[str, Any],
        model: str,
        max_tokens: int | None,
        ignore_eos: bool,
        extra_body: dict[str, Any] | None,
        name: str | None,
        keep_text: bool,
        t_intended: float | None,
        judge: Callable[[RequestRecord], bool] | None = None,
        media: tuple[int, int] = (0, 0),
    ) -> RequestRecord:
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if ignore_eos:
            body["ignore_eos"] = True
        if extra_body:
            body.update(extra_body)
        caps = self.capabilities
        with_options = caps.stream_options is not False
        keep_text = keep_text or (self._count_output is not None and caps.stream_options is not True)
        record = self._attempt(path, body, model, with_options, keep_text, t_intended)
        if with_options and caps.stream_options is None:
            if record.status == 400:
                if self.streams is not None:
                    self.streams.closed(record)
                retry = self._attempt(path, body, model, False, keep_text, t_intended)
                if retry.ok:
                    caps.stream_options = False
                record = retry
            elif record.ok:
                caps.stream_options = True
        record.images, record.image_pixels = media
        if (
            self._count_output is not None
            and record.ok
            and record.completion_tokens is None
            and record.text is not None
        ):
            record.completion_tokens = self._count_output(record.text)
            record.output_tokenized = True
        if judge is not None and record.ok:
            record.answer_valid = judge(record)
        self._report(record, name or path)
        return record

    def _attempt(
        self,
        path: str,
        body: dict[str, Any],
        model: str,
        with_options: bool,
        keep_text: bool,
        t_intended: float | None,
    ) -> RequestRecord:
        if with_options:
            body = {**body, "stream_options": STREAM_OPTIONS}
        payload = orjson.dumps(body)
        record = RequestRecord(
            backend=self.backend,
            model=model,
            user_class=self.user_class,
            endpoint=path,
            t_send=0.0,
            start_wall=time.time(),
            t_intended=t_intended,
        )
        if self.streams is not None:
            self.streams.opened(record)
        response, raw = self._post(record, path, payload)
        if raw is None:
            return record
        reader = StreamReader(record, chat=path == CHAT_PATH, keep_text=keep_text)
        read_stream(raw, reader)
        reader.finish()
        if record.error_kind is not None:
            abort_connection(raw)
            content_type = (response.headers or {}).get("content-type", "") if response.headers else ""
            if record.error_kind == "incomplete_stream" and "event-stream" not in content_type:
                record.error_detail += f" (response content-type {content_type or 'missing'!r}, not an event stream)"
        return record

    @staticmethod
    def _failed_before_response(record: RequestRecord, exc: BaseException | None) -> RequestRecord:
        record.t_end = time.perf_counter()
        record.error_kind = classify_connect_error(exc) if exc is not None else "connect"
        reason = str(exc).split("\n", 1)[0][:120] if exc is not None else "no response"
        record.error_detail = f"{type(exc).__name__ if exc is not None else 'Error'}: {reason}"
        return record

    def _report(self, record: RequestRecord, name: str) -> None:
        if record.kind != pooling.STREAM:
            end = record.t_end or record.t_send
        else:
            end = record.token_times[-1] if record.ok and record.token_times else (record.t_end or record.t_send)
        kind = record.error_kind
        exception = None if kind is None else LLMRequestError(kind, record.error_detail, status=record.status)
        self.request_event.fire(
            request_type="POST",
            name=name,
            response_time=(end - record.t_send) * 1000.0,
            response_length=record.output_tokens if record.kind == pooling.STREAM else record.prompt_tokens or 0,
            exception=exception,
            context=self._context() if self._context else {},
            response=None,
            start_time=record.start_wall,
            url=f"{self.session.base_url}{record.endpoint}",
        )
        if self.recorder is not None:
            self.recorder(record)
