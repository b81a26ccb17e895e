"""What llmload's extensions send from workers to the master, through one helper with one guard.

Locust's workers report every 3 s (``report_to_master``); the master receives
each report in ``worker_report``, in one greenlet. Each extension that ships a
delta adds one ``Section`` here: ``ship()`` returns this report's data (or
None: nothing to send) and resets its delta; ``merge(worker_id, data)`` folds
it in on the master. Custom messages (``register_message``) go through the
same guard: a malformed report or message is logged as one warning and
dropped, and never breaks the master's message loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from locust.env import Environment

logger = logging.getLogger("llmload")

MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


@dataclass(frozen=True)
class Section:
    """One extension's part of each worker report."""

    key: str
    what: str
    ship: Callable[[], Any]
    merge: Callable[[str, Any], None]


class Wire:
    """The worker-to-master channel of one Locust process."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.sections: list[Section] = []
        environment.events.report_to_master.add_listener(self._on_report_to_master)
        environment.events.worker_report.add_listener(self._on_worker_report)

    def add(self, key: str, *, what: str, ship: Callable[[], Any], merge: Callable[[str, Any], None]) -> None:
        """Ship ``ship()`` under ``key`` in every worker report; merge it on the master with ``merge``."""
        self.sections.append(Section(key, what, ship, merge))

    def register_message(
        self, name: str, handler: Callable[[str, Any], None], *, what: str, concurrent: bool = False
    ) -> None:
        """Handle the custom message ``name`` as ``handler(sender_id, data)``, guarded."""
        runner = self.environment.runner
        if runner is None:
            return

        def on_message(environment: Any, msg: Any, **_kwargs: Any) -> None:
            self.guarded(what, str(getattr(msg, "node_id", "") or ""), handler, msg.data)

        runner.register_message(name, on_message, concurrent=concurrent)

    @staticmethod
    def guarded(what: str, worker_id: str, merge: Callable[[str, Any], None], data: Any) -> None:
        try:
            merge(worker_id, data)
        except MALFORMED as exc:
            logger.warning("llmload: ignored a malformed %s from worker %s (%s)", what, worker_id, exc)

    def _on_report_to_master(self, client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
        for section in self.sections:
            shipped = section.ship()
            if shipped is not None:
                data[section.key] = shipped

    def _on_worker_report(self, client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
        for section in self.sections:
            if section.key in data:
                self.guarded(section.what, client_id, section.merge, data[section.key])
