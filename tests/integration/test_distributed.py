"""Distributed runs: real master and worker processes merge token metrics exactly.

Against the simulator's ``fixed`` profile, the merged totals must equal the
simulator's own token counters, and percentiles must match a single-process
run of the same workload within histogram precision plus timing jitter.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.processes import ProcessGroup, collect, free_port, locust_command, run_locust, scrape

pytestmark = pytest.mark.integration

FIXED = ["--ttft-ms", "50", "--itl-ms", "10"]
WORKLOAD = ["--llm-think-time", "0", "--llm-max-tokens", "20", "--llm-ignore-eos", "--stop-timeout", "10"]


@pytest.fixture(scope="module")
def fixed_sim():
    with SimulatorProcess(profile="fixed", extra_args=FIXED) as sim:
        yield sim


def master_cmd(sim, tmp_path, port, *args):
    return locust_command(
        "chatbot.py",
        sim.base_url,
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--headless",
        "--llm-results",
        str(tmp_path / "results.json"),
        "--json-file",
        str(tmp_path / "stats"),
        *args,
        *WORKLOAD,
    )


def worker_cmd(sim, port):
    return locust_command(
        "chatbot.py", sim.base_url, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)
    )


def test_master_and_two_workers_one_joining_late(fixed_sim, tmp_path):
    port = free_port()
    before = scrape(fixed_sim.base_url)
    with ProcessGroup() as group:
        master = group.start(
            master_cmd(fixed_sim, tmp_path, port, "--expect-workers", "1", "-u", "10", "-r", "10", "-t", "10s"),
            tmp_path,
            tmp_path / "master.log",
        )
        group.start(worker_cmd(fixed_sim, port), tmp_path, tmp_path / "worker1.log")
        time.sleep(4)  # the second worker joins a running test; Locust rebalances users onto it
        group.start(worker_cmd(fixed_sim, port), tmp_path, tmp_path / "worker2.log")
        master.wait(timeout=60)
    after = scrape(fixed_sim.base_url)
    run = collect(
        master.returncode, (tmp_path / "master.log").read_text(), tmp_path / "results.json", tmp_path / "stats"
    )
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    assert run.results["run"]["workers"] == 2
    assert total["tokens"]["output"] == after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert total["tokens"]["prompt"] == after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
    ok = total["requests"]["ok"]
    assert ok > 100 and total["requests"]["failed"] == 0 and total["tokens"]["output"] == 20 * ok
    assert run.row("/v1/chat/completions")["num_requests"] == ok

    single_dir = tmp_path / "single"
    single_dir.mkdir()
    single = run_locust(single_dir, "chatbot.py", fixed_sim.base_url, "-u", "10", "-r", "10", "-t", "6s", *WORKLOAD)
    assert single.returncode == 0, single.output[-3000:]
    for name, tolerance in (("ttft_s", 0.004), ("itl_s", 0.001), ("e2e_s", 0.006)):
        assert total[name]["p50"] == pytest.approx(single.results["total"][name]["p50"], abs=tolerance), name


def test_processes_flag_merges_exactly(fixed_sim, tmp_path):
    before = scrape(fixed_sim.base_url)
    port = free_port()  # forked workers connect to --master-port, the parent binds --master-bind-port
    run = run_locust(
        tmp_path,
        "chatbot.py",
        fixed_sim.base_url,
        "--processes",
        "2",
        "--master-bind-port",
        str(port),
        "--master-port",
        str(port),
        "-u",
        "10",
        "-r",
        "10",
        "-t",
        "6s",
        *WORKLOAD,
    )
    after = scrape(fixed_sim.base_url)
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    assert run.results["run"]["workers"] == 2
    assert total["tokens"]["output"] == after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert total["itl_s"]["count"] == 19 * total["requests"]["ok"]


def test_killed_worker_is_recorded_missing_and_run_finishes(fixed_sim, tmp_path):
    port = free_port()
    before = scrape(fixed_sim.base_url)
    with ProcessGroup() as group:
        master = group.start(
            master_cmd(fixed_sim, tmp_path, port, "--expect-workers", "2", "-u", "10", "-r", "10", "-t", "16s"),
            tmp_path,
            tmp_path / "master.log",
        )
        group.start(worker_cmd(fixed_sim, port), tmp_path, tmp_path / "worker1.log")
        victim = group.start(worker_cmd(fixed_sim, port), tmp_path, tmp_path / "worker2.log")
        time.sleep(7)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        master.wait(timeout=90)
    after = scrape(fixed_sim.base_url)
    run = collect(
        master.returncode, (tmp_path / "master.log").read_text(), tmp_path / "results.json", tmp_path / "stats"
    )
    assert run.results is not None, run.output[-3000:]
    missing = run.results["run"]["missing_workers"]
    assert len(missing) == 1 and missing[0]["at"]
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    recorded = run.results["total"]["tokens"]["output"]
    # What the killed worker had not reported yet is lost: at most one report interval (3 s)
    # plus its in-flight requests, for its 5 users at ~4 requests/s of 20 tokens each.
    lost_bound = 5 * (4 * 20) * 3.5 + 5 * 20
    assert 0 <= generated - recorded <= lost_bound, (generated, recorded)
    assert run.results["total"]["requests"]["ok"] > 100
