"""The self-check flags an overloaded load generator and passes a light run (real Locust processes).

The overloaded locustfile burns 200 ms of CPU between requests without
yielding: the process is saturated and every greenlet, the sampler included,
resumes up to 200 ms late, so the event-loop lag criterion must trip with
kernel receive stamps (the default; CPU saturation is then a note) and with
user-space stamps (the distributed test, per worker).
The light run streams the same answers with four users. Both runs use the
same thresholds (lag and read lateness 50 ms rather than the default 10 ms, so
that a loaded test machine cannot fail the light run; the overloaded one lags
~150-200 ms).
"""

from __future__ import annotations

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.processes import free_port, run_locust

pytestmark = pytest.mark.integration

BURNER = '''
import time

from llmload import LLMUser


class Burner(LLMUser):
    """Burns 200 ms of CPU on the event loop before each request, on purpose."""

    think_time = 0
    max_tokens = 20

    def send(self, prompt, **kwargs):
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:
            pass
        return super().send(prompt, **kwargs)
'''

COMMON = [
    "-t",
    "7s",
    "--stop-timeout",
    "5",
    "--llm-think-time",
    "0",
    "--llm-max-tokens",
    "20",
    "--llm-ignore-eos",
    "--llm-selfcheck-lag-ms",
    "50",
    "--llm-selfcheck-lateness-ms",
    "50",
]


@pytest.fixture(scope="module")
def fixed_sim():
    with SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "20", "--itl-ms", "10"]) as sim:
        yield sim


def test_light_run_is_trustworthy(fixed_sim, tmp_path):
    run = run_locust(tmp_path, "chatbot.py", fixed_sim.base_url, "-u", "4", "-r", "4", *COMMON)
    assert run.returncode == 0, run.output[-3000:]
    generator = run.results["generator"]
    assert generator["trustworthy"] is True, generator
    assert generator["reasons"] == []
    cpu = generator["cpu_percent"]["local"]
    assert cpu["samples"] >= 4 and cpu["mean"] < 90
    assert generator["loop_lag_s"]["p99"] < 0.050
    assert generator["dispatch_lag_s"] is None  # closed loop
    assert generator["thresholds"]["loop_lag_p99_s"] == 0.050
    assert "llmload: generator self-check OK" in run.output


def test_cpu_burning_generator_is_flagged(fixed_sim, tmp_path):
    locustfile = tmp_path / "burner.py"
    locustfile.write_text(BURNER)
    run = run_locust(tmp_path, str(locustfile), fixed_sim.base_url, "-u", "4", "-r", "4", *COMMON)
    assert run.returncode == 0, run.output[-3000:]
    generator = run.results["generator"]
    assert generator["trustworthy"] is False
    # Kernel stamps (the default): the loop is blocked 200 ms at a time, so events queue up and coalesce
    # behind late reads; the event-loop lag criterion trips (a read's own lateness, measured against the
    # newest segment, understates theirs). CPU saturation, where the machine gives a whole core, is a note.
    assert generator["clock"] == "kernel"
    assert any("local: event-loop lag p99" in r for r in generator["reasons"]), generator["reasons"]
    assert not any("CPU above" in r for r in generator["reasons"])
    assert generator["read_lateness_s"]["count"] > 0
    assert generator["loop_lag_s"]["max"] > 0.1
    assert generator["cpu_percent"]["local"]["mean"] > 50
    assert "WARNING: the load generator was a bottleneck" in run.output
    assert run.results["total"]["requests"]["ok"] > 0  # the run itself still completed


def test_workers_ship_their_figures_to_the_master(fixed_sim, tmp_path):
    locustfile = tmp_path / "burner.py"
    locustfile.write_text(BURNER)
    port = str(free_port())
    run = run_locust(
        tmp_path,
        str(locustfile),
        fixed_sim.base_url,
        "-u",
        "4",
        "-r",
        "4",
        "--processes",
        "2",
        "--master-bind-port",
        port,
        "--master-port",
        port,
        "--llm-timestamps",
        "user",
        *COMMON,
    )
    assert run.returncode == 0, run.output[-3000:]
    generator = run.results["generator"]
    assert len(generator["cpu_percent"]) == 2 and "local" not in generator["cpu_percent"]
    assert all(c["samples"] >= 3 for c in generator["cpu_percent"].values())
    # User-space stamps: the event-loop lag criterion decides, per worker.
    assert generator["clock"] == "user"
    assert generator["trustworthy"] is False
    assert len(generator["loop_lag_by_process_s"]) == 2
    assert sum("event-loop lag p99" in r for r in generator["reasons"]) == 2  # one per worker, named by id
