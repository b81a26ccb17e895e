"""The soak verdict: fixed windows, drift, SLO-breach episodes, the option, and how the outputs show it.

Runs are driven by synthetic ``RequestRecord`` s through a real plugin on a
local environment: every fine interval (2 s) the test advances an injected
clock, records that interval's requests with ``plugin.record`` and ticks the
monitor, as its supervised greenlet does; no test sleeps. Backend ``a`` is
always fast (20 tok/s, TTFT 0.1 s); backend ``b`` is what each test makes it.
The stream-rate SLO is 10 tok/s and the objective 0.99.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from llmload import capacity, soak
from llmload.errors import ConfigError
from llmload.figures import Slo, group_body, store_bodies
from llmload.options import LLMOptions
from llmload.record import RequestRecord
from llmload.render import html as render_html
from llmload.render import table
from llmload.render.compare import rows_from_results, to_csv, to_markdown
from llmload.render.soak import format_soak
from llmload.soak import SoakMonitor
from tests.support.environments import RecordingRunner, fire, local_environment, new_plugin, worker_environment

T0 = 1_795_000_000.0
Traffic = Callable[[float], list[RequestRecord]]


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def request(backend: str, *, e2e: float = 1.0, ttft: float = 0.1, tokens: int = 20, error: str = "") -> RequestRecord:
    """One finished request: ``tokens`` tokens, the first after ``ttft``, the last after ``e2e`` (rate tokens/e2e)."""
    common = dict(backend=backend, model="m", user_class="U", endpoint="/v1/chat/completions", t_send=0.0)
    if error:
        return RequestRecord(**common, start_wall=T0, error_kind=error, t_end=0.5)
    gap = (e2e - ttft) / (tokens - 1)
    times = [ttft + i * gap for i in range(tokens)]
    return RequestRecord(**common, start_wall=T0, token_times=times, t_end=times[-1], completion_tokens=tokens)


def fast(backend: str, n: int = 5) -> list[RequestRecord]:
    return [request(backend) for _ in range(n)]


class Run:
    """A local run of 10 users: spawning at first, spawned after 4 s, with a soak monitor on a test clock."""

    def __init__(self, *, window_s: float = 30.0) -> None:
        self.clock = Clock()
        self.runner = RecordingRunner(user_count=0, state=STATE_SPAWNING)
        self.plugin = new_plugin(local_environment(runner=self.runner))
        self.plugin.set_options(LLMOptions(slo_stream_rate_tps=10.0, slo_objective=0.99))
        self.monitor = self.plugin.extensions.add(SoakMonitor(self.plugin, window_s=window_s, clock=self.clock))
        self.monitor.begin()

    @property
    def t(self) -> float:
        return self.clock.t - T0

    def users(self, count: int) -> None:
        self.runner.user_count, self.runner.state = count, STATE_RUNNING
        fire(self.plugin.environment.events.spawning_complete, user_count=count)

    def advance(self, seconds: float, traffic: Traffic) -> None:
        """Run ``seconds`` more: each 2 s interval, the requests ``traffic(t at its end)`` finish in it."""
        for _ in range(round(seconds / 2)):
            self.clock.t += 2.0
            for record in traffic(self.t):
                self.plugin.record(record)
            self.monitor.tick()

    def stop(self) -> dict[str, Any]:
        self.monitor.stop()
        section = self.monitor.results_section()
        assert section is not None
        return section


def run(traffic: Traffic, *, seconds: float = 240.0, window_s: float = 30.0) -> dict[str, Any]:
    """A ``seconds`` run: 4 s of spawning, then 10 users; ``traffic`` from the start."""
    r = Run(window_s=window_s)
    r.advance(4, traffic)
    r.users(10)
    r.advance(seconds - 4, traffic)
    return r.stop()


def steady(t: float) -> list[RequestRecord]:
    return fast("a") + fast("b")


def results_doc(section: dict[str, Any], store_of: Run | None = None) -> dict[str, Any]:
    """A results document around a soak section (groups from a small store, as the plugin builds them)."""
    r = store_of or Run()
    if store_of is None:
        for record in fast("a") + fast("b"):
            r.plugin.record(record)
    store = r.plugin.store
    return {
        "schema": "llmload.results/2",
        "run": {"started_at": None, "duration_s": 240.0, "peak_users": 10, "backends": None},
        "groups": store_bodies(store),
        "total": group_body(store.total(), slo=Slo.of(store)),
        "timeline": [],
        "soak": section,
    }


# -- windows and the drift verdict ---------------------------------------------------------------


def test_steady_run_is_stable_with_fixed_windows_and_no_breach():
    section = run(steady)
    windows = section["windows"]
    assert section["window_s"] == 30.0 and section["interval_s"] == 2.0 and section["objective"] == 0.99
    assert [w["start"] - T0 for w in windows] == [30.0 * i for i in range(8)]
    assert all(w["duration_s"] == 30.0 and not w["partial"] for w in windows)
    # Window 0 holds the spawning (users 0 -> 10): not steady; the first steady window is the next one.
    assert [w["steady"] for w in windows] == [False] + [True] * 7
    assert (windows[0]["users_min"], windows[0]["users_max"]) == (0, 10)
    assert (section["first_steady_window"], section["last_steady_window"]) == (1, 7)
    assert section["verdict"] == "stable" and section["reason"] is None
    a = windows[3]["backends"]["a"]
    assert a["requests"] == 75 and a["failed"] == 0 and a["error_rate"] == 0.0 and a["attainment"] == 1.0
    assert a["goodput_rps"] == pytest.approx(2.5) and a["output_tokens_per_s"] == pytest.approx(50.0)
    assert a["ttft_p50_s"] == pytest.approx(0.1, rel=1e-3) and a["stream_rate_p50_tps"] == pytest.approx(20, rel=1e-3)
    assert a["itl_p50_s"] == pytest.approx(0.9 / 19, rel=1e-3) and a["e2e_p50_s"] == pytest.approx(1.0, rel=1e-3)
    for name in ("a", "b"):
        backend = section["backends"][name]
        assert backend["verdict"] == "stable" and backend["breaches"] == [] and backend["breach_count"] == 0
        assert {entry["direction"] for entry in backend["drift"].values()} == {"within"}
        assert backend["drift"]["goodput_rps"]["change"] == 0.0
    assert section["threshold"] == {
        "relative": 0.1,
        "floors": {"ttft_p99_s": 0.05, "itl_p50_s": 0.002, "stream_rate_p50_tps": 1.0, "goodput_rps": 1 / 30},
    }


def test_closed_windows_keep_summaries_only():
    r = Run()
    r.advance(4, steady)
    r.users(10)
    r.advance(100, steady)
    # While running: one soak window in the plugin, holding only the distributions the summaries need.
    assert r.plugin.windows[soak.WINDOW].store.distributions == soak.WINDOW_DISTRIBUTIONS
    section = r.stop()
    assert soak.WINDOW not in r.plugin.windows

    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool))

    assert plain(section)  # numbers, strings and containers: no histogram, no metrics object
    assert orjson.loads(orjson.dumps(section)) == section
    # The last 14 s after the third full window: a partial window, flagged, not judged.
    assert [(w["duration_s"], w["partial"], w["steady"]) for w in section["windows"][-2:]] == [
        (30.0, False, True),
        (14.0, True, False),
    ]


def test_each_window_merges_into_the_memory_of_the_last_one():
    """A closed window's merged groups are emptied and filled again: no new histograms per window."""
    r = Run()
    r.advance(4, steady)
    r.users(10)
    r.advance(40, steady)  # past the first window
    histograms = {id(d.histogram) for g in r.monitor._current.values() for d in g.dists.values()}
    r.advance(30, steady)  # the next window
    again = {id(d.histogram) for g in r.monitor._current.values() for d in g.dists.values()}
    assert histograms and again == histograms
    assert len(r.stop()["windows"]) >= 2


