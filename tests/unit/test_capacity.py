"""Capacity search: the level sequence, step figures, the table and answer, the shape's phases, the wrapper."""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from locust.runners import STATE_RUNNING

from llmload import capacity, capacity_cli
from llmload.capacity_search import CapacitySearch, CapacitySettings, build_doc, step_figures
from llmload.errors import ConfigError
from llmload.metrics import MetricsStore
from llmload.record import RequestRecord
from llmload.render.capacity import answer_text, format_table
from tests.support.environments import connect_worker, fire, master_environment, new_plugin, worker_report


def run_search(settings: CapacitySettings, capacity_limit: float) -> tuple[list[float], dict]:
    """Drive a search against a backend that passes every level <= ``capacity_limit``."""
    search = CapacitySearch(settings)
    levels = []
    level = search.level
    while level is not None:
        levels.append(level)
        level = search.record({"level": level, "users": int(level), "passed": level <= capacity_limit})
    return levels, search.answer()


def test_grow_then_bisect_to_the_resolution():
    levels, answer = run_search(CapacitySettings(start=10, growth=2, max=1000, resolution=0.05), 137)
    # Bisection stops once failing - passing <= 5% of failing (140 - 135 = 5 <= 7).
    assert levels == [10, 20, 40, 80, 160, 120, 140, 130, 135]
    assert answer["users"] == 135 and answer["first_failing"] == 140 and answer["complete"]
    fine, answer = run_search(CapacitySettings(start=10, growth=2, max=1000, resolution=0.001), 137)
    assert fine[-4:] == [135, 138, 136, 137] and answer["users"] == 137 and answer["first_failing"] == 138
    coarse, answer = run_search(CapacitySettings(start=100, growth=2, max=1000, resolution=0.2), 150)
    assert coarse == [100, 200, 150, 175] and answer["users"] == 150 and answer["first_failing"] == 175


def test_limit_reached_and_nothing_passes():
    levels, answer = run_search(CapacitySettings(start=100, growth=2, max=400), 10_000)
    assert levels == [100, 200, 400] and answer["users"] == 400 and answer["limit_reached"]
    levels, answer = run_search(CapacitySettings(start=8, growth=2, max=100), 0)
    assert levels == [8, 4, 2, 1] and answer["users"] is None and answer["first_failing"] == 1


def test_rate_mode_levels():
    levels, answer = run_search(CapacitySettings(mode="rate", start=2, growth=2, max=64, resolution=0.1), 11.3)
    assert levels == [2, 4, 8, 16, 12, 10, 11]
    assert answer["rate_rps"] == 11 and "users" not in answer


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(llm_capacity_mode="both"), "--llm-capacity-mode: expected one of users, rate, got 'both'"),
        (dict(llm_capacity_growth="1"), "--llm-capacity-growth: expected a number > 1, got '1'"),
        (dict(llm_capacity_attainment="95"), "--llm-capacity-attainment: expected a number > 0 and <= 1, got '95'"),
        (dict(llm_capacity_hold="x"), "--llm-capacity-hold: expected a number > 0, got 'x'"),
        (
            dict(llm_capacity_start="50", llm_capacity_max="20"),
            "--llm-capacity-start (50) is above --llm-capacity-max (20)",
        ),
        (dict(llm_capacity_start="2.5"), "--llm-capacity-start and --llm-capacity-max: whole numbers of users"),
        (dict(llm_capacity_mode="rate"), "--llm-capacity-mode rate: needs --llm-arrival poisson or constant"),
    ],
)
def test_settings_errors(kwargs, message):
    with pytest.raises(ConfigError) as info:
        CapacitySettings.from_parsed(SimpleNamespace(**kwargs))
    assert str(info.value) == message


def test_settings_defaults_and_values():
    assert CapacitySettings.from_parsed(SimpleNamespace()) == CapacitySettings()
    settings = CapacitySettings.from_parsed(
        SimpleNamespace(
            llm_capacity_start="100", llm_capacity_hold="8", llm_capacity_warmup="0", llm_capacity_label="rtx"
        )
    )
    assert (settings.start, settings.hold_s, settings.warmup_s, settings.label) == (100, 8, 0, "rtx")


