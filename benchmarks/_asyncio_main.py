"""Shared start-up of the benchmark's asyncio processes (truth server, reference client)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run_main(coro: Coroutine[Any, Any, Any]) -> None:
    """Raise the open-file limit (1,000 streams need as many sockets) and run ``coro``, on uvloop if installed."""
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        uvloop = None
    (uvloop.run if uvloop is not None else asyncio.run)(coro)
