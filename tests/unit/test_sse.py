"""SSE decoding: line endings, comments, multi-line data, unterminated events."""

from llmload.sse import SSEDecoder


def feed(lines):
    decoder = SSEDecoder()
    events = [data for line in lines if (data := decoder.feed_line(line)) is not None]
    return events, decoder


def test_lf_event():
    assert feed([b'data: {"a": 1}\n', b"\n"])[0] == [b'{"a": 1}']


def test_crlf_event():
    assert feed([b"data: x\r\n", b"\r\n", b"data: y\r\n", b"\r\n"])[0] == [b"x", b"y"]


def test_comment_lines_are_ignored():
    assert feed([b": keep-alive\n", b"\n", b"data: x\n", b": mid comment\n", b"\n"])[0] == [b"x"]


def test_multi_line_data_joined_with_newline():
    assert feed([b"data: first\n", b"data: second\n", b"\n"])[0] == [b"first\nsecond"]


def test_space_after_colon_is_optional_and_only_one_is_removed():
    assert feed([b"data:x\n", b"\n", b"data:  y\n", b"\n"])[0] == [b"x", b" y"]


def test_other_fields_ignored():
    assert feed([b"event: message\n", b"id: 7\n", b"retry: 10\n", b"data: x\n", b"\n"])[0] == [b"x"]


def test_blank_lines_without_data_dispatch_nothing():
    assert feed([b"\n", b"\r\n", b"\n"])[0] == []


def test_unterminated_event_is_flushed():
    events, decoder = feed([b"data: [DONE]"])
    assert events == []
    assert decoder.flush() == b"[DONE]"
    assert decoder.flush() is None


def test_utf8_bytes_are_kept_whole():
    text = "héllo 世界".encode()
    assert feed([b"data: " + text + b"\n", b"\n"])[0] == [text]
