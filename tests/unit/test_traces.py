"""Trace files for replay: the four formats, auto detection, the window and cap, block reuse, one-line errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from llmload.errors import ConfigError
from llmload.traces import FORMATS, Trace, TraceRequest, block_reuse, load_trace
from tests.fixtures import make_traces

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# -- the fixture files -----------------------------------------------------------------------


def test_the_fixtures_are_what_the_script_generates():
    files = make_traces.fixture_files()
    assert sorted(files) == sorted(p.name for p in TRACES.iterdir())
    for name, text in files.items():
        assert (TRACES / name).read_bytes() == text.encode("utf-8"), name
    assert sum(len(text) for text in files.values()) < 100_000


@pytest.mark.parametrize(
    "name, fmt, rows, failed",
    [
        ("mooncake.jsonl", "mooncake", 200, 0),
        ("azure_conv.csv", "azure", 200, 0),
        ("burstgpt.csv", "burstgpt", 200, 10),
        ("llmload.jsonl", "llmload", 60, 0),
    ],
)
def test_fixture_files_load_with_auto_detection(name, fmt, rows, failed):
    path = str(TRACES / name)
    trace = load_trace(path)
    assert trace == load_trace(path, format=fmt)
    assert (trace.path, trace.format, trace.rows, trace.failed_rows) == (path, fmt, rows, failed)
    assert len(trace.requests) == rows - failed
    times = [r.at_s for r in trace.requests]
    assert times == sorted(times) and times[0] >= 0
    assert trace.duration_s == times[-1] > 0
    for request in trace.requests:
        assert (request.input_tokens is None) == (request.prompt is not None)
        assert request.input_tokens is None or request.input_tokens >= 0
        assert request.line >= 1


def test_fixture_mooncake_shares_prefixes():
    trace = load_trace(str(TRACES / "mooncake.jsonl"))
    assert {r.hash_ids[0] for r in trace.requests} == set(range(10))
    assert any(len(r.hash_ids) > 1 for r in trace.requests)
    for r in trace.requests:
        assert len(r.hash_ids) == math.ceil(r.input_tokens / 512)
    reused, total = block_reuse(trace.requests)
    assert total == sum(len(r.hash_ids) for r in trace.requests)
    assert 0.2 < reused / total < 0.9


def test_fixture_llmload_has_sessions_and_prompts():
    trace = load_trace(str(TRACES / "llmload.jsonl"))
    sessions: dict[str, list[TraceRequest]] = {}
    for r in trace.requests:
        if r.session is not None:
            sessions.setdefault(r.session, []).append(r)
    assert len(sessions) == 10 and all(len(turns) == 3 for turns in sessions.values())
    assert sum(r.prompt is not None for r in trace.requests) >= 3
    assert all(r.prompt is None for r in trace.requests if r.session is not None)


def test_fixture_burstgpt_first_row_failed_still_sets_the_origin():
    trace = load_trace(str(TRACES / "burstgpt.csv"))
    first = (TRACES / "burstgpt.csv").read_text().splitlines()[1].split(",")
    assert first[3] == "0"  # the first row is a failed one: time 0 belongs to it
    second = (TRACES / "burstgpt.csv").read_text().splitlines()[2].split(",")
    assert trace.requests[0].at_s == pytest.approx(float(second[0]))
    assert trace.requests[0].line == 3


# -- each format, with known truth -----------------------------------------------------------


def test_mooncake_times_are_milliseconds_from_the_smallest_timestamp(tmp_path):
    path = write(
        tmp_path,
        "m.jsonl",
        '{"timestamp": 1500, "input_length": 700, "output_length": 5, "hash_ids": [1, 2]}\n'
        "\n"
        '{"timestamp": 1000.5, "input_length": 10, "output_length": 0, "hash_ids": [1]}\n'
        '{"timestamp": 1500, "input_length": 3, "output_length": 7}\n'
        '{"timestamp": 4000, "input_length": 1024, "output_length": 9, "hash_ids": [], "extra": true}\n',
    )
    trace = load_trace(path)
    assert trace.format == "mooncake" and trace.rows == 4 and trace.failed_rows == 0
    assert [(r.at_s, r.input_tokens, r.output_tokens, r.hash_ids, r.line) for r in trace.requests] == [
        (0.0, 10, 0, (1,), 3),
        (0.4995, 700, 5, (1, 2), 1),  # ties keep file order
        (0.4995, 3, 7, (), 4),
        (2.9995, 1024, 9, (), 5),
    ]
    assert trace.duration_s == 2.9995
    assert all(r.prompt is None and r.session is None for r in trace.requests)


def test_azure_timestamps_with_seven_digits_fewer_or_none(tmp_path):
    path = write(
        tmp_path,
        "a.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,4808,10\n"
        "2023-11-16 18:15:50.7,3180,8\n"
        "2023-11-16 18:15:50.6805901,110,27\n"
        "2023-11-16 18:16:00,7,1\n"
        "2023-11-17 00:00:00.0000001,1,2\n",
    )
    trace = load_trace(path)
    assert trace.format == "azure" and trace.rows == 5
    assert [(r.at_s, r.input_tokens, r.output_tokens, r.line) for r in trace.requests] == [
        (0.0, 4808, 10, 2),
        (pytest.approx(4.0000001, abs=1e-12), 110, 27, 4),
        (pytest.approx(4.01941, abs=1e-12), 3180, 8, 3),
        (pytest.approx(13.31941, abs=1e-12), 7, 1, 5),
        (pytest.approx(86400 - (18 * 3600 + 15 * 60 + 46.68059) + 0.0000001, abs=1e-9), 1, 2, 6),
    ]


def test_azure_columns_by_name_iso_t_and_timezones(tmp_path):
    path = write(
        tmp_path,
        "a.csv",
        "GeneratedTokens, TIMESTAMP ,ContextTokens\n"
        "5,2024-05-10T00:00:01+00:00,100\n"
        "6,2024-05-10 02:00:00.5+02:00,200\n"
        "7,2024-05-10 00:00:03Z,300\n",
    )
    trace = load_trace(path, format="azure")
    assert [(r.at_s, r.input_tokens, r.output_tokens) for r in trace.requests] == [
        (0.0, 200, 6),
        (0.5, 100, 5),
        (2.5, 300, 7),
    ]


def test_burstgpt_seconds_and_failed_rows(tmp_path):
    path = write(
        tmp_path,
        "b.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45.5,ChatGPT,1087,0,1087,Conversation log\n"
        "118,GPT-4,417,276,693,API log\n"
        "\n"
        "200.25,ChatGPT,20,0,20,API log\n",
    )
    trace = load_trace(path)
    assert trace.format == "burstgpt" and trace.rows == 4 and trace.failed_rows == 2
    assert [(r.at_s, r.input_tokens, r.output_tokens, r.line) for r in trace.requests] == [
        (0.0, 472, 18, 2),
        (113.0, 417, 276, 4),
    ]
    assert trace.duration_s == 113.0


def test_llmload_rows(tmp_path):
    rows = [
        {"timestamp": 10.0, "prompt": "Hello there", "max_tokens": 12, "session": 7},
        {"timestamp": 10.25, "input_tokens": 300, "session": "a", "hash_ids": [3, 4]},
        {"timestamp": 12, "input_tokens": 1, "output_tokens": 1, "other": [1]},
        {"timestamp": 11.5, "prompt": "Next turn", "session": 7},
    ]
    path = write(tmp_path, "l.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    trace = load_trace(path)
    assert trace.format == "llmload"
    assert trace.requests == [
        TraceRequest(0.0, None, 12, "Hello there", (), "7", 1),
        TraceRequest(0.25, 300, None, None, (3, 4), "a", 2),
        TraceRequest(1.5, None, None, "Next turn", (), "7", 4),
        TraceRequest(2.0, 1, 1, None, (), None, 3),
    ]


def test_single_request_has_zero_duration(tmp_path):
    path = write(tmp_path, "l.jsonl", '{"timestamp": 3.5, "input_tokens": 8}\n')
    trace = load_trace(path)
    assert trace.duration_s == 0 and trace.requests == [TraceRequest(0.0, 8, None, line=1)]


def test_bom_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"\xef\xbb\xbfTIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:15:46,1,2\r\n")
    assert load_trace(str(path)).requests == [TraceRequest(0.0, 1, 2, line=2)]
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"timestamp": 0, "input_length": 1, "output_length": 2}\r\n')
    assert load_trace(str(path)).format == "mooncake"


# -- window and cap --------------------------------------------------------------------------


@pytest.fixture
def ten_seconds(tmp_path) -> str:
    # t = 0, 1, ..., 9 s, written out of order
    lines = [f'{{"timestamp": {1000 * t}, "input_length": {t + 1}, "output_length": 1}}' for t in range(10)]
    lines = lines[5:] + lines[:5]
    return write(tmp_path, "w.jsonl", "\n".join(lines) + "\n")


def test_window_start_and_duration(ten_seconds):
    trace = load_trace(ten_seconds, start_s=2.0, duration_s=3.0)
    assert [(r.at_s, r.input_tokens) for r in trace.requests] == [(0.0, 3), (1.0, 4), (2.0, 5)]
    assert trace.rows == 10 and trace.duration_s == 2.0
    trace = load_trace(ten_seconds, start_s=2.5)
    assert [r.at_s for r in trace.requests] == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5]


def test_cap_keeps_the_earliest(ten_seconds):
    trace = load_trace(ten_seconds, max_requests=4)
    assert [r.input_tokens for r in trace.requests] == [1, 2, 3, 4]
    assert trace.duration_s == 3.0
    trace = load_trace(ten_seconds, start_s=8, duration_s=100, max_requests=4)
    assert [r.input_tokens for r in trace.requests] == [9, 10]


def test_empty_window_is_an_error(ten_seconds):
    with pytest.raises(ConfigError, match=re.escape(f"{ten_seconds}: no request in the window [10, 15) s")) as exc:
        load_trace(ten_seconds, start_s=10, duration_s=5)
    one_line(exc)
    with pytest.raises(ConfigError, match="no request in the window from 9.5 s on"):
        load_trace(ten_seconds, start_s=9.5)


def test_all_failed_is_an_error(tmp_path):
    path = write(tmp_path, "b.csv", make_traces.BURSTGPT_HEADER + "\n1,ChatGPT,10,0,10,API log\n")
    with pytest.raises(ConfigError, match="1 failed rows skipped"):
        load_trace(path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "csv"}, "expected one of auto, mooncake, azure, burstgpt, llmload"),
        ({"start_s": -1.0}, "start must be >= 0"),
        ({"duration_s": 0.0}, "duration must be > 0"),
        ({"duration_s": math.inf}, "duration must be > 0"),
        ({"max_requests": 0}, "cap must be >= 1"),
        ({"block_tokens": 0}, "block size must be >= 1"),
    ],
)
def test_bad_arguments(ten_seconds, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_trace(ten_seconds, **kwargs)


# -- detection and whole-file errors ---------------------------------------------------------


def test_formats_tuple():
    assert FORMATS == ("auto", "mooncake", "azure", "burstgpt", "llmload")


def test_unrecognised_format_lists_the_formats(tmp_path):
    path = write(tmp_path, "x.csv", "\n\ntime,prompt_len,output_len\n1,2,3\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: unrecognised trace format")) as exc:
        load_trace(path)
    assert all(name in one_line(exc) for name in FORMATS[1:])


def test_missing_and_empty_files(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: cannot read trace: ")):
        load_trace(missing)
    with pytest.raises(ConfigError, match="cannot read trace"):
        load_trace(str(tmp_path))
    empty = write(tmp_path, "empty.jsonl", "\n  \n")
    with pytest.raises(ConfigError, match=re.escape(f"{empty}: empty trace file")):
        load_trace(empty)
    header_only = write(tmp_path, "h.csv", make_traces.AZURE_HEADER + "\n")
    with pytest.raises(ConfigError, match=re.escape(f"{header_only}: no data rows")):
        load_trace(header_only)


def test_explicit_format_checks_the_header(tmp_path):
    path = write(tmp_path, "b.csv", make_traces.BURSTGPT_HEADER + "\n1,ChatGPT,10,5,15,API log\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:1: azure header needs the columns")):
        load_trace(path, format="azure")


def test_auto_detection_by_first_json_line(tmp_path):
    path = write(tmp_path, "x.jsonl", '{"timestamp": 0, "input_tokens": 5, "input_length": 3, "output_length": 1}\n')
    assert load_trace(path).format == "mooncake"
    assert load_trace(path, format="llmload").requests[0].input_tokens == 5


# -- malformed lines: one error naming file:line ---------------------------------------------

MOONCAKE_OK = '{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [0]}'
LLMLOAD_OK = '{"timestamp": 0, "input_tokens": 5}'
AZURE_OK = "2023-11-16 18:15:46.6805900,10,1"
BURSTGPT_OK = "0.5,ChatGPT,10,5,15,API log"


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"timestamp": 1, "input_length": 5', "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"input_length": 5, "output_length": 1}', 'missing "timestamp"'),
        ('{"timestamp": 1, "output_length": 1}', 'missing "input_length"'),
        ('{"timestamp": 1, "input_length": 1}', 'missing "output_length"'),
        ('{"timestamp": "1", "input_length": 1, "output_length": 1}', "timestamp must be a number"),
        ('{"timestamp": true, "input_length": 1, "output_length": 1}', "timestamp must be a number"),
        ('{"timestamp": 1, "input_length": -1, "output_length": 1}', "input_length must be an integer >= 0, got -1"),
        ('{"timestamp": 1, "input_length": 1.5, "output_length": 1}', "input_length must be an integer >= 0"),
        ('{"timestamp": 1, "input_length": 1, "output_length": "2"}', "output_length must be an integer >= 0"),
        ('{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [1, -2]}', "hash_ids must be a list"),
        ('{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": 3}', "hash_ids must be a list"),
    ],
)
def test_malformed_mooncake_line(tmp_path, bad, message):
    path = write(tmp_path, "m.jsonl", f"{MOONCAKE_OK}\n\n{bad}\n{MOONCAKE_OK}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3: ") + re.escape(message)) as exc:
        load_trace(path, format="mooncake")
    one_line(exc)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json}", "not valid JSON"),
        ('"text"', "expected a JSON object, got str"),
        ('{"input_tokens": 5}', 'missing "timestamp"'),
        ('{"timestamp": 1}', 'missing "prompt" or "input_tokens"'),
        ('{"timestamp": 1, "prompt": ""}', "prompt must be a non-empty string"),
        ('{"timestamp": 1, "prompt": 3}', "prompt must be a non-empty string"),
        ('{"timestamp": 1, "prompt": "hi", "input_tokens": 2}', 'give either "prompt" or "input_tokens", not both'),
        ('{"timestamp": 1, "input_tokens": 0}', "input_tokens must be an integer >= 1, got 0"),
        ('{"timestamp": 1, "input_tokens": 2, "output_tokens": 0}', "output_tokens must be an integer >= 1"),
        ('{"timestamp": 1, "input_tokens": 2, "max_tokens": 2.5}', "max_tokens must be an integer >= 1"),
        (
            '{"timestamp": 1, "input_tokens": 2, "max_tokens": 2, "output_tokens": 2}',
            'give either "output_tokens" or "max_tokens"',
        ),
        ('{"timestamp": 1, "input_tokens": 2, "session": ""}', "session must be a non-empty string or an integer"),
        ('{"timestamp": 1, "input_tokens": 2, "session": [1]}', "session must be a non-empty string or an integer"),
        ('{"timestamp": 1, "input_tokens": 2, "hash_ids": [true]}', "hash_ids must be a list"),
    ],
)
def test_malformed_llmload_line(tmp_path, bad, message):
    path = write(tmp_path, "l.jsonl", f"{LLMLOAD_OK}\n{LLMLOAD_OK}\n{bad}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3: ") + re.escape(message)) as exc:
        load_trace(path, format="llmload")
    one_line(exc)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("2023-11-16 18:15:46.68,10", "expected 3 columns (TIMESTAMP,ContextTokens,GeneratedTokens), got 2"),
        ("2023-11-16 18:15:46,10,1,4", "expected 3 columns"),
        ("yesterday,10,1", "unparsable TIMESTAMP 'yesterday'"),
        ("2023-11-31 18:15:46,10,1", "unparsable TIMESTAMP"),
        ("2023-11-16 24:00:00,10,1", "unparsable TIMESTAMP"),
        ("2023-11-16 18:15:46.,10,1", "unparsable TIMESTAMP"),
        ("1700158546.68,10,1", "unparsable TIMESTAMP"),
        ("2023-11-16 18:15:46,-10,1", "ContextTokens must be an integer >= 0, got '-10'"),
        ("2023-11-16 18:15:46,10,1.5", "GeneratedTokens must be an integer >= 0, got '1.5'"),
        ("2023-11-16 18:15:46,,1", "ContextTokens must be an integer >= 0"),
    ],
)
def test_malformed_azure_line(tmp_path, bad, message):
    path = write(tmp_path, "a.csv", f"{make_traces.AZURE_HEADER}\n{AZURE_OK}\n{bad}\n{AZURE_OK}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3: ") + re.escape(message)) as exc:
        load_trace(path)
    one_line(exc)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("0.5,ChatGPT,10,5,15", "expected 6 columns"),
        ("soon,ChatGPT,10,5,15,API log", "Timestamp must be a number of seconds, got 'soon'"),
        ("nan,ChatGPT,10,5,15,API log", "Timestamp must be a number of seconds"),
        ("0.5,ChatGPT,ten,5,15,API log", "Request tokens must be an integer >= 0, got 'ten'"),
        ("0.5,ChatGPT,10,-5,5,API log", "Response tokens must be an integer >= 0, got '-5'"),
        ("0.5,ChatGPT,10,x,5,API log", "Response tokens must be an integer >= 0"),
    ],
)
def test_malformed_burstgpt_line(tmp_path, bad, message):
    path = write(tmp_path, "b.csv", f"{make_traces.BURSTGPT_HEADER}\n{BURSTGPT_OK}\n{bad}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3: ") + re.escape(message)) as exc:
        load_trace(path)
    one_line(exc)


def test_non_utf8_csv_names_the_line(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(f"{make_traces.AZURE_HEADER}\n{AZURE_OK}\n".encode() + b"2023-11-16 18:15:46,\xff1,1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3: not UTF-8 text")):
        load_trace(str(path))


# -- block reuse -----------------------------------------------------------------------------


def test_block_reuse_counts_leading_chains_seen_before():
    requests = [
        TraceRequest(0.0, 1536, 1, hash_ids=(1, 2, 3)),
        TraceRequest(1.0, 1536, 1, hash_ids=(1, 2, 4)),  # 1, 2 reused
        TraceRequest(2.0, 1536, 1, hash_ids=(2, 3, 5)),  # chain (2,) is new: nothing reused, though 2 and 3 were seen
        TraceRequest(3.0, 2048, 1, hash_ids=(1, 9, 3, 4)),  # only 1
        TraceRequest(4.0, 1, 1),  # no blocks
        TraceRequest(5.0, 1536, 1, hash_ids=(1, 2, 3)),  # all three
        TraceRequest(6.0, 512, 1, hash_ids=(2,)),  # (2,) appeared as a leading chain of request 3
    ]
    assert block_reuse(requests) == (2 + 0 + 1 + 3 + 1, 3 + 3 + 3 + 4 + 3 + 1)
    assert block_reuse([]) == (0, 0)
    assert block_reuse(requests[:1]) == (0, 3)


# -- bigger traces ---------------------------------------------------------------------------


def test_generated_traces_round_trip(tmp_path):
    lines = make_traces.llmload_lines(2000, seed=9, rate_per_s=50.0, sessions=100, turns=4)
    trace = load_trace(write(tmp_path, "l.jsonl", "\n".join(lines) + "\n"))
    assert trace.rows == 2000 and len(trace.requests) == 2000
    assert len({r.session for r in trace.requests if r.session}) == 100
    lines = make_traces.mooncake_lines(2000, seed=9, rate_per_s=100.0, block_tokens=16, input_range=(1, 100))
    trace = load_trace(write(tmp_path, "m.jsonl", "\n".join(lines) + "\n"), block_tokens=16)
    assert all(len(r.hash_ids) == max(1, math.ceil(r.input_tokens / 16)) for r in trace.requests)
    # About 100 requests a second over 2000 requests: about 20 s.
    assert 15 < trace.duration_s < 25


def test_100k_mooncake_rows_load(tmp_path):
    n = 100_000
    rows = (
        f'{{"timestamp": {i * 7}, "input_length": {300 + i % 1000}, "output_length": {1 + i % 50}, '
        f'"hash_ids": [{i % 8}, {i}]}}\n'
        for i in range(n)
    )
    path = tmp_path / "big.jsonl"
    path.write_text("".join(rows), encoding="utf-8")
    trace = load_trace(str(path))
    assert isinstance(trace, Trace) and trace.rows == n and len(trace.requests) == n
    assert trace.duration_s == pytest.approx((n - 1) * 0.007)
    assert block_reuse(trace.requests) == (n - 8, 2 * n)
    assert len(load_trace(str(path), start_s=100.0, duration_s=10.0).requests) == math.ceil(10 / 0.007)