def test_degraded_last_window():
    def traffic(t: float) -> list[RequestRecord]:
        if t > 210:  # b's TTFT grows from 0.1 to 0.6 s (its stream rate falls to 20 / 1.5 s, still within the SLO)
            return fast("a") + [request("b", ttft=0.6, e2e=1.5) for _ in range(5)]
        return steady(t)

    section = run(traffic)
    b = section["backends"]["b"]
    assert b["verdict"] == "degraded" and section["backends"]["a"]["verdict"] == "stable"
    assert section["verdict"] == "degraded"
    ttft = b["drift"]["ttft_p99_s"]
    assert ttft["first"] == pytest.approx(0.1, rel=1e-3) and ttft["last"] == pytest.approx(0.6, rel=1e-3)
    assert ttft["change"] == pytest.approx(5.0, rel=1e-2) and ttft["direction"] == "worse"
    assert b["drift"]["stream_rate_p50_tps"]["direction"] == "worse"
    assert b["drift"]["goodput_rps"]["direction"] == "within"  # every request still met the SLO
    assert b["breaches"] == []


def test_improved_when_a_figure_improves_and_none_worsens():
    def traffic(t: float) -> list[RequestRecord]:
        if t > 210:  # b streams twice as fast: stream rate and ITL improve
            return fast("a") + [request("b", e2e=0.5, ttft=0.1) for _ in range(5)]
        return steady(t)

    b = run(traffic)["backends"]["b"]
    assert b["verdict"] == "improved"
    assert b["drift"]["stream_rate_p50_tps"]["direction"] == "better"
    assert b["drift"]["itl_p50_s"]["direction"] == "better"
    assert b["drift"]["ttft_p99_s"]["direction"] == "within"


