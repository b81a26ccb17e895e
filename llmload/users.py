"""Locust user classes that model LLM traffic.

``LLMUser`` is the abstract base: one task, one streamed request, then think
time. Subclasses set the class attributes below; the ``--llm-*`` options,
when given, override them for the whole run. Prompts come from the class, a
length distribution or a dataset file (``llmload.datasets``); with
``--llm-backends`` each user is bound to one backend (``llmload.backends``);
with ``--llm-arrival poisson|constant`` users are a pool that sends on the
open-loop schedule (``llmload.arrivals``). ``MultiTurnChatUser`` holds
conversations that send the real previous answers back as context.
"""

from __future__ import annotations

import random
from typing import Any

import gevent
import orjson
from locust import task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

from llmload import backends as _backends
from llmload import datasets, lora, prompts, structured, targets
from llmload import hooks as _hooks  # noqa: F401  (registers llmload with Locust's events)
from llmload import images as vision
from llmload.arrivals import get_arrivals
from llmload.client import LLMClient
from llmload.errors import LLMRequestError
from llmload.options import Range, datasets_filters, parse_range
from llmload.plugin import get_plugin
from llmload.record import RequestRecord

# A summarization user whose class sets no prompt_tokens summarizes documents of this length.
SUMMARIZATION_PROMPT_TOKENS = 1000


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

    tools: list[dict[str, Any]] | None = None
    """OpenAI tool definitions every chat request sends; ``--llm-tools FILE`` overrides."""

    tool_choice: str = "auto"
    """``auto``, ``required``, ``none`` or a tool's name; ``--llm-tool-choice`` overrides."""

    response_schema: dict[str, Any] | None = None
    """A JSON schema the answer must follow (``response_format``); ``--llm-response-format FILE`` overrides."""

    images: int | tuple[int, int] | str = 0
    """Images per chat request: N, (low, high) or a distribution string; ``--llm-images`` overrides."""

    image_size: str = "512x512"
    """Generated images' resolution, ``WxH`` or ``WxH,WxH,...`` drawn per image; ``--llm-image-size`` overrides."""

    slo_ttft_of: str | None = None
    """What the TTFT SLO targets for a run with this class, unless ``--llm-slo-ttft-of`` says:
    ``answer`` (the first answer token, for reasoning models) or ``any`` (default)."""

    def __init__(self, environment: Environment) -> None:
        self._plugin = get_plugin(environment)
        options = self._plugin.options
        # FastHttpSession applies this to connect and to every socket read, so a stall between
        # SSE events longer than --llm-stream-timeout fails the request as a timeout.
        self.network_timeout = self.connection_timeout = options.stream_timeout_s
        self._adapters = lora.picker_for(self._plugin)
        self._ask = self._structured_ask(options)
        spec = options.images or self.images
        if isinstance(spec, tuple):
            spec = f"{spec[0]}-{spec[1]}"
        self._images = (
            datasets.parse_distribution(str(spec), option="llm-images") if str(spec) not in ("", "0") else None
        )
        self._image_source = vision.source_from(
            sizes=options.image_size or self.image_size,
            fmt=options.image_format,
            folder=options.image_dir,
            seed=options.seed,
        )
        picker = _backends.picker_for(self._plugin)
        self.backend_info = picker.next() if picker is not None else None
        if self.backend_info is not None:
            self.host = self.backend_info.base_url  # read by FastHttpUser.__init__
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
        self._input_dist = (
            datasets.parse_distribution(options.input_tokens, option="llm-input-tokens")
            if options.input_tokens
            else None
        )
        self._output_dist = (
            datasets.parse_distribution(options.output_tokens, option="llm-output-tokens")
            if options.output_tokens
            else None
        )
        self._dataset = datasets.load_dataset(options.dataset, **datasets_filters(options)) if options.dataset else None
        self._dataset_max_tokens: int | None = None
        self._prefix = datasets.shared_prefix(options.shared_prefix_tokens, options.seed)
        self._arrivals = get_arrivals(self._plugin) if options.arrival != "closed" else None
        host = self.host or ""
        if self.backend_info is not None:
            target = targets.for_backend(self.backend_info)
            self._model = options.model or self.backend_info.model or self._model
        else:
            target = targets.for_host(host, label=self.backend, options=options)
        self.llm = LLMClient(
            self.client,
            request_event=environment.events.request,
            backend=target.label,
            user_class=type(self).__name__,
            capabilities=self._plugin.capabilities(host),
            api_key=target.api_key,
            recorder=self._plugin.record,
            streams=self._plugin.streams,
            context=self.context,
            kernel_stamps=options.timestamps == "kernel",
        )

    def _structured_ask(self, options: Any) -> structured.Ask:
        """Tools and schema of the options when given, else of the class (validated either way)."""
        if options.tools or options.response_format:
            return structured.ask_from(
                tools_path=options.tools, tool_choice=options.tool_choice, schema_path=options.response_format
            )
        return structured.ask_of(
            tools=self.tools,
            tool_choice=self.tool_choice,
            schema=self.response_schema,
            where=f"{type(self).__name__}",
        )

    def wait_time(self) -> float:
        if self._arrivals is not None:
            return 0.0  # open loop: the schedule, not think time, paces requests
        think_time = self._plugin.steered_think_time or self._think_time
        return think_time.draw(self.rng) if think_time else 0.0

    def next_arrival(self) -> float | None:
        """Open loop: block until the schedule hands this user a request; return its intended time."""
        return self._arrivals.wait_for_arrival() if self._arrivals is not None else None

    def resolve_model(self) -> str | None:
        """Return the model to request, asking the host once when none is configured."""
        if self._model:
            return self._model
        try:
            self._model = self.llm.list_models()[0]
        except LLMRequestError as exc:
            self.environment.events.request.fire(
                request_type="GET",
                name="/v1/models",
                response_time=0,
                response_length=0,
                exception=exc,
                context=self.context(),
                response=None,
            )
            return None
        return self._model

    def draw_max_tokens(self) -> int | None:
        """Return max_tokens: --llm-output-tokens, --llm-max-tokens, the dataset entry's answer length, the class's."""
        if self._output_dist is not None:
            return max(self._output_dist.draw(self.rng), 1)
        if self._plugin.options.max_tokens is None and self._dataset_max_tokens is not None:
            return self._dataset_max_tokens
        return self._max_tokens.draw_int(self.rng) if self._max_tokens else None

    def draw_prompt_tokens(self) -> int | None:
        """Return the next prompt length: --llm-input-tokens, --llm-prompt-tokens, the class's, or None."""
        if self._input_dist is not None:
            return max(self._input_dist.draw(self.rng), 1)
        return self._prompt_tokens.draw_int(self.rng) if self._prompt_tokens is not None else None

    def dataset_entry(self) -> datasets.Entry | None:
        """Draw the next dataset entry (None without --llm-dataset); its answer length becomes max_tokens."""
        if self._dataset is None:
            return None
        entry = self._dataset.sample(self.rng)
        self._dataset_max_tokens = entry.output_tokens
        return entry

    def make_prompt(self) -> str:
        """Return the text of the next prompt."""
        entry = self.dataset_entry()
        if entry is not None:
            return entry.prompt
        n_tokens = self.draw_prompt_tokens()
        if n_tokens is None:
            return prompts.short_question(self.rng)
        return prompts.question_of_length(n_tokens, self.rng)

    def send(
        self,
        prompt: str,
        *,
        history: list[dict[str, Any]] | None = None,
        keep_text: bool = False,
        t_intended: float | None = None,
    ) -> RequestRecord | None:
        """Stream one request for ``prompt`` (after ``history`` in chat) and return its record."""
        if self._endpoint != "completions":
            count = max(self._images.draw(self.rng), 0) if self._images is not None else 0
            if not count:
                messages = [*(history or ()), {"role": "user", "content": prompt}]
                return self.send_messages(messages, keep_text=keep_text, t_intended=t_intended)
            drawn = self._image_source.draw(count, self.rng)
            question = {"role": "user", "content": vision.content(prompt, drawn)}
            media = (len(drawn), sum(image.pixels for image in drawn))
            return self.send_messages(
                [*(history or ()), question], keep_text=keep_text, t_intended=t_intended, media=media
            )
        model = self._next_model()
        if model is None:
            return None
        with self._plugin.request_in_flight():
            record = self.llm.complete(self._prefix + prompt, model=model, **self._request_args(keep_text, t_intended))
        return self._observed(record, t_intended)

    def send_messages(
        self,
        messages: list[dict[str, Any]],
        *,
        keep_text: bool = True,
        t_intended: float | None = None,
        media: tuple[int, int] = (0, 0),
    ) -> RequestRecord | None:
        """Stream one chat request of ``messages`` (after the shared system prefix, if any); return its record."""
        model = self._next_model()
        if model is None:
            return None
        system = [{"role": "system", "content": self._prefix}] if self._prefix else []
        ask = self._ask
        with self._plugin.request_in_flight():
            record = self.llm.chat(
                [*system, *messages],
                model=model,
                extra_body=ask.extra_body() if ask.judged else None,
                judge=ask.judge if ask.judged else None,
                media=media,
                **self._request_args(keep_text, t_intended),
            )
        return self._observed(record, t_intended)

    def _request_args(self, keep_text: bool, t_intended: float | None) -> dict[str, Any]:
        """What every request of this user carries besides its prompt and model."""
        return {
            "max_tokens": self.draw_max_tokens(),
            "ignore_eos": self._ignore_eos,
            "name": self.request_name,
            "keep_text": keep_text,
            "t_intended": t_intended,
        }

    def _next_model(self) -> str | None:
        """The next LoRA adapter (``--llm-lora``), else the model to request."""
        return self._adapters.next() if self._adapters is not None else self.resolve_model()

    def _observed(self, record: RequestRecord, t_intended: float | None) -> RequestRecord:
        if t_intended is not None and self._arrivals is not None:
            self._arrivals.observe(record)
        return record

    @task
    def generate(self) -> None:
        self.turn()

    def turn(self) -> None:
        """Send this user's next request (after its open-loop arrival, if any); subclasses override this."""
        t_intended = self.next_arrival()
        self.send(self.make_prompt(), t_intended=t_intended)


