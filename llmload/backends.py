"""Several GPU backends in one run: the backends file, user assignment, and what results record.

``--llm-backends FILE`` names a TOML file with one ``[[backend]]`` table per
backend::

    [[backend]]
    name = "rtx3090"                        # label of its requests (the results' "backend")
    base_url = "http://10.0.0.5:8000"
    model = "meta-llama/Llama-3.1-8B-Instruct"   # optional: default, the first of /v1/models
    gpu = "RTX 3090 24GB"                   # optional, descriptive
    engine = "vLLM 0.8.5"                   # optional, descriptive
    quantization = "fp16"                   # optional, descriptive
    price_per_hour = 0.22                   # optional, USD per hour, for cost figures
    api_key_env = "RTX3090_API_KEY"         # optional: environment variable holding its API key
    weight = 1                              # optional: share of users (default 1)

Users are spread over the backends by weight, in a smooth weighted round
robin over the users each process starts (so 1:1 gives exactly alternating
users). API keys are read from the named environment variables and never
logged nor written; results record the rest under ``run.backends``.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from llmload.errors import ConfigError
from llmload.extension import Extension
from llmload.files import file_version
from llmload.weights import SmoothWeightedRoundRobin, check_not_all_zero, check_weight

if TYPE_CHECKING:
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

logger = logging.getLogger("llmload")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_KEYS = ("name", "base_url", "model", "gpu", "engine", "quantization", "price_per_hour", "api_key_env", "weight")
_STRINGS = ("name", "base_url", "model", "gpu", "engine", "quantization", "api_key_env")


@dataclass(frozen=True, slots=True)
class Backend:
    """One serving backend of the backends file."""

    name: str
    base_url: str
    model: str = ""
    gpu: str = ""
    engine: str = ""
    quantization: str = ""
    price_per_hour: float | None = None
    api_key_env: str = ""
    weight: float = 1.0

    @property
    def api_key(self) -> str:
        """The API key from the environment variable named by ``api_key_env`` ("" if unset)."""
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def describe(self) -> dict[str, Any]:
        """What results record about this backend (never the key itself)."""
        out = asdict(self)
        out["api_key_set"] = bool(self.api_key)
        return out


def _line_of(text: str, index: int) -> int:
    """Line number of the ``index``-th ``[[backend]]`` header (1-based), for error messages."""
    seen = -1
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().replace(" ", "").startswith("[[backend]]"):
            seen += 1
            if seen == index:
                return number
    return 1


def _parse(path: str, text: str) -> tuple[Backend, ...]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)".
        raise ConfigError(f"--llm-backends {path}: not valid TOML: {exc}") from None
    unknown_tables = sorted(set(doc) - {"backend"})
    if unknown_tables:
        raise ConfigError(f"--llm-backends {path}: unknown key {unknown_tables[0]!r}; expected [[backend]] tables")
    tables = doc.get("backend")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"--llm-backends {path}: no [[backend]] table")
    out: list[Backend] = []
    for index, table in enumerate(tables):
        where = f"--llm-backends {path} line {_line_of(text, index)}"
        unknown = sorted(set(table) - set(_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; expected {', '.join(_KEYS)}")
        for key in ("name", "base_url"):
            if not isinstance(table.get(key), str) or not table[key].strip():
                raise ConfigError(f"{where}: {key} is required (a non-empty string)")
        for key in _STRINGS:
            if key in table and not isinstance(table[key], str):
                raise ConfigError(f"{where}: {key} must be a string")
        for key in ("price_per_hour", "weight"):
            if table.get(key) is not None:
                check_weight(table[key], where=where, key=key)
        if not table["base_url"].startswith(("http://", "https://")):
            raise ConfigError(f"{where}: base_url must start with http:// or https://, got {table['base_url']!r}")
        backend = Backend(
            **{**table, "base_url": table["base_url"].rstrip("/"), "weight": float(table.get("weight", 1.0))}
        )
        if backend.name in {b.name for b in out}:
            raise ConfigError(f"{where}: duplicate backend name {backend.name!r}")
        out.append(backend)
    check_not_all_zero([b.weight for b in out], where=f"--llm-backends {path}")
    return tuple(out)


def load_backends(path: str, *, only: str = "") -> tuple[Backend, ...]:
    """Read the backends file (once per process) and keep those named in ``only`` (comma list), if given."""
    backends = _load_cached(path, file_version(path, option="--llm-backends"))
    if not only:
        return backends
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {b.name: b for b in backends}
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(f"--llm-backend: no backend {missing[0]!r} in {path}; expected one of {', '.join(known)}")
    return tuple(known[n] for n in names)


@lru_cache(maxsize=8)
def _load_cached(path: str, _mtime: int) -> tuple[Backend, ...]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--llm-backends {path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    return _parse(path, text)


class BackendPicker(SmoothWeightedRoundRobin[Backend]):
    """Each call of ``next`` returns the backend of the next user, in proportion to the weights."""

    def __init__(self, backends: tuple[Backend, ...]) -> None:
        super().__init__([(b, b.weight) for b in backends])
        self.backends = [b for b, _ in self.entries]


class BackendRoster(Extension):
    """The process's backends of ``--llm-backends`` and the picker that spreads users over them."""

    def __init__(self, plugin: LLMLoadPlugin) -> None:
        self.plugin = plugin
        self._picker: tuple[tuple[str, str], BackendPicker] | None = None

    def picker(self) -> BackendPicker | None:
        """The picker for the run's current ``--llm-backends`` (None without one)."""
        options = self.plugin.options
        if not options.backends:
            return None
        key = (options.backends, options.backend_names)
        if self._picker is None or self._picker[0] != key:
            self._picker = (key, BackendPicker(load_backends(options.backends, only=options.backend_names)))
        return self._picker[1]

    def on_test_start(self, environment: Environment, **_kwargs: Any) -> None:
        """On a headless master or local run, end the run with exit code 1 when a backend is unreachable."""
        plugin = self.plugin
        if plugin.is_worker or plugin.finished or not getattr(environment.parsed_options, "headless", False):
            return
        try:
            backends = (
                load_backends(plugin.options.backends, only=plugin.options.backend_names)
                if plugin.options.backends
                else ()
            )
        except ConfigError:
            return  # reported by the plugin's own option check
        from llmload.http_adapter import host_reachable  # gevent: not at import (llmload compare reads this module)

        unreachable = False
        for backend in backends:
            reason = host_reachable(backend.base_url)
            if reason is not None:
                logger.error("llmload: cannot reach %s: %s", backend.base_url, reason)
                unreachable = True
        if unreachable:
            plugin.abort_run(exit_code=1)


def picker_for(plugin: LLMLoadPlugin) -> BackendPicker | None:
    """Return the process's picker for the run's ``--llm-backends`` (None without one)."""
    roster = plugin.extensions.get(BackendRoster)
    return roster.picker() if roster is not None else None


def describe(options: Any) -> list[dict[str, Any]] | None:
    """The ``run.backends`` entry of the results: every backend used, without keys."""
    if not getattr(options, "backends", ""):
        return None
    return [b.describe() for b in load_backends(options.backends, only=options.backend_names)]


# -- Locust extension: reachability check at start ---------------------------------------------


def add_arguments(parser: Any) -> None:
    """The backends options live in ``llmload.options``; nothing to add."""


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    """Keep the backends and their picker; check at test start that every backend accepts connections."""
    roster = plugin.extensions.add(BackendRoster(plugin))
    environment.events.test_start.add_listener(roster.on_test_start)
    if not plugin.is_worker and environment.parsed_options is not None:
        try:
            options = plugin.options
            listed = load_backends(options.backends, only=options.backend_names) if options.backends else ()
        except ConfigError:
            return  # reported by the plugin's own option check
        from llmload.targets import warn_missing_keys  # targets imports this module

        warn_missing_keys(listed)