def test_changes_within_the_floor_do_not_count():
    # +30 ms of TTFT p99 on 0.1 s is +30%, but below the 50 ms floor: noise at small values.
    def traffic(t: float) -> list[RequestRecord]:
        return fast("a") + [request("b", ttft=0.13 if t > 210 else 0.1) for _ in range(5)]

    b = run(traffic)["backends"]["b"]
    assert b["drift"]["ttft_p99_s"]["change"] == pytest.approx(0.3, rel=1e-2)
    assert b["drift"]["ttft_p99_s"]["direction"] == "within" and b["verdict"] == "stable"


def test_too_short_with_fewer_than_two_steady_windows():
    section = run(steady, seconds=60.0, window_s=300.0)
    assert section["verdict"] == "too short"
    assert section["reason"] == "fewer than 2 full steady windows (0 full, 0 steady)"
    assert [(w["partial"], w["duration_s"]) for w in section["windows"]] == [(True, 60.0)]
    assert section["backends"]["a"] == {
        "verdict": "too short",
        "drift": None,
        "breaches": [],
        "breach_count": 0,
        "longest_time_to_recover_s": None,
        "unrecovered": False,
    }
    assert format_soak(results_doc(section)) == []  # no full window: the console stays as it was


def test_a_change_of_users_makes_its_window_unsteady():
    r = Run()
    r.advance(4, steady)
    r.users(10)
    r.advance(96, steady)
    r.users(20)  # at t = 100: window 3 (90-120 s) is not steady
    r.advance(140, steady)
    section = r.stop()
    assert [w["steady"] for w in section["windows"]] == [False, True, True, False, True, True, True, True]
    assert (section["windows"][3]["users_min"], section["windows"][3]["users_max"]) == (10, 20)


def test_the_section_while_running_is_a_snapshot_that_changes_nothing():
    r = Run()
    r.advance(4, slowed_b)
    r.users(10)
    r.advance(106, slowed_b)  # t = 110: b in breach since 102 s
    live = r.monitor.results_section()  # the web UI's report of a running test
    assert live is not None and r.monitor.running and soak.WINDOW in r.plugin.windows
    assert [(w["duration_s"], w["partial"]) for w in live["windows"]] == [(30.0, False)] * 3 + [(20.0, True)]
    (episode,) = live["backends"]["b"]["breaches"]
    assert (episode["start"], episode["end"], episode["duration_s"]) == (T0 + 102, None, 8.0)
    r.advance(130, slowed_b)
    section = r.stop()
    assert len(section["windows"]) == 8 and section["backends"]["b"]["breaches"][0]["end"] == T0 + 160
    assert r.monitor.results_section() is section


# -- SLO-breach episodes -------------------------------------------------------------------------


def slowed_b(t: float) -> list[RequestRecord]:
    """b is slowed from t = 100 s to 160 s: 2 tok/s, and it finishes a request only every other interval."""
    if 100 < t <= 160:
        return fast("a") + ([request("b", e2e=10.0)] if t % 4 == 0 else [])
    return steady(t)


def test_slowed_then_recovered_backend_is_one_breach_episode():
    section = run(slowed_b)
    assert section["backends"]["a"]["breaches"] == []
    b = section["backends"]["b"]
    assert b["breach_count"] == 1 and b["longest_time_to_recover_s"] == 58.0 and not b["unrecovered"]
    (episode,) = b["breaches"]
    # The first interval with a slow request began at 102 s; the first one back within the SLO at 160 s.
    # Intervals in between without any request of b neither breach nor recover.
    assert episode == {
        "backend": "b",
        "start": T0 + 102,
        "end": T0 + 160,
        "recovered": True,
        "time_to_recover_s": 58.0,
        "duration_s": 58.0,
        "cause": "stream_rate",
        "cause_kind": "slo",
        "onset_cause": "stream_rate",
        "reasons": {"stream_rate": 15},
        "worst_attainment": 0.0,
        "intervals": 15,
        "requests": 15,
        "misses": {"total": 15, "ttft": 0, "stream_rate": 15, "errors": {}},
    }
    assert b["verdict"] == "stable"  # fast again by the last window


