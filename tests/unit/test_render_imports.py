"""``llmload report`` and ``llmload compare`` render a saved results file without Locust, gevent or prometheus_client.

Each command runs in a fresh interpreter with ``-X importtime``, which lists
on stderr every module imported by an ``import`` statement; none of those
three packages (nor a submodule) may be among them. ``-X importtime`` does
not list a module loaded with ``importlib.import_module`` (as ``llmload.cli``
loads its sub-commands), so the same command also runs under ``runpy`` in a
fresh interpreter that prints ``sys.modules`` at the end. The results files
are written from a real ``MetricsStore`` in this process, through
``llmload.figures``: version 2 as the plugin writes it, and version 1 as
earlier llmload versions did.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmload.figures import Slo, group_body, store_bodies
from llmload.metrics import MetricsStore
from llmload.record import RequestRecord
from llmload.render import document

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("locust", "gevent", "prometheus_client")
T0 = 1_795_000_000.0


def _record(i: int, *, failed: bool = False) -> RequestRecord:
    common = {
        "backend": "http://127.0.0.1:8000",
        "model": "m",
        "user_class": "Chat",
        "endpoint": "/v1/chat/completions",
        "t_send": 1.0,
        "start_wall": T0 + i,
    }
    if failed:
        return RequestRecord(**common, error_kind="http_5xx", t_end=1.5)
    times = [1.0 + 0.05 * (i + 1) + 0.01 * k for k in range(11)]
    return RequestRecord(**common, token_times=times, t_end=times[-1], completion_tokens=11, prompt_tokens=5)


def results_doc(schema: str = document.SCHEMA) -> dict:
    """A small results document: 3 requests ok (all meet the SLO) and 1 failed."""
    store = MetricsStore(slo_stream_rate_tps=10.0)
    for i in range(3):
        store.record(_record(i))
    store.record(_record(3, failed=True))
    doc = {
        "schema": document.SCHEMA,
        "run": {"started_at": None, "ended_at": None, "duration_s": 4.0, "peak_users": 2, "workers": 1},
        "groups": store_bodies(store),
        "total": group_body(store.total(), slo=Slo.of(store)),
        "timeline": [],
    }
    if schema == document.SCHEMA_V1:
        # As version 1 wrote it: attainment over successful requests only, no attainment_of_ok.
        doc["schema"] = schema
        for body in (*doc["groups"], doc["total"]):
            body["slo"]["attainment"] = body["slo"].pop("attainment_of_ok")
    return doc


def imported_modules(stderr: str) -> list[str]:
    """The module names of ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    return [
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "imported package" not in line
    ]


def forbidden(modules: list[str]) -> list[str]:
    return sorted({m for m in modules if any(m == name or m.startswith(name + ".") for name in FORBIDDEN)})


def run_llmload(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "llmload", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


# Runs ``python -m llmload ARGS`` and then prints, as the last line, every module loaded by any means.
MODULES_AT_EXIT = """
import json, runpy, sys
sys.argv = ["llmload", *sys.argv[1:]]
try:
    runpy.run_module("llmload", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}))
"""


def modules_at_exit(*args: str) -> tuple[int, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", MODULES_AT_EXIT, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    last = json.loads(result.stdout.splitlines()[-1])
    return last["exit"], last["modules"]


@pytest.mark.parametrize("schema", [document.SCHEMA, document.SCHEMA_V1])
@pytest.mark.parametrize("command", ["report", "compare"])
def test_report_and_compare_import_no_locust_gevent_or_prometheus(tmp_path, command, schema):
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results_doc(schema)))
    out = tmp_path / "out.html"
    args = ["report", str(source), "-o", str(out)] if command == "report" else ["compare", str(source)]
    result = run_llmload(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    # The listing is read right: it names the command line and the render modules the command uses.
    assert {"llmload.cli", "llmload.render.document"} <= set(modules)
    assert f"llmload.render.{'html' if command == 'report' else 'compare'}" in modules
    assert forbidden(modules) == []
    if command == "report":
        assert out.exists() and f"llmload report: wrote {out}" in result.stdout
    else:
        # 3 met / (3 ok + 1 failed) = 75.0%, whichever version the file is (version 1 said 3 / 3).
        (row,) = [line for line in result.stdout.splitlines() if line.startswith("| http://127.0.0.1:8000 |")]
        assert "| 75.0% |" in row


def test_the_fixture_documents_differ_only_in_the_attainment_definition():
    v1, v2 = results_doc(document.SCHEMA_V1), results_doc()
    assert (v1["total"]["requests"]["ok"], v1["total"]["requests"]["failed"], v1["total"]["slo"]["met"]) == (3, 1, 3)
    assert v1["total"]["slo"]["attainment"] == 1.0 and v2["total"]["slo"]["attainment"] == 0.75
    upgraded = document.upgrade(v1)
    assert upgraded["total"]["slo"] == v2["total"]["slo"] and upgraded["groups"] == v2["groups"]


@pytest.mark.parametrize("command", ["report", "compare"])
def test_no_locust_gevent_or_prometheus_in_sys_modules_either(tmp_path, command):
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results_doc()))
    args = (
        ["report", str(source), "-o", str(tmp_path / "out.html")] if command == "report" else ["compare", str(source)]
    )
    code, modules = modules_at_exit(*args)
    assert code == 0
    assert f"llmload.{command}" in modules and "llmload.render.document" in modules
    assert forbidden(modules) == []
