"""A real Prometheus for integration tests: start it on a free port, query it, and run the dashboards' queries."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ProcessGroup, free_port

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"


def get_json(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class Prometheus:
    """Query a running Prometheus over its HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str, at: float) -> list[dict]:
        params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        answer = get_json(f"{self.url}/api/v1/query?{params}")
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def label_values(self, label: str, selector: str, start: float, end: float) -> list[str]:
        params = urllib.parse.urlencode({"match[]": selector, "start": f"{start:.3f}", "end": f"{end:.3f}"})
        return get_json(f"{self.url}/api/v1/label/{label}/values?{params}")["data"]

    def value(self, expr: str, at: float) -> float:
        result = self.query(expr, at)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def alerts(self) -> list[dict]:
        """Alerts pending or firing now."""
        answer = get_json(f"{self.url}/api/v1/alerts")
        assert answer["status"] == "success", answer
        return answer["data"]["alerts"]


@contextmanager
def running_prometheus(config: dict[str, Any], tmp: Path) -> Iterator[Prometheus]:
    """Start Prometheus with ``config`` (written as JSON, which is YAML) and stop it afterwards."""
    (tmp / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    with ProcessGroup() as group:
        group.start(
            [
                "prometheus",
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            tmp,
            tmp / "prometheus.log",
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus did not start: {(tmp / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield Prometheus(url)


def substitute(expr: str, substitutions: dict[str, str]) -> str:
    """Replace Grafana variables as Grafana would with 'All' selected (regex .*) and fixed values."""
    for name, value in substitutions.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$(\w+)", ".*", expr)


def dashboard_queries(
    substitutions: dict[str, str], *, leave_out: re.Pattern[str] | None = None
) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) of every target of every dashboard, variables substituted."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for target in panel.get("targets", []):
                if leave_out is None or not leave_out.search(target["expr"]):
                    out.append((path.name, panel["title"], substitute(target["expr"], substitutions)))
    return out


def annotation_queries(substitutions: dict[str, str]) -> list[tuple[str, str, str]]:
    """(dashboard, annotation name, PromQL) of every Prometheus annotation of every dashboard."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for annotation in json.loads(path.read_text())["annotations"]["list"]:
            expr = annotation.get("expr") or (annotation.get("target") or {}).get("expr")
            if expr:
                out.append((path.name, annotation["name"], substitute(expr, substitutions)))
    return out


def variable_queries(substitutions: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """(dashboard, variable, label, selector) of every ``label_values`` template variable."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] == "query":
                match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["definition"])
                assert match, var["definition"]
                out.append((path.name, var["name"], match.group(2), substitute(match.group(1), substitutions)))
    return out
