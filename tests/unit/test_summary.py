"""The end-of-run console table, rendered from hand-written results documents with exact cells.

Documents follow docs/results.md (schema ``llmload.results/2``: groups, total,
optional server section); no Locust run is involved. The table shows each
body's ``slo.attainment`` as it is; since schema 2 that is the share of
finished requests (failed ones count as misses) that met the SLO, which the
title says.
"""

from __future__ import annotations

import re

import pytest

from llmload.render import table

TITLE = (
    "LLM token metrics (times in ms, rates in tokens/s; p10* = 10th percentile stream rate; SLO: {}"
    "; SLO = share of finished requests that met it)"
)
SERVER_TITLE = "Client vs server TTFT (ms; server figures from the backend's /metrics over the run)"
HEADER = ["group", "ok", "fail", "TTFT p50", "p90", "p99", "ITL p50", "p99", "TPOT p50", "rate p50", "p10*"]
HEADER += ["out tok/s", "SLO"]
SUMMARY_KEYS = ("count", "mean", "min", "p10", "p50", "p90", "p99", "max")


def dist(**values: float | None) -> dict:
    """A distribution summary; keys not given are None (no samples)."""
    return {key: values.get(key) for key in SUMMARY_KEYS}


def body(
    *,
    ok: int = 0,
    failed: int = 0,
    ttft: dict | None = None,
    itl: dict | None = None,
    tpot: dict | None = None,
    rate: dict | None = None,
    out_tps: float = 0.0,
    attainment: float | None = None,
    slo_ttft: float | None = None,
    slo_rate: float | None = 10.0,
    estimated: int = 0,
) -> dict:
    return {
        "requests": {"ok": ok, "failed": failed, "errors": {"http_429": failed} if failed else {}},
        "tokens": {
            "prompt": 10 * ok,
            "output": 100 * ok,
            "output_source": "estimated" if estimated else "usage",
            "estimated_requests": estimated,
        },
        "ttft_s": ttft or dist(),
        "itl_s": itl or dist(),
        "tpot_s": tpot or dist(),
        "e2e_s": dist(),
        "stream_rate_tps": rate or dist(),
        "decode_rate_tps": dist(),
        "throughput": {"window_s": 60.0, "output_tokens_per_s": out_tps, "requests_per_s": (ok + failed) / 60.0},
        "slo": {
            "ttft_s": slo_ttft,
            "stream_rate_tps": slo_rate,
            "met": 0,
            "attainment": attainment,
            "goodput_rps": 0.0,
        },
    }


def group(backend: str, model: str, user_class: str, **kwargs) -> dict:
    return {"backend": backend, "model": model, "user_class": user_class, **body(**kwargs)}


def two_group_doc() -> dict:
    """A measured chat group, a summarization group whose every request failed, and the total."""
    measured = dict(
        ttft=dist(count=120, mean=0.15, p50=0.125, p90=0.25, p99=0.5),
        itl=dist(count=1000, p50=0.0314, p99=0.0875),
        tpot=dist(count=120, p50=0.0333),
        rate=dist(count=120, p10=9.96, p50=12.34),
        out_tps=1234.56,
        attainment=0.875,
        slo_ttft=0.5,
    )
    total = {**measured, "ttft": dist(count=120, mean=0.15, p50=0.125, p90=0.25, p99=1.5)}
    return {
        "schema": "llmload.results/2",
        "groups": [
            group("http://gpu-a:8000", "llama", "Chat", ok=120, failed=3, **measured),
            group("http://gpu-b:8000", "llama", "Summarize", failed=5, slo_ttft=0.5),
        ],
        "total": body(ok=120, failed=8, estimated=3, **total),
    }


def one_group_doc(**kwargs) -> dict:
    doc_body = body(ok=4, **kwargs)
    return {"groups": [{"backend": "b", "model": "m", "user_class": "U", **doc_body}], "total": doc_body}


def cells(line: str) -> list[str]:
    """The cells of a table line: columns are separated by at least two spaces, cells contain none."""
    return re.split(r" {2,}", line.strip())


def row(text: str, label: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.startswith(label)]
    assert len(lines) == 1, text
    return cells(lines[0])


def test_two_groups_render_exactly():
    expected = [
        TITLE.format("stream rate >= 10 tok/s and TTFT <= 0.5 s"),
        "group                               ok  fail  TTFT p50    p90     p99  ITL p50   p99"
        "  TPOT p50  rate p50  p10*  out tok/s    SLO",
        "---------------------------------  ---  ----  --------  -----  ------  -------  ----"
        "  --------  --------  ----  ---------  -----",
        "http://gpu-a:8000 llama Chat       120     3     125.0  250.0   500.0     31.4  87.5"
        "      33.3      12.3  10.0     1234.6  87.5%",
        "http://gpu-b:8000 llama Summarize    0     5         -      -       -        -     -"
        "         -         -     -        0.0      -",
        "Total                              120     8     125.0  250.0  1500.0     31.4  87.5"
        "      33.3      12.3  10.0     1234.6  87.5%",
        "Note: output tokens of 3 requests were estimated by counting events (no server usage).",
    ]
    assert table.format_table(two_group_doc()).split("\n") == expected


def test_cells_follow_the_header_and_every_line_is_aligned():
    text = table.format_table(two_group_doc())
    lines = text.splitlines()
    assert cells(lines[1]) == HEADER
    assert len({len(line) for line in lines[1:6]}) == 1
    assert row(text, "Total") == ["Total", "120", "8", "125.0", "250.0", "1500.0", "31.4", "87.5", "33.3"] + [
        "12.3",
        "10.0",
        "1234.6",
        "87.5%",
    ]


