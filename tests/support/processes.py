"""Helpers to run real Locust processes and read a server's Prometheus counters in tests.

Every process is started on 127.0.0.1 with free ports and stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILES = ROOT / "locustfiles"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(base_url: str) -> dict[str, float]:
    """Return ``{sample name: value summed over labels}`` of a server's /metrics."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@dataclass
class LocustRun:
    returncode: int
    output: str
    results: dict | None
    stats: list[dict] | None  # Locust's own final request statistics (--json-file)

    def row(self, name: str) -> dict:
        return next(r for r in self.stats if r["name"] == name)


def locust_command(locustfile: str, host: str, *args: str) -> list[str]:
    path = str(LOCUSTFILES / locustfile) if not os.path.isabs(locustfile) else locustfile
    return [sys.executable, "-m", "locust", "-f", path, "--host", host, *args]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONUNBUFFERED"] = "1"
    return out


def run_locust(tmp_path: Path, locustfile: str, host: str, *args: str, timeout: float = 120) -> LocustRun:
    """Run one headless local Locust process to completion and collect its outputs."""
    results = tmp_path / "results.json"
    stats_prefix = tmp_path / "stats"
    cmd = locust_command(
        locustfile, host, "--headless", "--llm-results", str(results), "--json-file", str(stats_prefix), *args
    )
    completed = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=env())
    return collect(completed.returncode, completed.stdout + completed.stderr, results, stats_prefix)


def collect(returncode: int, output: str, results: Path, stats_prefix: Path) -> LocustRun:
    """Read a finished run's results JSON and Locust's final statistics (written at shutdown)."""
    doc = json.loads(results.read_text()) if results.exists() else None
    stats_file = Path(f"{stats_prefix}.json")
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else None
    return LocustRun(returncode, output, doc, stats)


class ProcessGroup:
    """Start processes, and stop every one of them (by PID) on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
        handle = open(log, "w")
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, env=env())
        handle.close()
        self.procs.append(proc)
        return proc

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
