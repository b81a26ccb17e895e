"""The HTML report: every section and chart from a results document, offline, secret-free, exact numbers.

The fixture document is built the way the plugin builds one: group bodies come
from a real ``MetricsStore`` of seeded records through ``figures.group_body``;
the timeline, capacity and server sections follow docs/results.md. The page is
built by ``llmload.render.html``; ``llmload report`` and ``--llm-html``
(``llmload.report``) write it.
"""

from __future__ import annotations

import copy
import json
import random
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from locust.env import Environment
from locust.event import Events

from llmload import cli, report, results
from llmload.figures import Slo, group_body
from llmload.metrics import MetricsStore
from llmload.plugin import LLMLoadPlugin
from llmload.record import RequestRecord
from llmload.render import charts, document, svg
from llmload.render import html as render_html

SECRET = "sk-report-secret-6b1f"
T0 = 1_795_000_000.0
BACKENDS = ("http://127.0.0.1:8000", "http://gpu-b:8000")
TIME_CHARTS = ("users", "throughput", "slo-attainment", "latency-over-time", "stream-rate-over-time")
ALWAYS_CHARTS = ("ttft", "itl", "stream-rate", *TIME_CHARTS)
CAPACITY_CHARTS = ("capacity-stream-rate", "capacity-ttft", "capacity-throughput", "capacity-attainment")


def _record(rng: random.Random, backend: str, start: float) -> RequestRecord:
    ttft = rng.uniform(0.04, 0.4)
    gaps = [rng.uniform(0.008, 0.05) for _ in range(19)]
    times = [10.0 + ttft]
    for gap in gaps:
        times.append(times[-1] + gap)
    return RequestRecord(
        backend=backend,
        model="llama",
        user_class="Chat",
        endpoint="/v1/chat/completions",
        t_send=10.0,
        start_wall=start,
        token_times=times,
        t_end=times[-1],
        completion_tokens=20,
        prompt_tokens=9,
    )


def make_doc() -> dict:
    """A results document with two groups, a timeline, a capacity search and server metrics."""
    rng = random.Random(7)
    store = MetricsStore(slo_ttft_s=0.3, slo_stream_rate_tps=40.0)
    for i in range(400):
        store.record(_record(rng, BACKENDS[i % 2], T0 + i * 0.05))
    failed = RequestRecord(
        backend=BACKENDS[1],
        model="llama",
        user_class="Chat",
        endpoint="/v1/chat/completions",
        t_send=1.0,
        start_wall=T0 + 1,
        error_kind="http_429",
        t_end=1.2,
    )
    store.record(failed)
    slo = Slo(ttft_s=0.3, stream_rate_tps=40.0)
    groups = [
        {"backend": g.backend, "model": g.model, "user_class": g.user_class, **group_body(g, slo=slo)}
        for g in sorted(store.groups.values(), key=lambda g: g.key)
    ]
    timeline, ok, met, tokens = [], 0, 0, 0
    for i in range(1, 11):
        ok, met, tokens = ok + 40, met + 30 + i % 3, tokens + 800
        timeline.append(
            {
                "t": T0 + 2 * i,
                "users": min(10 * i, 50),
                "in_flight": min(10 * i, 50) - 1,
                "generator_cpu_percent": 20.0,
                "requests_ok": ok,
                "requests_failed": 0,
                "output_tokens": tokens,
                "slo_met": met,
                "ttft_p50_s": 0.1 + i / 100,
                "ttft_p99_s": 0.3 + i / 50,
                "itl_p50_s": 0.02,
                "stream_rate_p50_tps": 45.0 - i,
            }
        )
    timeline[3]["ttft_p50_s"] = None  # an interval without requests: a gap, not a zero

    def step(users: int, rate: float, attainment: float) -> dict:
        return {
            "level": float(users),
            "users": users,
            "requests": 10 * users,
            "failed": 0,
            "stream_rate_p50_tps": rate,
            "stream_rate_p10_tps": rate * 0.8,
            "ttft_p50_s": 0.005 * users,
            "ttft_p99_s": 0.01 * users,
            "e2e_p99_s": 2.0,
            "output_tokens_per_s": users * rate,
            "window_s": 20.0,
            "attainment": attainment,
            "passed": attainment >= 0.95,
        }

    return {
        "schema": results.SCHEMA,
        "run": {
            "started_at": results.iso(T0),
            "ended_at": results.iso(T0 + 21),
            "duration_s": 21.0,
            "llmload_version": "0.1.0",
            "locust_version": "2.47.0",
            "workers": 2,
            "peak_users": 50,
            "missing_workers": [],
            "host": "http://user:hunter2@127.0.0.1:8000",
            "options": {
                "api_key_set": True,
                "api_key": SECRET,
                "max_tokens": 20,
                "think_time": [1.0, 5.0],
                "model": "",
            },
        },
        "groups": groups,
        "total": group_body(store.total(), slo=slo),
        "timeline": timeline,
        "server": {
            BACKENDS[0]: {
                "engine": "vllm",
                "metrics_url": BACKENDS[0] + "/metrics",
                "scrapes": 5,
                "generation_tokens": 4000.0,
                "prompt_tokens": 1800.0,
                "ttft_s": {"count": 200, "mean": 0.15, "p50": 0.12, "p90": 0.3, "p99": 0.4},
                "itl_s": {"count": 3800, "mean": 0.028, "p50": 0.025, "p90": 0.045, "p99": 0.05},
                "queue_time_s": {"count": 200, "mean": 0.01, "p50": 0.008, "p90": 0.02, "p99": 0.03},
                "peak_running": 25.0,
                "peak_waiting": 0.0,
                "peak_kv_cache_usage": 0.4,
                "preemptions": 0.0,
            },
            BACKENDS[1]: None,
        },
        # As llmload.capacity writes it: steps in search order (growth, then bisection), and the answer.
        "capacity": {
            "mode": "users",
            "label": "rtx3090",
            "slo": {"stream_rate_tps": 10.0, "ttft_s": 2.0, "attainment": 0.95},
            "settings": {"mode": "users", "start": 10},
            "steps": [
                step(10, 40.0, 1.0),
                step(20, 25.0, 1.0),
                step(40, 13.0, 0.97),
                step(80, 6.0, 0.2),
                step(60, 9.0, 0.6),
            ],
            "answer": {
                "users": 40,
                "first_failing": 60,
                "limit_reached": False,
                "complete": True,
                "stream_rate_p10_tps": 10.4,
                "text": "rtx3090: 40 users at >= 10 tok/s",
            },
        },
    }


