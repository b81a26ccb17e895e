"""Trace files for trace replay (``--llm-trace FILE``): when each request arrives and how long it is.

A trace is read once into a :class:`Trace`, a list of :class:`TraceRequest`
sorted by arrival time. Four formats are understood (``--llm-trace-format``,
``auto`` by default):

* **mooncake** -- JSON Lines, one object per line, as in the Mooncake traces::

      {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48]}

  ``timestamp``: arrival time in **milliseconds** (integer or float);
  ``input_length``, ``output_length``: token counts (integers >= 0);
  ``hash_ids`` (optional, empty when absent): a list of integers >= 0, the ids
  of the prompt's blocks of ``block_tokens`` tokens (512 in the published
  traces; the last block may be partial). Two prompts whose leading ids are
  equal share that prefix. The count is expected to be
  ``ceil(input_length / block_tokens)`` but is not checked;
* **azure** -- the Azure LLM inference traces (2023 and 2024, e.g.
  ``AzureLLMInferenceTrace_conv.csv``): CSV with the header
  ``TIMESTAMP,ContextTokens,GeneratedTokens`` (columns found by name, in any
  order). ``TIMESTAMP`` is ``YYYY-MM-DD HH:MM:SS[.fraction]`` (``T`` also
  accepted between date and time; any number of fractional digits, up to
  nanoseconds kept; an optional ``Z`` or ``+HH:MM``/``-HH:MM`` suffix), read
  exactly (integer nanoseconds); ``ContextTokens`` is the input length,
  ``GeneratedTokens`` the output length;
* **burstgpt** -- the BurstGPT trace: CSV with the header
  ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``.
  ``Timestamp``: seconds (a number) from the trace's start; ``Request tokens``
  is the input length, ``Response tokens`` the output length. A row with 0
  response tokens is a failed request: it is validated, counted in
  ``Trace.failed_rows`` and skipped. ``Model``, ``Total tokens`` and
  ``Log Type`` are not used;
* **llmload** -- our own JSON Lines: ``timestamp`` (seconds, a number,
  required); exactly one of ``prompt`` (a non-empty string, sent as is) and
  ``input_tokens`` (an integer >= 1, a synthetic prompt of that length);
  ``output_tokens`` (an integer >= 1, optional; alias ``max_tokens``, not
  both); ``session`` (optional, a non-empty string or an integer, stored as a
  string: the rows of one session are the turns of one conversation, in time
  order); ``hash_ids`` (optional, as in mooncake). Other keys are ignored.

``auto`` picks the format from the first non-empty line: a JSON object is
mooncake when it has ``input_length``, llmload otherwise; a CSV header with
``ContextTokens`` is azure, one with ``Response tokens`` burstgpt.

Times: the origin is the **smallest** timestamp of the file (its first row's in
a sorted file; failed rows included), and a row's time ``t`` is its timestamp
minus the origin, in seconds. The window keeps rows with
``start_s <= t < start_s + duration_s`` (no upper bound without a duration),
each at ``at_s = t - start_s``, in time order (a stable sort: rows with equal
times keep their file order), then at most ``max_requests``, the earliest.

Every problem is a one-line :class:`~llmload.errors.ConfigError`: a malformed
row names ``path:line`` (1-based line of the file); an unreadable, empty or
unrecognised file, or a window that keeps no request, names the path.
Blank lines are skipped everywhere.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from llmload.errors import ConfigError

FORMATS = ("auto", "mooncake", "azure", "burstgpt", "llmload")

_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_BURSTGPT_COLUMNS = ("Timestamp", "Request tokens", "Response tokens")
_AZURE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:(Z)|([+-])(\d{2}):?(\d{2}))?"
)
_NS_PER_S = 1_000_000_000

# One parsed data row: (raw timestamp, line, input_tokens, output_tokens, prompt, hash_ids, session).
_Row = tuple[float, int, int | None, int | None, str | None, tuple[int, ...], str | None]


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace: when it arrives (trace time) and what it asks for."""

    at_s: float  # seconds after the window's start (trace time, before any speed factor), >= 0
    input_tokens: int | None  # prompt length in tokens (None when the row gives a prompt text instead)
    output_tokens: int | None  # output length (max_tokens) in tokens; None: not given (llmload JSONL only)
    prompt: str | None = None  # llmload JSONL only
    hash_ids: tuple[int, ...] = ()  # mooncake (and llmload JSONL, optional): ids of the prompt's blocks
    session: str | None = None  # llmload JSONL only: conversation id (turns of one session are in time order)
    line: int = 0  # 1-based line number in the file (for messages)