class ChatbotUser(LLMUser):
    """Chat traffic: short questions, about 100 output tokens, a few seconds of think time."""

    abstract = True
    max_tokens = 100
    prompt_tokens = None
    think_time = (1.0, 5.0)


class ReasoningChatUser(LLMUser):
    """Chat with a reasoning model: it thinks (reasoning deltas) before it answers.

    Answers are longer (the thinking counts as output), and the TTFT SLO targets the first
    answer token, the wait a reader sees, unless ``--llm-slo-ttft-of any``.
    """

    abstract = True
    max_tokens = 1000
    prompt_tokens = None
    think_time = (2.0, 8.0)
    slo_ttft_of = "answer"


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}

ANSWER_SCHEMA: dict[str, Any] = {
    "title": "answer",
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "sources": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["answer", "confidence"],
}


class VisionChatUser(LLMUser):
    """Chat with images: each question carries one image (512x512 JPEG, generated and seeded).

    ``--llm-images``, ``--llm-image-size``, ``--llm-image-format`` and ``--llm-image-dir``
    change how many, how large, their encoding, or send a folder's images instead.
    """

    abstract = True
    max_tokens = 100
    think_time = (1.0, 5.0)
    images = 1


class ToolCallUser(LLMUser):
    """Requests that must call a tool: ``tools`` with ``tool_choice: required`` (a weather lookup).

    The answer is valid when it is a complete call of a known tool with arguments valid against
    its parameters; ``--llm-tools`` and ``--llm-tool-choice`` replace the class's tool and choice.
    """

    abstract = True
    max_tokens = 200
    think_time = (1.0, 5.0)
    tools = [WEATHER_TOOL]
    tool_choice = "required"