class _Page(HTMLParser):
    """Collect what the tests look at: attributes, charts with their marks, table cells, text."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.charts: dict[str, dict] = {}
        self._chart: str | None = None
        self.cells: list[dict] = []
        self._cell: dict | None = None
        self.section_ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        for name, value in attrs.items():
            self.attrs.append((tag, name, value or ""))
        if tag == "section":
            self.section_ids.append(attrs.get("id"))
        if tag == "svg":
            self._chart = attrs["data-chart"]
            self.charts[self._chart] = {"class": attrs["class"], "marks": 0, "refs": 0}
        elif self._chart and "mark" in (attrs.get("class") or "").split():
            self.charts[self._chart]["marks"] += 1
        elif self._chart and attrs.get("class") == "ref":
            self.charts[self._chart]["refs"] += 1
        if tag == "td" and "data-key" in attrs:
            self._cell = {"key": attrs["data-key"], "value": attrs["data-value"], "text": ""}

    def handle_endtag(self, tag):
        if tag == "svg":
            self._chart = None
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def test_every_section_and_chart_is_drawn():
    page = parse(render_html.build_html(make_doc()))
    assert page.section_ids == ["run", "summary", "distributions", "timeline", "capacity", "server"]
    for chart in (*ALWAYS_CHARTS, *CAPACITY_CHARTS, "client-vs-server-ttft-0"):
        assert page.charts[chart]["class"] == "chart", chart
        assert page.charts[chart]["marks"] > 0, chart
    # Only the backend with server figures gets a client-vs-server chart.
    assert "client-vs-server-ttft-1" not in page.charts
    assert page.charts["stream-rate"]["refs"] == 1  # the SLO line
    assert page.charts["ttft"]["refs"] == 1  # the TTFT SLO
    assert page.charts["capacity-stream-rate"]["refs"] == 2  # the answer and the SLO
    assert page.charts["capacity-attainment"]["refs"] == 2  # the answer and the pass target
    assert page.charts["slo-attainment"]["refs"] == 0


def test_the_page_loads_nothing_from_anywhere():
    html = render_html.build_html(make_doc())
    page = parse(html)
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(page.tags)
    for tag, name, value in page.attrs:
        if name in ("src", "href", "xlink:href", "action", "srcset", "poster"):
            pytest.fail(f"<{tag} {name}={value!r}>")
    assert "url(" not in html and "@import" not in html
    assert "default-src 'none'" in html  # and the browser is told so


def test_no_secret_and_no_credentials_in_urls():
    doc = make_doc()
    html = render_html.build_html(doc, secrets=["gpu-b:8000", "llama"])
    assert SECRET not in html and "hunter2" not in html and "user:" not in html
    assert "http://127.0.0.1:8000" in html
    assert "gpu-b:8000" not in html and "http://***" in html  # a secret passed in is masked wherever it appears
    assert "llama" in html  # but not one too short to mask without mangling the page
    assert "api_key_set" in html


def test_summary_table_numbers_equal_the_document():
    doc = make_doc()
    page = parse(render_html.build_html(doc))
    summary_keys = {".".join(path) for _, path, _ in render_html.SUMMARY_COLUMNS}
    bodies = [*doc["groups"], doc["total"]]
    rows = [c for c in page.cells if c["key"] in summary_keys][: len(bodies) * len(render_html.SUMMARY_COLUMNS)]
    assert len(rows) == len(bodies) * len(render_html.SUMMARY_COLUMNS)
    for index, cell in enumerate(rows):
        body = bodies[index // len(render_html.SUMMARY_COLUMNS)]
        title, path, kind = render_html.SUMMARY_COLUMNS[index % len(render_html.SUMMARY_COLUMNS)]
        assert cell["key"] == ".".join(path)
        value = body[path[0]][path[1]]
        assert cell["value"] == repr(value), title
        assert cell["text"] == render_html.fmt(value, kind), title
    # Spot checks of the formatting itself.
    ttft = doc["total"]["ttft_s"]["p50"]
    assert render_html.fmt(ttft, "ms") == f"{ttft * 1000:.1f}"
    assert render_html.fmt(doc["total"]["slo"]["attainment"], "pct").endswith("%")
    assert doc["total"]["requests"]["failed"] == 1
    assert "http_429 1" in render_html.build_html(doc)


def test_capacity_steps_table_equals_the_document():
    doc = make_doc()
    html = render_html.build_html(doc)
    page = parse(html)
    steps = doc["capacity"]["steps"]
    assert [int(c["value"]) for c in page.cells if c["key"] == "step"] == [1, 2, 3, 4, 5]
    assert [float(c["value"]) for c in page.cells if c["key"] == "users"] == [s["users"] for s in steps]
    assert [c["text"] for c in page.cells if c["key"] == "attainment"] == [
        "100.0%",
        "100.0%",
        "97.0%",
        "20.0%",
        "60.0%",
    ]
    assert html.count("<td>FAIL</td>") == 2 and html.count("<td>pass</td>") == 3
    assert "rtx3090: 40 users at &gt;= 10 tok/s" in html


def test_timeline_series_rates_and_gaps():
    doc = make_doc()
    series = charts.timeline_series(doc)
    assert series["unit"] == "s" and series["x"][0] == pytest.approx(2.0)
    # 800 tokens every 2 s.
    assert [y for _, y in series["output_tps"]] == pytest.approx([400.0] * 9)
    # Interval attainment: slo_met delta over finished requests delta (40 per interval, none failed).
    first = doc["timeline"][1]
    assert series["attainment"][0][1] == pytest.approx((first["slo_met"] - doc["timeline"][0]["slo_met"]) / 40 * 100)
    assert series["ttft_p50_s"][3][1] is None


def test_timeline_attainment_counts_failed_requests_as_misses():
    doc = make_doc()
    for i, point in enumerate(doc["timeline"], start=1):
        point["requests_failed"] = i  # one failed request per interval
    series = charts.timeline_series(doc)
    # First point: 31 met of 40 ok + 1 failed; first interval: (63 - 31) met of (80 - 40) ok + (2 - 1) failed.
    assert [round(doc["timeline"][i]["slo_met"]) for i in (0, 1)] == [31, 63]
    assert series["attainment_cumulative"][0][1] == pytest.approx(31 / 41 * 100)
    assert series["attainment"][0][1] == pytest.approx(32 / 41 * 100)


def test_without_optional_data_the_sections_say_so():
    doc = make_doc()
    doc["timeline"], doc["server"] = [], None
    del doc["capacity"]
    page = parse(render_html.build_html(doc))
    assert page.section_ids == ["run", "summary", "distributions", "timeline"]
    for chart in TIME_CHARTS:
        assert page.charts[chart]["class"] == "chart empty"


def soak_section() -> dict:
    """A soak section as llmload.soak writes it (docs/results.md): two full windows, one breach on gpu-b."""

    def figures(ttft_p99: float, goodput: float) -> dict:
        return {"requests": 100, "failed": 0, "errors": {}, "error_rate": 0.0, "attainment": 1.0} | {
            "goodput_rps": goodput,
            "output_tokens_per_s": 50.0,
            "ttft_p50_s": 0.1,
            "ttft_p99_s": ttft_p99,
            "itl_p50_s": 0.02,
            "itl_p99_s": 0.05,
            "stream_rate_p50_tps": 20.0,
            "stream_rate_p10_tps": 18.0,
            "e2e_p50_s": 1.0,
        }

    def window(index: int, ttft_b: float) -> dict:
        return {
            "index": index,
            "start": T0 + 10 * index,
            "end": T0 + 10 * (index + 1),
            "duration_s": 10.0,
            "partial": False,
            "steady": True,
            "users_min": 50,
            "users_max": 50,
            "backends": {BACKENDS[0]: figures(0.2, 2.5), BACKENDS[1]: figures(ttft_b, 2.5)},
        }

    breach = {"backend": BACKENDS[1], "start": T0 + 12, "end": T0 + 16, "recovered": True, "time_to_recover_s": 4.0}
    breach |= {"duration_s": 4.0, "cause": "http_429", "cause_kind": "error", "onset_cause": "http_429"}
    breach |= {"worst_attainment": 0.5, "intervals": 2, "requests": 20, "misses": {"total": 8}}
    backend = {"breach_count": 0, "breaches": [], "longest_time_to_recover_s": None, "unrecovered": False}
    return {
        "window_s": 10.0,
        "interval_s": 2.0,
        "objective": 0.99,
        "slo": {"ttft_s": 0.3, "stream_rate_tps": 40.0},
        "started_at": T0,
        "ended_at": T0 + 21,
        "full_windows": 2,
        "first_steady_window": 0,
        "last_steady_window": 1,
        "threshold": {"relative": 0.1, "floors": {}},
        "verdict": "degraded",
        "reason": None,
        "windows": [window(0, 0.2), window(1, 0.5)],
        "backends": {
            BACKENDS[0]: {**backend, "verdict": "stable", "drift": {}},
            BACKENDS[1]: {**backend, "verdict": "degraded", "drift": {}, "breach_count": 1, "breaches": [breach]}
            | {"longest_time_to_recover_s": 4.0},
        },
    }


def test_soak_section_with_its_charts_follows_the_timeline():
    doc = make_doc()
    doc["soak"] = soak_section()
    page = parse(render_html.build_html(doc))
    assert page.section_ids == ["run", "summary", "distributions", "timeline", "soak", "capacity", "server"]
    for chart in ("soak-ttft", "soak-goodput"):
        assert page.charts[chart]["class"] == "chart" and page.charts[chart]["marks"] == 2 * 3  # 2 lines, 2 points each
    assert page.charts["soak-ttft"]["refs"] == 1  # the TTFT SLO
    html = render_html.build_html(doc)
    assert html.count('class="band"') == 2 and "SLO breach (http_429), recovered in 4 s" in html
    assert "Soak: degraded (10 s windows, 2 full;" in html
    # A soak section without a full window (a run shorter than one) is not shown.
    doc["soak"]["windows"] = [{**w, "partial": True} for w in doc["soak"]["windows"][:1]]
    assert "soak" not in parse(render_html.build_html(doc)).section_ids


def test_charts_nice_ticks_and_gaps():
    assert svg.nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100]
    assert svg.nice_ticks(0, 0.013) == [0, 0.005, 0.01, 0.015]
    assert svg.nice_ticks(2.5, 15.6) == [0, 5, 10, 15, 20]
    chart = svg.line_chart(
        chart_id="c",
        title="t",
        x_label="x (s)",
        y_label="y (ms)",
        series=[svg.Series("a", [(0, 1.0), (1, None), (2, 3.0), (3, 4.0)])],
    )
    page = parse(chart)
    # Two segments: a lone first point (marker only) and a line of two points; three markers.
    assert chart.count('class="mark line"') == 1 and chart.count('class="mark point"') == 3
    assert page.charts["c"]["marks"] == 4
    assert "x (s)" in chart and "y (ms)" in chart


def test_llmload_report_command(tmp_path, capsys):
    source = tmp_path / "run.json"
    source.write_text(json.dumps(make_doc()))
    assert cli.main(["report", str(source)]) == 0
    written = tmp_path / "run.html"
    assert parse(written.read_text()).section_ids[0] == "run"
    out = tmp_path / "deep" / "r.html"
    assert cli.main(["report", str(source), "-o", str(out)]) == 0 and out.exists()
    capsys.readouterr()


def test_llmload_report_refuses_to_overwrite_its_input(tmp_path, capsys):
    source = tmp_path / "run.json"
    source.write_text(json.dumps(make_doc()))
    assert cli.main(["report", str(source), "-o", str(source)]) == 1
    assert "would overwrite the results file" in capsys.readouterr().err
    assert json.loads(source.read_text())["schema"] == results.SCHEMA


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such results file"),
        ("{not json", "not valid JSON"),
        ('{"schema": "other"}', "not an llmload results file"),
        ('{"schema": "llmload.results/1", "run": {}}', "malformed results document"),
    ],
)
def test_llmload_report_bad_input_is_one_line(tmp_path, capsys, content, message):
    source = tmp_path / "in.json"
    if content is not None:
        source.write_text(content)
    assert cli.main(["report", str(source), "-o", str(tmp_path / "out.html")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("llmload report: error:")
    assert not list(tmp_path.glob("out.html*"))  # no report, and no temporary file left behind


def _plugin(tmp_path, html_path: str) -> LLMLoadPlugin:
    parsed = SimpleNamespace(llm_html=html_path, llm_api_key=SECRET, llm_results="", host="http://127.0.0.1:9")
    environment = Environment(events=Events(), parsed_options=parsed)
    environment.runner = SimpleNamespace(user_count=0)  # a local run
    plugin = LLMLoadPlugin(environment).register()
    report.register(environment, plugin)
    return plugin


def _start(plugin: LLMLoadPlugin) -> None:
    """Start the run the way Locust does: the plugin listens to ``test_start``."""
    plugin.environment.events.test_start.fire(environment=plugin.environment)
    assert plugin.started_at is not None


def test_llm_html_is_written_at_quit_after_the_results(tmp_path, capsys):
    path = tmp_path / "out" / "report.html"
    plugin = _plugin(tmp_path, str(path))
    rng = random.Random(1)
    _start(plugin)
    plugin.record(_record(rng, "http://127.0.0.1:9", T0))
    plugin.environment.events.test_stop.fire(environment=plugin.environment)
    plugin.environment.events.quit.fire(exit_code=0)
    html = path.read_text()
    assert plugin.finished and "HTML report written to" in capsys.readouterr().out
    page = parse(html)
    assert page.charts["ttft"]["marks"] > 0
    assert SECRET not in html
    ok = next(c for c in page.cells if c["key"] == "requests.ok")
    assert ok["text"] == "1"


def test_no_report_without_a_run_or_without_the_option(tmp_path):
    path = tmp_path / "report.html"
    plugin = _plugin(tmp_path, str(path))
    plugin.environment.events.quit.fire(exit_code=0)  # the test never started
    assert not path.exists()
    plugin = _plugin(tmp_path, "")
    _start(plugin)
    plugin.environment.events.quit.fire(exit_code=0)
    assert plugin.finished  # the run finished, with no report to write
    assert not path.exists()


def test_unwritable_report_path_stops_at_start_up(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exc:
        _plugin(tmp_path, str(tmp_path / "file" / "report.html"))
    assert exc.value.code == 2
    assert "--llm-html" in capsys.readouterr().err


# -- version-1 results files ---------------------------------------------------------------------------


def v1_body(*, ok: int, failed: int, met: int) -> dict:
    """A group body as version 1 wrote it: ``slo.attainment`` = met / ok, no ``attainment_of_ok``."""
    return {
        "requests": {"ok": ok, "failed": failed, "errors": {"http_429": failed} if failed else {}},
        "throughput": {"window_s": 10.0, "output_tokens_per_s": 2.0 * ok, "requests_per_s": (ok + failed) / 10.0},
        "slo": {
            "ttft_s": None,
            "stream_rate_tps": 10.0,
            "met": met,
            "attainment": met / ok if ok else None,
            "goodput_rps": met / 10.0,
        },
    }


def test_upgrade_recomputes_attainment_over_finished_requests():
    doc = {
        "schema": document.SCHEMA_V1,
        "run": {"duration_s": 10.0},
        "groups": [
            {"backend": "a", "model": "m", "user_class": "U", **v1_body(ok=990, failed=10, met=990)},
            {"backend": "b", "model": "m", "user_class": "U", **v1_body(ok=0, failed=5, met=0)},
            {"backend": "c", "model": "m", "user_class": "U", **v1_body(ok=0, failed=0, met=0)},
        ],
        "total": v1_body(ok=990, failed=15, met=990),
        "timeline": [{"t": 1.0}],
        "capacity": {"answer": {"attainment": 0.97}},
    }
    before = copy.deepcopy(doc)
    upgraded = document.upgrade(doc)
    assert doc == before  # the input is left as it was
    assert upgraded["schema"] == "llmload.results/2" == document.SCHEMA
    assert upgraded["upgraded_from"] == "llmload.results/1"
    slos = [g["slo"] for g in upgraded["groups"]]
    # a: 990 met / (990 ok + 10 failed) = 0.99; version 1 said 990 / 990 = 1.0, kept as attainment_of_ok.
    assert (slos[0]["attainment"], slos[0]["attainment_of_ok"]) == (0.99, 1.0)
    # b: every request failed: 0 / 5 = 0.0 (version 1 had no attainment, None, without a successful request).
    assert (slos[1]["attainment"], slos[1]["attainment_of_ok"]) == (0.0, None)
    # c: nothing finished: no attainment either way.
    assert (slos[2]["attainment"], slos[2]["attainment_of_ok"]) == (None, None)
    # Total: 990 / (990 + 15) = 990 / 1005.
    assert upgraded["total"]["slo"]["attainment"] == 990 / 1005
    assert upgraded["total"]["slo"]["attainment_of_ok"] == 1.0
    # Every other key keeps its value.
    assert slos[0]["met"] == 990 and slos[0]["goodput_rps"] == 99.0 and slos[0]["stream_rate_tps"] == 10.0
    assert upgraded["groups"][0]["requests"] == before["groups"][0]["requests"]
    for key in ("run", "timeline", "capacity"):
        assert upgraded[key] == before[key], key


def test_upgrade_returns_a_version_2_document_as_it_is():
    doc = make_doc()
    assert document.upgrade(doc) is doc
    assert "upgraded_from" not in doc


def test_read_upgrades_a_version_1_file_and_keeps_a_version_2_file(tmp_path):
    old = tmp_path / "v1.json"
    old.write_text(json.dumps({"schema": "llmload.results/1", "groups": [], "total": v1_body(ok=3, failed=1, met=3)}))
    doc = document.read(str(old))
    assert doc["schema"] == document.SCHEMA and doc["total"]["slo"]["attainment"] == 0.75  # 3 / (3 + 1)
    new = tmp_path / "v2.json"
    new.write_text(json.dumps(make_doc()))
    assert document.read(str(new)) == json.loads(new.read_text())


def make_v1_doc() -> dict:
    """``make_doc()`` as version 1 wrote it, with hand-set SLO-met counts.

    The groups finished 200 ok (127.0.0.1) and 200 ok + 1 failed (gpu-b); version 1's attainment is met / ok.
    """
    doc = make_doc()
    doc["schema"] = "llmload.results/1"
    for body, met in zip([*doc["groups"], doc["total"]], (150, 100, 250), strict=True):
        ok = body["requests"]["ok"]
        slo = body["slo"]
        del slo["attainment_of_ok"]
        slo.update(met=met, attainment=met / ok)
    return doc


def test_llmload_report_of_a_version_1_file_shows_the_upgraded_attainment(tmp_path, capsys):
    doc = make_v1_doc()
    assert [(b["requests"]["ok"], b["requests"]["failed"]) for b in [*doc["groups"], doc["total"]]] == [
        (200, 0),
        (200, 1),
        (400, 1),
    ]
    source, out = tmp_path / "old.json", tmp_path / "old.html"
    source.write_text(json.dumps(doc))
    assert cli.main(["report", str(source), "-o", str(out)]) == 0
    capsys.readouterr()
    cells = [c for c in parse(out.read_text()).cells if c["key"] == "slo.attainment"]
    # 150 / 200 = 75.0% (no failure: as in version 1); 100 / (200 + 1) = 49.8% (version 1: 50.0%);
    # total 250 / (400 + 1) = 62.3% (version 1: 62.5%).
    assert [c["text"] for c in cells] == ["75.0%", "49.8%", "62.3%"]
    assert [float(c["value"]) for c in cells] == [150 / 200, 100 / 201, 250 / 401]
