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
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmload.simulator.process import SimulatorProcess  # noqa: E402

TOKEN_MARK = b'"delta":{"content"'
END_MARK = b"\r\n0\r\n\r\n"


def build_request(host: str, max_tokens: int) -> bytes:
    """Return the bytes of one streamed chat request."""
    body = json.dumps({
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "messages": [{"role": "user", "content": "Tell me a story about a lighthouse keeper."}],
        "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True},
    }).encode()  # fmt: skip
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Accept-Encoding: identity\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


async def worker(host: str, port: int, payload: bytes, deadline: float, totals: list[int],
                 e2e: list[float]) -> None:  # fmt: skip
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
    await asyncio.gather(*(worker(parts.hostname, parts.port, payload, start + seconds, totals, e2e)
                           for _ in range(streams)))  # fmt: skip
    elapsed = time.perf_counter() - start
    late = sorted(1e3 * (e - (max_tokens - 1) * itl_s) for e in e2e)
    return {"streams": streams, "tokens_per_s": totals[0] / elapsed, "requests_per_s": totals[1] / elapsed,
            "tokens": totals[0], "seconds": elapsed, "late_p50_ms": late[len(late) // 2],
            "late_p99_ms": late[int(0.99 * (len(late) - 1))]}  # fmt: skip


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
            rows.append(asyncio.run(measure(sim.base_url, streams, args.seconds, args.max_tokens, args.itl_ms / 1e3)))
    pace = f"itl {args.itl_ms:g} ms" if args.itl_ms else "itl 0 (full speed)"
    print(f"llmload sim, profile fixed, ttft 0, {pace}, max_tokens {args.max_tokens}, one process")
    print(f"{'streams':>8} {'tokens/s':>10} {'requests/s':>11} {'tokens':>10} {'seconds':>8} {'E2E late p50/p99':>17}")
    for r in rows:
        print(f"{r['streams']:>8} {r['tokens_per_s']:>10,.0f} {r['requests_per_s']:>11,.1f} "
              f"{r['tokens']:>10,} {r['seconds']:>8.1f} {r['late_p50_ms']:>9.1f}/{r['late_p99_ms']:.1f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
