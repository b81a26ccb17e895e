"""Supervised background greenlets: a crash is logged once, listed in the results, and fails the run.

Samplers and scrapers run for the whole test beside the users; if one dies
unnoticed, its figures silently stop. Every background greenlet of llmload is
started through ``Supervisor.spawn``: it runs in one ``gevent.pool.Group``;
an exception is logged once with its traceback, added to ``errors`` (the
results' ``run.errors``) and sets Locust's process exit code to 1.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.pool import Group

if TYPE_CHECKING:
    from locust.env import Environment

logger = logging.getLogger("llmload")

PAUSE_S = 0.0001


def pause() -> None:
    """Let the users' greenlets and sockets have a turn in the middle of a long background computation.

    A short timer, not ``gevent.sleep(0)``: ``sleep(0)`` only runs the greenlets already runnable,
    without a turn of the event loop, so the sockets of the streams being measured would wait all
    the same (measured: a live-figures scrape each second took a 16-user run's event-loop lag p99
    from 3 ms to 12-17 ms with ``sleep(0)``, and left it at 3 ms with this timer).
    """
    gevent.sleep(PAUSE_S)


class Supervisor:
    """The background greenlets of one Locust process."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.group = Group()
        self.errors: list[dict[str, Any]] = []
        """Crashes so far: ``{"task", "error", "at"}`` each."""

    def spawn(self, name: str, func: Callable[..., object], *args: Any) -> gevent.Greenlet:
        """Run ``func(*args)`` in a supervised greenlet named ``name``."""
        return self.group.spawn(self._run, name, func, args)

    def _run(self, name: str, func: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            func(*args)
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            self.crashed(name, exc)

    def crashed(self, name: str, exc: BaseException) -> None:
        """Record a crash of background task ``name``: log it, list it, and fail the run."""
        logger.error(
            "llmload: background task %r crashed; its figures stop here:\n%s",
            name,
            "".join(traceback.format_exception(exc)).rstrip(),
        )
        self.errors.append({"task": name, "error": f"{type(exc).__name__}: {exc}", "at": time.time()})
        self.environment.process_exit_code = 1

    def kill_all(self) -> None:
        """Stop every background greenlet (at quit), except the one calling, which may be quitting."""
        current = gevent.getcurrent()
        for greenlet in list(self.group):
            if greenlet is not current:
                greenlet.kill(block=False)
