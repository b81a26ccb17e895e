"""Prometheus end to end: a real Prometheus scrapes llmload's exporter and the simulator during real runs.

For a local run and a distributed one (``--processes 2``): ``promtool check
metrics`` finds nothing to lint on a live scrape; every PromQL expression of
every dashboard panel (template variables replaced by match-all regexes) and
every template-variable query returns data at a moment inside the run; the
last value Prometheus kept equals the results JSON (the grace period works);
and the results JSON carries the server-side section.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.processes import ProcessGroup, free_port, locust_command
from tests.support.prometheus import Prometheus, dashboard_queries, running_prometheus, variable_queries

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("promtool") is None,
        reason="needs Debian's prometheus package (make prometheus)",
    ),
]

RUN_S = 14
GRACE_S = 3
RATE_INTERVAL = "15s"
SUBSTITUTIONS = {"$__rate_interval": RATE_INTERVAL, "$price_per_hour": "2.5"}
WORKLOAD = [
    "--headless",
    "-u",
    "8",
    "-r",
    "8",
    "-t",
    f"{RUN_S}s",
    "--llm-think-time",
    "0",
    "--llm-max-tokens",
    "40",
    "--llm-slo-ttft",
    "2",
    "--llm-server-metrics",
    "--llm-prometheus-grace",
    str(GRACE_S),
    "--exit-code-on-error",
    "0",
    "--stop-timeout",
    "5",
]


def fetch_text(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def sim():
    # A few 429s so error series carry real values, not only zeros.
    with SimulatorProcess(
        profile="rtx3090", extra_args=["--fault", "http_429", "--fault-rate", "0.05", "--seed", "3"]
    ) as sim:
        yield sim


@pytest.fixture(scope="module")
def stack(sim, tmp_path_factory):
    """Prometheus scraping the simulator and two exporter ports (local run, distributed run) every second."""
    tmp = tmp_path_factory.mktemp("prometheus")
    ports = {"local": free_port(), "distributed": free_port()}
    sim_target = urllib.parse.urlsplit(sim.base_url).netloc
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "llmload", "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports.values()]}]},
            {"job_name": "vllm", "static_configs": [{"targets": [sim_target]}]},
        ],
    }
    with running_prometheus(config, tmp) as prom:
        yield prom, ports


# Series only open-loop runs (--llm-arrival poisson|constant), --llm-backends runs or runs against a thinking
# model export: this module's runs are closed-loop on one plain backend without --llm-backends, so targets
# that query them are left out (the soak test's backends think and run with --llm-backends: it checks them).
ONLY_IN_OTHER_RUNS = re.compile(
    r"llmload_(?:dispatch_lag|ttft_from_intended|e2e_from_intended)_seconds|llmload_backend_"
    r"|llmload_ttfa_percentile_seconds|llmload_reasoning_tokens_total"
)


def run_with_exporter(
    stack, sim, tmp_path: Path, mode: str, extra: list[str]
) -> tuple[SimpleNamespace, float, str | None]:
    """Run Locust with the exporter on ``stack``'s port for ``mode``; lint a live scrape; return (run, mid, lint)."""
    prom, ports = stack
    port = ports[mode]
    results, log = tmp_path / "results.json", tmp_path / "locust.log"
    cmd = locust_command(
        "chatbot.py", sim.base_url, *WORKLOAD, "--llm-prometheus-port", str(port), "--llm-results", str(results), *extra
    )
    exporter_url = f"http://127.0.0.1:{port}/metrics"
    lint = None
    with ProcessGroup() as group:
        proc = group.start(cmd, tmp_path, log)
        started = time.time()
        # Wait for the first token metrics, then lint one live scrape.
        while time.time() - started < RUN_S + 20 and proc.poll() is None:
            try:
                text = fetch_text(exporter_url)
            except (urllib.error.URLError, OSError):
                text = ""
            if "llmload_ttft_seconds_bucket" in text:
                checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
                lint = f"rc={checked.returncode} {checked.stdout}{checked.stderr}"
                break
            time.sleep(0.5)
        proc.wait(timeout=RUN_S + 60)
    run = SimpleNamespace(
        returncode=proc.returncode,
        output=log.read_text(),
        results=json.loads(results.read_text()) if results.exists() else None,
    )
    assert run.returncode == 0 and run.results, run.output[-3000:]
    # A moment inside the run with a full rate window of samples behind it.
    run_started = datetime.datetime.fromisoformat(run.results["run"]["started_at"]).timestamp()
    return run, run_started + RUN_S - 1.0, lint


