"""Locust user classes that model LLM traffic.

``LLMUser`` is the abstract base: one task, one streamed request, then think
time. Subclasses set the class attributes below; the ``--llm-*`` options,
when given, override them for the whole run.
"""

from __future__ import annotations

import random
from typing import Any

from locust import task
from locust.contrib.fasthttp import FastHttpUser

from llmload import hooks as _hooks  # noqa: F401  (registers llmload with Locust's events)
from llmload import prompts
from llmload.client import LLMClient
from llmload.errors import LLMRequestError
from llmload.options import Range, parse_range
from llmload.plugin import get_plugin
from llmload.record import RequestRecord


def _as_range(value: Any, option: str) -> Range | None:
    if isinstance(value, tuple):
        return Range(float(value[0]), float(value[1]))
    return parse_range(value, option=option)


class LLMUser(FastHttpUser):
    """A user that streams LLM requests and measures them token by token."""

    abstract = True

    endpoint: str = "chat"
    """``chat`` (/v1/chat/completions) or ``completions`` (/v1/completions); ``--llm-endpoint`` overrides."""

    model: str | None = None
    """Model to request; ``--llm-model`` overrides; default: the first model the host lists."""

    max_tokens: int | tuple[int, int] = 100
    """max_tokens per request, or a (low, high) range drawn per request."""

    prompt_tokens: int | tuple[int, int] | None = None
    """Approximate prompt length in tokens; None means a short question (5-11 words)."""

    think_time: float | tuple[float, float] = (1.0, 5.0)
    """Seconds between a user's requests, or a (low, high) range; ``--llm-think-time`` overrides."""

    ignore_eos: bool = False
    """Ask the server (vLLM) to ignore end-of-sequence so answers run to max_tokens."""

    backend: str | None = None
    """Label of the backend in token metrics; default: the host URL."""

    request_name: str | None = None
    """Name of the request in Locust's statistics; default: the endpoint path."""

    def __init__(self, environment: Any) -> None:
        self._plugin = get_plugin(environment)
        options = self._plugin.options
        # FastHttpSession applies this to connect and to every socket read, so a stall between
        # SSE events longer than --llm-stream-timeout fails the request as a timeout.
        self.network_timeout = self.connection_timeout = options.stream_timeout_s
        super().__init__(environment)
        self.rng = random.Random(self._plugin.next_user_seed())
        self._endpoint = options.endpoint or self.endpoint
        self._max_tokens = options.max_tokens or _as_range(self.max_tokens, "max_tokens")
        self._prompt_tokens = options.prompt_tokens or (
            _as_range(self.prompt_tokens, "prompt_tokens") if self.prompt_tokens is not None else None
        )
        self._think_time = options.think_time or _as_range(self.think_time, "think_time")
        self._ignore_eos = options.ignore_eos or self.ignore_eos
        self._model = options.model or self.model
        self.llm = LLMClient(
            self.client,
            request_event=environment.events.request,
            backend=self.backend or self.host,
            user_class=type(self).__name__,
            capabilities=self._plugin.capabilities(self.host),
            api_key=options.api_key,
            recorder=self._plugin.record,
            context=self.context,
        )

    def wait_time(self) -> float:
        return self._think_time.draw(self.rng) if self._think_time else 0.0

    def resolve_model(self) -> str | None:
        """Return the model to request, asking the host once when none is configured."""
        if self._model:
            return self._model
        try:
            self._model = self.llm.list_models()[0]
        except LLMRequestError as exc:
            self.environment.events.request.fire(
                request_type="GET", name="/v1/models", response_time=0, response_length=0,
                exception=exc, context=self.context(), response=None,
            )
            return None
        return self._model

    def draw_max_tokens(self) -> int | None:
        return self._max_tokens.draw_int(self.rng) if self._max_tokens else None

    def make_prompt(self) -> str:
        """Return the text of the next prompt."""
        if self._prompt_tokens is None:
            return prompts.short_question(self.rng)
        return prompts.question_of_length(self._prompt_tokens.draw_int(self.rng), self.rng)

    def send(self, prompt: str, *, history: list[dict[str, str]] | None = None, keep_text: bool = False) -> RequestRecord | None:
        """Stream one request for ``prompt`` (after ``history`` in chat) and return its record."""
        model = self.resolve_model()
        if model is None:
            return None
        kwargs = dict(
            model=model,
            max_tokens=self.draw_max_tokens(),
            ignore_eos=self._ignore_eos,
            name=self.request_name,
            keep_text=keep_text,
        )
        self._plugin.in_flight += 1
        try:
            if self._endpoint == "completions":
                return self.llm.complete(prompt, **kwargs)
            messages = [*(history or ()), {"role": "user", "content": prompt}]
            return self.llm.chat(messages, **kwargs)
        finally:
            self._plugin.in_flight -= 1

    @task
    def generate(self) -> None:
        self.send(self.make_prompt())


class ChatbotUser(LLMUser):
    """Chat traffic: short questions, about 100 output tokens, a few seconds of think time."""

    abstract = True
    max_tokens = 100
    prompt_tokens = None
    think_time = (1.0, 5.0)


class SummarizationUser(LLMUser):
    """Summarization traffic: long documents (1k-4k prompt tokens), 200-300 output tokens."""

    abstract = True
    max_tokens = (200, 300)
    prompt_tokens = (1000, 4000)
    think_time = (0.5, 2.0)

    def make_prompt(self) -> str:
        return prompts.summarization_prompt(self._prompt_tokens.draw_int(self.rng), self.rng)
