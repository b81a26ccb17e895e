"""Real Locust environments with llmload's plugin, for unit tests of the local, worker and master roles.

The plugin takes its role from its environment: a ``MasterRunner`` makes a
master, ``parsed_options.worker`` a worker, any other runner a local run. So a
test builds the environment of the role it needs, registers the plugin and
the extension modules it tests (as ``llmload.hooks`` does on Locust's
``init``), and drives them through Locust's events, as Locust does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType, SimpleNamespace
from typing import Any

import locust
from locust.env import Environment
from locust.event import EventHook, Events
from locust.rpc import Message
from locust.runners import STATE_INIT, MasterRunner
from locust.stats import RequestStats

from llmload.plugin import LLMLoadPlugin


class RecordingRunner:
    """The runner of a local or worker process, reduced to what llmload uses; records custom messages.

    Not a Locust ``MasterRunner`` or ``WorkerRunner``: with it the plugin is a local
    process, or a worker when ``parsed_options.worker`` is set.
    """

    def __init__(self, *, user_count: int = 0, state: str = STATE_INIT) -> None:
        self.user_count = user_count
        self.state = state
        self.environment: Environment | None = None
        self.handlers: dict[str, Any] = {}
        self.sent: list[tuple[str, Any, str | None]] = []
        """``(message type, data, client id)`` of every message sent, in order."""

    def register_message(self, msg_type: str, listener: Any, concurrent: bool = False) -> None:
        assert msg_type not in self.handlers, f"{msg_type} registered twice"
        self.handlers[msg_type] = listener

    def send_message(self, msg_type: str, data: Any = None, client_id: str | None = None) -> None:
        self.sent.append((msg_type, data, client_id))

    def deliver(self, msg_type: str, data: Any, *, sender: str = "master") -> None:
        """Hand a custom message to its registered listener, as Locust's message loop does."""
        self.handlers[msg_type](environment=self.environment, msg=Message(msg_type, data, sender))


def local_environment(parsed: Any = None, *, runner: Any = None, **kwargs: Any) -> Environment:
    """An environment of a local run (a worker when ``parsed.worker`` is true) with a ``RecordingRunner``."""
    environment = Environment(events=Events(), parsed_options=parsed, **kwargs)
    environment.runner = runner if runner is not None else RecordingRunner()
    environment.runner.environment = environment
    return environment


def worker_environment(**parsed: Any) -> Environment:
    """An environment of a worker process: ``parsed_options.worker`` is set."""
    return local_environment(SimpleNamespace(worker=True, **parsed))


@contextmanager
def master_environment(parsed: Any = None, **kwargs: Any) -> Iterator[Environment]:
    """An environment with a real Locust ``MasterRunner`` on a free port of 127.0.0.1, closed afterwards.

    Workers join with ``connect_worker``; nothing is listening behind their ids, so
    what the master sends them is lost unless the test records it.
    """
    if parsed is not None and not hasattr(parsed, "enable_rebalancing"):
        parsed.enable_rebalancing = False  # Locust's master reads it when a worker joins
    environment = Environment(events=Events(), parsed_options=parsed, **kwargs)
    runner = environment.create_master_runner(master_bind_host="127.0.0.1", master_bind_port=0)
    try:
        yield environment
    finally:
        # What MasterRunner.quit() does, less its stop (the test decides about test_stop) and its
        # half-second wait for the last reports of workers that do not exist.
        runner.greenlet.kill(block=True)
        context = runner.server.socket.context
        runner.server.close(linger=0)
        context.term()


def connect_worker(runner: MasterRunner, client_id: str, *, users: dict[str, int] | None = None) -> None:
    """Make ``client_id`` join the master, through Locust's own message handling.

    The worker is ready (no users), or running ``users`` (user class name -> count).
    """
    runner.handle_message(client_id, Message("client_ready", locust.__version__, client_id))
    if users is not None:
        data = {"user_classes_count": users, "user_count": sum(users.values())}
        runner.handle_message(client_id, Message("spawning_complete", data, client_id))


def worker_report(data: dict[str, Any] | None = None, *, users: dict[str, int] | None = None) -> dict[str, Any]:
    """A worker's report as a real master receives it: Locust's request stats and user counts, plus ``data``."""
    stats = RequestStats()
    return {
        "stats": stats.serialize_stats(),
        "stats_total": stats.total.get_stripped_report(),
        "errors": stats.serialize_errors(),
        "user_classes_count": dict(users or {}),
        **(data or {}),
    }


def new_plugin(environment: Environment, *extensions: ModuleType) -> LLMLoadPlugin:
    """Register llmload's plugin and the given extension modules on ``environment``, as on Locust's ``init``."""
    plugin = LLMLoadPlugin(environment).register()
    for module in extensions:
        module.register(environment, plugin)
    return plugin


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Uncaught exception in event handler"):
            self.messages.append(record.getMessage())


def fire(hook: EventHook, **kwargs: Any) -> None:
    """Fire a Locust event; a listener that raises fails the test (Locust itself only logs it)."""
    collector = _Collector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        hook.fire(**kwargs)
    finally:
        root.removeHandler(collector)
    assert not collector.messages, "\n".join(collector.messages)
