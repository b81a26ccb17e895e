"""The LLM cockpit in a real headless Chromium: live charts per backend, steering, the end-of-run view.

A Locust master with its web UI (under ``--web-base-path``) and two worker
processes run an open-loop test (constant arrivals) against two simulator
backends of a backends file, with a 12-second live window (a chart point
every 2 s). Chromium starts the swarm from Locust's form and, in the
"LLM cockpit" tab:

- waits until the charts draw series for both backends, and checks that the
  TTFT chart's last p99 point is the master's figure for that interval;
- changes the rate from the page: both workers take their share, and the
  simulators' own request counters follow the new rate within 10%;
- changes the TTFT SLO from the page: from the next requests on the workers
  record them as missing it (the phase after the change has requests and no
  SLO-met one), and the results keep each phase apart;
- stops the test and finds the verdict and the results download;
- and the API key given on the command line is in no response the page fetched.

Screenshots of the running cockpit and of the end-of-run view go to
``test-artifacts/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.integration.test_browser import ARTIFACTS, chromium, get_json, wait_http
from tests.support.processes import ProcessGroup, free_port, locust_command, scrape

pytestmark = pytest.mark.integration

BASE = "/cockpit/base"
FIXED = ["--ttft-ms", "50", "--itl-ms", "10"]
START_RATE, NEW_RATE = 6.0, 14.0
SECRET = "sk-cockpit-secret-52ad"


def served(sims: list[SimulatorProcess]) -> float:
    """Requests the simulators finished so far (their own counters)."""
    return sum(scrape(sim.base_url).get("vllm:request_success_total", 0.0) for sim in sims)


def drawn(page, chart: str) -> dict[str, list]:
    """What a cockpit chart draws: series name -> [points, last [time ms, value]]."""
    return json.loads(page.locator(f"[data-chart={chart}]").get_attribute("data-series") or "{}")


@pytest.mark.browser
def test_cockpit_charts_both_backends_and_steers_rate_and_slo_on_both_workers(tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with (
        SimulatorProcess(profile="fixed", extra_args=FIXED) as sim_a,
        SimulatorProcess(profile="fixed", extra_args=FIXED) as sim_b,
        ProcessGroup() as group,
    ):
        sims = [sim_a, sim_b]
        backends = tmp_path / "backends.toml"
        backends.write_text(
            "".join(
                f'[[backend]]\nname = "gpu-{n}"\nbase_url = "{sim.base_url}"\n\n'
                for n, sim in zip("ab", sims, strict=True)
            )
        )
        web_port, master_port = free_port(), free_port()
        results = tmp_path / "results.json"
        log = tmp_path / "master.log"
        group.start(
            locust_command(
                "chatbot.py",
                sim_a.base_url,
                *("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port)),
                *("--web-host", "127.0.0.1", "--web-port", str(web_port), "--web-base-path", BASE),
                *("--llm-backends", str(backends), "--llm-arrival", "constant", "--llm-rate", str(START_RATE)),
                *("--llm-live-window", "12", "--llm-max-tokens", "10", "--llm-slo-ttft", "1.0"),
                *("--llm-results", str(results), "--stop-timeout", "5", "--llm-api-key", SECRET),
            ),
            tmp_path,
            log,
        )
        for i in range(2):
            worker = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)]
            group.start(locust_command("chatbot.py", sim_a.base_url, *worker), tmp_path, tmp_path / f"w{i}.log")
        url = f"http://127.0.0.1:{web_port}{BASE}/"
        wait_http(url, log)
        with chromium(tmp_path) as context:
            fetched: list[tuple[str, bytes]] = []

            def record(route):
                response = route.fetch()
                fetched.append((route.request.url, response.body()))
                route.fulfill(response=response)

            context.route("**/*", record)
            page = context.new_page()
            page.goto(url)
            deadline = time.monotonic() + 20
            while get_json(f"{url}stats/requests")["workers"] and len(get_json(f"{url}stats/requests")["workers"]) < 2:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            page.fill("input[name=userCount]", "16")
            page.fill("input[name=spawnRate]", "16")
            page.get_by_role("button", name="Start").click()
            page.get_by_role("tab", name="LLM cockpit").click()

            # 1. Both backends charted within a few stats cycles; the last point is the master's figure.
            deadline = time.monotonic() + 30
            series: dict[str, list] = {}
            while time.monotonic() < deadline:
                series = drawn(page, "ttft")
                if {"gpu-a p99", "gpu-b p99"} <= set(series) and all(series[f"gpu-{n} p99"][0] >= 2 for n in "ab"):
                    break
                page.wait_for_timeout(500)
            assert {"gpu-a p99", "gpu-b p99"} <= set(series), series
            charts = get_json(f"{url}llmload/charts")
            fields = charts["fields"]
            api_group = next(g for g in charts["groups"] if g["backend"] == "gpu-a")
            chart_points, (last_t_ms, last_ms) = drawn(page, "ttft")["gpu-a p99"]
            api_point = next(p for p in api_group["points"] if p[0] * 1000 == last_t_ms)
            assert last_ms == pytest.approx(api_point[fields.index("ttft_p99_s")] * 1000, rel=1e-9)
            assert 0.045 <= api_point[fields.index("ttft_p99_s")] <= 0.2
            assert drawn(page, "tokens")["gpu-b"][0] >= 1 and drawn(page, "load")
            page.screenshot(path=str(ARTIFACTS / "cockpit-running.png"), full_page=True)

            # 2. A rate change from the page reaches both workers: the simulators' rate follows.
            page.fill("input[name=rate_rps]", str(NEW_RATE))
            page.get_by_role("button", name="Apply").click()
            page.locator("[data-steer-result=ok]").wait_for(timeout=10_000)
            time.sleep(3)  # the new schedule settles; requests of the old one finish
            before, t0 = served(sims), time.monotonic()
            time.sleep(8)
            measured = (served(sims) - before) / (time.monotonic() - t0)
            assert measured == pytest.approx(NEW_RATE, rel=0.10), measured

            # 3. An SLO change from the page applies on the workers from the next requests on.
            page.fill("input[name=slo_ttft_s]", "0.001")  # the simulators' TTFT is 50 ms: every request misses
            changed_at = time.time()
            page.get_by_role("button", name="Apply").click()
            page.get_by_text("SLO TTFT 0.001 s").first.wait_for(timeout=10_000)
            time.sleep(11)
            charts = get_json(f"{url}llmload/charts")
            page.get_by_role("button", name="Stop").click()
            # A chart point holds the requests whose results reached the master in its 2 s; a worker
            # reports every 3 s. Points that began 3 s after the change hold only requests recorded
            # after it on the workers: every one of them missed the new SLO.
            fields = charts["fields"]
            before, after = [], []
            for group in charts["groups"]:
                for point in group["points"]:
                    figures = dict(zip(fields, point, strict=True))
                    if figures["requests"] and figures["t"] < changed_at:
                        before.append(figures["slo_attainment"])
                    elif figures["requests"] and figures["t"] - charts["interval_s"] >= changed_at + 3:
                        after.append(figures["slo_attainment"])
            assert before and min(before) == 1.0, before
            assert len(after) >= 4 and max(after) == 0.0, after

            # 4. End of run: the verdict and the results download, in the page.
            page.get_by_text("STOPPED").first.wait_for(timeout=20_000)
            try:
                page.locator("[data-panel=verdict]").wait_for(timeout=20_000)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "cockpit-no-verdict.png"), full_page=True)
                raise AssertionError(get_json(f"{url}llmload/state")) from None
            assert "SLO" in page.locator("[data-panel=verdict]").inner_text()
            page.screenshot(path=str(ARTIFACTS / "cockpit-end-of-run.png"), full_page=True)
            download = page.request.get(f"{url}llmload/results.json")
            doc = download.json()
            assert SECRET not in page.content()
    assert any("/llmload/charts" in u for u, _ in fetched) and any("/llmload/state" in u for u, _ in fetched)
    leaks = [u for u, body in fetched if SECRET.encode() in body]
    assert not leaks, leaks
    assert SECRET not in json.dumps(doc)
    phases = doc["phases"]
    assert [p["name"] for p in phases] == ["start", f"rate {NEW_RATE:g} rps", "SLO TTFT 0.001 s"], phases
    assert phases[0]["total"]["slo"]["met"] > 0
    last = phases[2]["total"]
    # The phase's first worker reports may hold requests recorded just before the change (docs).
    assert last["requests"]["ok"] > 0 and last["slo"]["met"] < last["requests"]["ok"] / 2, last
    assert last["slo"]["ttft_s"] == 0.001
    events = [e["event"] for e in doc["run"]["events"]]
    assert "rate_changed" in events and "slo_changed" in events
    assert doc["run"]["workers"] == 2
    assert Path(results).exists()