class StructuredOutputUser(LLMUser):
    """Requests for a JSON answer following a schema (``response_format`` with ``json_schema``).

    The answer is valid when it is JSON valid against the schema; ``--llm-response-format``
    replaces the class's schema.
    """

    abstract = True
    max_tokens = 300
    think_time = (1.0, 5.0)
    response_schema = ANSWER_SCHEMA


class SummarizationUser(LLMUser):
    """Summarization traffic: long documents (1k-4k prompt tokens), 200-300 output tokens."""

    abstract = True
    max_tokens = (200, 300)
    prompt_tokens = (1000, 4000)
    think_time = (0.5, 2.0)

    def make_prompt(self) -> str:
        if self._dataset is not None:
            return super().make_prompt()
        return prompts.summarization_prompt(self.draw_prompt_tokens() or SUMMARIZATION_PROMPT_TOKENS, self.rng)


class MultiTurnChatUser(LLMUser):
    """Conversations: each turn sends the whole history, with the server's real previous answers.

    A session has a drawn number of turns (``turns`` or ``--llm-turns``); each
    turn's question comes from the dataset conversation (its user turns, in
    order) or is synthetic. After the last turn, or a failed one, the next
    task starts a new session. Think time separates turns; always the chat
    endpoint.
    """

    abstract = True
    max_tokens = 100
    prompt_tokens = None
    think_time = (2.0, 8.0)
    turns: int | tuple[int, int] | str = (2, 6)
    """Turns per session: N, (low, high), or a distribution string such as ``"lognormal:mean=4,sigma=0.5,max=12"``."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._endpoint = "chat"
        spec = self._plugin.options.turns or self.turns
        if isinstance(spec, tuple):
            spec = f"uniform:min={spec[0]},max={spec[1]}"
        self._turns_dist = datasets.parse_distribution(str(spec), option="llm-turns")
        self.history: list[dict[str, Any]] = []
        self._questions: list[str] = []
        self._turns_left = 0

    def start_session(self) -> None:
        """Forget the conversation and draw the next one's length and questions."""
        self.history = []
        turns = max(self._turns_dist.draw(self.rng), 1)
        entry = self.dataset_entry()
        questions = entry.user_turns()[:turns] if entry is not None else []
        self._questions = questions
        self._turns_left = len(questions) if entry is not None else turns

    def next_question(self) -> str:
        """Return the next turn's user message."""
        if self._questions:
            return self._questions.pop(0)
        n_tokens = self.draw_prompt_tokens()
        return prompts.short_question(self.rng) if n_tokens is None else prompts.question_of_length(n_tokens, self.rng)

    def turn(self) -> None:
        """Send the next turn of the conversation, starting a new one after the last turn."""
        if self._turns_left <= 0:
            self.start_session()
        t_intended = self.next_arrival()
        question = self.next_question()
        record = self.send(question, history=self.history, keep_text=True, t_intended=t_intended)
        self._turns_left -= 1
        if record is None or not record.ok or record.text is None:
            self._turns_left = 0  # a broken conversation is abandoned, as a person would
            return
        self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": record.text}]