def test_group_label_is_backend_model_and_user_class_in_document_order():
    doc = two_group_doc()
    doc["groups"].reverse()
    labels = [line.split("  ")[0].strip() for line in table.format_table(doc).splitlines()[3:6]]
    assert labels == ["http://gpu-b:8000 llama Summarize", "http://gpu-a:8000 llama Chat", "Total"]


@pytest.mark.parametrize(
    ("seconds", "cell"),
    [
        (0.0, "0.0"),
        (0.00004, "0.0"),
        (0.0123, "12.3"),
        (0.5, "500.0"),
        (1.23456, "1234.6"),
        (12.0, "12000.0"),
        (None, "-"),
    ],
)
def test_times_are_milliseconds_with_one_decimal_and_dash_for_none(seconds, cell):
    doc = one_group_doc(ttft=dist(p50=seconds), itl=dist(p99=seconds), tpot=dist(p50=seconds))
    values = row(table.format_table(doc), "Total")
    assert [values[3], values[7], values[8]] == [cell, cell, cell]


@pytest.mark.parametrize(
    ("value", "cell"),
    [(0.0, "0.0"), (9.96, "10.0"), (13.64, "13.6"), (2500.0, "2500.0"), (None, "-")],
)
def test_rates_have_one_decimal_and_dash_for_none(value, cell):
    doc = one_group_doc(rate=dist(p50=value, p10=value))
    assert row(table.format_table(doc), "Total")[9:11] == [cell, cell]


@pytest.mark.parametrize(
    ("attainment", "cell"),
    [(1.0, "100.0%"), (0.95, "95.0%"), (0.123, "12.3%"), (0.0, "0.0%"), (None, "-")],
)
def test_slo_attainment_is_a_percentage_with_one_decimal(attainment, cell):
    assert row(table.format_table(one_group_doc(attainment=attainment)), "Total")[-1] == cell


@pytest.mark.parametrize(
    ("rate", "ttft", "sentence"),
    [
        (10.0, None, "stream rate >= 10 tok/s"),
        (12.5, 0.25, "stream rate >= 12.5 tok/s and TTFT <= 0.25 s"),
        (None, 2.0, "TTFT <= 2 s"),
        (0.0, None, "stream rate >= 0 tok/s"),
        (None, None, "none"),
    ],
)
def test_title_states_the_slo(rate, ttft, sentence):
    text = table.format_table(one_group_doc(slo_rate=rate, slo_ttft=ttft))
    assert text.splitlines()[0] == TITLE.format(sentence)


def test_estimated_tokens_note_only_when_some_request_was_estimated():
    text = table.format_table(one_group_doc(estimated=1))
    assert text.splitlines()[-1] == (
        "Note: output tokens of 1 requests were estimated by counting events (no server usage)."
    )
    text = table.format_table(one_group_doc(estimated=0))
    assert "Note:" not in text
    assert text.splitlines()[-1].startswith("Total ")
    assert len(text.splitlines()) == 5  # title, header, rule, the group, the total


def with_server(doc: dict) -> dict:
    doc["server"] = {
        "http://gpu-a:8000": {
            "engine": "vllm",
            "ttft_s": {"count": 120, "mean": 0.1, "p50": 0.09, "p90": 0.2, "p99": 0.3},
            "queue_time_s": {"count": 120, "mean": 0.03, "p50": 0.02, "p90": 0.05, "p99": 0.08},
        },
        "http://elsewhere:8000": {"ttft_s": {"count": 1, "mean": 9.0, "p50": 9.0}},  # no group: not shown
    }
    return doc


def test_client_vs_server_ttft_block_follows_the_table():
    text = table.format_table(with_server(two_group_doc()))
    lines = text.split("\n")
    assert lines[6].startswith("Note: ")
    assert lines[7:] == [
        "",
        SERVER_TITLE,
        "group                         client mean    p50  server mean   p50  queue p50",
        "----------------------------  -----------  -----  -----------  ----  ---------",
        "http://gpu-a:8000 llama Chat        150.0  125.0        100.0  90.0       20.0",
    ]


def test_server_block_lists_each_group_with_server_data():
    doc = with_server(two_group_doc())
    doc["server"]["http://gpu-b:8000"] = {"ttft_s": {"count": 5, "mean": 2.5, "p50": 2.0}, "queue_time_s": None}
    lines = table.format_server_ttft(doc)
    assert lines[:2] == ["", SERVER_TITLE]
    assert [cells(line) for line in lines[4:]] == [
        ["http://gpu-a:8000 llama Chat", "150.0", "125.0", "100.0", "90.0", "20.0"],
        # Every request failed on the client (no TTFT there); the server has no queue figure.
        ["http://gpu-b:8000 llama Summarize", "-", "-", "2500.0", "2000.0", "-"],
    ]
    assert len({len(line) for line in lines[2:]}) == 1


@pytest.mark.parametrize(
    "server",
    [
        None,
        {},
        {"http://gpu-a:8000": None},
        {"http://gpu-a:8000": {"engine": "vllm", "ttft_s": None}},
        {"http://gpu-c:8000": {"ttft_s": {"count": 1, "mean": 0.1, "p50": 0.1}}},
    ],
)
def test_no_server_block_without_server_ttft_for_a_group(server):
    doc = two_group_doc()
    if server is not None:
        doc["server"] = server
    assert table.format_server_ttft(doc) == []
    text = table.format_table(doc)
    assert "Client vs server" not in text
    assert text.splitlines()[-1].startswith("Note: ")