def test_errors_that_are_most_of_the_misses_are_the_cause():
    def traffic(t: float) -> list[RequestRecord]:
        if 100 < t <= 120:
            return fast("a") + [request("b", error="http_5xx")] * 3 + [request("b", error="connect")] + fast("b", 1)
        return steady(t)

    (episode,) = run(traffic)["backends"]["b"]["breaches"]
    assert (episode["start"], episode["end"]) == (T0 + 100, T0 + 120)
    assert (episode["cause"], episode["cause_kind"]) == ("http_5xx", "error") and episode["reasons"] == {"http_5xx": 10}
    assert episode["worst_attainment"] == pytest.approx(0.2)
    assert episode["misses"] == {"total": 40, "ttft": 0, "stream_rate": 0, "errors": {"connect": 10, "http_5xx": 30}}


def test_the_cause_is_what_held_most_of_the_episode_not_the_most_requests():
    # b is slow from 100 s; restarting it at 150 s refuses connections for one interval, in which its
    # users fail fast and often: most of the missed requests, but 2 s of a 52-s episode.
    def traffic(t: float) -> list[RequestRecord]:
        if 100 < t <= 150:
            return fast("a") + [request("b", e2e=10.0)]
        if t == 152:
            return fast("a") + [request("b", error="connect")] * 200
        return steady(t)

    (episode,) = run(traffic)["backends"]["b"]["breaches"]
    assert (episode["start"], episode["end"]) == (T0 + 100, T0 + 152)
    assert episode["reasons"] == {"stream_rate": 25, "connect": 1}
    assert (episode["cause"], episode["cause_kind"], episode["onset_cause"]) == ("stream_rate", "slo", "stream_rate")
    assert episode["misses"] == {"total": 225, "ttft": 0, "stream_rate": 25, "errors": {"connect": 200}}


def test_episode_still_open_at_the_end():
    def traffic(t: float) -> list[RequestRecord]:
        return fast("a") + ([request("b", e2e=10.0)] if t > 200 else fast("b"))

    section = run(traffic)
    b = section["backends"]["b"]
    (episode,) = b["breaches"]
    assert episode["start"] == T0 + 200 and episode["end"] is None and episode["recovered"] is False
    assert episode["time_to_recover_s"] is None and episode["duration_s"] == 40.0
    assert b["unrecovered"] and b["longest_time_to_recover_s"] is None and b["verdict"] == "degraded"


def test_ttft_cause():
    r = Run()
    r.plugin.set_options(LLMOptions(slo_stream_rate_tps=10.0, slo_ttft_s=0.5, slo_objective=0.99))
    r.monitor.begin()  # the SLO of the run is read at its start
    r.users(10)
    r.advance(20, lambda t: fast("a") + [request("b", ttft=0.8, e2e=1.2)] * 5 if 10 < t <= 14 else steady(t))
    (episode,) = r.stop()["backends"]["b"]["breaches"]
    assert (episode["cause"], episode["start"], episode["end"]) == ("ttft", T0 + 10, T0 + 14)


# -- the extension: option, roles, events -----------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "1", "-5", "nan"])
def test_bad_window_is_one_config_error_line(value, capsys):
    with pytest.raises(ConfigError, match=r"^--llm-soak-window: expected seconds >= 2, got "):
        soak.parse_window(value)
    environment = local_environment(SimpleNamespace(llm_soak_window=value))
    with pytest.raises(SystemExit) as exit_info:
        new_plugin(environment, soak)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("llmload: error: --llm-soak-window: expected") and err.count("\n") == 1


def test_option_default_and_env_var():
    added: dict[str, Any] = {}
    soak.add_arguments(SimpleNamespace(add_argument=lambda name, **kwargs: added.update({name: kwargs})))
    assert added["--llm-soak-window"]["env_var"] == "LOCUST_LLM_SOAK_WINDOW"
    assert added["--llm-soak-window"]["default"] == "300"
    assert soak.parse_window("") == 300.0 and soak.parse_window("30") == 30.0


def test_no_monitor_on_a_worker_or_in_a_capacity_search():
    assert new_plugin(worker_environment(), soak).extensions.get(SoakMonitor) is None
    environment = local_environment(SimpleNamespace(), shape_class=capacity.CapacityShape(), host="http://h")
    plugin = new_plugin(environment, capacity, soak)
    assert plugin.extensions.get(capacity.CapacityRun) is not None
    assert plugin.extensions.get(SoakMonitor) is None
    assert new_plugin(local_environment(SimpleNamespace()), soak).extensions.get(SoakMonitor) is not None


