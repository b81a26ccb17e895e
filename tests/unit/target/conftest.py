"""Fixtures for the target tests: a fake vLLM interpreter and a private cache directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

FAKE = Path(__file__).with_name("fake_vllm.py")


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """Return an executable that answers like the vLLM venv's Python (see fake_vllm.py)."""
    wrapper = tmp_path / "fake-venv" / "bin" / "python"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Return an empty cache directory, also set as $LLMLOAD_CACHE; clear the other target variables."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLMLOAD_CACHE", str(cache))
    for name in ("LLMLOAD_VLLM_PYTHON", "LLMLOAD_VLLM_PACKAGE", "FAKE_VLLM_FAIL", "FAKE_VLLM_BROKEN"):
        monkeypatch.delenv(name, raising=False)
    return cache


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


@pytest.fixture
def process_alive():
    """Return a check for a live process; an unreaped zombie (orphans wait for PID 1) counts as gone."""
    return _alive
