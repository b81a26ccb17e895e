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
    result = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_datasource_input_and_variable(path):
    doc = load(path)
    assert [i["name"] for i in doc["__inputs"]] == ["DS_PROMETHEUS"]
    assert doc["__inputs"][0]["pluginId"] == "prometheus"
    ds = variables(doc)["DS_PROMETHEUS"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_panel_target_and_query_variable_uses_ds_prometheus(path):
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
    count = 0
    for expr in exprs(load(path)):
        calls = expr.count("histogram_quantile(")
        count += calls
        assert len(re.findall(r"histogram_quantile\([0-9.]+, sum by \(le(, [a-z_]+)*\) \(", expr)) == calls, expr
        assert "_bucket" in expr or not calls
    assert count > 0


def test_cost_panel_uses_price_variable():
    doc = load(DASHBOARDS / "gpu-backend-comparison.json")
    price = variables(doc)["price_per_hour"]
    assert price["type"] == "textbox" and float(price["query"]) > 0
    assert any("$price_per_hour" in expr for expr in exprs(doc))


def test_client_vs_server_tolerates_old_and_new_vllm_names():
    text = " ".join(exprs(load(DASHBOARDS / "client-vs-server.json")))
    assert "vllm:kv_cache_usage_perc" in text and "vllm:gpu_cache_usage_perc" in text
    assert "vllm:inter_token_latency_seconds" in text and "vllm:time_per_output_token_seconds" in text
    assert "vllm:time_to_first_token_seconds" in text and "vllm:request_queue_time_seconds" in text


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
