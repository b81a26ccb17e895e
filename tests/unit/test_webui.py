"""The LLM tab: its rows from a known store, the /stats/requests hook under a base path, CSV, secrets.

A real Locust ``WebUI`` (not started: Flask's test client talks to it) on a
fresh ``Environment`` per test, with a local runner and a no-op user class.
"""

from __future__ import annotations

import csv
import io
import sys

import gevent
import pytest
from locust import User, constant, task
from locust.env import Environment
from locust.event import Events

import llmload.hooks  # noqa: F401  (registers the --llm-* options Locust's page lists)
from llmload import webui
from llmload.figures import Slo, group_body
from llmload.metrics import MetricsStore
from llmload.plugin import LLMLoadPlugin
from llmload.record import RequestRecord

SECRET = "sk-webui-secret-41c7"
BASE = "/some/base"


def make_record(
    backend: str, *, ttft: float = 0.050, itl: float = 0.010, n: int = 11, start: float = 100.0, ok: bool = True
) -> RequestRecord:
    common = {
        "backend": backend,
        "model": "m",
        "user_class": "Chat",
        "endpoint": "/v1/chat/completions",
        "t_send": 1.0,
        "start_wall": start,
    }
    if not ok:
        return RequestRecord(**common, error_kind="http_5xx", t_end=1.5)
    times = [1.0 + ttft + i * itl for i in range(n)]
    return RequestRecord(**common, token_times=times, t_end=times[-1], completion_tokens=n)


def known_store() -> MetricsStore:
    """Backend a: 10 requests, TTFT 50 ms, ITL 10 ms, 11 tokens each, one per second; backend b: 1 failure."""
    store = MetricsStore(slo_stream_rate_tps=10.0)
    for i in range(10):
        store.record(make_record("http://a", start=100.0 + i))
    store.record(make_record("http://b", ok=False))
    return store


def test_rows_from_a_known_store():
    store = known_store()
    rows = webui.table_rows(store)
    assert [r["group"] for r in rows] == ["http://a · m · Chat", "http://b · m · Chat", "Total"]
    a, b, total = rows
    # E2E = 50 + 10 x 10 ms = 150 ms, so stream rate = 11 / 0.15 = 73.3 tok/s; histogram precision 0.1%.
    assert a["requests"] == 10 and a["failures"] == 0
    assert a["ttft_p50_ms"] == pytest.approx(50.0, rel=1e-3) and a["ttft_p99_ms"] == pytest.approx(50.0, rel=1e-3)
    assert a["itl_p50_ms"] == pytest.approx(10.0, rel=1e-3) and a["itl_p99_ms"] == pytest.approx(10.0, rel=1e-3)
    assert a["stream_rate_p50_tps"] == pytest.approx(73.3, rel=1e-3)
    assert a["stream_rate_p10_tps"] == pytest.approx(73.3, rel=1e-3)
    # 110 tokens over the window from the first send (100 s) to the last end (109.15 s).
    assert a["output_tokens_per_s"] == round(110 / 9.15, 1)
    assert a["slo_attainment_pct"] == 100.0
    # The same figures the store itself gives, rounded as shown.
    group = store.groups[("http://a", "m", "Chat")]
    assert a["ttft_p50_ms"] == round(group.dists["ttft_s"].percentile(50) * 1000, 1)
    # A group with only failures has no percentiles; its attainment is 0 / (0 ok + 1 failed) = 0%
    # (results schema 2: failed requests count as SLO misses; it was "no attainment" when only ok ones counted).
    assert b["requests"] == 1 and b["failures"] == 1 and b["ttft_p50_ms"] is None and b["slo_attainment_pct"] == 0.0
    assert total["requests"] == 11 and total["failures"] == 1 and total["ttft_p50_ms"] == a["ttft_p50_ms"]
    # Total: the 10 requests of a meet the SLO (73.3 >= 10 tok/s) out of 11 finished: 10 / 11 = 90.9%.
    assert total["slo_attainment_pct"] == 90.9


