"""A scripted soak across two backends, watched by a real Prometheus with llmload's scaled rules loaded.

Two simulator backends in a backends file; llmload's exporter and both
simulators scraped every second; the soak rule set (SLO period 6 h: every
window 1/120 of the SRE workbook's) loaded. About 60 s in, the "slowed"
backend becomes 8x slower (its streams drop under the 10 tokens/s SLO); at
120 s the test restarts it (fast again, counters reset). The test then checks
what a person watching Grafana and the results would rely on: both backends'
server figures, the exact percentile gauges against the results, the output
token rate against the servers' own, the burn-rate and restart alerts firing
and resolving, the run-event annotations, every dashboard query returning
data, and the soak verdict naming the slowed backend and its breach.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.processes import ProcessGroup, free_port, locust_command
from tests.support.prometheus import Prometheus, annotation_queries, dashboard_queries, running_prometheus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("promtool") is None,
        reason="needs Debian's prometheus package (make prometheus)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dashboards" / "rules" / "llmload-rules-soak-6h.yml"
RUN_S = 190
SLOW_AT_S = 60
RESTART_AT_S = 120
SOAK_WINDOW_S = 30
GRACE_S = 6
TTFT_MS, ITL_MS, SLOW_FACTOR, MAX_TOKENS = 30.0, 15.0, 8.0, 30
UNSET_KEY = "LLMLOAD_SOAK_TEST_KEY_NOT_SET"
SUBSTITUTIONS = {"$__rate_interval": "10s", "$__interval": "5s", "$__range": "60s"}
# Closed-loop run: the open-loop series do not exist.
OPEN_LOOP_ONLY = re.compile(r"llmload_(?:dispatch_lag|ttft_from_intended|e2e_from_intended)_seconds")
# The backends think (3 reasoning tokens per answer), so the dashboards' reasoning panels are checked too.
SIM_ARGS = ["--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS), "--seed", "5", "--reasoning-tokens", "3"]


def within(value: float, truth: float) -> bool:
    """docs/prometheus-grafana.md: live percentiles agree within 2% or 0.1 ms, whichever is larger."""
    return abs(value - truth) <= max(0.02 * abs(truth), 1e-4)


class Backends:
    """The two simulator backends; "slowed" slows down on schedule and is restarted on its port by the test."""

    def __init__(self) -> None:
        self.steady = SimulatorProcess(profile="fixed", extra_args=SIM_ARGS).start()
        self.slowed_port = free_port()
        self.slowed = SimulatorProcess(
            profile="fixed",
            port=self.slowed_port,
            extra_args=[*SIM_ARGS, "--slow-after", str(SLOW_AT_S), "--slow-factor", str(SLOW_FACTOR)],
        ).start()
        # The simulator arms its slow-down when it starts serving, just before it says it listens.
        self.slowed_at = time.time() + SLOW_AT_S
        self.restarted_at: float | None = None

    def restart_slowed(self) -> None:
        self.slowed.stop()
        self.restarted_at = time.time()
        self.slowed = SimulatorProcess(profile="fixed", port=self.slowed_port, extra_args=SIM_ARGS).start()

    def stop(self) -> None:
        self.steady.stop()
        self.slowed.stop()


def test_soak_two_backends_slowed_and_restarted(tmp_path):
    os.environ.pop(UNSET_KEY, None)
    exporter_port = free_port()
    sims = Backends()
    try:
        backends = tmp_path / "backends.toml"
        backends.write_text(
            f'[[backend]]\nname = "steady"\nbase_url = "{sims.steady.base_url}"\ngpu = "sim-a"\n'
            f'engine = "llmload sim"\nprice_per_hour = 1.5\napi_key_env = "{UNSET_KEY}"\n\n'
            f'[[backend]]\nname = "slowed"\nbase_url = "{sims.slowed.base_url}"\ngpu = "sim-b"\n'
            "price_per_hour = 0.5\n"
        )
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "llmload", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]},
                {
                    "job_name": "vllm",
                    "static_configs": [
                        {"targets": [sims.steady.base_url.split("//")[1]], "labels": {"backend": "steady"}},
                        {"targets": [sims.slowed.base_url.split("//")[1]], "labels": {"backend": "slowed"}},
                    ],
                },
            ],
        }
        with running_prometheus(config, tmp_path) as prom:
            run, firing = run_soak(prom, tmp_path, backends, exporter_port, sims)
            started = datetime.datetime.fromisoformat(run["run"]["started_at"]).timestamp()
            check_results(run, sims)
            check_live_numbers(prom, run, started)
            check_alerts(firing, sims)
            check_annotations(prom, started, sims)
            check_dashboard_queries(prom, sims.slowed_at + 40)
    finally:
        sims.stop()


def run_soak(
    prom: Prometheus, tmp_path: Path, backends: Path, port: int, sims: Backends
) -> tuple[dict, dict[str, list[tuple[float, dict]]]]:
    """Run Locust against both backends, restarting "slowed" on schedule; return results and firing alerts."""
    results, log = tmp_path / "results.json", tmp_path / "locust.log"
    cmd = locust_command(
        "chatbot.py",
        "http://127.0.0.1:1",  # unused: every user goes to a backend of the backends file
        "--headless",
        *("-u", "16", "-r", "16", "-t", f"{RUN_S}s"),
        *("--llm-backends", str(backends), "--llm-think-time", "0", "--llm-max-tokens", str(MAX_TOKENS)),
        *("--llm-slo-ttft", "1", "--llm-server-metrics", "--llm-soak-window", str(SOAK_WINDOW_S)),
        *("--llm-prometheus-port", str(port), "--llm-prometheus-grace", str(GRACE_S)),
        *("--llm-results", str(results), "--exit-code-on-error", "0", "--stop-timeout", "10"),
    )
    firing: dict[str, list[tuple[float, dict]]] = {}
    with ProcessGroup() as group:
        proc = group.start(cmd, tmp_path, log)
        restart_at = sims.slowed_at - SLOW_AT_S + RESTART_AT_S
        while proc.poll() is None:
            now = time.time()
            if sims.restarted_at is None and now >= restart_at:
                sims.restart_slowed()
            for alert in prom.alerts():
                if alert["state"] == "firing":
                    firing.setdefault(alert["labels"]["alertname"], []).append((now, alert["labels"]))
            time.sleep(1.0)
        proc.wait(timeout=5)
    output = log.read_text()
    assert proc.returncode == 0 and results.exists(), output[-3000:]
    run = json.loads(results.read_text())
    run["_output"] = output
    return run, firing


def check_results(run: dict, sims: Backends) -> None:
    output = run["_output"]
    # The unset api_key_env: one clear line, and the run goes on without a key for that backend.
    lines = [line for line in output.splitlines() if UNSET_KEY in line]
    assert len(lines) == 1 and "is not set" in lines[0], lines
    server = run["server"]
    assert set(server) == {"steady", "slowed"}, server
    for name, body in server.items():
        assert body["engine"] == "vllm" and body["scrapes"] >= 10 and body["generation_tokens"] > 0, (name, body)
    assert server["slowed"]["restarts"] == 1 and server["steady"]["restarts"] == 0
    assert {t["label"] for t in run["run"]["targets"]} == {"steady", "slowed"}
    assert UNSET_KEY in json.dumps(run["run"]["backends"])  # the variable's name, never a key
    events = [e["event"] for e in run["run"]["events"]]
    assert events[0] == "test_start" and events[-1] == "test_stop" and "backend_restarted" in events, events
    # The soak verdict names the slowed backend: one breach, starting within one timeline interval plus the
    # slowed requests' E2E p50 of the injection, recovered after the restart; the steady backend has none.
    soak = run["soak"]
    assert soak["window_s"] == SOAK_WINDOW_S and soak["full_windows"] >= 5, soak
    assert soak["backends"]["steady"]["breaches"] == [], soak["backends"]["steady"]
    breaches = soak["backends"]["slowed"]["breaches"]
    assert len(breaches) == 1, breaches
    breach = breaches[0]
    slow_e2e_p50 = max(w["backends"]["slowed"]["e2e_p50_s"] or 0 for w in soak["windows"])
    assert slow_e2e_p50 > (TTFT_MS + (MAX_TOKENS - 1) * ITL_MS) / 1e3 * SLOW_FACTOR * 0.9, slow_e2e_p50
    interval = soak["interval_s"]
    assert sims.slowed_at - interval <= breach["start"] <= sims.slowed_at + interval + slow_e2e_p50, (
        breach,
        sims.slowed_at,
    )
    assert breach["recovered"] and breach["onset_cause"] == "stream_rate", breach
    assert sims.restarted_at is not None and breach["end"] >= sims.restarted_at, (breach, sims.restarted_at)
    assert breach["time_to_recover_s"] == pytest.approx(breach["end"] - breach["start"], abs=0.01)
    assert "Soak:" in output and "slowed" in output.split("Soak:", 1)[1]


def check_live_numbers(prom: Prometheus, run: dict, started: float) -> None:
    # The whole-run gauges' last values (kept up by the grace period) are the results' figures.
    names = {
        "ttft_s": "llmload_ttft_percentile_seconds",
        "itl_s": "llmload_itl_percentile_seconds",
        "e2e_s": "llmload_e2e_percentile_seconds",
        "stream_rate_tps": "llmload_stream_rate_percentile_tokens_per_second",
    }
    now = time.time()
    for group in run["groups"]:
        for dist, metric in names.items():
            for q in ("10", "50", "90", "99"):
                truth = group[dist].get(f"p{q}")
                result = prom.query(
                    f'last_over_time({metric}{{backend="{group["backend"]}",window="run",percentile="{q}"}}[60s])',
                    now,
                )
                if truth is None or not result:
                    assert not (dist == "stream_rate_tps" or q != "10"), (metric, q, group["backend"], result)
                    continue
                value = float(result[0]["value"][1])
                assert within(value, truth), (metric, group["backend"], q, value, truth)
        ttfa = group["reasoning"]["ttfa_s"]  # the backends think: time to the first answer token
        for q in ("50", "90", "99"):
            selector = f'backend="{group["backend"]}",window="run",percentile="{q}"'
            value = prom.value(f"last_over_time(llmload_ttfa_percentile_seconds{{{selector}}}[60s])", now)
            assert within(value, ttfa[f"p{q}"]), ("ttfa", group["backend"], q, value, ttfa)
    # Output tokens over 10-second windows follow the servers' own counters while both backends are steady.
    worst = 0.0
    for offset in range(20, 60, 10):
        at = started + offset
        for backend in ("steady", "slowed"):
            client = prom.value(f'sum(increase(llmload_output_tokens_total{{backend="{backend}"}}[10s]))', at)
            server = prom.value(f'sum(increase(vllm:generation_tokens_total{{backend="{backend}"}}[10s]))', at)
            assert server > 0 and abs(client - server) <= 0.05 * server, (backend, offset, client, server)
            worst = max(worst, abs(client - server) / server)
    print(f"soak: output tokens vs server over 10 s windows: worst difference {worst:.2%}")


def check_alerts(firing: dict[str, list[tuple[float, dict]]], sims: Backends) -> None:
    def times(name: str, backend: str) -> list[float]:
        return [t for t, labels in firing.get(name, []) if labels.get("backend") == backend]

    burn = times("LLMLoadStreamRateSLOBudgetBurnPage", "slowed")
    assert burn, f"the page burn-rate alert never fired: {sorted(firing)}"
    # It fires after the slow-down and stops firing (resolves) after the restart, before the run ends.
    assert sims.slowed_at < min(burn) < sims.slowed_at + 30, (burn, sims.slowed_at)
    assert sims.restarted_at is not None and max(burn) < sims.restarted_at + 60, (burn, sims.restarted_at)
    assert not times("LLMLoadStreamRateSLOBudgetBurnPage", "steady")
    print(
        f"soak: burn-rate page fired {min(burn) - sims.slowed_at:.1f} s after the slow-down, "
        f"last seen {max(burn) - (sims.restarted_at or 0):.1f} s after the restart"
    )
    restart = times("LLMLoadBackendRestarted", "slowed")
    assert restart and sims.restarted_at < min(restart) < sims.restarted_at + 20, (restart, sims.restarted_at)
    assert max(restart) < sims.restarted_at + 50, "the restart alert never resolved"
    print(
        f"soak: restart alert from {min(restart) - sims.restarted_at:.1f} s to "
        f"{max(restart) - sims.restarted_at:.1f} s after the restart"
    )


def check_annotations(prom: Prometheus, started: float, sims: Backends) -> None:
    for dashboard, name, expr in annotation_queries(SUBSTITUTIONS):
        if name != "Run events":
            continue
        result = prom.query(f"last_over_time(({expr})[5m:1s])", time.time())
        seen = {(r["metric"]["event"], r["metric"].get("backend", "")): float(r["value"][1]) / 1000 for r in result}
        assert ("test_start", "") in seen and ("backend_restarted", "slowed") in seen, (dashboard, seen)
        assert abs(seen[("test_start", "")] - started) < 2, (dashboard, seen)
        assert sims.restarted_at is not None
        assert sims.restarted_at < seen[("backend_restarted", "slowed")] < sims.restarted_at + 10, (dashboard, seen)


def check_dashboard_queries(prom: Prometheus, at: float) -> None:
    """Every panel of every dashboard shows data mid-soak (the slowed phase); a failure names the panel."""
    empty = []
    for dashboard, title, expr in dashboard_queries(SUBSTITUTIONS, leave_out=OPEN_LOOP_ONLY):
        result = prom.query(expr, at)
        if not result or not any(math.isfinite(float(series["value"][1])) for series in result):
            empty.append(f"{dashboard} / {title}: {expr}")
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
