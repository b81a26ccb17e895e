"""The run's targets: every serving endpoint a run sends to, known in one place.

A target is a backend label (what token metrics, the exporter, the results and
the report call it), its base URL and its API key. They come from
``--llm-backends`` (each ``[[backend]]``, its key from ``api_key_env``), or,
without a backends file, from ``--host`` and the user classes' ``host`` (key:
``--llm-api-key``). The users' client, the server-metrics scraper, the
exporter's backend series and the results all ask this module, so a backend
is scraped with the key its requests use and carries one label everywhere.
Keys live only here and in request headers: ``describe`` never includes them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmload.backends import Backend, load_backends
from llmload.render.text import redact_url

if TYPE_CHECKING:
    from llmload.options import LLMOptions
    from llmload.plugin import LLMLoadPlugin

logger = logging.getLogger("llmload")


@dataclass(frozen=True)
class Target:
    """One endpoint of the run."""

    label: str
    base_url: str
    api_key: str = field(default="", repr=False)
    backend: Backend | None = None
    """The backends file's entry (GPU, engine, price...), when the target comes from one."""

    @property
    def metrics_url(self) -> str:
        """The server's Prometheus page (vLLM and llama.cpp serve it next to the OpenAI paths)."""
        return self.base_url.rstrip("/") + "/metrics"

    def describe(self) -> dict[str, Any]:
        """What results and logs may show: never the key."""
        out: dict[str, Any] = {"label": self.label, "base_url": redact_url(self.base_url)}
        if self.backend is not None:
            out.update({k: v for k, v in self.backend.describe().items() if k not in ("name", "base_url")})
        else:
            out["api_key_set"] = bool(self.api_key)
        return out


def is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def for_backend(backend: Backend) -> Target:
    """The target of a backends-file entry (its key only from ``api_key_env``, never ``--llm-api-key``)."""
    return Target(label=backend.name, base_url=backend.base_url, api_key=backend.api_key, backend=backend)


def for_host(host: str, *, label: str | None, options: LLMOptions) -> Target:
    """The target of a host without a backends file: labelled by ``label`` or the URL itself."""
    return Target(label=label or host, base_url=host, api_key=options.api_key)


def run_targets(plugin: LLMLoadPlugin) -> dict[str, Target]:
    """Every target of the run now, by label."""
    options = plugin.options
    if options.backends:
        return {b.name: for_backend(b) for b in load_backends(options.backends, only=options.backend_names)}
    environment = plugin.environment
    out: dict[str, Target] = {}
    env_host = getattr(environment, "host", None) or getattr(environment.parsed_options, "host", None)
    for user_class in getattr(environment, "user_classes", None) or ():
        host = env_host or getattr(user_class, "host", None)
        if host and is_url(host):
            label = getattr(user_class, "backend", None) or host
            out.setdefault(label, for_host(host, label=label, options=options))
    if env_host and is_url(env_host) and all(t.base_url != env_host for t in out.values()):
        out.setdefault(env_host, for_host(env_host, label=None, options=options))
    for backend, _model, _user_class in list(plugin.store.groups):
        if backend not in out and is_url(backend):
            out[backend] = for_host(backend, label=None, options=options)
    return out


def warn_missing_keys(backends: tuple[Backend, ...]) -> list[str]:
    """Log one line per backend whose ``api_key_env`` names an unset variable; return those lines.

    llmload goes on without a key for that backend (a server without auth still answers;
    one with auth fails every request as http_4xx, which the results then show).
    """
    lines = []
    for backend in backends:
        if backend.api_key_env and not os.environ.get(backend.api_key_env):
            line = (
                f"llmload: backend {backend.name}: api_key_env {backend.api_key_env} is not set; "
                "its requests and /metrics scrapes go without an API key"
            )
            logger.warning(line)
            lines.append(line)
    return lines
