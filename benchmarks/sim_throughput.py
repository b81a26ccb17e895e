"""Full-speed token throughput of one ``llmload sim`` process.

Starts the simulator with ``--profile fixed --ttft-ms 0 --itl-ms 0`` (tokens
as fast as the process can write them) and drives it with a cheap raw-socket
asyncio client: each of N workers keeps one connection and sends streamed chat
requests back to back; token events are counted per response. Prints tokens/s
and requests/s for each concurrency level.

    .venv/bin/python benchmarks/sim_throughput.py [--streams 64 1000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmload.simulator.process import SimulatorProcess  # noqa: E402

TOKEN_MARK = b'"delta":{"content"'
END_MARK = b"\r\n0\r\n\r\n"


def build_request(host: str, max_tokens: int) -> bytes:
    """Return the bytes of one streamed chat request."""
    body = json.dumps(
        {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "messages": [{"role": "user", "content": "Tell me a story about a lighthouse keeper."}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Accept-Encoding: identity\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def worker(host: str, port: int, payload: bytes, deadline: float, totals: list[int], e2e: list[float]) -> None:
    """Send requests on one connection until ``deadline``; add tokens and requests to ``totals``."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            t_send = time.perf_counter()
            writer.write(payload)
            buf = bytearray()
            while not buf.endswith(END_MARK):
                data = await reader.read(262144)
                if not data:
                    raise ConnectionError("server closed the connection")
                buf += data
            e2e.append(time.perf_counter() - t_send)
            totals[0] += buf.count(TOKEN_MARK)
            totals[1] += 1
    finally:
        writer.close()


async def measure(url: str, streams: int, seconds: float, max_tokens: int, itl_s: float = 0.0) -> dict[str, float]:
    """Run ``streams`` workers for ``seconds`` and return the figures.

    ``e2e_late_ms``: how much later than the exact schedule ``(max_tokens - 1) * itl``
    the last token arrived, median and p99 over requests (paced runs only).
    """
    parts = urlsplit(url)
    payload = build_request(parts.netloc, max_tokens)
    totals, e2e = [0, 0], []
    start = time.perf_counter()
    await asyncio.gather(
        *(worker(parts.hostname, parts.port, payload, start + seconds, totals, e2e) for _ in range(streams))
    )
    elapsed = time.perf_counter() - start
    late = sorted(1e3 * (e - (max_tokens - 1) * itl_s) for e in e2e)
    return {
        "streams": streams,
        "tokens_per_s": totals[0] / elapsed,
        "requests_per_s": totals[1] / elapsed,
        "tokens": totals[0],
        "seconds": elapsed,
        "late_p50_ms": late[len(late) // 2],
        "late_p99_ms": late[int(0.99 * (len(late) - 1))],
    }


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def lateness_buckets(url: str) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` of the simulator's token-lateness histogram."""
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    pattern = r'^llmload_sim_token_lateness_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$'
    return [(float(le), float(v)) for le, v in re.findall(pattern, text, re.M)]


def quantile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float:
    """Upper bucket bound holding quantile ``q`` of the observations between two scrapes."""
    deltas = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = deltas[-1][1]
    return next(le for le, c in deltas if c >= q * total) if total else 0.0


def run_level(sim: SimulatorProcess, streams: int, args: argparse.Namespace) -> dict[str, float]:
    """Measure one concurrency level, with the simulator's CPU use and its own lateness figures."""
    before, cpu0, own0 = lateness_buckets(sim.base_url), cpu_seconds(sim.pid), resource.getrusage(resource.RUSAGE_SELF)
    row = asyncio.run(measure(sim.base_url, streams, args.seconds, args.max_tokens, args.itl_ms / 1e3))
    after, own1 = lateness_buckets(sim.base_url), resource.getrusage(resource.RUSAGE_SELF)
    row["sim_cpu"] = (cpu_seconds(sim.pid) - cpu0) / row["seconds"]
    row["client_cpu"] = (own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime) / row["seconds"]
    row["sim_late_p50_ms"], row["sim_late_p99_ms"] = (1e3 * quantile(before, after, q) for q in (0.5, 0.99))
    return row


def main(argv: list[str] | None = None) -> int:
    """Measure and print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[64, 1000])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--itl-ms", type=float, default=0.0, help="pace tokens instead of full speed")
    args = parser.parse_args(argv)
    rows = []
    sim_args = ["--ttft-ms", "0", "--itl-ms", str(args.itl_ms)]
    with SimulatorProcess(profile="fixed", extra_args=sim_args) as sim:
        for streams in args.streams:
            rows.append(run_level(sim, streams, args))
    pace = f"itl {args.itl_ms:g} ms" if args.itl_ms else "itl 0 (full speed)"
    print(f"llmload sim, profile fixed, ttft 0, {pace}, max_tokens {args.max_tokens}, one process")
    print(
        f"{'streams':>8} {'tokens/s':>10} {'requests/s':>11} {'sim CPU':>8} {'client CPU':>10} "
        f"{'sim late p50/p99 (le)':>22} {'client E2E late p50/p99':>24}"
    )
    for r in rows:
        print(
            f"{r['streams']:>8} {r['tokens_per_s']:>10,.0f} {r['requests_per_s']:>11,.1f} {r['sim_cpu']:>8.0%} "
            f"{r['client_cpu']:>10.0%} {r['sim_late_p50_ms']:>14g}/{r['sim_late_p99_ms']:g} ms "
            f"{r['late_p50_ms']:>15.1f}/{r['late_p99_ms']:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
