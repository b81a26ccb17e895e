"""Capacity search: the level sequence, step figures, the table and answer, the shape's phases, the wrapper."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from llmload import capacity, capacity_cli
from llmload.capacity import CapacitySearch, CapacitySettings, answer_text, format_table, step_figures
from llmload.errors import ConfigError
from llmload.metrics import MetricsStore
from llmload.record import RequestRecord


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
    doc = capacity.build_doc(search, label="rtx3090", slo=slo)
    assert answer_text(doc) == (
        "rtx3090: 150 users at >= 10 tok/s (95% of requests with stream rate >= 10 tok/s and TTFT <= 2 s)"
    )
    table = format_table(doc).splitlines()
    assert (
        table[0]
        == "Capacity search (rates in tok/s, TTFT in ms; SLO: 95% of requests with stream rate >= 10 tok/s and TTFT <= 2 s)"
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
    limit = capacity.build_doc(CapacitySearch(CapacitySettings(start=4, max=4)), label="h100", slo=slo)
    limit["steps"] = []
    limit["answer"] = {"users": 400, "limit_reached": True, "complete": True}
    assert answer_text(limit).startswith("h100: >= 400 users at >= 10 tok/s (the search's upper limit)")
    none = {"mode": "users", "label": "x", "slo": slo, "answer": {"users": None, "complete": True}}
    assert (
        answer_text(none)
        == "x: no tested load met the SLO (95% of requests with stream rate >= 10 tok/s and TTFT <= 2 s)"
    )


# -- the shape's phases, with a fake clock, runner and plugin ---------------------------------------


class FakePlugin:
    def __init__(self, options):
        self.options = options
        self.store = MetricsStore(slo_ttft_s=2.0, slo_stream_rate_tps=10.0)
        self.windows: dict = {}
        self.capacity = None

    def open_window(self, name):
        self.windows[name] = MetricsStore(slo_ttft_s=2.0, slo_stream_rate_tps=10.0)
        return self.windows[name]

    def close_window(self, name):
        return self.windows.pop(name, None)


def test_shape_ramps_warms_up_measures_and_stops(monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(capacity.time, "monotonic", lambda: clock[0])
    parsed = SimpleNamespace(
        llm_capacity_start="2",
        llm_capacity_max="4",
        llm_capacity_warmup="5",
        llm_capacity_hold="10",
        llm_capacity_label="sim",
    )
    plugin = FakePlugin(SimpleNamespace(backends="", backend_names=""))
    environment = SimpleNamespace(parsed_options=parsed, llmload=plugin, host="http://h")
    runner = SimpleNamespace(environment=environment, state="spawning", user_count=0)
    monkeypatch.setattr("llmload.plugin.get_plugin", lambda env: env.llmload)
    shape = capacity.CapacityShape()
    shape.runner = runner
    assert shape.tick() == (2, 1.0)  # 2 new users over FIRST_RAMP_S capped at the warm-up (5 s)
    clock[0] = 3.0
    assert shape.tick() == (2, 1.0) and shape.phase == "ramp"  # still spawning
    runner.state, runner.user_count = "running", 2
    shape.tick()
    assert shape.phase == "warmup"
    clock[0] = 8.0
    shape.tick()
    assert shape.phase == "hold" and "capacity" in plugin.windows
    for _ in range(2):
        plugin.windows["capacity"].record(record(ttft=0.2, e2e=2.0))
    clock[0] = 18.0
    assert shape.tick() == (4, 1.0)  # step 1 done (10 s, 2 requests >= 2 users): grow to 4
    assert plugin.capacity["steps"][0]["passed"] and shape.phase == "ramp" and "capacity" not in plugin.windows
    runner.user_count = 4
    clock[0] = 19.0
    shape.tick()
    assert shape.phase == "warmup" and shape.warmup_s == 5.0
    clock[0] = 24.0
    shape.tick()
    clock[0] = 34.0
    plugin.windows["capacity"].record(record(ttft=0.2, e2e=2.0))
    assert shape.tick() == (4, 1.0)  # 1 request < 4 users: the step goes on
    clock[0] = 40.0
    for _ in range(3):
        plugin.windows["capacity"].record(record(ttft=0.2, e2e=2.0))
    assert shape.tick() is None  # 4 = --llm-capacity-max passed: done
    answer = plugin.capacity["answer"]
    assert answer["users"] == 4 and answer["limit_reached"] and answer["complete"]
    assert plugin.capacity["steps"][1]["window_s"] == 16.0
    out = capsys.readouterr().out
    assert "Answer: sim: >= 4 users at >= 10 tok/s (the search's upper limit)" in out
    assert shape.tick() is None


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

    code = "import sys, llmload.capacity, llmload.compare; print('locust' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
