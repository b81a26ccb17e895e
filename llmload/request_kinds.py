"""User classes of the request kinds beyond plain chat: reasoning, vision, tool calls, structured output, agents,
and the pooling services: embeddings, score and rerank.

Each is an ``llmload.users.LLMUser`` that sets the class attributes of its kind (the
``--llm-*`` options override them): what the TTFT SLO targets, images per request, tools and
tool choice, a response schema. ``AgentUser`` holds conversations whose tool calls get a result
back after the tool's latency. ``EmbeddingsUser``, ``ScoreUser`` and ``RerankUser`` send batches of
texts to vLLM's pooling endpoints (``llmload.pooling``), one JSON answer each.
"""

from __future__ import annotations

from typing import Any

import gevent
import orjson
from locust.env import Environment

from llmload import pooling, prompts
from llmload.record import RequestRecord
from llmload.users import LLMUser, MultiTurnChatUser, as_range


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
        self._tool_latency = self._plugin.options.tool_latency or as_range(self.tool_latency, "tool_latency")

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


class PoolingUser(LLMUser):
    """A user of a pooling service: each request sends a batch of texts and gets one JSON answer.

    ``batch_size`` (``--llm-batch-size``) is the texts per request: inputs to embed, or documents
    to score or rank against a short query; ``prompt_tokens`` (``--llm-input-tokens``,
    ``--llm-prompt-tokens``) each text's length. Datasets give their prompts as the texts.
    """

    abstract = True
    kind = pooling.EMBEDDINGS
    batch_size: int | tuple[int, int] | str = 1
    """Texts per request: N, (low, high) or a distribution string; ``--llm-batch-size`` overrides."""
    prompt_tokens = (64, 256)
    think_time = (0.5, 2.0)
    top_n = 0
    """Rerank: the best documents the answer lists (0: all of them)."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        spec = self._plugin.options.batch_size or self.batch_size
        if isinstance(spec, tuple):
            spec = f"{spec[0]}-{spec[1]}"
        self._batch = pooling.batch_distribution(str(spec))

    def make_text(self) -> str:
        """One input or document: a dataset prompt, or synthetic text of the drawn length."""
        entry = self.dataset_entry()
        if entry is not None:
            return entry.prompt
        return prompts.synthetic_text(self.draw_prompt_tokens() or 1, self.rng)

    def turn(self) -> None:
        t_intended = self.next_arrival()
        texts = [self.make_text() for _ in range(self._batch.draw(self.rng))]
        query = prompts.short_question(self.rng) if self.kind != pooling.EMBEDDINGS else ""
        self.pool(texts, query=query, t_intended=t_intended)

    def pool(self, texts: list[str], *, query: str = "", t_intended: float | None = None) -> RequestRecord | None:
        """Send one request of this user's kind for ``texts``; return its record."""
        model = self._next_model()
        if model is None:
            return None
        with self._plugin.request_in_flight():
            record = self.llm.pool(
                self.kind,
                texts,
                model=model,
                query=query,
                top_n=self.top_n,
                name=self.request_name,
                t_intended=t_intended,
            )
        return self._observed(record, t_intended)


class EmbeddingsUser(PoolingUser):
    """An embeddings service (``/v1/embeddings``): batches of 1-8 texts of 64-256 tokens each."""

    abstract = True
    kind = pooling.EMBEDDINGS
    batch_size = (1, 8)


class ScoreUser(PoolingUser):
    """A scoring service (vLLM's ``/score``): a query against 4-16 documents, one score per pair."""

    abstract = True
    kind = pooling.SCORE
    batch_size = (4, 16)


class RerankUser(PoolingUser):
    """A reranker (vLLM's ``/rerank``): a query and 8-32 documents, ranked by relevance."""

    abstract = True
    kind = pooling.RERANK
    batch_size = (8, 32)