def check_dashboards(prom: Prometheus, at: float, port: int) -> None:
    empty, not_finite = [], []
    queries = dashboard_queries(SUBSTITUTIONS, leave_out=ONLY_IN_OTHER_RUNS)
    assert len(queries) > 50
    for dashboard, title, expr in queries:
        result = prom.query(expr, at)
        if not result:
            empty.append(f"{dashboard} / {title}: {expr}")
        # With requests finishing all through the window, every quantile, ratio and cost is a number.
        elif not all(math.isfinite(float(series["value"][1])) for series in result):
            not_finite.append(f"{dashboard} / {title}: {expr} = {result}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert not not_finite, "queries with NaN or Inf:\n" + "\n".join(not_finite)
    for dashboard, name, label, selector in variable_queries(SUBSTITUTIONS):
        assert prom.label_values(label, selector, at - 10, at), (dashboard, name, selector)


def check_run(prom: Prometheus, run, at: float, port: int, lint: str | None, *, workers: int) -> None:
    assert lint == "rc=0 ", f"promtool check metrics: {lint}"
    instance = f'instance="127.0.0.1:{port}"'
    assert prom.value(f"sum(llmload_workers{{{instance}}})", at) == workers
    assert prom.value(f"sum(llmload_users{{{instance}}})", at) == 8
    # The grace period let Prometheus see the final, fully merged values.
    total = run.results["total"]
    final = prom.value(f"sum(max_over_time(llmload_requests_total{{{instance}}}[2m]))", time.time())
    assert final == total["requests"]["ok"] + total["requests"]["failed"]
    tokens = prom.value(f"sum(max_over_time(llmload_output_tokens_total{{{instance}}}[2m]))", time.time())
    assert tokens == total["tokens"]["output"]
    server = run.results["server"]
    assert list(server) == [run.results["run"]["host"]]
    body = server[run.results["run"]["host"]]
    assert body["engine"] == "vllm" and body["scrapes"] >= 3
    # The server also counts tokens of requests cut off at stop, which the client never received in full.
    assert body["generation_tokens"] >= total["tokens"]["output"] * 0.9
    assert body["ttft_s"]["count"] >= total["requests"]["ok"] and 0 < body["ttft_s"]["mean"] < 5
    assert body["peak_running"] >= 1 and body["peak_kv_cache_usage"] > 0
    assert "Client vs server TTFT" in run.output


def test_local_run(stack, sim, tmp_path):
    prom, ports = stack
    run, at, lint = run_with_exporter(stack, sim, tmp_path, "local", [])
    check_run(prom, run, at, ports["local"], lint, workers=1)
    check_dashboards(prom, at, ports["local"])


def test_distributed_run(stack, sim, tmp_path):
    prom, ports = stack
    master_port = str(free_port())  # not Locust's default 5557, which other runs on this machine may use
    run, at, lint = run_with_exporter(
        stack,
        sim,
        tmp_path,
        "distributed",
        [
            "--processes",
            "2",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            master_port,
            "--master-host",
            "127.0.0.1",
            "--master-port",
            master_port,
        ],
    )
    assert run.results["run"]["workers"] == 2
    check_run(prom, run, at, ports["distributed"], lint, workers=2)
    check_dashboards(prom, at, ports["distributed"])
