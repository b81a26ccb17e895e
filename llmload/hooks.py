"""Registration with Locust's global events: the one thing llmload does at import time.

Locust requires command-line options to be registered when the locustfile is
imported; the plugin itself is created per environment on ``init``. Each
module in ``EXTENSIONS`` is an ``llmload.extension.ExtensionModule``: it adds
its options, and on ``init`` registers with the plugin (deciding itself on
which kind of process, master, worker or local, it does anything).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast

import gevent
from locust import events

from llmload.options import add_arguments
from llmload.plugin import LLMLoadPlugin

if TYPE_CHECKING:
    from locust.env import Environment

    from llmload.extension import ExtensionModule

EXTENSIONS = (
    "llmload.selfcheck",
    "llmload.report",
    "llmload.webui",
    "llmload.live",
    "llmload.exporter",
    "llmload.server_metrics",
    "llmload.arrivals",
    "llmload.trace_replay",
    "llmload.backends",
    "llmload.lora",
    "llmload.capacity",
    "llmload.soak",
    "llmload.steering",
)


def extension_modules() -> list[ExtensionModule]:
    """Import and return every extension module, in registration order."""
    return [cast("ExtensionModule", importlib.import_module(name)) for name in EXTENSIONS]


@events.init_command_line_parser.add_listener
def _on_init_command_line_parser(parser: Any, **_kwargs: Any) -> None:
    add_arguments(parser)
    for extension in extension_modules():
        extension.add_arguments(parser)


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: Any) -> None:
    if getattr(environment, "llmload", None) is None:
        plugin = LLMLoadPlugin(environment).register()
        for extension in extension_modules():
            extension.register(environment, plugin)
    # Locust arms --run-time with gevent.spawn_later, which counts from the event loop's cached
    # clock; after a start-up that never yielded (slow imports on a loaded machine, loading a
    # dataset) that clock is stale and a short run ends at once, with no request sent.
    gevent.get_hub().loop.update_now()
