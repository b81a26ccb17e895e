"""Trace replay: the run's trace, the prompt of each of its requests, and its conversations.

``--llm-trace FILE`` (``llmload.traces`` reads it) makes the open-loop schedule the trace's
(``llmload.schedule``, mode ``trace``): arrival ``k`` is request ``k``. A user handed
arrival ``k`` sends request ``k``: its prompt is the row's text, or a text of the row's input
length whose leading blocks follow its ``hash_ids`` (``llmload.token_text``: exact in tokens
with ``--llm-tokenizer``), ``max_tokens`` is the row's output length with ``ignore_eos`` so the
answer has that length. A session's turns go to one process; a turn waits for the previous
turn of its session to finish (it is sent at the later of its time and that end) and carries
the conversation so far, with the real previous answers.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmload.extension import Extension
from llmload.token_text import TextMaker, load_text_maker
from llmload.traces import Trace, TraceRequest, load_trace

if TYPE_CHECKING:
    from gevent.event import Event
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

_LOADED: dict[tuple[Any, ...], Trace] = {}
#: How long a turn waits for the previous turn of its session (seconds) before it goes without it.
SESSION_WAIT_S = 600.0


def _get(options: Any, name: str) -> Any:
    return options[name] if isinstance(options, Mapping) else getattr(options, name)


def trace_of(options: Any) -> Trace:
    """The run's trace (read once per process and per window)."""
    key = tuple(
        _get(options, name)
        for name in ("trace", "trace_format", "trace_start_s", "trace_duration_s", "trace_max_requests", "block_tokens")
    )
    trace = _LOADED.get(key)
    if trace is None:
        trace = _LOADED[key] = load_trace(
            key[0], format=key[1], start_s=key[2], duration_s=key[3], max_requests=key[4], block_tokens=key[5]
        )
    return trace


@dataclass
class Session:
    """One conversation of the trace in this process: its messages and whether a turn is in flight."""

    history: list[dict[str, Any]] = field(default_factory=list)
    turn_done: Event | None = None


class TraceReplay(Extension):
    """The process's trace, prompt maker and conversations (``replay_for(plugin)``)."""

    def __init__(self, plugin: LLMLoadPlugin) -> None:
        self.plugin = plugin
        self._trace: Trace | None = None
        self._text: TextMaker | None = None
        self.sessions: dict[str, Session] = {}

    @property
    def trace(self) -> Trace:
        if self._trace is None:
            self._trace = trace_of(self.plugin.options)
        return self._trace

    @property
    def text(self) -> TextMaker:
        if self._text is None:
            options = self.plugin.options
            self._text = load_text_maker(options.tokenizer, seed=options.seed)
        return self._text

    def request(self, index: int) -> TraceRequest:
        return self.trace.requests[index]

    def prompt(self, row: TraceRequest, rng: random.Random) -> str:
        """The row's prompt: its text, or text of its input length with its blocks as leading text."""
        if row.prompt is not None:
            return row.prompt
        return self.text.prompt(
            max(row.input_tokens or 1, self.text.special_tokens + 1),
            hash_ids=row.hash_ids,
            block_tokens=self.plugin.options.block_tokens,
            rng=rng,
        )

    def begin_turn(self, name: str) -> Session:
        """Wait until the previous turn of session ``name`` has finished; mark this one in flight."""
        from gevent.event import Event

        session = self.sessions.setdefault(name, Session())
        while session.turn_done is not None and not session.turn_done.is_set():
            session.turn_done.wait(timeout=SESSION_WAIT_S)
            if not session.turn_done.is_set():
                break
        session.turn_done = Event()
        return session

    @staticmethod
    def end_turn(session: Session, question: str, answer: str | None) -> None:
        """Record a finished turn (its real answer is the next turn's context; a failed turn ends the context)."""
        if answer is None:
            session.history = []
        else:
            session.history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if session.turn_done is not None:
            session.turn_done.set()


def replay_for(plugin: LLMLoadPlugin) -> TraceReplay | None:
    """The process's trace replay (None without ``--llm-trace``)."""
    replay = plugin.extensions.get(TraceReplay)
    return replay if replay is not None and plugin.options.trace else None


def add_arguments(parser: Any) -> None:
    """The trace options live in ``llmload.options`` (validated with the other options)."""


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    plugin.extensions.add(TraceReplay(plugin))
