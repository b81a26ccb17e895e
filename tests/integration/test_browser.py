"""The LLM tab and the HTML report in a real headless Chromium, and the API key through the web UI.

- ``test_llm_tab_*``: the simulator (fixed TTFT 50 ms, ITL 10 ms) and Locust
  with its web UI under ``--web-base-path`` and ``--llm-api-key``; Chromium
  fills the start form, starts a swarm, opens the LLM tab until its table
  fills, downloads the LLM CSV and screenshots the tab. Every response the
  page fetched is recorded (all requests pass through a route handler): the
  key is in none of them, nor in the page or the form the browser posted.
- ``test_report_*``: a short headless run writes ``--llm-html``; Chromium
  opens it offline with every non-file request aborted and recorded: nothing
  is requested, and every chart's SVG is drawn with visible marks.
- ``test_blank_key_field_*`` (no browser): a master with a web UI and one
  worker, started through ``/swarm`` with the key field blank as the scrubbed
  page posts it; every request the worker sends carries the key, and the
  master's LLM rows fill from the worker's reports.

Chromium is Debian's ``/usr/bin/chromium`` (``make test`` installs it), driven
by Playwright's Python package; without it the browser tests skip, except
under CI, where they fail. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmload.simulator.process import SimulatorProcess
from llmload.webui import COLUMNS, POOLED_COLUMNS, POOLED_TAB_TITLE
from tests.support.chunks import DONE, chat_chunk, usage_chunk
from tests.support.processes import ROOT, ProcessGroup, free_port, locust_command, run_locust
from tests.support.scripted_server import ScriptedServer, plain_response, sse_response

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
FIXED = ["--ttft-ms", "50", "--itl-ms", "10"]
SECRET = "sk-browser-secret-9f3a7c"
BASE = "/some/base"
REPORT_CHARTS = (
    "ttft",
    "itl",
    "stream-rate",
    "users",
    "throughput",
    "slo-attainment",
    "latency-over-time",
    "stream-rate-over-time",
    "client-vs-server-ttft-0",
)


def _require_chromium():
    """Return Playwright's sync API; skip (fail under CI) when Chromium or Playwright is missing."""
    reason = None
    if not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is missing (make test installs Debian's chromium)"
    else:
        try:
            from playwright import sync_api
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[test]')"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return sync_api


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator:
    """Yield a fresh headless Chromium context (its own profile directory) that accepts downloads."""
    sync_api = _require_chromium()
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            accept_downloads=True,
            viewport={"width": 1500, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def wait_http(url: str, log: Path, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer in {timeout:g} s:\n{log.read_text()[-3000:]}")


def read_table(page) -> list[dict[str, str]]:
    """Return the visible table as dicts keyed by column title."""
    return page.evaluate("""() => {
        const table = document.querySelector('table');
        if (!table) return [];
        const heads = [...table.querySelectorAll('thead th')].map(th => th.innerText.trim());
        return [...table.querySelectorAll('tbody tr')].map(tr =>
            Object.fromEntries([...tr.querySelectorAll('td')].map((td, i) => [heads[i], td.innerText.trim()])));
    }""")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _number(text: str) -> float:
    return float(text.replace(",", "")) if text not in ("", "-") else 0.0


@pytest.mark.browser
def test_llm_tab_fills_live_offers_its_csv_and_never_shows_the_key(tmp_path):
    started = time.monotonic()
    ARTIFACTS.mkdir(exist_ok=True)
    titles = dict(COLUMNS)
    with SimulatorProcess(profile="fixed", extra_args=FIXED) as sim, ProcessGroup() as group:
        port = free_port()
        log = tmp_path / "locust.log"
        group.start(
            locust_command(
                "chatbot.py",
                sim.base_url,
                "--web-host",
                "127.0.0.1",
                "--web-port",
                str(port),
                "--web-base-path",
                BASE,
                "--llm-api-key",
                SECRET,
                "--llm-think-time",
                "0",
                "--llm-max-tokens",
                "20",
            ),
            tmp_path,
            log,
        )
        url = f"http://127.0.0.1:{port}{BASE}/"
        wait_http(url, log)
        with chromium(tmp_path) as context:
            fetched: list[tuple[str, bytes]] = []
            posted: list[str] = []
            elsewhere: list[str] = []

            def record(route):
                request = route.request
                if not request.url.startswith(f"http://127.0.0.1:{port}/"):
                    elsewhere.append(request.url)
                    route.abort()
                    return
                if request.post_data:
                    posted.append(request.post_data)
                response = route.fetch()
                fetched.append((request.url, response.body()))
                route.fulfill(response=response)

            context.route("**/*", record)
            page = context.new_page()
            page.goto(url)
            page.fill("input[name=userCount]", "4")
            page.fill("input[name=spawnRate]", "4")
            page.fill("input[name=host]", sim.base_url)
            page.get_by_role("button", name="Start").click()
            page.get_by_role("tab", name="LLM", exact=True).click()
            row: dict[str, str] = {}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                rows = read_table(page)
                row = rows[0] if rows else {}
                if _number(row.get(titles["requests"], "")) > 0 and _number(row.get(titles["ttft_p50_ms"], "")) > 0:
                    break
                page.wait_for_timeout(500)
            assert list(row) == [title for _, title in COLUMNS], row
            assert row[titles["group"]].endswith("Chatbot")
            for key in (
                "requests",
                "ttft_p50_ms",
                "ttft_p99_ms",
                "itl_p50_ms",
                "itl_p99_ms",
                "stream_rate_p50_tps",
                "stream_rate_p10_tps",
                "output_tokens_per_s",
                "slo_attainment_pct",
            ):
                assert _number(row[titles[key]]) > 0, (key, row)
            # Known truth of the fixed profile, loose: the page shows what the master merged so far.
            assert 45 <= _number(row[titles["ttft_p50_ms"]]) <= 80
            page.screenshot(path=str(ARTIFACTS / "llm-tab.png"))

            page.get_by_role("tab", name="Download Data").click()
            with page.expect_download() as download:
                page.get_by_role("link", name="Download LLM token metrics CSV").click()
            table = list(csv.reader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
            assert table[0] == [title for _, title in COLUMNS]
            assert int(table[1][1]) > 0 and float(table[1][3]) > 0

            assert SECRET not in page.content()
            swarm = [urllib.parse.parse_qs(p, keep_blank_values=True) for p in posted if "user_count" in p]
            assert swarm and swarm[0]["llm_api_key"] == [""]  # the form had nothing to post back
            assert not any(SECRET in p for p in posted)
            assert any(u.endswith(f"{BASE}/stats/requests") for u, _ in fetched)
            leaks = [u for u, body in fetched if SECRET.encode() in body]
            assert not leaks, leaks
            assert not elsewhere, elsewhere
            page.get_by_role("button", name="Stop").click()
            page.get_by_text("STOPPED").first.wait_for(timeout=10_000)
    assert SECRET not in log.read_text()
    assert time.monotonic() - started < 60


@pytest.mark.browser
def test_report_opens_offline_with_every_chart_drawn(tmp_path):
    started = time.monotonic()
    ARTIFACTS.mkdir(exist_ok=True)
    html = tmp_path / "report.html"
    with SimulatorProcess(profile="fixed", extra_args=FIXED) as sim:
        run = run_locust(
            tmp_path,
            "chatbot.py",
            sim.base_url,
            "-u",
            "6",
            "-r",
            "3",
            "-t",
            "7s",
            "--stop-timeout",
            "5",
            "--llm-think-time",
            "0",
            "--llm-max-tokens",
            "20",
            "--llm-server-metrics",
            "--llm-api-key",
            SECRET,
            "--llm-html",
            str(html),
        )
    assert run.returncode == 0, run.output[-3000:]
    assert html.exists() and SECRET not in html.read_text()
    with chromium(tmp_path) as context:
        context.set_offline(True)
        requested: list[str] = []
        failed: list[str] = []

        def only_the_file(route):
            if route.request.url != html.as_uri():
                requested.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        context.route("**/*", only_the_file)
        page = context.new_page()
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.goto(html.as_uri())
        drawn = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('svg.chart')].map(svg => {
            const box = svg.getBoundingClientRect();
            const marks = [...svg.querySelectorAll('.mark')].filter(m => {
                const b = m.getBBox(); return b.width > 0 || b.height > 0; });
            return [svg.dataset.chart, {width: box.width, height: box.height, marks: marks.length,
                                        empty: svg.classList.contains('empty')}];
        }))""")
        for chart in REPORT_CHARTS:
            assert chart in drawn, (chart, sorted(drawn))
            info = drawn[chart]
            assert info["width"] > 100 and info["height"] > 100 and info["marks"] > 0 and not info["empty"], (
                chart,
                info,
            )
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert requested == [] and failed == []
    assert time.monotonic() - started < 60


def _scripted_llm(_index: int, request: bytes) -> list:
    if request.startswith(b"GET"):
        return plain_response("200 OK", b'{"object": "list", "data": [{"id": "m", "object": "model"}]}')
    return sse_response([chat_chunk("hi"), chat_chunk(" there", finish="stop"), usage_chunk(3, 2), DONE])


def test_blank_key_field_keeps_the_key_and_it_reaches_the_workers(tmp_path):
    """Start a distributed run as the scrubbed start form does: the worker's requests carry the key."""
    master_port, web_port = free_port(), free_port()
    web = f"http://127.0.0.1:{web_port}{BASE}"
    with ScriptedServer(_scripted_llm) as server, ProcessGroup() as group:
        common = ["--llm-model", "m", "--llm-think-time", "0.5"]
        master_log = tmp_path / "master.log"
        group.start(
            locust_command(
                "chatbot.py",
                server.base_url,
                "--master",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(master_port),
                "--web-host",
                "127.0.0.1",
                "--web-port",
                str(web_port),
                "--web-base-path",
                BASE,
                "--llm-api-key",
                SECRET,
                *common,
            ),
            tmp_path,
            master_log,
        )
        group.start(
            locust_command(
                "chatbot.py",
                server.base_url,
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(master_port),
            ),
            tmp_path,
            tmp_path / "worker.log",
        )
        wait_http(f"{web}/", master_log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if get_json(f"{web}/stats/requests").get("worker_count") == 1:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the worker did not connect:\n" + master_log.read_text()[-3000:])
        page = urllib.request.urlopen(f"{web}/", timeout=5).read()
        assert SECRET.encode() not in page and b"llm_api_key" in page
        form = urllib.parse.urlencode(
            {"user_count": "2", "spawn_rate": "2", "host": server.base_url, "llm_api_key": ""}
        ).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{web}/swarm", data=form), timeout=5) as response:
            assert json.loads(response.read())["success"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sum(r.startswith(b"POST") for r in server.requests) < 3:
            time.sleep(0.2)
        posts = [r for r in server.requests if r.startswith(b"POST")]
        assert len(posts) >= 3, master_log.read_text()[-3000:]
        for request in posts:
            assert f"authorization: bearer {SECRET}".encode() in request.lower(), request[:400]
        # The tab shows the master's merged view: the worker's token metrics arrive with its 3-s reports.
        deadline = time.monotonic() + 10
        rows: list = []
        while time.monotonic() < deadline:
            stats = urllib.request.urlopen(f"{web}/stats/requests", timeout=5).read()
            assert SECRET.encode() not in stats
            rows = json.loads(stats)["extended_stats"][0]["data"]
            if rows and rows[0]["requests"] > 0:
                break
            time.sleep(0.5)
        assert rows and rows[0]["requests"] > 0 and rows[0]["failures"] == 0 and rows[0]["ttft_p50_ms"] > 0, rows


EMBED_AND_CHAT = """
from llmload import ChatbotUser, EmbeddingsUser


class Chat(ChatbotUser):
    max_tokens = 10


class Embedder(EmbeddingsUser):
    batch_size = 4
"""


@pytest.mark.browser
def test_embeddings_group_has_its_own_tab_and_report_section(tmp_path):
    started = time.monotonic()
    ARTIFACTS.mkdir(exist_ok=True)
    titles = dict(POOLED_COLUMNS)
    locustfile = tmp_path / "embed_and_chat.py"
    locustfile.write_text(EMBED_AND_CHAT)
    with SimulatorProcess(profile="fixed", extra_args=FIXED) as sim, ProcessGroup() as group:
        port = free_port()
        log = tmp_path / "locust.log"
        group.start(
            locust_command(
                str(locustfile),
                sim.base_url,
                *("--web-host", "127.0.0.1", "--web-port", str(port), "--llm-think-time", "0.05"),
            ),
            tmp_path,
            log,
        )
        url = f"http://127.0.0.1:{port}/"
        wait_http(url, log)
        with chromium(tmp_path) as context:
            page = context.new_page()
            page.goto(url)
            page.fill("input[name=userCount]", "4")
            page.fill("input[name=spawnRate]", "4")
            page.get_by_role("button", name="Start").click()
            page.get_by_role("tab", name=POOLED_TAB_TITLE, exact=True).click()
            row: dict[str, str] = {}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                rows = read_table(page)
                row = rows[0] if rows else {}
                if _number(row.get(titles["requests"], "")) >= 10:
                    break
                page.wait_for_timeout(500)
            assert list(row) == [title for _, title in POOLED_COLUMNS], row
            assert row[titles["group"]].endswith("Embedder") and row[titles["kind"]] == "embeddings"
            assert _number(row[titles["inputs_per_request"]]) == 4.0
            assert 45 <= _number(row[titles["latency_p50_ms"]]) <= 80  # the fixed profile's 50 ms prefill
            for key in ("latency_p99_ms", "requests_per_s", "inputs_per_s", "prompt_tokens_per_s"):
                assert _number(row[titles[key]]) > 0, (key, row)
            page.screenshot(path=str(ARTIFACTS / "llm-embeddings-tab.png"))
            page.get_by_role("tab", name="LLM", exact=True).click()
            page.wait_for_timeout(2500)
            streamed = [r[dict(COLUMNS)["group"]] for r in read_table(page)]
            assert streamed and all(not g.endswith("Embedder") for g in streamed), streamed
            page.get_by_role("button", name="Stop").click()
            page.get_by_text("STOPPED").first.wait_for(timeout=10_000)
            report = tmp_path / "live-report.html"
            with urllib.request.urlopen(f"{url}llmload/report.html", timeout=10) as response:
                report.write_bytes(response.read())
            results = get_json(f"{url}llmload/results.json")
            page.goto(report.as_uri())
            cells = page.evaluate("""() => [...document.querySelectorAll('#pooled tbody tr')].map(tr =>
                Object.fromEntries([...tr.querySelectorAll('td[data-key]')].map(td =>
                    [td.dataset.key, td.dataset.value])))""")
            page.screenshot(path=str(ARTIFACTS / "report-embeddings.png"), full_page=True)
    (body,) = [g for g in results["groups"] if g["kind"] == "embeddings"]
    assert len(cells) == 1 and cells[0]["kind"] == "'embeddings'", cells
    assert float(cells[0]["latency_s.p50"]) == pytest.approx(body["latency_s"]["p50"])
    assert float(cells[0]["throughput.inputs_per_s"]) == pytest.approx(body["throughput"]["inputs_per_s"])
    assert time.monotonic() - started < 60
