"""The typed seam through which extensions plug into llmload's plugin.

An extension is a module listed in ``llmload.hooks.EXTENSIONS`` that provides
the two functions of ``ExtensionModule``: ``add_arguments(parser)`` (its
``--llm-*`` options, at import time) and ``register(environment, plugin)``
(on Locust's ``init``). ``register`` decides on which kind of process it does
anything and, when it keeps state, adds one ``Extension`` object to the
plugin's ``extensions`` registry. Through that object, and only through it,
the plugin learns what the extension contributes:

* ``results_key`` / ``results_section()``: a section of the results document;
* ``finished(doc)``: the finished results document, once per run.

Workers' deltas go through the plugin's ``wire`` (``llmload.wire``), and
background greenlets through its ``supervisor`` (``llmload.supervisor``).
Other extensions are found with ``plugin.extensions.get(Kind)``, typed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Protocol, TypeVar

from llmload.errors import ConfigError

if TYPE_CHECKING:
    from argparse import ArgumentParser

    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

# The results document's extension sections, in order; a section no extension fills is null.
RESULT_SECTIONS = ("server", "generator", "arrivals", "capacity", "soak", "phases")


class Extension:
    """What the plugin asks of an extension object; every hook has a do-nothing default."""

    results_key: ClassVar[str | None] = None
    """The results document's section this extension fills (one of ``RESULT_SECTIONS``), or None."""

    def results_section(self) -> Any:
        """Return this extension's section of the results document (None: nothing to report)."""
        return None

    def finished(self, doc: dict[str, Any]) -> None:
        """Receive the run's finished results document (on the master or a local process)."""


class ExtensionModule(Protocol):
    """A module listed in ``llmload.hooks.EXTENSIONS``."""

    def add_arguments(self, parser: ArgumentParser) -> None: ...

    def register(self, environment: Environment, plugin: LLMLoadPlugin) -> None: ...


E = TypeVar("E", bound=Extension)


class Registry:
    """The extensions of one plugin, at most one object per class."""

    def __init__(self) -> None:
        self._items: dict[type[Extension], Extension] = {}

    def add(self, extension: E) -> E:
        """Register ``extension``; a second object of the same class replaces the first."""
        self._items[type(extension)] = extension
        return extension

    def get(self, kind: type[E]) -> E | None:
        """Return the registered extension of class ``kind``, if any."""
        found = self._items.get(kind)
        return found if isinstance(found, kind) else None

    def __iter__(self) -> Iterator[Extension]:
        return iter(list(self._items.values()))

    def results_sections(self) -> dict[str, Any]:
        """Every section of ``RESULT_SECTIONS``: an extension's, or None."""
        sections: dict[str, Any] = dict.fromkeys(RESULT_SECTIONS)
        for extension in self:
            if extension.results_key is not None:
                sections[extension.results_key] = extension.results_section()
        return sections


def exit_on_config_error(exc: ConfigError) -> NoReturn:
    """Report a bad option found at start-up as one line and exit with code 2."""
    print(f"llmload: error: {exc}", file=sys.stderr)
    sys.exit(2)
