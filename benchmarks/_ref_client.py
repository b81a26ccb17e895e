"""The reference client of client_bench.py: minimal asyncio + aiohttp (+ uvloop) + orjson.

N closed-loop streams, each sending the same streamed chat request body as
llmload (same ``stream_options``, ``max_tokens``, ``ignore_eos``) back to back
for ``--seconds``. Per SSE line: one ``readline``, one ``orjson.loads``, one
timestamp and an append for token-carrying events (same rule as llmload: a
role-only or empty chunk is not a token). It keeps ``(id, t_send,
token_times)`` per request and writes them as JSON at the end, like the
minimal clients benchmark tools are built from (percentiles are computed
afterwards, off the measured path).

    python benchmarks/_ref_client.py --url http://127.0.0.1:PORT --streams 64 --seconds 20 --out ref.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import aiohttp
import orjson

STREAM_OPTIONS = {"include_usage": True, "continuous_usage_stats": True}


async def stream_worker(
    session: aiohttp.ClientSession,
    url: str,
    index: int,
    max_tokens: int,
    deadline: float,
    kept: list,
    counts: list[int],
    delay: float,
) -> None:
    """Send requests one after another until ``deadline``, the first after ``delay`` seconds."""
    if delay:
        await asyncio.sleep(delay)
    perf_counter = time.perf_counter
    loads = orjson.loads
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream", "Accept-Encoding": "identity"}
    n = 0
    while perf_counter() < deadline:
        n += 1
        key = f"{os.getpid()}.{index}.{n}"
        body = orjson.dumps(
            {
                "model": "bench-model",
                "messages": [{"role": "user", "content": f"{key} Tell me a story about a lighthouse keeper."}],
                "stream": True,
                "max_tokens": max_tokens,
                "ignore_eos": True,
                "stream_options": STREAM_OPTIONS,
            }
        )
        times: list[float] = []
        t_send = perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    counts[1] += 1
                    await resp.read()
                    continue
                async for line in resp.content:
                    if not line.startswith(b"data: "):
                        continue
                    data = line[6:].rstrip(b"\r\n")
                    if data == b"[DONE]":
                        continue
                    t = perf_counter()
                    choices = loads(data).get("choices")
                    if choices:
                        delta = choices[0].get("delta") or {}
                        if delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"):
                            times.append(t)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            counts[1] += 1
            continue
        counts[0] += 1
        kept.append((key, t_send, times))


async def run(args: argparse.Namespace) -> None:
    """Run every stream until the deadline and write what was kept."""
    kept: list = []
    counts = [0, 0]
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        deadline = time.perf_counter() + args.seconds
        url = f"{args.url}/v1/chat/completions"
        await asyncio.gather(
            *(
                stream_worker(
                    session, url, i, args.max_tokens, deadline, kept, counts, args.stagger_s * i / args.streams
                )
                for i in range(args.streams)
            )
        )
    with open(args.out, "wb") as handle:
        handle.write(orjson.dumps({"ok": counts[0], "failed": counts[1], "requests": kept}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stagger-s", type=float, default=0.0, help="spread the streams' first requests over this")
    args = parser.parse_args()
    from _asyncio_main import run_main  # benchmarks/ is sys.path[0] when run as a script

    run_main(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
