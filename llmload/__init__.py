"""llmload: load-test LLM serving endpoints with Locust, token by token.

Import it in a locustfile and subclass a user class::

    from llmload import ChatbotUser

    class Chat(ChatbotUser):
        pass

Importing llmload registers its ``--llm-*`` options and its plugin with
Locust's events; nothing else happens at import time.
"""

from llmload import hooks as _hooks  # noqa: F401  (registers Locust event listeners)
from llmload._version import __version__
from llmload.client import HostCapabilities, LLMClient
from llmload.errors import ConfigError, LLMLoadError, LLMRequestError, TargetError
from llmload.metrics import Distribution, GroupMetrics, MetricsStore
from llmload.options import LLMOptions
from llmload.plugin import LLMLoadPlugin, get_plugin
from llmload.record import RequestRecord
from llmload.users import ChatbotUser, LLMUser, SummarizationUser

__all__ = [
    "ChatbotUser",
    "ConfigError",
    "Distribution",
    "GroupMetrics",
    "HostCapabilities",
    "LLMClient",
    "LLMLoadError",
    "LLMLoadPlugin",
    "LLMOptions",
    "LLMRequestError",
    "LLMUser",
    "MetricsStore",
    "RequestRecord",
    "SummarizationUser",
    "TargetError",
    "__version__",
    "get_plugin",
]
