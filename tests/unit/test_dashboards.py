"""Grafana dashboards: structure, datasource wiring and PromQL conventions of every JSON file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.http_server import LocalHTTPServer

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
FILES = sorted(DASHBOARDS.glob("*.json"))
DS_UID = "${DS_PROMETHEUS}"
RUN_EVENTS_EXPR = "llmload_run_event_last_timestamp_seconds * 1000"

# The series llmload's exporter serves (docs/prometheus-grafana.md): the dashboards may query nothing else.
HISTOGRAMS = {
    "llmload_ttft_seconds",
    "llmload_itl_seconds",
    "llmload_tpot_seconds",
    "llmload_e2e_seconds",
    "llmload_stream_rate_tokens_per_second",
    "llmload_dispatch_lag_seconds",
    "llmload_ttft_from_intended_seconds",
    "llmload_e2e_from_intended_seconds",
    "llmload_server_ttft_seconds",
    "llmload_server_itl_seconds",
    "llmload_server_queue_time_seconds",
}
COUNTERS = {
    "llmload_requests_total",
    "llmload_output_tokens_total",
    "llmload_prompt_tokens_total",
    "llmload_slo_met_requests_total",
    "llmload_slo_ttft_met_requests_total",
    "llmload_slo_stream_rate_met_requests_total",
    "llmload_server_preemptions_total",
    "llmload_server_generation_tokens_total",
    "llmload_server_prompt_tokens_total",
    "llmload_server_restarts_total",
    "llmload_run_events_total",
    "llmload_reasoning_tokens_total",
}
GAUGES = {
    "llmload_users",
    "llmload_workers",
    "llmload_workers_missing",
    "llmload_in_flight_requests",
    "llmload_generator_cpu_percent",
    "llmload_generator_read_lateness_seconds",
    "llmload_generator_trustworthy",
    "llmload_generator_loop_lag_p99_seconds",
    "llmload_generator_limit",
    "llmload_slo_stream_rate_tokens_per_second",
    "llmload_slo_ttft_seconds",
    "llmload_info",
    "llmload_ttft_percentile_seconds",
    "llmload_itl_percentile_seconds",
    "llmload_tpot_percentile_seconds",
    "llmload_e2e_percentile_seconds",
    "llmload_stream_rate_percentile_tokens_per_second",
    "llmload_ttfa_percentile_seconds",
    "llmload_backend_info",
    "llmload_backend_price_per_hour_dollars",
    "llmload_backend_users",
    "llmload_backend_in_flight_requests",
    "llmload_server_up",
    "llmload_server_requests_running",
    "llmload_server_requests_waiting",
    "llmload_server_kv_cache_usage_ratio",
    "llmload_run_event_last_timestamp_seconds",
}
CONTRACT = GAUGES | COUNTERS | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
# Client latency histograms: their percentiles come from the exact gauges, buckets only for heatmaps and
# for figures across groups.
CLIENT_LATENCY = ("llmload_ttft_seconds", "llmload_itl_seconds", "llmload_tpot_seconds", "llmload_e2e_seconds")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(doc: dict) -> list[dict]:
    out = []
    for panel in doc["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return out


def exprs(doc: dict) -> list[str]:
    return [t["expr"] for p in panels(doc) for t in p.get("targets", [])]


def variables(doc: dict) -> dict[str, dict]:
    return {v["name"]: v for v in doc["templating"]["list"]}


def annotations(doc: dict) -> dict[str, dict]:
    return {a["name"]: a for a in doc["annotations"]["list"]}


def series_names(expr: str) -> set[str]:
    """Metric names an expression selects: every identifier left once strings, variables, label matchers,
    range selectors, grouping clauses, function calls, keywords and numbers are set aside."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\$\w+", "", expr)
    expr = re.sub(r"\{[^{}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", "", expr)
    names = re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*\b(?!\s*\()", expr)
    return set(names) - PROMQL_WORDS


def test_series_names_parser():
    assert series_names(
        'histogram_quantile(0.5, sum by (le, backend) (rate(a_bucket{backend=~"$backend"}[$__rate_interval])))'
    ) == {"a_bucket"}
    assert series_names('max by (b) (x{w!="run"}) / 3600 / sum(rate(y[5m])) * 1e6 + (z == bool 0)') == {"x", "y", "z"}
    assert series_names("vllm:kv_cache_usage_perc or on (instance) llamacpp:x") == {
        "vllm:kv_cache_usage_perc",
        "llamacpp:x",
    }


def test_the_three_dashboards_exist():
    titles = {load(path)["title"] for path in FILES}
    assert titles == {"LLM load test", "GPU backend comparison", "Client vs server"}


def test_uids_are_stable_unique_and_ids_null():
    uids = [load(path)["uid"] for path in FILES]
    assert len(set(uids)) == len(uids)
    for path in FILES:
        doc = load(path)
        assert doc["id"] is None
        assert re.fullmatch(r"llmload-[a-z0-9-]+", doc["uid"]) and len(doc["uid"]) <= 40
        ids = [p["id"] for p in panels(doc)]
        assert len(set(ids)) == len(ids), path.name


def test_files_match_the_generator():
    """The committed JSON is exactly what dashboards/generate.py (Grafana's foundation SDK) writes."""
    pytest.importorskip("grafana_foundation_sdk")
    result = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_generator_builds_with_grafanas_sdk():
    text = (DASHBOARDS / "generate.py").read_text()
    assert "from grafana_foundation_sdk.cog.encoder import JSONEncoder" in text
    for module in ("dashboard", "timeseries", "prometheus"):
        assert re.search(rf"from grafana_foundation_sdk\.builders import {module}\b", text), module


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_datasource_input_and_variable(path):
    doc = load(path)
    assert [i["name"] for i in doc["__inputs"]] == ["DS_PROMETHEUS"]
    assert doc["__inputs"][0]["pluginId"] == "prometheus"
    ds = variables(doc)["DS_PROMETHEUS"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_panel_target_annotation_and_query_variable_uses_ds_prometheus(path):
    doc = load(path)
    for panel in panels(doc):
        if panel["type"] == "row":
            assert not panel.get("targets")
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DS_UID}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": DS_UID}, panel["title"]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"] == {"type": "prometheus", "uid": DS_UID}, var["name"]
    for annotation in doc["annotations"]["list"]:
        if not annotation.get("builtIn"):
            assert annotation["datasource"] == {"type": "prometheus", "uid": DS_UID}, annotation["name"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_client_filters_are_multi_select_regex_variables(path):
    doc = load(path)
    for name, var in variables(doc).items():
        if var["type"] != "query":
            continue
        assert var["multi"] and var["includeAll"] and var["allValue"] == ".*", name
        assert var["definition"].startswith("label_values(") and var["query"]["query"] == var["definition"]
    backend = variables(doc)["backend"]
    assert backend["definition"] == "label_values(llmload_requests_total, backend)"
    for expr in exprs(doc):
        for name in re.findall(r"\$(\w+)", expr):
            assert name == "__rate_interval" or name in variables(doc), (name, expr)
        # multi-select values are regex alternations: they must be matched with =~
        assert not re.search(r'[^~]="\$', expr), expr


def test_load_test_filters_on_backend_model_and_user_class():
    doc = load(DASHBOARDS / "llm-load-test.json")
    assert {"backend", "model", "user_class"} <= set(variables(doc))
    assert variables(doc)["user_class"]["definition"].startswith("label_values(llmload_requests_total{")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_rate_uses_rate_interval(path):
    for expr in exprs(load(path)):
        calls = re.findall(r"\b(?:rate|irate|increase|delta|deriv)\(", expr)
        windows = re.findall(r"\b(?:rate|irate|increase|delta|deriv)\([^()\[\]]*\[([^\]]*)\]\)", expr)
        assert windows == ["$__rate_interval"] * len(calls), expr
        assert expr.count("[") == len(calls), expr  # no other range selectors


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_histogram_quantile_sums_by_le(path):
    for expr in exprs(load(path)):
        calls = expr.count("histogram_quantile(")
        assert len(re.findall(r"histogram_quantile\([0-9.]+, sum by \(le(, [a-z_]+)*\) \(", expr)) == calls, expr
        assert "_bucket" in expr or not calls


def test_every_target_and_annotation_queries_only_series_of_the_contract():
    unknown = []
    for path in FILES:
        doc = load(path)
        for panel in panels(doc):
            for target in panel.get("targets", []):
                for name in sorted(series_names(target["expr"]) - CONTRACT):
                    unknown.append(f"{path.name} / {panel['title']}: {name}")
        for annotation in doc["annotations"]["list"]:
            for name in sorted(series_names(annotation.get("expr", "")) - CONTRACT):
                unknown.append(f"{path.name} / annotation {annotation['name']}: {name}")
    assert not unknown, "series outside llmload's exporter contract:\n" + "\n".join(unknown)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_dashboard_marks_run_events_and_untrustworthy_periods(path):
    marks = annotations(load(path))
    events = marks["Run events"]
    assert events["expr"] == RUN_EVENTS_EXPR and events["useValueForTime"] is True and events["enable"] is True
    assert "{{event}}" in events["titleFormat"] and "{{backend}}" in events["titleFormat"]
    # Grafana marks samples above 0: the expression must be 1 (not 0) while a worker is untrustworthy.
    untrustworthy = marks["Generator not trustworthy"]
    assert "llmload_generator_trustworthy == bool 0" in untrustworthy["expr"] and untrustworthy["enable"] is True
    assert not untrustworthy.get("useValueForTime")
    assert marks["Annotations & Alerts"]["builtIn"] == 1
    for annotation in marks.values():
        assert "placement" not in annotation  # Grafana 12 would tuck the toggle away in a menu


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_percentiles_are_exact_and_buckets_only_for_heatmaps_and_aggregates(path):
    """Percentile panels read the exact gauges; a histogram_quantile over a client latency histogram only in
    a panel that says it aggregates across groups; live panels use the sliding window, stats the whole run."""
    for panel in panels(load(path)):
        for target in panel.get("targets", []):
            expr, where = target["expr"], f"{path.name} / {panel['title']}"
            for metric in CLIENT_LATENCY + ("llmload_stream_rate_tokens_per_second",):
                if "histogram_quantile" in expr and f"{metric}_bucket" in expr:
                    assert "Bucket histograms" in panel["description"], where
            if "_percentile_" in expr:
                window = 'window="run"' if panel["type"] == "stat" else 'window!="run"'
                assert window in expr, where
                assert re.search(r'percentile=~?"[0-9|]+"', expr), where


def test_every_percentile_panel_of_the_load_test_is_exact():
    doc = load(DASHBOARDS / "llm-load-test.json")
    text = " ".join(exprs(doc))
    for metric in ("ttft", "itl", "tpot", "e2e"):
        assert re.search(rf'llmload_{metric}_percentile_seconds\{{[^}}]*window!="run", percentile=~"50\|90\|99"', text)
        assert re.search(rf'llmload_{metric}_percentile_seconds\{{[^}}]*window="run", percentile=~"50\|90\|99"', text)
    assert "llmload_stream_rate_percentile_tokens_per_second{" in text and 'percentile=~"10|50"' in text


def test_load_test_shows_generator_trust_and_open_loop_truth():
    doc = load(DASHBOARDS / "llm-load-test.json")
    names = set().union(*(series_names(e) for e in exprs(doc)))
    assert {
        "llmload_generator_trustworthy",
        "llmload_generator_loop_lag_p99_seconds",
        "llmload_generator_cpu_percent",
        "llmload_generator_read_lateness_seconds",
        "llmload_dispatch_lag_seconds_bucket",
        "llmload_ttft_from_intended_seconds_bucket",
        "llmload_e2e_from_intended_seconds_bucket",
        "llmload_workers_missing",
    } <= names
    timeline = next(p for p in panels(doc) if p["type"] == "state-timeline")
    assert "llmload_generator_trustworthy" in timeline["targets"][0]["expr"]


def test_trust_panels_draw_the_limits_in_force_as_dashed_lines():
    """The self-check's thresholds come from llmload_generator_limit, not from defaults baked into the JSON."""
    doc = load(DASHBOARDS / "llm-load-test.json")
    limits = {
        "Event-loop lag p99 by load generator": "loop_lag_p99_s",
        "Load-generator CPU": "cpu_percent",
        "Read lateness by load generator": "read_lateness_p99_s",
        "Dispatch lag": "dispatch_lag_p99_s",
    }
    by_title = {p["title"]: p for p in panels(doc)}
    for title, check in limits.items():
        panel = by_title[title]
        target = next(t for t in panel["targets"] if "llmload_generator_limit" in t["expr"])
        assert f'check="{check}"' in target["expr"], title
        override = next(o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == target["refId"])
        styles = {p["id"]: p["value"] for p in override["properties"]}
        assert styles["custom.lineStyle"]["fill"] == "dash", title
        assert styles["color"]["fixedColor"] == "red", title


def test_backend_comparison_costs_from_the_backends_price():
    doc = load(DASHBOARDS / "gpu-backend-comparison.json")
    assert set(variables(doc)) == {"DS_PROMETHEUS", "backend", "model", "user_class"}  # no price variable
    by_title = {p["title"]: p for p in panels(doc)}
    cost = by_title["Cost per million output tokens"]["targets"][0]["expr"]
    assert re.fullmatch(
        r"max by \(backend\) \(llmload_backend_price_per_hour_dollars\{[^}]*\}\) / 3600 / "
        r"sum by \(backend\) \(rate\(llmload_output_tokens_total\{[^}]*\}\[\$__rate_interval\]\)\) \* 1e6",
        cost,
    )
    users = by_title["Users per dollar-hour"]["targets"][0]["expr"]
    assert re.fullmatch(
        r"sum by \(backend\) \(llmload_backend_users\{[^}]*\}\) / "
        r"max by \(backend\) \(llmload_backend_price_per_hour_dollars\{[^}]*\}\)",
        users,
    )
    table = by_title["Backends"]
    assert table["type"] == "table"
    info = table["targets"][0]
    assert "llmload_backend_info" in info["expr"] and info["format"] == "table" and info["instant"] is True
    for label in ("gpu", "engine", "quantization", "model"):
        assert label in info["expr"]


def test_client_vs_server_filters_on_backend_only_one_row_per_backend():
    doc = load(DASHBOARDS / "client-vs-server.json")
    assert set(variables(doc)) == {"DS_PROMETHEUS", "backend"}
    rows = [p for p in panels(doc) if p["type"] == "row" and p.get("repeat") == "backend"]
    assert len(rows) == 1
    text = " ".join(exprs(doc))
    assert "instance" not in text and "vllm:" not in text and "llamacpp:" not in text
    for expr in exprs(doc):
        for selector in re.findall(r"llmload_server_\w+\{([^}]*)\}", expr):
            assert selector == 'backend=~"$backend"', expr
    for metric in (
        "llmload_server_requests_running",
        "llmload_server_requests_waiting",
        "llmload_server_kv_cache_usage_ratio",
        "llmload_server_preemptions_total",
        "llmload_server_generation_tokens_total",
    ):
        assert metric in text, metric
    for metric in ("llmload_server_ttft_seconds", "llmload_server_itl_seconds"):
        for q in ("0.5", "0.99"):
            assert f"histogram_quantile({q}, sum by (le, backend) (rate({metric}_bucket{{" in text, (metric, q)


def test_provisioning_files_point_at_the_dashboards():
    datasources = (DASHBOARDS / "provisioning/datasources/llmload.yaml").read_text()
    providers = (DASHBOARDS / "provisioning/dashboards/llmload.yaml").read_text()
    assert "type: prometheus" in datasources and "timeInterval: 2s" in datasources
    assert "type: file" in providers and re.search(r"^\s+path: /\S+$", providers, re.M)
    scrape = (DASHBOARDS / "prometheus.yml").read_text()
    assert "127.0.0.1:9646" in scrape and "scrape_interval: 2s" in scrape


# -- llmload grafana push, against a fake Grafana that records the API calls ---------------------------


class FakeGrafana(LocalHTTPServer):
    """A tiny Grafana HTTP API on 127.0.0.1: folders and dashboards, bearer-token auth."""

    def __init__(self, *, token: str = "good-token", folders: list[dict] | None = None) -> None:
        import http.server

        self.token = token
        self.folders = list(folders or [])
        self.calls: list[tuple[str, str, dict | None]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _answer(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.calls.append((method, self.path, body))
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    return self._answer(401, {"message": "invalid API key"})
                if (method, self.path) == ("GET", "/api/folders"):
                    return self._answer(200, fake.folders)
                if (method, self.path) == ("POST", "/api/folders"):
                    folder = {"id": len(fake.folders) + 1, "uid": body["uid"], "title": body["title"]}
                    fake.folders.append(folder)
                    return self._answer(200, folder)
                if (method, self.path) == ("POST", "/api/dashboards/db"):
                    uid = body["dashboard"]["uid"]
                    return self._answer(200, {"status": "success", "uid": uid, "url": f"/d/{uid}/x", "version": 1})
                return self._answer(404, {"message": "not found"})

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        super().__init__(Handler)


def test_grafana_push_creates_the_folder_and_uploads_each_dashboard(monkeypatch, capsys):
    pytest.importorskip("grafana_client")
    from llmload.cli import main

    monkeypatch.setenv("GRAFANA_TOKEN", "good-token")
    with FakeGrafana() as grafana:
        code = main(["grafana", "push", "--url", grafana.url, "--folder", "LLM tests"])
    assert code == 0
    calls = [(method, path) for method, path, _ in grafana.calls]
    assert calls == [("GET", "/api/folders"), ("POST", "/api/folders")] + [("POST", "/api/dashboards/db")] * len(FILES)
    assert grafana.calls[1][2] == {"title": "LLM tests", "uid": "LLM-tests"}
    uploads = {body["dashboard"]["uid"]: body for method, path, body in grafana.calls[2:]}
    for path in FILES:
        doc = load(path)
        body = uploads[doc["uid"]]
        assert body["dashboard"] == doc  # the file as it is (id already null)
        assert body["folderUid"] == "LLM-tests" and body["overwrite"] is True
    out = capsys.readouterr().out.splitlines()
    assert sorted(out) == sorted(f"pushed {grafana.url}/d/{load(p)['uid']}/x" for p in FILES)


def test_grafana_push_reuses_an_existing_folder(monkeypatch):
    pytest.importorskip("grafana_client")
    from llmload.grafana import push

    with FakeGrafana(folders=[{"id": 7, "uid": "abc", "title": "llmload"}]) as grafana:
        urls = push(grafana.url, credential="good-token")
    assert [path for _, path, _ in grafana.calls].count("/api/folders") == 1  # looked up, not created
    assert {body["folderUid"] for _, path, body in grafana.calls if path == "/api/dashboards/db"} == {"abc"}
    assert len(urls) == len(FILES)


def test_grafana_push_bad_token_is_one_line(monkeypatch, capsys):
    pytest.importorskip("grafana_client")
    from llmload.cli import main

    monkeypatch.setenv("GRAFANA_TOKEN", "wrong")
    with FakeGrafana() as grafana:
        code = main(["grafana", "push", "--url", grafana.url])
    err = capsys.readouterr().err
    assert code == 1
    assert (
        err == f"llmload grafana: error: {grafana.url} rejected the credentials (401): "
        "check GRAFANA_TOKEN or GRAFANA_USER/GRAFANA_PASSWORD\n"
    )


def test_grafana_push_unreachable_and_missing_token_are_one_line(monkeypatch, capsys):
    pytest.importorskip("grafana_client")
    import socket

    from llmload.cli import main

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("GRAFANA_TOKEN", "t")
    assert main(["grafana", "push", "--url", f"http://127.0.0.1:{port}"]) == 1
    assert (
        capsys.readouterr().err
        == f"llmload grafana: error: cannot reach Grafana at http://127.0.0.1:{port} (ConnectionError)\n"
    )
    monkeypatch.delenv("GRAFANA_TOKEN")
    monkeypatch.delenv("GRAFANA_USER", raising=False)
    assert main(["grafana", "push", "--url", "http://127.0.0.1:1"]) == 1
    assert "set GRAFANA_TOKEN" in capsys.readouterr().err


def test_grafana_push_rejects_a_folder_without_dashboards(tmp_path):
    from llmload.errors import ConfigError
    from llmload.grafana import load_dashboards

    with pytest.raises(ConfigError, match="no \\*.json dashboards"):
        load_dashboards(tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="bad.json: not a readable JSON file"):
        load_dashboards(tmp_path)
