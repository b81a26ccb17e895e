"""``llmload compare``: rows from capacity and plain runs, hand-computed cost figures, Markdown and CSV files.

The fixture files are version-1 results (``llmload.results/1``), as earlier
llmload versions wrote them: their groups' ``slo.attainment`` is SLO-met over
successful requests; compare reads them upgraded to version 2, where it is
SLO-met over all finished requests (failed ones count as misses).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from llmload import cli
from llmload.compare import compare_files
from llmload.render.compare import rows_from_results, to_csv, to_markdown

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SLO = {"stream_rate_tps": 10.0, "ttft_s": 2.0, "attainment": 0.95}


def capacity_run(name: str, gpu: str, price: float, users: int, tps: float, *, limit: bool = False) -> dict:
    return {
        "schema": "llmload.results/1",
        "run": {
            "duration_s": 120.0,
            "peak_users": users,
            "backends": [
                {
                    "name": name,
                    "base_url": "http://x",
                    "model": "llama",
                    "gpu": gpu,
                    "engine": "vLLM 0.8.5",
                    "quantization": "fp16",
                    "price_per_hour": price,
                    "api_key_env": "",
                    "weight": 1.0,
                    "api_key_set": False,
                }
            ],
        },
        "groups": [{"backend": name, "model": "llama", "user_class": "Chatbot"}],
        "total": {},
        "capacity": {
            "mode": "users",
            "label": name,
            "slo": SLO,
            "steps": [],
            "answer": {
                "users": users,
                "first_failing": None if limit else users + 25,
                "limit_reached": limit,
                "complete": True,
                "stream_rate_p50_tps": 10.1,
                "stream_rate_p10_tps": 10.05,
                "ttft_p50_s": 0.39,
                "ttft_p99_s": 0.66,
                "output_tokens_per_s": tps,
                "attainment": 1.0,
            },
        },
    }


def plain_run(backend: str, tps: float, *, schema: str = "llmload.results/1") -> dict:
    # 99 of 100 successful requests met the SLO and 1 request failed: 0.99 in version 1 (met / ok).
    group = {
        "backend": backend,
        "model": "llama",
        "user_class": "Chatbot",
        "requests": {"ok": 100, "failed": 1, "errors": {"http_429": 1}},
        "ttft_s": {"p50": 0.2, "p99": 0.5},
        "stream_rate_tps": {"p50": 26.5, "p10": 26.0},
        "throughput": {"output_tokens_per_s": tps},
        "slo": {"ttft_s": None, "stream_rate_tps": 10.0, "met": 99, "attainment": 0.99},
    }
    return {
        "schema": schema,
        "run": {"duration_s": 300.0, "peak_users": 100, "backends": None},
        "groups": [group],
        "total": {},
    }


@pytest.fixture
def files(tmp_path):
    paths = []
    for name, doc in (
        ("rtx.json", capacity_run("rtx3090", "RTX 3090 24GB", 0.22, 150, 1500.0)),
        ("a100.json", plain_run("a100", 3200.0)),
        ("h100.json", capacity_run("h100", "H100 80GB SXM", 2.99, 400, 9956.0, limit=True)),
    ):
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        paths.append(str(path))
    return paths


def test_hand_computed_costs(files):
    rows = compare_files(files, backends_file=str(FIXTURES / "backends.toml"))
    rtx, a100, h100 = rows
    # 0.22 $/h / (1,500 tok/s * 3,600 s/h) * 1e6 = $0.040741 per million output tokens; 150 users / 0.22 $/h.
    assert rtx.cost_per_million_output_tokens == pytest.approx(0.0407407407)
    assert rtx.users_per_dollar_hour == pytest.approx(681.8181818)
    # The plain run took its price from --backends (a100: 1.29 $/h): 1.29 / (3,200 * 3,600) * 1e6.
    assert (a100.gpu, a100.price_per_hour) == ("A100 40GB", 1.29)
    assert a100.cost_per_million_output_tokens == pytest.approx(0.1119791667)
    assert a100.users_at_slo is None and a100.users_per_dollar_hour is None
    # 2.99 / (9,956 * 3,600) * 1e6 = 2.99 / 35,841,600 * 1e6 = $0.0834226;
    # 400 / 2.99 = 133.78 users per $/h, 400 being a lower bound.
    assert h100.cost_per_million_output_tokens == pytest.approx(0.0834226151)
    assert h100.users_per_dollar_hour == pytest.approx(133.7792642)
    assert h100.users_limit_reached


def test_markdown(files):
    markdown = to_markdown(compare_files(files, backends_file=str(FIXTURES / "backends.toml")))
    lines = markdown.splitlines()
    assert lines[0] == "## Backend comparison"
    assert lines[4] == (
        "| rtx3090 | RTX 3090 24GB | vLLM 0.8.5 | fp16 | 150 | 1,500 | 390 / 660 | 10.1 / 10.1 | 100.0% | "
        "$0.22 | $0.04 | 681.8 | capacity search: step at 150 users | rtx.json |"
    )
    # The a100 run is version 1: SLO met = 99 met / (100 ok + 1 failed) = 98.0% (it read 99 / 100 = 99.0% before
    # schema 2 counted failed requests as misses).
    assert lines[5].startswith(
        "| a100 | A100 40GB | vLLM 0.8.5 | fp16 | - | 3,200 | 200 / 500 | 26.5 / 26.0 | 98.0% | $1.29 | $0.11 | - |"
    )
    assert (
        "| h100 | H100 80GB SXM | vLLM 0.8.5 | fp16 | >= 400 | 9,956 |" in lines[6] and "| $0.08 | 133.8 |" in lines[6]
    )
    assert "SLO: 95% of requests with stream rate >= 10 tok/s and TTFT <= 2 s; stream rate >= 10 tok/s." in markdown
    assert "Lowest cost per million output tokens: **rtx3090** ($0.04)." in markdown
    assert "Most users within the SLO per dollar-hour: **rtx3090** (681.8)." in markdown


def test_csv_has_raw_numbers(files):
    rows = list(csv.DictReader(io.StringIO(to_csv(compare_files(files)))))
    assert [r["backend"] for r in rows] == ["rtx3090", "a100", "h100"]
    assert rows[0]["cost_per_million_output_tokens"] == "0.0407407" and rows[0]["users_per_dollar_hour"] == "681.818"
    assert rows[0]["users_at_slo"] == "150" and rows[0]["ttft_p99_s"] == "0.66"
    assert rows[1]["price_per_hour"] == "" and rows[1]["cost_per_million_output_tokens"] == ""  # no --backends
    assert rows[2]["users_limit_reached"] == "True"
    # Attainment as a raw ratio: the capacity answer's as written (it always counted failures as misses),
    # the version-1 plain run's upgraded to 99 / (100 + 1) = 0.980198.
    assert [r["slo_attainment"] for r in rows] == ["1", "0.980198", "1"]


def test_command_writes_markdown_and_csv(files, tmp_path, capsys):
    out_dir = tmp_path / "report"
    assert cli.main(["compare", *files, "-o", str(out_dir), "--backends", str(FIXTURES / "backends.toml")]) == 0
    printed = capsys.readouterr().out
    assert "## Backend comparison" in printed and f"llmload compare: wrote {out_dir / 'compare.csv'}" in printed
    assert (out_dir / "compare.md").read_text().startswith("## Backend comparison")
    assert (out_dir / "compare.csv").read_text().startswith("backend,model,gpu")
    md, table = tmp_path / "a.md", tmp_path / "b.csv"
    assert cli.main(["compare", files[0], "--markdown", str(md), "--csv", str(table)]) == 0
    assert md.exists() and table.exists()


def test_bad_file_is_one_line(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path / "missing.json")]) == 1
    assert capsys.readouterr().err == f"llmload compare: error: {tmp_path / 'missing.json'}: no such results file\n"


def test_groups_of_one_backend_with_several_user_classes():
    doc = plain_run("vllm", 1000.0)
    doc["groups"].append({**doc["groups"][0], "user_class": "Summarization"})
    rows = rows_from_results(doc, source="mixed.json")
    assert [r.backend for r in rows] == ["vllm (Chatbot)", "vllm (Summarization)"]
    assert rows[0].users is None and rows[0].window == "whole run (300 s, 100 users)"


def test_version_1_attainment_is_upgraded_and_version_2_is_read_as_is(tmp_path):
    v1, v2 = tmp_path / "v1.json", tmp_path / "v2.json"
    v1.write_text(json.dumps(plain_run("a100", 3200.0)))
    doc = plain_run("a100", 3200.0, schema="llmload.results/2")
    # A version-2 file is read as it is (its attainment, 0.98, is already over all finished requests).
    doc["groups"][0]["slo"].update(attainment=0.98, attainment_of_ok=0.99)
    v2.write_text(json.dumps(doc))
    old, new = compare_files([str(v1), str(v2)])
    assert old.slo_attainment == pytest.approx(99 / 101)  # 0.980198..., was 0.99 (= 99 / 100) in the file
    assert new.slo_attainment == 0.98


def test_command_shows_the_upgraded_attainment_of_a_version_1_file(tmp_path, capsys):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(plain_run("a100", 3200.0)))
    assert cli.main(["compare", str(path), "--csv", str(tmp_path / "old.csv")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| a100 |"))
    # 99 met / (100 ok + 1 failed) = 98.0%; the file's own 0.99 (met / ok) is not shown.
    assert "| 98.0% |" in row and "99.0%" not in row
    (written,) = csv.DictReader(io.StringIO((tmp_path / "old.csv").read_text()))
    assert written["slo_attainment"] == "0.980198"


def test_a_run_with_a_soak_section_gets_a_soak_column():
    doc = plain_run("a100", 3200.0, schema="llmload.results/2")
    doc["soak"] = {
        "windows": [{"index": 0, "partial": False}],
        "backends": {"a100": {"verdict": "stable", "breach_count": 2, "longest_time_to_recover_s": 42.4}},
    }
    rows = rows_from_results(doc, source="soak.json")
    assert rows[0].soak == "stable; 2 SLO breaches, longest recovery 42 s" and rows[0].soak_verdict == "stable"
    lines = to_markdown(rows).splitlines()
    assert lines[2].endswith("| Soak | Measured over | Results file |") and lines[3].count("|") == lines[2].count("|")
    assert lines[4].endswith(
        "| stable; 2 SLO breaches, longest recovery 42 s | whole run (300 s, 100 users) | soak.json |"
    )
    row = next(csv.DictReader(io.StringIO(to_csv(rows))))
    assert (row["soak_verdict"], row["soak_breaches"], row["soak_longest_recovery_s"]) == ("stable", "2", "42.4")
    # Without a full soak window (or without the section) the table is as before.
    doc["soak"]["windows"] = [{"index": 0, "partial": True}]
    assert "Soak" not in to_markdown(rows_from_results(doc, source="soak.json"))


def test_server_figures_sit_next_to_the_clients():
    doc = plain_run("a100", 3200.0, schema="llmload.results/2")
    doc["server"] = {"a100": {"ttft_s": {"p50": 0.0412}, "restarts": 1}}
    (row,) = rows_from_results(doc, source="run.json")
    assert (row.server_ttft_p50_s, row.server_restarts) == (0.0412, 1)
    lines = to_markdown([row]).splitlines()
    header = lines[2].split(" | ")
    assert header[header.index("TTFT p50 / p99 (ms)") + 1] == "Server TTFT p50 (ms)"
    cells = lines[4].split(" | ")
    assert cells[header.index("Server TTFT p50 (ms)")] == "41, 1 restart"
    assert lines[3].count("|") == lines[2].count("|") == lines[4].count("|")
    written = next(csv.DictReader(io.StringIO(to_csv([row]))))
    assert (written["server_ttft_p50_s"], written["server_restarts"]) == ("0.0412", "1")
    # Without server figures the table is as before.
    assert "Server TTFT" not in to_markdown(rows_from_results(plain_run("a100", 3200.0), source="x.json"))