@dataclass(frozen=True)
class Trace:
    """The requests of a trace file's window, in time order."""

    path: str
    format: str  # "mooncake" | "azure" | "burstgpt" | "llmload"
    requests: list[TraceRequest]  # sorted by at_s (stable: ties keep file order)
    failed_rows: int  # rows the format marks as failed and were skipped (BurstGPT: 0 response tokens)
    rows: int  # data rows read, failed ones included (before window and cap)
    duration_s: float  # at_s of the last request (0 for one request)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _row_error(path: str, line: int, message: str) -> ConfigError:
    return ConfigError(f"{path}:{line}: {message}")


# -- JSON Lines ------------------------------------------------------------------------------


def _json_lines(path: str, data: bytes) -> list[tuple[int, dict[str, Any]]]:
    objects = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else "syntax error"
            raise _row_error(path, number, f"not valid JSON ({reason})") from None
        if not isinstance(obj, dict):
            raise _row_error(path, number, f"expected a JSON object, got {type(obj).__name__}")
        objects.append((number, obj))
    return objects


def _json_time(path: str, line: int, obj: dict[str, Any], unit: str) -> float:
    if "timestamp" not in obj:
        raise _row_error(path, line, f'missing "timestamp" ({unit})')
    value = obj["timestamp"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _row_error(path, line, f"timestamp must be a number ({unit}), got {_show(value)}")
    return value


def _json_length(path: str, line: int, obj: dict[str, Any], key: str, *, least: int) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _row_error(path, line, f"{key} must be an integer >= {least}, got {_show(value)}")
    return value


def _hash_ids(path: str, line: int, obj: dict[str, Any]) -> tuple[int, ...]:
    value = obj.get("hash_ids")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
    ):
        raise _row_error(path, line, f"hash_ids must be a list of integers >= 0, got {_show(value)}")
    return tuple(value)


def _parse_mooncake(path: str, data: bytes) -> tuple[list[_Row], float, int]:
    rows: list[_Row] = []
    for line, obj in _json_lines(path, data):
        timestamp = _json_time(path, line, obj, "milliseconds")
        for key in ("input_length", "output_length"):
            if key not in obj:
                raise _row_error(path, line, f'missing "{key}"')
        input_tokens = _json_length(path, line, obj, "input_length", least=0)
        output_tokens = _json_length(path, line, obj, "output_length", least=0)
        rows.append((timestamp, line, input_tokens, output_tokens, None, _hash_ids(path, line, obj), None))
    return rows, 1000.0, 0


def _parse_llmload(path: str, data: bytes) -> tuple[list[_Row], float, int]:
    rows: list[_Row] = []
    for line, obj in _json_lines(path, data):
        timestamp = _json_time(path, line, obj, "seconds")
        prompt, input_tokens = obj.get("prompt"), None
        if "input_tokens" in obj:
            if prompt is not None:
                raise _row_error(path, line, 'give either "prompt" or "input_tokens", not both')
            input_tokens = _json_length(path, line, obj, "input_tokens", least=1)
        elif prompt is None:
            raise _row_error(path, line, 'missing "prompt" or "input_tokens"')
        elif not isinstance(prompt, str) or not prompt:
            raise _row_error(path, line, f"prompt must be a non-empty string, got {_show(prompt)}")
        output_tokens = None
        if "output_tokens" in obj and "max_tokens" in obj:
            raise _row_error(path, line, 'give either "output_tokens" or "max_tokens", not both')
        for key in ("output_tokens", "max_tokens"):
            if key in obj:
                output_tokens = _json_length(path, line, obj, key, least=1)
        session = obj.get("session")
        if session is not None:
            if isinstance(session, bool) or not isinstance(session, (str, int)) or session == "":
                raise _row_error(path, line, f"session must be a non-empty string or an integer, got {_show(session)}")
            session = str(session)
        rows.append((timestamp, line, input_tokens, output_tokens, prompt, _hash_ids(path, line, obj), session))
    return rows, 1.0, 0


# -- CSV -------------------------------------------------------------------------------------


