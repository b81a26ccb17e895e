"""The cache lock that keeps concurrent runs from installing or building twice."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from llmload.target._lock import cache_lock

HOLD = """
import fcntl, sys, time
with open(sys.argv[1], "a+") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_uncontended_lock_says_nothing(tmp_path: Path):
    said = []
    with cache_lock(tmp_path / "sub" / "x.lock", what="testing", say=said.append):
        assert (tmp_path / "sub" / "x.lock").exists()
    assert said == []


def test_waits_for_another_process_and_says_so(tmp_path: Path):
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), "1.0"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        said = []
        started = time.monotonic()
        with cache_lock(lock, what="installing vLLM", say=said.append):
            waited = time.monotonic() - started
        assert waited > 0.5, "got the lock while the other process held it"
        assert said == [f"llmload target: waiting for another llmload run that is installing vLLM ({lock})"]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