def record(*, ttft: float, e2e: float, n: int = 100, ok: bool = True) -> RequestRecord:
    times = [ttft + (e2e - ttft) * k / (n - 1) for k in range(n)]
    rec = RequestRecord(
        backend="b",
        model="m",
        user_class="U",
        endpoint="/v1/chat/completions",
        t_send=0.0,
        start_wall=1000.0,
        token_times=times if ok else [],
        completion_tokens=n if ok else None,
    )
    if not ok:
        rec.error_kind = "timeout"
    return rec


def test_step_figures_count_failures_as_misses():
    window = MetricsStore(slo_ttft_s=2.0, slo_stream_rate_tps=10.0)
    for _ in range(18):
        window.record(record(ttft=0.5, e2e=8.0))  # 12.5 tok/s: meets the SLO
    window.record(record(ttft=3.0, e2e=8.0))  # TTFT too long
    window.record(record(ttft=0.5, e2e=8.0, ok=False))
    step = step_figures(window, level=20, users=20, mode="users", elapsed_s=10.0, attainment_target=0.95)
    assert step["requests"] == 20 and step["failed"] == 1
    assert step["attainment"] == pytest.approx(18 / 20) and step["passed"] is False
    assert step["stream_rate_p50_tps"] == pytest.approx(12.5, rel=1e-3)
    assert step["ttft_p50_s"] == pytest.approx(0.5, rel=1e-3) and step["ttft_p99_s"] == pytest.approx(3.0, rel=1e-3)
    assert step["output_tokens_per_s"] == pytest.approx(19 * 100 / 10.0)
    required = {
        "users",
        "stream_rate_p50_tps",
        "stream_rate_p10_tps",
        "ttft_p50_s",
        "ttft_p99_s",
        "output_tokens_per_s",
        "attainment",
        "passed",
    }
    assert required <= set(step)
    rate = step_figures(window, level=5.0, users=500, mode="rate", elapsed_s=10.0, attainment_target=0.9, skipped=2)
    assert rate["rate_rps"] == 5.0 and rate["skipped"] == 2 and rate["requests"] == 22
    empty = step_figures(MetricsStore(), level=1, users=1, mode="users", elapsed_s=1.0, attainment_target=0.95)
    assert empty["attainment"] is None and empty["passed"] is False


def test_table_and_answer_text():
    search = CapacitySearch(CapacitySettings(start=100, growth=2, max=1000, resolution=0.2))
    for level, passed, p50 in ((100, True, 13.6), (200, False, 8.0), (150, True, 10.1), (175, False, 8.9)):
        search.record(
            {
                "level": level,
                "users": level,
                "requests": level,
                "failed": 0,
                "stream_rate_p50_tps": p50,
                "stream_rate_p10_tps": p50 - 0.1,
                "ttft_p50_s": 0.4,
                "ttft_p99_s": 0.9,
                "output_tokens_per_s": 1400.0,
                "attainment": 1.0 if passed else 0.0,
                "passed": passed,
            }
        )
    slo = {"stream_rate_tps": 10.0, "ttft_s": 2.0, "attainment": 0.95}
    doc = build_doc(search, label="rtx3090", slo=slo)
    assert answer_text(doc) == (
        "rtx3090: 150 users at >= 10 tok/s (95% of requests with stream rate >= 10 tok/s and TTFT <= 2 s)"
    )
    table = format_table(doc).splitlines()
    assert (
        table[0] == "Capacity search (rates in tok/s, TTFT in ms; "
        "SLO: 95% of requests with stream rate >= 10 tok/s and TTFT <= 2 s)"
    )
    assert table[1].split() == [
        "step",
        "users",
        "requests",
        "rate",
        "p50",
        "p10",
        "TTFT",
        "p50",
        "p99",
        "out",
        "tok/s",
        "SLO",
        "met",
        "result",
    ]
    assert table[3].split() == ["1", "100", "100", "13.6", "13.5", "400", "900", "1,400", "100.0%", "pass"]
    assert table[4].split()[-1] == "FAIL" and table[-1].startswith("Answer: rtx3090: 150 users")
    limit = build_doc(CapacitySearch(CapacitySettings(start=4, max=4)), label="h100", slo=slo)
    limit["steps"] = []
    limit["answer"] = {"users": 400, "limit_reached": True, "complete": True}
    assert answer_text(limit).startswith("h100: >= 400 users at >= 10 tok/s (the search's upper limit)")
    none = {"mode": "users", "label": "x", "slo": slo, "answer": {"users": None, "complete": True}}
    assert (
        answer_text(none)
        == "x: no tested load met the SLO (95% of requests with stream rate >= 10 tok/s and TTFT <= 2 s)"
    )


