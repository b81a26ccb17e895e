"""Pick the one log line that explains why a server or an install failed.

vLLM's logs end in tracebacks and generic wrap-up lines ("Engine core
initialization failed. See root cause above."); pip's in progress bars. The
reason a user needs is usually the last ``SomethingError: message`` line that
is not such a wrap-up, with vLLM's ``(EngineCore pid=1) ERROR 11-21 15:00:00
[file.py:12]`` prefix and terminal colours removed.
"""

from __future__ import annotations

import re
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# "(EngineCore_DP0 pid=123) " then "ERROR 11-21 15:00:00 [core.py:708] " (vLLM's logger).
_PROCESS_PREFIX = re.compile(r"^\([\w.-]+ pid=\d+\)\s*")
_LOG_PREFIX = re.compile(
    r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+(?:\[[^\]]*\]\s*)?"
)
_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Exit|Interrupt)\b:?")
_GENERIC = (
    "see root cause above",
    "see stack trace above",
    "the above exception was the direct cause",
    "during handling of the above exception",
    "engine core initialization failed",
    "engine core proc",
)
_NOISE_START = (
    "traceback (most recent call last)",
    'file "',
    "^",
    "~",
    "│",
    "╭",
    "╰",
    "[notice]",
    "warnings.warn",
    "nanobind:",
    "- ",
    "see https://nanobind",
)
_NOISE_ANYWHERE = ("warning:", "leaked semaphore", "leaked shared_memory")


def clean_line(line: str) -> str:
    """Strip terminal colours and vLLM's process and logger prefixes from one log line."""
    line = _ANSI.sub("", line).rstrip()
    line = _PROCESS_PREFIX.sub("", line.lstrip())
    return _LOG_PREFIX.sub("", line).strip()


def pick_reason(lines: list[str]) -> str:
    """Return the most explanatory line of a failed run's log, or "" when there is none."""
    raw = [_ANSI.sub("", line).rstrip() for line in lines]
    cleaned = [clean_line(line) for line in raw]
    for index in range(len(cleaned) - 1, -1, -1):
        line = cleaned[index]
        lowered = line.lower()
        if line and _ERROR_LINE.match(line) and not any(generic in lowered for generic in _GENERIC):
            return _shorten(" ".join([line, *_details(raw, cleaned, index + 1)]))
    cleaned = [line for line in cleaned if line]
    for line in reversed(cleaned):
        lowered = line.lower()
        if (
            not lowered.startswith(_NOISE_START)
            and not any(noise in lowered for noise in _NOISE_ANYWHERE)
            and not any(generic in lowered for generic in _GENERIC)
        ):
            return _shorten(line)
    return _shorten(cleaned[-1]) if cleaned else ""


def _details(raw: list[str], cleaned: list[str], start: int) -> list[str]:
    """Return the indented lines that continue an error (pydantic lists its errors below the headline)."""
    details = []
    for line, clean in zip(raw[start:], cleaned[start:], strict=True):
        if not line[:1].isspace() or not clean or clean.startswith(("For further information", 'File "')):
            break
        details.append(clean)
    return details


def last_meaningful_line(path: Path | str, *, max_bytes: int = 256 * 1024) -> str:
    """Return the most explanatory line among the last ``max_bytes`` of a log file."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    # pip draws progress bars with carriage returns: keep only each line's last state.
    lines = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return pick_reason(lines)


def _shorten(line: str, limit: int = 400) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."
