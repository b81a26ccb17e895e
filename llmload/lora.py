"""LoRA adapters: requests spread over several adapter names (the request's ``model``) by weight.

``--llm-lora name=weight,...`` (a missing weight is 1; the weight rule of the backends
file, ``llmload.weights``) makes every request of the process ask for the next adapter of
a smooth weighted round robin, so the shares are exact per process. The adapter is the
request's ``model``, and results group by model: each adapter is its own group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmload.extension import Extension
from llmload.weights import SmoothWeightedRoundRobin

if TYPE_CHECKING:
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin


class LoraAdapters(Extension):
    """The process's adapter picker for the run's ``--llm-lora``."""

    def __init__(self, plugin: LLMLoadPlugin) -> None:
        self.plugin = plugin
        self._picker: tuple[tuple[tuple[str, float], ...], SmoothWeightedRoundRobin[str]] | None = None

    def picker(self) -> SmoothWeightedRoundRobin[str] | None:
        adapters = self.plugin.options.lora
        if not adapters:
            return None
        if self._picker is None or self._picker[0] != adapters:
            self._picker = (adapters, SmoothWeightedRoundRobin(adapters))
        return self._picker[1]


def picker_for(plugin: LLMLoadPlugin) -> SmoothWeightedRoundRobin[str] | None:
    """The process's adapter picker (None without ``--llm-lora``)."""
    adapters = plugin.extensions.get(LoraAdapters)
    return adapters.picker() if adapters is not None else None


def add_arguments(parser: Any) -> None:
    """``--llm-lora`` lives in ``llmload.options`` (validated with the other options)."""


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    plugin.extensions.add(LoraAdapters(plugin))