def test_events_start_tick_and_stop_the_monitor():
    environment = local_environment(SimpleNamespace(llm_soak_window="30"), runner=RecordingRunner(user_count=2))
    plugin = new_plugin(environment, soak)
    monitor = plugin.extensions.get(SoakMonitor)
    assert monitor is not None and monitor.window_s == 30.0
    try:
        fire(environment.events.test_start, environment=environment)
        assert monitor.running and soak.WINDOW in plugin.windows
        fire(environment.events.spawning_complete, user_count=2)
        plugin.record(request("a"))
        fire(environment.events.test_stop, environment=environment)
    finally:
        plugin.supervisor.kill_all()
    assert not monitor.running and soak.WINDOW not in plugin.windows
    section = plugin.extensions.results_sections()["soak"]
    assert section is monitor.section and section["verdict"] == "too short"
    assert section["windows"] == []  # a run shorter than one interval: no window worth its rates
    assert plugin.supervisor.errors == []


# -- rendering ----------------------------------------------------------------------------------


def slowed_doc() -> dict[str, Any]:
    def traffic(t: float) -> list[RequestRecord]:
        if t > 210:
            return fast("a") + [request("b", ttft=0.6, e2e=1.5) for _ in range(5)]
        return slowed_b(t)

    return results_doc(run(traffic))


def test_console_block_names_the_verdict_drift_and_breaches():
    doc = slowed_doc()
    lines = format_soak(doc)
    assert lines[0] == ""
    assert lines[1] == (
        "Soak: degraded (30 s windows, 8 full; drift from window 1 to 7; * = beyond 10% and a floor; "
        "breach: a 2 s interval under 99% SLO attainment)"
    )
    assert lines[2].split() == ["backend", "verdict", "TTFT", "p99", "ITL", "p50", "rate", "p50", "goodput"] + [
        "SLO",
        "breaches",
    ]
    assert lines[4].split()[:2] == ["a", "stable"] and lines[4].rstrip().endswith("none")
    b = lines[5]
    change = doc["soak"]["backends"]["b"]["drift"]["ttft_p99_s"]["change"]  # +500% within HdrHistogram's 0.1%
    assert b.split()[:3] == ["b", "degraded", f"{change * 100:+.1f}%*"] and change == pytest.approx(5.0, rel=1e-3)
    assert b.endswith("1, longest recovery 58 s (stream_rate)")
    assert len(lines[3]) == len(lines[5])  # the rule spans every column; lines end without blanks
    text = table.format_table(doc)
    assert text.endswith("\n".join(lines[1:]))  # printed under the token table


def test_html_section_chart_and_breach_shading():
    page = render_html.build_html(slowed_doc())
    assert '<section id="soak"><h2>Soak</h2><p class="answer">Soak: degraded (30 s windows' in page
    for chart in ("soak-ttft", "soak-goodput"):
        start = page.index(f'data-chart="{chart}"')
        svg = page[start : page.index("</svg>", start)]
        assert svg.count('class="mark line"') == 2  # a and b
        assert svg.count('class="band"') == 1 and "b: SLO breach (stream_rate), recovered in 58 s" in svg
    assert "No SLO-breach episode." not in page and 'class="soak-breaches"' in page


def test_html_without_a_full_window_has_no_soak_section():
    page = render_html.build_html(results_doc(run(steady, seconds=60.0, window_s=300.0)))
    assert 'id="soak"' not in page


def test_compare_shows_the_verdict_per_backend():
    rows = rows_from_results(slowed_doc(), source="soak.json")
    assert [(r.backend, r.soak_verdict) for r in rows] == [("a", "stable"), ("b", "degraded")]
    assert rows[1].soak == "degraded; 1 SLO breach, longest recovery 58 s"
    markdown = to_markdown(rows).splitlines()
    assert markdown[2].endswith("| Users per $/hour | Soak | Measured over | Results file |")
    assert "| degraded; 1 SLO breach, longest recovery 58 s | whole run (240 s, 10 users) | soak.json |" in markdown[5]
    assert any(line.startswith("Soak: drift of the backend") for line in markdown)
    written = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert (written[1]["soak_verdict"], written[1]["soak_breaches"], written[1]["soak_longest_recovery_s"]) == (
        "degraded",
        "1",
        "58",
    )