# -- the shape's phases, with a fake clock and a real master whose worker reports its users ------------


class Clock:
    """``time.monotonic`` of ``llmload.capacity``, set by the test."""

    def __init__(self, monkeypatch) -> None:
        self.now = 0.0
        monkeypatch.setattr(capacity, "time", SimpleNamespace(monotonic=lambda: self.now))


@contextmanager
def capacity_master(**options):
    """A master running ``CapacityShape`` with llmload and its capacity extension; one worker, "w1", joined."""
    parsed = SimpleNamespace(llm_slo_stream_rate="10", **options)  # Locust's parser gives the default, 10
    with master_environment(parsed, shape_class=capacity.CapacityShape(), host="http://h") as environment:
        plugin = new_plugin(environment, capacity)
        connect_worker(environment.runner, "w1")
        yield environment, plugin


def report_users(environment, count: int) -> None:
    fire(environment.events.worker_report, client_id="w1", data=worker_report(users={"U": count}))


def test_shape_ramps_warms_up_measures_and_stops(monkeypatch, capsys):
    clock = Clock(monkeypatch)
    options = dict(
        llm_capacity_start="2",
        llm_capacity_max="4",
        llm_capacity_warmup="5",
        llm_capacity_hold="10",
        llm_capacity_label="sim",
    )
    with capacity_master(**options) as (environment, plugin):
        shape, runner = environment.shape_class, environment.runner
        search_run = plugin.extensions.get(capacity.CapacityRun)
        assert shape.search_run is search_run and search_run.settings.hold_s == 10
        assert plugin.options.slo_ttft_s == 2.0  # a capacity run's default TTFT SLO
        assert shape.tick() == (2, 1.0)  # 2 new users over FIRST_RAMP_S capped at the warm-up (5 s)
        clock.now = 3.0
        assert shape.tick() == (2, 1.0) and search_run.phase == "ramp"  # still spawning
        runner.update_state(STATE_RUNNING)
        report_users(environment, 2)
        shape.tick()
        assert search_run.phase == "warmup"
        clock.now = 8.0
        shape.tick()
        assert search_run.phase == "hold" and "capacity" in plugin.windows
        for _ in range(2):
            plugin.record(record(ttft=0.2, e2e=2.0))
        clock.now = 18.0
        assert shape.tick() == (4, 1.0)  # step 1 done (10 s, 2 requests >= 2 users): grow to 4
        assert search_run.doc["steps"][0]["passed"] and search_run.phase == "ramp"
        assert "capacity" not in plugin.windows
        report_users(environment, 4)
        clock.now = 19.0
        shape.tick()
        assert search_run.phase == "warmup" and search_run.warmup_s == 5.0
        clock.now = 24.0
        shape.tick()
        clock.now = 34.0
        plugin.record(record(ttft=0.2, e2e=2.0))
        assert shape.tick() == (4, 1.0)  # 1 request < 4 users: the step goes on
        clock.now = 40.0
        for _ in range(3):
            plugin.record(record(ttft=0.2, e2e=2.0))
        assert shape.tick() is None  # 4 = --llm-capacity-max passed: done
        doc = plugin.extensions.results_sections()["capacity"]
        answer = doc["answer"]
        assert answer["users"] == 4 and answer["limit_reached"] and answer["complete"]
        assert answer["stopped_by"] is None
        assert doc["steps"][1]["window_s"] == 16.0
        out = capsys.readouterr().out
        assert "Answer: sim: >= 4 users at >= 10 tok/s (the search's upper limit)" in out
        assert shape.tick() is None