def test_rows_show_the_results_figures_of_each_group_and_the_total():
    store = known_store()
    rows = {row["group"]: row for row in webui.table_rows(store)}
    groups = [(f"{g.backend} · {g.model} · {g.user_class}", g) for g in store.groups.values()]
    for label, group in [*groups, ("Total", store.total())]:
        body, row = group_body(group, slo=Slo.of(store)), rows[label]
        ms = [None if v is None else round(v * 1000, 1) for v in (body["ttft_s"]["p50"], body["itl_s"]["p99"])]
        assert [row["ttft_p50_ms"], row["itl_p99_ms"]] == ms
        rate = body["stream_rate_tps"]["p10"]
        assert row["stream_rate_p10_tps"] == (None if rate is None else round(rate, 1))
        assert row["output_tokens_per_s"] == round(body["throughput"]["output_tokens_per_s"], 1)
        met = body["slo"]["attainment"]
        assert row["slo_attainment_pct"] == (None if met is None else round(met * 100, 1))


def test_one_group_has_no_total_row_and_rows_are_capped():
    store = MetricsStore()
    store.record(make_record("http://a"))
    assert [r["group"] for r in webui.table_rows(store)] == ["http://a · m · Chat"]
    for i in range(5):
        store.record(make_record(f"http://x{i}"))
    assert len(webui.table_rows(store, max_rows=3)) == 4  # three groups and the Total of all six


def test_csv_has_the_column_titles_and_empty_cells_for_no_value():
    text = webui.csv_text(webui.table_rows(known_store()))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [title for _, title in webui.COLUMNS]
    assert rows[1][:3] == ["http://a · m · Chat", "10", "0"]
    assert rows[2][3] == ""  # no TTFT for the failed-only group
    assert rows[3][0] == "Total"


def test_secret_scrubbing_of_template_args():
    args = {
        "extra_options": {
            "llm_api_key": {"default_value": SECRET, "is_secret": True, "help_text": "API key"},
            "llm_model": {"default_value": "m", "is_secret": False, "help_text": "Model"},
            "other_secret": {"default_value": "", "is_secret": True, "help_text": "x"},
        }
    }
    assert webui.scrub_secrets(args) == {"llm_api_key", "other_secret"}
    assert args["extra_options"]["llm_api_key"]["default_value"] == ""
    assert args["extra_options"]["llm_api_key"]["help_text"] == "API key" + webui.SECRET_HINT
    assert args["extra_options"]["llm_model"]["default_value"] == "m"
    assert args["extra_options"]["other_secret"]["help_text"] == "x"  # no value set: no hint


class NoopUser(User):
    wait_time = constant(60)

    @task
    def idle(self):
        pass


@pytest.fixture
def ui(monkeypatch, tmp_path):
    """A local-runner environment with a web UI under BASE, the key given on the command line."""
    monkeypatch.chdir(tmp_path)  # no locust.conf or pyproject.toml of ours is read by Locust's parser
    monkeypatch.setattr(sys, "argv", ["locust", "--llm-api-key", SECRET])
    from locust.argument_parser import get_parser

    parsed = get_parser().parse_args(["--llm-api-key", SECRET, "--web-base-path", BASE])
    environment = Environment(
        user_classes=[NoopUser], events=Events(), parsed_options=parsed, host="http://127.0.0.1:9"
    )
    environment.create_local_runner()
    web_ui = environment.create_web_ui("127.0.0.1", 0, web_base_path=BASE, delayed_start=True)
    plugin = LLMLoadPlugin(environment).register()
    webui.register(environment, plugin)
    extension = plugin.extensions.get(webui.LLMWebUI)
    assert extension is not None and extension.web_ui is web_ui
    yield environment, plugin, extension, web_ui.app.test_client()
    environment.runner.quit()


def test_tab_declared_and_csv_and_report_linked_under_the_base_path(ui):
    environment, _plugin, _ext, _client = ui
    args = environment.web_ui.template_args
    assert args["extended_tabs"] == [{"title": "LLM", "key": "llm"}]
    assert [c["key"] for c in args["extended_tables"][0]["structure"]] == [k for k, _ in webui.COLUMNS]
    assert [f["href"] for f in args["extended_csv_files"]] == [
        f"{BASE}/llmload/stats.csv",
        f"{BASE}/llmload/report.html",
        f"{BASE}/llmload/results.json",
    ]


