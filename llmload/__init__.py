"""llmload: load-test LLM serving endpoints with Locust, token by token.

Import it in a locustfile and subclass a user class::

    from llmload import ChatbotUser

    class Chat(ChatbotUser):
        pass

Names are loaded on first use (PEP 562), so tools that need no Locust, such
as ``llmload sim``, never import it (Locust monkey-patches the process with
gevent on import). Importing a user class registers llmload's ``--llm-*``
options and plugin with Locust's events; nothing else happens at import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmload._version import __version__

_EXPORTS = {
    "AgentUser": "llmload.request_kinds",
    "CapacityShape": "llmload.capacity",
    "ChatbotUser": "llmload.users",
    "ConfigError": "llmload.errors",
    "Distribution": "llmload.distribution",
    "EmbeddingsUser": "llmload.request_kinds",
    "GroupMetrics": "llmload.metrics",
    "HostCapabilities": "llmload.client",
    "LLMClient": "llmload.client",
    "LLMLoadError": "llmload.errors",
    "LLMLoadPlugin": "llmload.plugin",
    "LLMOptions": "llmload.options",
    "LLMRequestError": "llmload.errors",
    "LLMUser": "llmload.users",
    "MetricsStore": "llmload.metrics",
    "MultiTurnChatUser": "llmload.users",
    "ReasoningChatUser": "llmload.request_kinds",
    "RequestRecord": "llmload.record",
    "RerankUser": "llmload.request_kinds",
    "ScoreUser": "llmload.request_kinds",
    "StructuredOutputUser": "llmload.request_kinds",
    "SummarizationUser": "llmload.users",
    "TargetError": "llmload.errors",
    "ToolCallUser": "llmload.request_kinds",
    "VisionChatUser": "llmload.request_kinds",
    "get_plugin": "llmload.plugin",
}

__all__ = [
    "AgentUser",
    "CapacityShape",
    "ChatbotUser",
    "ConfigError",
    "Distribution",
    "EmbeddingsUser",
    "GroupMetrics",
    "HostCapabilities",
    "LLMClient",
    "LLMLoadError",
    "LLMLoadPlugin",
    "LLMOptions",
    "LLMRequestError",
    "LLMUser",
    "MetricsStore",
    "MultiTurnChatUser",
    "ReasoningChatUser",
    "RequestRecord",
    "RerankUser",
    "ScoreUser",
    "StructuredOutputUser",
    "SummarizationUser",
    "TargetError",
    "ToolCallUser",
    "VisionChatUser",
    "__version__",
    "get_plugin",
]

if TYPE_CHECKING:
    from llmload.capacity import CapacityShape
    from llmload.client import HostCapabilities, LLMClient
    from llmload.distribution import Distribution
    from llmload.errors import ConfigError, LLMLoadError, LLMRequestError, TargetError
    from llmload.metrics import GroupMetrics, MetricsStore
    from llmload.options import LLMOptions
    from llmload.plugin import LLMLoadPlugin, get_plugin
    from llmload.record import RequestRecord
    from llmload.request_kinds import (
        AgentUser,
        EmbeddingsUser,
        ReasoningChatUser,
        RerankUser,
        ScoreUser,
        StructuredOutputUser,
        ToolCallUser,
        VisionChatUser,
    )
    from llmload.users import ChatbotUser, LLMUser, MultiTurnChatUser, SummarizationUser


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmload' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
