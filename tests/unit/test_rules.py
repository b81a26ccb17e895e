"""Prometheus rules: the shipped files match dashboards/rules.py, every alert has promtool unit tests, promtool passes.

The promtool checks are marked integration (``make test`` installs Debian's prometheus package);
they skip without promtool, except under CI, where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "dashboards" / "rules"
TESTS_DIR = ROOT / "tests" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.test.yml"))


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llmload_rules_generator", ROOT / "dashboards" / "rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def alerts(doc: dict) -> list[dict]:
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def records(doc: dict) -> list[dict]:
    return [r for g in doc["groups"] for r in g["rules"] if "record" in r]


def shipped_docs() -> dict[str, dict]:
    return {name: gen.rule_groups(**params) for name, params in gen.SHIPPED.items()}


# -- generated files ------------------------------------------------------------------------------------


def test_shipped_files_are_what_the_generator_makes():
    assert sorted(p.name for p in RULE_FILES) == sorted(gen.SHIPPED)
    for path, text in gen.render_shipped().items():
        assert path.read_text() == text, f"{path.name} is stale: run python dashboards/rules.py --shipped"
    result = subprocess.run(
        [sys.executable, str(ROOT / "dashboards" / "rules.py"), "--shipped", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_cli_writes_one_set(tmp_path: Path):
    out = tmp_path / "rules.yml"
    args = ["--period", "7d", "--objective", "0.995", "--scrape-interval", "5s", "--out", str(out)]
    result = subprocess.run([sys.executable, str(ROOT / "dashboards" / "rules.py"), *args], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == gen.render("7d", "0.995", "5s")
    bad = subprocess.run(
        [sys.executable, str(ROOT / "dashboards" / "rules.py"), "--period", "1x"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "not a Prometheus duration" in bad.stderr


def test_soak_windows_scale_by_one_120th_with_a_4s_floor():
    scale = gen.Scale("6h", "1s")
    assert gen.format_fraction(scale.factor) == "1/120"
    got = {w: scale(w) for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "2m", "10m", "15m")}
    assert got == {
        "5m": "4s",  # 2.5 s, below the floor of 4 scrapes
        "30m": "15s",
        "1h": "30s",
        "2h": "1m",
        "6h": "3m",
        "1d": "12m",
        "3d": "36m",
        "2m": "4s",  # 1 s, floored
        "10m": "5s",
        "15m": "7s500ms",
    }
    names = {r["record"] for r in records(gen.rule_groups("6h", scrape_interval="1s"))}
    for slo in ("stream_rate", "ttft"):
        assert {n for n in names if f":llmload_{slo}_slo_errors:" in n} == {
            f"backend:llmload_{slo}_slo_errors:ratio_rate{w}" for w in ("4s", "15s", "30s", "1m", "3m", "12m", "36m")
        }
    assert "backend_error:llmload_requests_failed:ratio_rate4s" in names
    # Windows over llmload_server_* series: at least 4 of llmload's 5 s scrapes of the server.
    assert [scale.server(w) for w in ("5m", "10m", "1h")] == ["20s", "20s", "30s"]
    server = {a["alert"]: a["expr"] for a in alerts(gen.rule_groups("6h", scrape_interval="1s"))}
    assert "increase(llmload_server_restarts_total[20s])" in server["LLMLoadBackendRestarted"]
    assert "increase(llmload_server_preemptions_total[20s])" in server["LLMLoadPreemptions"]
    assert "deriv(llmload_server_requests_waiting[20s])" in server["LLMLoadWaitingQueueGrowing"]


def test_server_floor_follows_llmloads_server_scrape_interval():
    from llmload.server_metrics import SCRAPE_INTERVAL_S

    assert gen.parse_duration(gen.SERVER_SCRAPE_INTERVAL) == SCRAPE_INTERVAL_S * 1000


def test_the_30d_set_uses_the_workbook_windows_unscaled():
    doc = gen.rule_groups()
    names = {r["record"] for r in records(doc)}
    for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        assert f"backend:llmload_stream_rate_slo_errors:ratio_rate{w}" in names
    page = next(a for a in alerts(doc) if a["alert"] == "LLMLoadStreamRateSLOBudgetBurnPage")
    assert "ratio_rate1h > 14.4 * 0.01" in page["expr"] and "ratio_rate5m > 14.4 * 0.01" in page["expr"]
    assert "ratio_rate6h > 6 * 0.01" in page["expr"] and "ratio_rate30m > 6 * 0.01" in page["expr"]


def test_objective_sets_the_budget():
    page = next(a for a in alerts(gen.rule_groups(objective=0.999)) if a["alert"] == "LLMLoadTTFTSLOBudgetBurnPage")
    assert "> 14.4 * 0.001" in page["expr"]
    assert "99.9% of finished requests" in page["annotations"]["description"]
    for bad in (0, 1, 1.5, "-0.1", "abc", "nan"):
        with pytest.raises(ValueError, match="objective"):
            gen.rule_groups(objective=bad)


def test_durations_round_trip():
    for text, ms in (("30d", 2_592_000_000), ("1h30m", 5_400_000), ("2s500ms", 2500), ("1w", 604_800_000)):
        assert gen.parse_duration(text) == ms
    assert gen.format_duration(5_400_000) == "1h30m" and gen.format_duration(2500) == "2s500ms"
    for bad in ("", "5", "1.5h", "m", "0s", "5m "):
        with pytest.raises(ValueError):
            gen.parse_duration(bad)


@pytest.mark.parametrize("name", sorted(gen.SHIPPED))
def test_every_alert_has_a_severity_and_annotations_stating_the_scale(name: str):
    doc = shipped_docs()[name]
    period = gen.SHIPPED[name]["period"]
    factor = gen.format_fraction(gen.Scale(period, "1s").factor)
    names = [a["alert"] for a in alerts(doc)]
    assert len(names) == len(set(names)) == 13, names
    for rule in alerts(doc):
        assert rule["labels"]["severity"] in {"page", "ticket", "info"}, rule["alert"]
        ann = rule["annotations"]
        assert set(ann) == {"summary", "description", "slo_period", "scale_factor"}, rule["alert"]
        assert ann["slo_period"] == period and ann["scale_factor"] == factor, rule["alert"]
        assert "{{ $labels." in ann["summary"] or "{{ $value" in ann["summary"], rule["alert"]
    text = (RULES_DIR / name).read_text()
    assert f"# Scale factor {factor} = {period} / 30d" in text


# -- promtool unit tests cover every alert ----------------------------------------------------------------


def alert_tests(path: Path) -> tuple[str, dict[str, set[bool]]]:
    """The rule file a promtool test file loads, and per alert name whether its tests expect it firing."""
    text = path.read_text()
    rule_files = re.findall(r"^rule_files:\n\s+- (\S+)", text, re.M)
    assert len(rule_files) == 1, f"{path.name}: expected one rule file"
    expected: dict[str, set[bool]] = defaultdict(set)
    for name, empty in re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", text):
        expected[name].add(not empty)
    assert expected, f"{path.name}: no alert_rule_test found (each needs alertname then exp_alerts)"
    return (path.parent / rule_files[0]).resolve().name, expected


def test_every_alert_fires_and_stays_silent_in_some_promtool_test():
    coverage: dict[str, dict[str, set[bool]]] = defaultdict(lambda: defaultdict(set))
    for path in TEST_FILES:
        rule_file, expected = alert_tests(path)
        for name, outcomes in expected.items():
            coverage[rule_file][name] |= outcomes
    for name, doc in shipped_docs().items():
        for rule in alerts(doc):
            outcomes = coverage[name][rule["alert"]]
            assert True in outcomes, f"{name}: no promtool test in tests/rules/ expects {rule['alert']} to fire"
            assert False in outcomes, f"{name}: no promtool test in tests/rules/ expects {rule['alert']} silent"
        unknown = set(coverage[name]) - {r["alert"] for r in alerts(doc)}
        assert not unknown, f"tests of {name} name alerts it does not have: {sorted(unknown)}"


# -- promtool ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is missing (make test installs Debian's prometheus package)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.mark.integration
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool: str, path: Path):
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool check rules {path.relative_to(ROOT)} failed:\n{output}"
    assert "SUCCESS" in output and "WARNING" not in output.upper(), f"promtool check rules {path.name}:\n{output}"


@pytest.mark.integration
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(promtool: str, path: Path):
    result = subprocess.run(
        [promtool, "test", "rules", path.name], cwd=path.parent, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool test rules {path.relative_to(ROOT)} failed:\n{output}"
