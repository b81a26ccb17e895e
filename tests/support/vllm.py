"""A real vLLM for a test module: started once, skipped where it cannot run (never in CI), stopped after."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from llmload.target.process import VLLMProcess


@contextmanager
def running_vllm(make: Callable[[], VLLMProcess]) -> Iterator[VLLMProcess]:
    """Build the server with ``make`` (which may prepare files first) and start it; stop it on exit."""
    from llmload.errors import TargetError

    try:
        server = make()
        server.start()
    except TargetError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"vLLM could not be installed or started here: {exc}")
    try:
        yield server
    finally:
        server.stop()
