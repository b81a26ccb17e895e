"""An exclusive file lock, so concurrent runs sharing one cache do not install or build twice."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def cache_lock(path: Path, *, what: str, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed); tell ``say`` once if another run holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if say is not None:
                say(f"llmload target: waiting for another llmload run that is {what} ({path})")
            while True:
                # Polling rather than a blocking flock keeps Ctrl-C responsive (and gevent's hub running).
                time.sleep(0.5)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    continue
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