def test_stats_requests_json_carries_the_rows_under_the_base_path(ui):
    _env, plugin, _ext, client = ui
    for i in range(10):
        plugin.record(make_record("http://a", start=100.0 + i))
    for _ in range(2):  # Locust memoizes the response object: the hook must stay idempotent
        payload = client.get(f"{BASE}/stats/requests").get_json()
        assert payload["extended_stats"] == [{"key": "llm", "data": webui.table_rows(plugin.store)}]
    assert payload["stats"] and "state" in payload  # Locust's own payload is intact
    assert client.get("/stats/requests").status_code == 404
    assert "extended_stats" not in client.get(f"{BASE}/exceptions").get_json()


def test_csv_and_live_report_routes(ui):
    _env, plugin, _ext, client = ui
    plugin.record(make_record("http://a"))
    response = client.get(f"{BASE}/llmload/stats.csv")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[1][:2] == ["http://a · m · Chat", "1"]
    page = client.get(f"{BASE}/llmload/report.html").get_data(as_text=True)
    assert 'data-chart="ttft"' in page and SECRET not in page


def test_page_has_no_secret_and_a_blank_form_field_keeps_the_key(ui):
    environment, plugin, _ext, client = ui
    page = client.get(f"{BASE}/").get_data(as_text=True)
    assert SECRET not in page and "llm_api_key" in page and webui.SECRET_HINT in page
    # The browser posts the blank field back: the process keeps its key, users and workers get it.
    response = client.post(
        f"{BASE}/swarm",
        data={
            "user_count": "1",
            "spawn_rate": "1",
            "host": "http://127.0.0.1:9",
            "llm_api_key": "",
            "llm_model": "typed-model",
        },
    )
    assert response.get_json()["success"] and SECRET not in response.get_data(as_text=True)
    assert environment.parsed_options.llm_api_key == SECRET
    assert environment.parsed_options.llm_model == "typed-model"
    gevent.sleep(0.2)  # the runner starts in a greenlet and fires test_start, where the plugin reads options
    assert plugin.options.api_key == SECRET and plugin.options.model == "typed-model"
    # A key typed into the form replaces the old one.
    client.post(f"{BASE}/swarm", data={"user_count": "1", "spawn_rate": "1", "llm_api_key": "sk-typed"})
    assert environment.parsed_options.llm_api_key == "sk-typed"


def test_env_var_key_is_not_in_the_page(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["locust"])
    monkeypatch.setenv("LOCUST_LLM_API_KEY", SECRET)
    monkeypatch.setenv("LLMLOAD_API_KEY", SECRET + "-2")
    from locust.argument_parser import get_parser

    environment = Environment(user_classes=[NoopUser], events=Events(), parsed_options=get_parser().parse_args([]))
    environment.create_local_runner()
    web_ui = environment.create_web_ui("127.0.0.1", 0, delayed_start=True)
    plugin = LLMLoadPlugin(environment).register()
    webui.register(environment, plugin)
    page = web_ui.app.test_client().get("/").get_data(as_text=True)
    assert SECRET not in page and plugin.options.api_key == SECRET
    environment.runner.quit()


def test_nothing_on_a_worker_or_without_a_web_ui(monkeypatch, tmp_path):
    environment = Environment(events=Events())
    environment.create_local_runner()
    plugin = LLMLoadPlugin(environment).register()
    webui.register(environment, plugin)
    assert plugin.extensions.get(webui.LLMWebUI) is None
    environment.runner.quit()
    # A process started with --worker: no tab even where a web UI exists.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["locust"])
    from locust.argument_parser import get_parser

    parsed = get_parser().parse_args(["--worker"])
    environment = Environment(user_classes=[NoopUser], events=Events(), parsed_options=parsed)
    web_ui = environment.create_web_ui("127.0.0.1", 0, delayed_start=True)
    plugin = LLMLoadPlugin(environment).register()
    assert plugin.is_worker
    webui.register(environment, plugin)
    assert plugin.extensions.get(webui.LLMWebUI) is None and "extended_tabs" not in web_ui.template_args


