"""Output tokens counted as they arrive, distributed: the master's counter against the server's, per window.

Runs a real Locust master with two workers (chatbot users, think time 0)
against one ``llmload sim`` backend whose answers stream for several seconds,
and every ``--window`` seconds reads, at the same moment, the master's
``llmload_output_tokens_total`` (summed over groups) and the simulator's own
``vllm:generation_tokens_total``. It prints each window's two token rates and
their difference. Workers report every 3 s, so a window of 60 s is the
resolution docs/prometheus-grafana.md states for distributed runs (5%); the
same run read over 10-second windows shows why.

    .venv/bin/python benchmarks/distributed_tokens.py [--minutes 5] [--users 32] [--window 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmload.simulator.process import SimulatorProcess  # noqa: E402
from tests.support.processes import ProcessGroup, free_port, locust_command, scrape  # noqa: E402

WORKLOAD = ["--llm-think-time", "0", "--llm-max-tokens", "200", "--llm-ignore-eos", "--stop-timeout", "10"]


def counters(sim: SimulatorProcess, exporter_url: str) -> tuple[float, float]:
    """(client output tokens, server generated tokens) read back to back."""
    client = scrape(exporter_url).get("llmload_output_tokens_total", 0.0)
    server = scrape(sim.base_url).get("vllm:generation_tokens_total", 0.0)
    return client, server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="run length (default 5)")
    parser.add_argument("--users", type=int, default=32, help="Locust users over both workers (default 32)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per compared window (default 60)")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the first window (default 30)")
    args = parser.parse_args()
    run_s = int(args.minutes * 60)
    with SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "50", "--itl-ms", "25"]) as sim:
        with tempfile.TemporaryDirectory() as tmp, ProcessGroup() as group:
            work = Path(tmp)
            port, metrics_port = free_port(), free_port()
            master = group.start(
                locust_command(
                    "chatbot.py",
                    sim.base_url,
                    *("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)),
                    *("--headless", "--expect-workers", "2", "-u", str(args.users), "-r", str(args.users)),
                    *("-t", f"{run_s}s", "--llm-prometheus-port", str(metrics_port), "--llm-prometheus-grace", "0"),
                    *("--llm-results", str(work / "results.json"), "--only-summary"),
                    *WORKLOAD,
                ),
                work,
                work / "master.log",
            )
            for i in range(2):
                worker = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
                group.start(locust_command("chatbot.py", sim.base_url, *worker), work, work / f"worker{i}.log")
            exporter_url = f"http://127.0.0.1:{metrics_port}"
            started = time.monotonic()
            time.sleep(args.warmup)
            windows = []
            previous = counters(sim, exporter_url)
            while time.monotonic() - started + args.window < run_s - 5:
                time.sleep(args.window)
                now = counters(sim, exporter_url)
                client, server = now[0] - previous[0], now[1] - previous[1]
                windows.append(
                    {
                        "client_tps": round(client / args.window, 1),
                        "server_tps": round(server / args.window, 1),
                        "difference": round((client - server) / server, 4) if server else None,
                    }
                )
                print(json.dumps(windows[-1]), flush=True)
                previous = now
            master.wait(timeout=run_s + 120)
    differences = [abs(w["difference"]) for w in windows if w["difference"] is not None]
    print(
        json.dumps(
            {
                "window_s": args.window,
                "windows": len(windows),
                "max_abs_difference": max(differences) if differences else None,
                "master_exit": master.returncode,
            }
        )
    )
    return 0 if differences else 1


if __name__ == "__main__":
    raise SystemExit(main())