def test_run_time_limit_stops_the_search_with_what_is_established(monkeypatch, capsys, caplog):
    clock = Clock(monkeypatch)
    options = dict(
        llm_capacity_start="2",
        llm_capacity_max="8",
        llm_capacity_warmup="5",
        llm_capacity_hold="10",
        llm_capacity_label="sim",
        run_time=30,
    )
    with capacity_master(**options) as (environment, plugin):
        shape, runner = environment.shape_class, environment.runner
        search_run = plugin.extensions.get(capacity.CapacityRun)
        assert search_run.run_time_s == 30.0
        runner.update_state(STATE_RUNNING)
        assert shape.tick() == (2, 1.0)
        report_users(environment, 2)
        clock.now = 1.0
        shape.tick()  # ramped: warm-up until 6 s
        clock.now = 6.0
        shape.tick()  # measuring until 16 s
        for _ in range(2):
            plugin.record(record(ttft=0.2, e2e=2.0))
        clock.now = 16.0
        assert shape.tick() == (4, 1.0)  # step 1 passed: grow to 4
        report_users(environment, 4)
        clock.now = 17.0
        shape.tick()
        clock.now = 22.0
        shape.tick()
        assert search_run.phase == "hold" and "capacity" in plugin.windows
        clock.now = 30.0  # -t 30s: the limit is reached in the middle of step 2
        assert shape.tick() is None
        assert "capacity" not in plugin.windows
        doc = plugin.extensions.results_sections()["capacity"]
        answer = doc["answer"]
        assert answer["complete"] is False and "run-time limit" in answer["stopped_by"]
        assert answer["stopped_by"] == "the run-time limit of 30 s was reached"
        assert answer["users"] == 2 and answer["first_failing"] is None and not answer["limit_reached"]
        assert [step["level"] for step in doc["steps"]] == [2]
        assert answer["text"] == (
            "sim: 2 users at >= 10 tok/s (95% of requests with stream rate >= 10 tok/s and TTFT <= 2 s) "
            "[search incomplete: the run-time limit of 30 s was reached]"
        )
        assert f"Answer: {answer['text']}" in capsys.readouterr().out
        assert "run-time limit of 30 s reached after 1 step(s)" in caplog.text
        assert shape.tick() is None


def test_a_shape_without_a_search_does_nothing():
    shape = capacity.CapacityShape()
    assert shape.search_run is None and shape.tick() is None


def test_wrapper_command_line():
    args = argparse.Namespace(
        locustfile="lf.py",
        mode="users",
        slo_stream_rate="10",
        slo_ttft="2",
        max_tokens="100",
        start="100",
        growth="2",
        max="400",
        resolution="0.2",
        warmup="3",
        hold="8",
        attainment="0.95",
        min_requests="",
        processes=0,
        backends="",
        arrival="poisson",
        locust_args=["--", "--llm-capacity-spawn-rate", "1000"],
    )
    cmd = capacity_cli.locust_command(args, host="http://h:1", label="rtx3090", results="r.json")
    assert cmd[1:5] == ["-m", "locust", "-f", "lf.py"]
    text = " ".join(cmd)
    for part in (
        "--headless",
        "--llm-results r.json",
        "--llm-capacity-label rtx3090",
        "--llm-capacity-start 100",
        "--llm-capacity-max 400",
        "--llm-slo-ttft 2",
        "--llm-max-tokens 100",
        "--llm-think-time 0",
        "--host http://h:1",
        "--llm-capacity-spawn-rate 1000",
    ):
        assert part in text
    assert "--llm-capacity-min-requests" not in text and "--llm-arrival" not in text
    args.backends, args.mode = "b.toml", "rate"
    text = " ".join(capacity_cli.locust_command(args, host=None, label="a100", results="r.json", backend="a100"))
    assert "--llm-backends b.toml --llm-backend a100" in text and "--llm-arrival poisson --llm-rate 100" in text


def test_module_import_does_not_need_locust():
    import subprocess
    import sys

    code = "import sys, llmload.capacity_search, llmload.capacity_cli, llmload.compare; print('locust' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    code = (
        "import contextlib, io, sys\n"
        "from llmload import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    cli.main(['--help'])\n"
        "print('locust' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
