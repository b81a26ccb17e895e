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
import time
from collections.abc import Callable
from typing import Any

from locust import task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

from llmload import backends as _backends
from llmload import datasets, lora, prompts, structured, targets, token_text, trace_replay
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


def counter_of(tokenizer: str) -> Callable[[str], int] | None:
    """With ``--llm-tokenizer``: counts an answer's tokens (when a server sends no usage), off the event loop."""
    if not tokenizer:
        return None

    def count(text: str) -> int:
        import gevent

        return int(gevent.get_hub().threadpool.apply(token_text.count_content, (tokenizer, [text]))[0])

    return count


def as_range(value: Any, option: str) -> Range | None:
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
        self._ask_body = self._ask.extra_body() if self._ask.judged else None
        """tools / tool_choice / response_format of every chat request, built once per user."""
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
        self._max_tokens = options.max_tokens or as_range(self.max_tokens, "max_tokens")
        self._prompt_tokens = options.prompt_tokens or (
            as_range(self.prompt_tokens, "prompt_tokens") if self.prompt_tokens is not None else None
        )
        self._think_time = options.think_time or as_range(self.think_time, "think_time")
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
        self._fixed_length: int | None = None
        """Trace replay: the output length of the request being sent (its row's)."""
        self._arrivals = get_arrivals(self._plugin) if options.arrival != "closed" else None
        self.arrival_index = 0
        self._replay = trace_replay.replay_for(self._plugin)
        self._exact = token_text.load_text_maker(options.tokenizer, seed=options.seed) if options.tokenizer else None
        self.chat_overhead: int | None = None
        """Chat with ``--llm-tokenizer``: the server's tokens around a prompt's content, learnt from its usage."""
        self._sent_content: int | None = None
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
            count_output=counter_of(options.tokenizer),
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
        """Open loop: block until the schedule hands this user a request; return its intended time.

        The arrival's global index is kept in ``arrival_index`` (trace replay: the trace's request).
        """
        if self._arrivals is None:
            return None
        due, self.arrival_index = self._arrivals.wait_for_arrival()
        return due

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
        if self._exact is not None:  # --llm-tokenizer: exactly n tokens on /v1/completions
            return self._exact_prompt(n_tokens)
        return prompts.question_of_length(n_tokens, self.rng)

    def _exact_prompt(self, n_tokens: int) -> str:
        """A prompt of ``n_tokens`` tokens as the server counts them.

        On /v1/completions the tokenizer's count is the server's. On chat the template adds
        tokens the tokenizer cannot apply: the first request's ``usage.prompt_tokens`` minus
        its content gives them, and later prompts are that much shorter (``chat_overhead``).
        """
        assert self._exact is not None
        special = self._exact.special_tokens
        if self._endpoint == "completions":
            return self._exact.prompt(max(n_tokens, special + 1), rng=self.rng)
        content = max(n_tokens - (self.chat_overhead if self.chat_overhead is not None else special), 1)
        self._sent_content = content
        return self._exact.prompt(content + special, rng=self.rng)

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
        with self._plugin.request_in_flight():
            record = self.llm.chat(
                [*system, *messages],
                model=model,
                extra_body=self._ask_body,
                judge=self._ask.judge if self._ask.judged else None,
                media=media,
                **self._request_args(keep_text, t_intended),
            )
        return self._observed(record, t_intended)

    def _request_args(self, keep_text: bool, t_intended: float | None) -> dict[str, Any]:
        """What every request of this user carries besides its prompt and model."""
        fixed = self._fixed_length
        return {
            "max_tokens": fixed if fixed is not None else self.draw_max_tokens(),
            "ignore_eos": self._ignore_eos or fixed is not None,
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
        sent, self._sent_content = self._sent_content, None
        if sent is not None and self.chat_overhead is None and record.ok and record.prompt_tokens and not record.images:
            self.chat_overhead = record.prompt_tokens - sent
        return record

    @task
    def generate(self) -> None:
        if self._replay is not None:
            self.replay_turn(self._replay)
        else:
            self.turn()

    def replay_turn(self, replay: trace_replay.TraceReplay) -> None:
        """Trace replay: send the trace's request this arrival stands for (any class's ``turn`` aside).

        Its prompt and output length are the trace's (``ignore_eos``, so the answer has that
        length); a session's turn waits for the session's previous turn and carries the
        conversation so far.
        """
        t_intended = self.next_arrival()
        row = replay.request(self.arrival_index)
        prompt = replay.prompt(row, self.rng)
        session = replay.begin_turn(row.session) if row.session is not None else None
        if session is not None and t_intended is not None:
            t_intended = max(t_intended, time.perf_counter())  # sent once the previous turn ended
        self._fixed_length = max(row.output_tokens or 1, 1) if row.output_tokens is not None else None
        record = None
        try:
            if session is not None:
                record = self.send_messages(
                    [*session.history, {"role": "user", "content": prompt}], t_intended=t_intended
                )
            else:
                record = self.send(prompt, t_intended=t_intended)
        finally:
            self._fixed_length = None
            if session is not None:
                ok = record is not None and record.ok
                replay.end_turn(session, prompt, record.text if ok and record is not None else None)

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
