"""Server-sent events decoding for streamed LLM responses.

The decoder is fed one line at a time, as bytes, exactly as it was read from
the socket, and returns an event's ``data`` once the blank line that ends the
event arrives. It follows the WHATWG rules that matter for LLM servers: CRLF
or LF line ends, ``:`` comment lines, several ``data:`` lines joined by
``\\n``, an optional single space after the colon, other fields ignored.
Working on bytes means a UTF-8 character split across socket reads is never
decoded half-way: JSON parsing sees whole lines only.
"""

from __future__ import annotations

_COLON = 58  # ord(":")


class SSEDecoder:
    """Assemble SSE events from lines; one instance per response stream."""

    __slots__ = ("_data",)

    def __init__(self, *, pending: bytes | None = None) -> None:
        """Start a decoder; ``pending`` is the data of an event already begun (its ``data:`` lines so far)."""
        self._data: bytes | None = pending

    def feed_line(self, line: bytes) -> bytes | None:
        """Consume one line (terminator included or not); return a completed event's data."""
        line = line.rstrip(b"\r\n")
        if not line:
            data, self._data = self._data, None
            return data
        if line[0] == _COLON:
            return None
        field, _, value = line.partition(b":")
        if field == b"data":
            if value[:1] == b" ":
                value = value[1:]
            self._data = value if self._data is None else self._data + b"\n" + value
        return None

    def flush(self) -> bytes | None:
        """Return the data of an event left unterminated when the stream ended."""
        data, self._data = self._data, None
        return data
