"""The run's input files (backends, datasets) are parsed once per process and again only when they change.

A loader caches its parsed result keyed by ``(path, file_version(path))``:
the file is read again only when it changed (a web-UI run can point at an
edited file), and each worker reads it once.
"""

from __future__ import annotations

import os

from llmload.errors import ConfigError


def file_version(path: str, *, option: str) -> int:
    """Return the file's modification time in ns (the cache key); a missing or unreadable file is a ConfigError."""
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise ConfigError(f"{option} {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot read ({exc.strerror})") from None
