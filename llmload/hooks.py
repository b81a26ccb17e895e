"""Registration with Locust's global events: the one thing llmload does at import time.

Locust requires command-line options to be registered when the locustfile is
imported; the plugin itself is created per environment on ``init``.
"""

from __future__ import annotations

from typing import Any

from locust import events

from llmload import exporter
from llmload.options import add_arguments
from llmload.plugin import LLMLoadPlugin


@events.init_command_line_parser.add_listener
def _on_init_command_line_parser(parser: Any, **_kwargs: Any) -> None:
    add_arguments(parser)
    exporter.add_arguments(parser)


@events.init.add_listener
def _on_init(environment: Any, **_kwargs: Any) -> None:
    if getattr(environment, "llmload", None) is None:
        plugin = LLMLoadPlugin().register(environment)
        exporter.register(environment, plugin)
