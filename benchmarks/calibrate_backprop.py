"""Check the RTX 3090 profile against Backprop's RTX 3090 / vLLM / Llama 3.1 8B study.

Starts ``llmload sim --profile rtx3090`` and drives it at 1, 10, 50 and 100
closed-loop chat users (no think time, ``max_tokens`` 100, short prompts),
each level with ten times as many requests as users, then prints the measured
mean stream rate (output tokens / E2E per request, TTFT included), aggregate
output tokens/s and TTFT next to the study's figures.

Drivers:

* ``locust`` (default when ``locustfiles/chatbot.py`` and ``llmload.ChatbotUser``
  exist): headless Locust with llmload's ChatbotUser; the run time of a level is
  ten expected request durations, and figures come from ``--llm-results``;
* ``asyncio``: the benchmark's own raw-socket client, exactly ten requests per user;
* ``virtual``: the scheduler in virtual time, no server (instant).

    .venv/bin/python benchmarks/calibrate_backprop.py [--driver locust|asyncio|virtual]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmload.simulator.perfmodel import PerfModel  # noqa: E402
from llmload.simulator.process import SimulatorProcess  # noqa: E402
from llmload.simulator.profiles import get_gpu_profile, get_model_profile  # noqa: E402
from llmload.simulator.virtual import simulate_closed_loop  # noqa: E402

#: users -> (stream rate mean tok/s, aggregate tok/s, TTFT mean s, TTFT p99 s), Backprop's RTX 3090 table.
STUDY = {
    1: (45.1, 45.0, 0.046, 0.073),
    10: (35.6, 354.0, 0.104, 0.264),
    50: (20.8, 1027.0, 0.399, 0.617),
    100: (13.9, 1359.0, 0.611, 1.02),
}
MAX_TOKENS = 100
TOLERANCE = 0.15

#: Short chat prompts of 5 to 11 words, as in the study.
PROMPTS = (
    "What is the capital of France?",
    "Explain quantum computing in simple terms.",
    "Write a haiku about the sea.",
    "How do vaccines train the immune system?",
    "Give me three tips for better sleep.",
    "Why is the sky blue during the day?",
    "Summarize the plot of Romeo and Juliet briefly.",
    "What causes the seasons on Earth?",
    "Suggest a name for a coffee shop.",
    "How does a refrigerator keep food cold?",
    "Translate good morning into Spanish and German.",
    "What are the benefits of learning to code?",
)


def _request_bytes(host: str, prompt: str) -> bytes:
    body = json.dumps(
        {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": MAX_TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _user(
    host: str, port: int, queue: list[int], rng: random.Random, out: list[tuple[float, float, int]]
) -> None:
    marker, end = b'"delta":{"content"', b"\r\n0\r\n\r\n"
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while queue:
            queue.pop()
            payload = _request_bytes(f"{host}:{port}", rng.choice(PROMPTS))
            t_send = time.perf_counter()
            writer.write(payload)
            buf, pos, first, last, n = bytearray(), 0, 0.0, 0.0, 0
            while not buf.endswith(end):
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("simulator closed the connection")
                now = time.perf_counter()
                buf += data
                while (hit := buf.find(marker, pos)) >= 0:
                    n, pos, last = n + 1, hit + len(marker), now
                    first = first or now
            out.append((first - t_send, last - t_send, n))
    finally:
        writer.close()


def run_asyncio(url: str, users: int) -> dict[str, float]:
    """Drive one level with the built-in client: exactly 10 requests per user."""
    parts = urlsplit(url)
    queue = list(range(10 * users))
    out: list[tuple[float, float, int]] = []

    async def level() -> float:
        start = time.perf_counter()
        rng = random.Random(users)
        await asyncio.gather(
            *(_user(parts.hostname, parts.port, queue, random.Random(rng.random()), out) for _ in range(users))
        )
        return time.perf_counter() - start

    window = asyncio.run(level())
    ttfts = sorted(o[0] for o in out)
    return {
        "stream_rate": statistics.fmean(n / e2e for _, e2e, n in out),
        "aggregate": sum(o[2] for o in out) / window,
        "ttft_mean": statistics.fmean(ttfts),
        "ttft_p99": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
        "requests": len(out),
    }


def locust_available() -> bool:
    """Return whether llmload's Locust user classes and the chatbot locustfile exist."""
    if not (ROOT / "locustfiles" / "chatbot.py").exists():
        return False
    probe = [sys.executable, "-c", "import llmload; llmload.ChatbotUser"]
    return subprocess.run(probe, cwd=ROOT, capture_output=True).returncode == 0