def _csv_rows(
    path: str, text: str, columns: tuple[str, ...], fmt: str
) -> tuple[list[tuple[int, list[str]]], list[int]]:
    """Return ``(line, cells)`` of each data row and the indexes of ``columns`` in the header."""
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    indexes: list[int] = []
    rows = []
    try:
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if header is None:
                header = [cell.strip() for cell in cells]
                folded = [cell.lower() for cell in header]
                missing = [name for name in columns if name.lower() not in folded]
                if missing:
                    raise _row_error(
                        path,
                        reader.line_num,
                        f"{fmt} header needs the columns {', '.join(columns)}; missing {', '.join(missing)}",
                    )
                indexes = [folded.index(name.lower()) for name in columns]
                continue
            if len(cells) != len(header):
                raise _row_error(
                    path, reader.line_num, f"expected {len(header)} columns ({','.join(header)}), got {len(cells)}"
                )
            rows.append((reader.line_num, cells))
    except csv.Error as exc:
        raise _row_error(path, reader.line_num, f"not valid CSV ({exc})") from None
    return rows, indexes


def _csv_length(path: str, line: int, column: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise _row_error(path, line, f"{column} must be an integer >= 0, got {_show(text)}") from None
    if value < 0:
        raise _row_error(path, line, f"{column} must be an integer >= 0, got {_show(text)}")
    return value


def _azure_time(path: str, line: int, text: str, days: dict[str, int]) -> int:
    """Return the timestamp in integer nanoseconds (``days`` caches each date's ordinal)."""

    def bad() -> ConfigError:
        return _row_error(path, line, f"unparsable TIMESTAMP {_show(text)}; expected YYYY-MM-DD HH:MM:SS[.fraction]")

    stripped = text.strip()
    match = _AZURE_TIME.fullmatch(stripped)
    if match is None:
        raise bad()
    year, month, day, hour, minute, second, fraction, _zulu, sign, off_h, off_m = match.groups()
    ordinal = days.get(stripped[:10])
    if ordinal is None:
        try:
            ordinal = days[stripped[:10]] = date(int(year), int(month), int(day)).toordinal()
        except ValueError:
            raise bad() from None
    h, m, s = int(hour), int(minute), int(second)
    if h > 23 or m > 59 or s > 59:
        raise bad()
    seconds = ordinal * 86400 + h * 3600 + m * 60 + s
    if sign is not None:
        offset = int(off_h) * 3600 + int(off_m) * 60
        seconds += -offset if sign == "+" else offset
    nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
    return seconds * _NS_PER_S + nanos


def _parse_azure(path: str, data: bytes) -> tuple[list[_Row], float, int]:
    records, (i_time, i_in, i_out) = _csv_rows(path, _decode(path, data), _AZURE_COLUMNS, "azure")
    days: dict[str, int] = {}
    rows: list[_Row] = []
    for line, cells in records:
        timestamp = _azure_time(path, line, cells[i_time], days)
        input_tokens = _csv_length(path, line, "ContextTokens", cells[i_in])
        output_tokens = _csv_length(path, line, "GeneratedTokens", cells[i_out])
        rows.append((timestamp, line, input_tokens, output_tokens, None, (), None))
    return rows, float(_NS_PER_S), 0


def _parse_burstgpt(path: str, data: bytes) -> tuple[list[_Row], float, int]:
    records, (i_time, i_in, i_out) = _csv_rows(path, _decode(path, data), _BURSTGPT_COLUMNS, "burstgpt")
    rows: list[_Row] = []
    failed = 0
    for line, cells in records:
        try:
            timestamp = float(cells[i_time])
        except ValueError:
            timestamp = math.nan
        if not math.isfinite(timestamp):
            raise _row_error(path, line, f"Timestamp must be a number of seconds, got {_show(cells[i_time])}")
        input_tokens = _csv_length(path, line, "Request tokens", cells[i_in])
        output_tokens = _csv_length(path, line, "Response tokens", cells[i_out])
        if output_tokens == 0:
            failed += 1
            # A failed row still counts for the origin: keep its time, mark it with line -line.
            rows.append((timestamp, -line, None, None, None, (), None))
            continue
        rows.append((timestamp, line, input_tokens, output_tokens, None, (), None))
    return rows, 1.0, failed


# -- loading ---------------------------------------------------------------------------------


def _decode(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _row_error(path, data[: exc.start].count(b"\n") + 1, "not UTF-8 text") from None


def _detect(path: str, data: bytes) -> str:
    for number, raw in enumerate(data.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(b"{"):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                reason = str(exc).splitlines()[0] if str(exc) else "syntax error"
                raise _row_error(path, number, f"not valid JSON ({reason})") from None
            return "mooncake" if isinstance(obj, dict) and "input_length" in obj else "llmload"
        header = _decode(path, line)
        if "ContextTokens" in header:
            return "azure"
        if "Response tokens" in header:
            return "burstgpt"
        break
    raise ConfigError(
        f"{path}: unrecognised trace format; expected mooncake or llmload JSON Lines, "
        f"or an azure (TIMESTAMP,ContextTokens,GeneratedTokens) or burstgpt (Timestamp,...,Response tokens,...) CSV"
    )


_PARSERS = {"mooncake": _parse_mooncake, "azure": _parse_azure, "burstgpt": _parse_burstgpt, "llmload": _parse_llmload}


def load_trace(
    path: str,
    *,
    format: str = "auto",
    start_s: float = 0.0,
    duration_s: float | None = None,
    max_requests: int | None = None,
    block_tokens: int = 512,
) -> Trace:
    """Read a trace file and keep the window ``[start_s, start_s + duration_s)`` (see the module docstring).

    ``block_tokens`` is the number of tokens of each ``hash_ids`` block (it is
    validated, not used to check the rows).
    """
    if format not in FORMATS:
        raise ConfigError(f"--llm-trace-format: expected one of {', '.join(FORMATS)}, got {format!r}")
    if not math.isfinite(start_s) or start_s < 0:
        raise ConfigError(f"{path}: the trace window's start must be >= 0 s, got {start_s!r}")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ConfigError(f"{path}: the trace window's duration must be > 0 s, got {duration_s!r}")
    if max_requests is not None and max_requests < 1:
        raise ConfigError(f"{path}: the trace request cap must be >= 1, got {max_requests!r}")
    if block_tokens < 1:
        raise ConfigError(f"{path}: the trace block size must be >= 1 token, got {block_tokens!r}")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read trace: {exc.strerror or exc}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise ConfigError(f"{path}: empty trace file")
    fmt = _detect(path, data) if format == "auto" else format
    rows, divisor, failed = _PARSERS[fmt](path, data)
    if not rows:
        raise ConfigError(f"{path}: no data rows in this {fmt} trace")
    origin = min(row[0] for row in rows)
    times = [(row[0] - origin) / divisor for row in rows]
    order = sorted(range(len(rows)), key=times.__getitem__)
    end = math.inf if duration_s is None else start_s + duration_s
    cap = max_requests if max_requests is not None else len(rows)
    requests: list[TraceRequest] = []
    for index in order:
        t = times[index]
        if t >= end:
            break
        _, line, input_tokens, output_tokens, prompt, hash_ids, session = rows[index]
        if t < start_s or line < 0:
            continue
        requests.append(TraceRequest(t - start_s, input_tokens, output_tokens, prompt, hash_ids, session, line))
        if len(requests) >= cap:
            break
    if not requests:
        window = f"[{start_s:g}, {end:g}) s" if duration_s is not None else f"from {start_s:g} s on"
        why = f", {failed} failed rows skipped" if failed else ""
        raise ConfigError(
            f"{path}: no request in the window {window} of this {fmt} trace "
            f"({len(rows)} rows over {times[order[-1]]:g} s{why})"
        )
    return Trace(
        path=path,
        format=fmt,
        requests=requests,
        failed_rows=failed,
        rows=len(rows),
        duration_s=requests[-1].at_s,
    )


def block_reuse(requests: Sequence[TraceRequest]) -> tuple[int, int]:
    """Return ``(reused_blocks, total_blocks)`` of the requests' ``hash_ids``, in order.

    A request's block ``k`` is reused when its chain ``hash_ids[:k + 1]`` is a
    leading chain of an earlier request (counted only while the chain matches,
    as a prefix cache would); ``total_blocks`` is the sum of ``len(hash_ids)``.
    ``reused / total`` is the prefix-cache hit rate an infinite cache would see.
    """
    root: dict[int, Any] = {}
    reused = total = 0
    for request in requests:
        total += len(request.hash_ids)
        node = root
        for block in request.hash_ids:
            child = node.get(block)
            if child is None:
                child = node[block] = {}
            else:
                # Reached only through existing nodes, so every earlier block of this chain matched too.
                reused += 1
            node = child
    return reused, total
