"""Memory of a long soak: the Locust process's RSS over an hour against two simulator backends.

Runs one local, headless Locust process (chatbot users, think time 0, two
``llmload sim`` backends of a backends file) with everything a soak turns on:
the exporter (scraped every 2 s by this script, as Prometheus would), server
metrics, the live sliding window, the timeline and the soak verdict. It
samples the Locust process's RSS every ``--sample`` seconds and prints the
growth from the end of the warm-up to the end of the run, the figure
docs/performance.md reports (target: at most 10 MiB over an hour).

    .venv/bin/python benchmarks/soak_rss.py [--minutes 60] [--users 32] [--warmup 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmload.simulator.process import SimulatorProcess  # noqa: E402
from tests.support.processes import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="run length (default 60)")
    parser.add_argument("--users", type=int, default=32, help="Locust users (default 32)")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds before the RSS baseline (default 300)")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between RSS samples (default 30)")
    args = parser.parse_args()
    run_s = int(args.minutes * 60)
    sims = [
        SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "40", "--itl-ms", "20"]).start() for _ in range(2)
    ]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            backends = Path(tmp) / "backends.toml"
            backends.write_text(
                "".join(
                    f'[[backend]]\nname = "sim{i}"\nbase_url = "{sim.base_url}"\nprice_per_hour = 1.0\n\n'
                    for i, sim in enumerate(sims)
                )
            )
            port = free_port()
            results = Path(tmp) / "results.json"
            cmd = [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(ROOT / "locustfiles" / "chatbot.py"),
                "--headless",
                *("-u", str(args.users), "-r", str(args.users), "-t", f"{run_s}s"),
                *("--llm-backends", str(backends), "--llm-think-time", "0", "--llm-max-tokens", "64"),
                *("--llm-server-metrics", "--llm-prometheus-port", str(port), "--llm-prometheus-grace", "0"),
                *("--llm-results", str(results), "--only-summary"),
            ]
            log = open(Path(tmp) / "locust.log", "w")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            process = psutil.Process(proc.pid)
            started = time.monotonic()
            samples: list[tuple[float, float]] = []
            next_sample = started
            while proc.poll() is None:
                now = time.monotonic()
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
                except OSError:
                    pass
                if now >= next_sample:
                    try:
                        samples.append((now - started, process.memory_info().rss / MIB))
                    except psutil.NoSuchProcess:
                        break
                    print(f"{samples[-1][0]:7.0f} s  RSS {samples[-1][1]:7.1f} MiB", flush=True)
                    next_sample += args.sample
                time.sleep(2.0)
            proc.wait()
            log.close()
            doc = json.loads(results.read_text()) if results.exists() else {}
    finally:
        for sim in sims:
            sim.stop()
    after_warmup = [rss for t, rss in samples if t >= args.warmup]
    if len(after_warmup) < 2:
        print("run too short for a baseline after the warm-up", file=sys.stderr)
        return 1
    total = doc.get("total", {}).get("requests", {})
    print(
        json.dumps(
            {
                "minutes": args.minutes,
                "users": args.users,
                "requests": (total.get("ok") or 0) + (total.get("failed") or 0),
                "rss_after_warmup_mib": round(after_warmup[0], 1),
                "rss_end_mib": round(after_warmup[-1], 1),
                "rss_peak_mib": round(max(rss for _, rss in samples), 1),
                "growth_after_warmup_mib": round(after_warmup[-1] - after_warmup[0], 1),
                "timeline_points": len(doc.get("timeline", [])),
                "soak_windows": len((doc.get("soak") or {}).get("windows", [])),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