def run_locust(url: str, users: int) -> dict[str, float]:
    """Drive one level with headless Locust for about ten request durations."""
    run_time = round(10 * MAX_TOKENS / STUDY[users][0]) + 1
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.json"
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "locustfiles/chatbot.py",
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "--run-time",
            f"{run_time}s",
            "--stop-timeout",
            "30",
            "--host",
            url,
            "--llm-max-tokens",
            str(MAX_TOKENS),
            "--llm-think-time",
            "0",
            "--llm-results",
            str(results),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ]
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        if not results.exists():
            raise SystemExit(f"locust failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        total = json.loads(results.read_text())["total"]
    return {
        "stream_rate": total["stream_rate_tps"]["mean"],
        "aggregate": total["throughput"]["output_tokens_per_s"],
        "ttft_mean": total["ttft_s"]["mean"],
        "ttft_p99": total["ttft_s"]["p99"],
        "requests": total["requests"]["ok"],
    }


def run_virtual(users: int) -> dict[str, float]:
    """Predict one level with the scheduler in virtual time."""
    perf = PerfModel(gpu=get_gpu_profile("rtx3090"), model=get_model_profile("llama-3.1-8b"))
    r = simulate_closed_loop(perf=perf, users=users, max_tokens=MAX_TOKENS)
    ttfts = sorted(r.ttft_s)
    return {
        "stream_rate": r.stream_rate_mean_tps,
        "aggregate": r.output_tps,
        "ttft_mean": r.ttft_mean_s,
        "ttft_p99": ttfts[int(0.99 * (len(ttfts) - 1))],
        "requests": len(r.e2e_s),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every level and print the comparison table; exit 1 if a figure is off by more than 15%."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", choices=("locust", "asyncio", "virtual"), default=None)
    parser.add_argument("--users", type=int, nargs="+", default=list(STUDY), choices=list(STUDY))
    args = parser.parse_args(argv)
    driver = args.driver or ("locust" if locust_available() else "asyncio")
    rows = {}
    if driver == "virtual":
        rows = {u: run_virtual(u) for u in args.users}
    else:
        with SimulatorProcess(profile="rtx3090") as sim:
            for users in args.users:
                rows[users] = (
                    run_locust(sim.base_url, users) if driver == "locust" else run_asyncio(sim.base_url, users)
                )
                time.sleep(0.5)
    print(f"llmload sim --profile rtx3090 vs Backprop RTX 3090 (driver: {driver}, max_tokens {MAX_TOKENS})")
    print(
        f"{'users':>5} {'reqs':>5} | {'stream tok/s':>12} {'study':>6} {'diff':>7} | {'aggr tok/s':>10} {'study':>6} "
        f"{'diff':>7} | {'TTFT mean':>9} {'p99':>6} {'study mean/p99':>15}"
    )
    worst = 0.0
    for users, r in rows.items():
        sr, agg, ttft, p99 = STUDY[users]
        d1, d2 = r["stream_rate"] / sr - 1, r["aggregate"] / agg - 1
        worst = max(worst, abs(d1), abs(d2))
        print(
            f"{users:>5} {r['requests']:>5} | {r['stream_rate']:>12.1f} {sr:>6.1f} {d1:>+7.1%} | "
            f"{r['aggregate']:>10.0f} {agg:>6.0f} {d2:>+7.1%} | {1e3 * r['ttft_mean']:>7.0f}ms "
            f"{1e3 * r['ttft_p99']:>4.0f}ms {1e3 * ttft:>7.0f}/{1e3 * p99:.0f}ms"
        )
    print(f"largest difference {worst:.1%} (target: within {TOLERANCE:.0%})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