def ui_with(monkeypatch, tmp_path, *args: str):
    """Like the ``ui`` fixture, with more command-line options and the live figures and steering registered."""
    from locust.argument_parser import get_parser

    from llmload import live, steering

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["locust", *args])
    parsed = get_parser().parse_args(["--web-base-path", BASE, *args])
    environment = Environment(
        user_classes=[NoopUser], events=Events(), parsed_options=parsed, host="http://127.0.0.1:9"
    )
    environment.create_local_runner()
    web_ui = environment.create_web_ui(
        "127.0.0.1", 0, web_base_path=BASE, delayed_start=True, web_login=parsed.web_login
    )
    plugin = LLMLoadPlugin(environment).register()
    for module in (live, steering, webui):
        module.register(environment, plugin)
    return environment, plugin, web_ui.app.test_client()


def test_cockpit_routes_charts_state_steering_and_results(monkeypatch, tmp_path):
    from llmload.live import LiveFigures

    environment, plugin, client = ui_with(monkeypatch, tmp_path, "--llm-slo-ttft", "0.5")
    try:
        environment.events.test_start.fire(environment=environment)
        live = plugin.extensions.get(LiveFigures)
        live.stop()  # rotate by hand
        plugin.record(make_record("http://a"))
        live.rotate()
        charts = client.get(f"{BASE}/llmload/charts?since=0").get_json()
        assert charts["groups"][0]["backend"] == "http://a" and len(charts["groups"][0]["points"]) == 1
        assert charts["interval_s"] == 10.0 and charts["slo"]["ttft_s"] == 0.5
        assert client.get(f"{BASE}/llmload/charts?since=x").status_code == 400
        state = client.get(f"{BASE}/llmload/state").get_json()
        assert (
            state["slo"]["ttft_s"] == 0.5
            and [p["name"] for p in state["phases"]] == ["start"]
            and state["capacity"] is None
        )
        refused = client.post(f"{BASE}/llmload/steer", json={"slo_ttft_s": 0.2})
        assert refused.status_code == 409 and refused.get_json()["error"] == "refused: no test is running"
        environment.runner.state = "running"
        bad = client.post(f"{BASE}/llmload/steer", json={"slo_ttft_s": "x"})
        assert bad.status_code == 400 and "slo_ttft_s: expected a number" in bad.get_json()["error"]
        done = client.post(f"{BASE}/llmload/steer", json={"slo_ttft_s": 0.2, "think_time_s": [0, 1]})
        assert done.status_code == 200 and done.get_json() == {
            "closed": "start",
            "phase": "SLO TTFT 0.2 s, think 0-1 s",
        }
        assert client.get(f"{BASE}/llmload/state").get_json()["slo"]["ttft_s"] == 0.2
        response = client.get(f"{BASE}/llmload/results.json")
        assert "attachment" in response.headers["Content-Disposition"]
        doc = response.get_json()
        assert [p["name"] for p in doc["phases"]] == ["start", "SLO TTFT 0.2 s, think 0-1 s"]
    finally:
        environment.runner.quit()


def test_cockpit_routes_sit_behind_the_web_login(monkeypatch, tmp_path):
    environment, _plugin, client = ui_with(monkeypatch, tmp_path, "--web-login")
    try:
        # What a locustfile that turns on --web-login sets up (Locust's docs): a session key and a user loader.
        environment.web_ui.app.secret_key = "test-only"
        environment.web_ui.login_manager.user_loader(lambda _user_id: None)
        for method, route in (
            ("get", "charts"),
            ("get", "state"),
            ("get", "results.json"),
            ("post", "steer"),
        ):
            response = getattr(client, method)(f"{BASE}/llmload/{route}")
            assert response.status_code in (302, 401), (route, response.status_code)
    finally:
        environment.runner.quit()


def test_rows_show_ttfa_of_groups_that_thought_and_nothing_for_others():
    from tests.unit.test_reasoning import thinking_record

    store = known_store()
    for ttfa in (0.5, 3.0):
        store.record(thinking_record(0.1, ttfa))
    rows = {row["group"]: row for row in webui.table_rows(store)}
    assert rows["b · m · U"]["ttfa_p50_ms"] == 500.2 and rows["b · m · U"]["ttfa_p99_ms"] == 3000.3
    assert rows["http://a · m · Chat"]["ttfa_p50_ms"] is None
    assert rows["Total"]["ttfa_p99_ms"] == 3000.3