class AgentUser(MultiTurnChatUser):
    """An agent: each turn may call a tool; the tool's result goes back after the tool's latency.

    A turn sends the question with ``tools`` (``tool_choice: auto``). When the answer is a
    tool call, the user waits ``tool_latency`` seconds (the tool running; ``--llm-tool-latency``
    overrides), appends the call and a result (``role: tool``) to the conversation and sends
    again, so the model answers from the result; at most ``max_tool_rounds`` calls per turn.
    Every request is its own record (and is judged: a complete tool call or, with ``auto``,
    a text answer is valid).
    """

    abstract = True
    max_tokens = 200
    think_time = (2.0, 8.0)
    turns = (2, 4)
    tools = [WEATHER_TOOL]
    tool_choice = "auto"
    tool_latency: float | tuple[float, float] = (0.2, 1.0)
    """Seconds a tool takes to answer, or a (low, high) range; ``--llm-tool-latency`` overrides."""
    max_tool_rounds = 3

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._tool_latency = self._plugin.options.tool_latency or _as_range(self.tool_latency, "tool_latency")

    def turn(self) -> None:
        """A turn: the question, then a tool call and its result fed back, until the model answers."""
        if self._turns_left <= 0:
            self.start_session()
        question = self.next_question()
        history = [*self.history, {"role": "user", "content": question}]
        record = self.send_messages(history, t_intended=self.next_arrival())
        self._turns_left -= 1
        for _ in range(self.max_tool_rounds):
            if record is None or not record.ok or not record.tool_calls:
                break
            if self._tool_latency is not None:
                gevent.sleep(self._tool_latency.draw(self.rng))
            calls = [
                {
                    "id": c["id"] or f"call_{i}",
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for i, c in enumerate(record.tool_calls)
            ]
            history.append({"role": "assistant", "content": record.text or None, "tool_calls": calls})
            history += [{"role": "tool", "tool_call_id": call["id"], "content": tool_result(call)} for call in calls]
            record = self.send_messages(history)
        if record is None or not record.ok or record.text is None or record.tool_calls:
            self._turns_left = 0  # a broken conversation is abandoned, as a person would
            return
        self.history = [*history, {"role": "assistant", "content": record.text}]


def tool_result(call: dict[str, Any]) -> str:
    """What the (pretend) tool answers: its name and arguments echoed with a result, as JSON."""
    return orjson.dumps(
        {"tool": call["function"]["name"], "arguments": call["function"]["arguments"], "result": "ok"}
    ).decode()
