"""Cost of the live figures: one exporter scrape and one exact-percentile computation, by number of groups.

Builds a local plugin whose groups each hold ``--requests`` finished requests
of 30 tokens, spread over the sliding window's slices, then times (median of
``--repeat``) one ``LiveFigures.compute`` without cache (the merge of the open
slice into the closed ones, then every percentile of both windows) and one
full ``/metrics`` exposition. It also counts the exposition's series.

    .venv/bin/python benchmarks/live_figures.py [--groups 1 10 50] [--requests 2000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locust.env import Environment  # noqa: E402
from locust.event import Events  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from llmload import collector  # noqa: E402
from llmload.live import SLICES, LiveFigures  # noqa: E402
from llmload.options import LLMOptions  # noqa: E402
from llmload.plugin import LLMLoadPlugin  # noqa: E402
from llmload.record import RequestRecord  # noqa: E402


def measure(groups: int, requests: int, repeat: int) -> dict[str, float]:
    environment = Environment(events=Events())
    environment.create_local_runner()
    plugin = LLMLoadPlugin(environment).register()
    plugin.set_options(LLMOptions())
    live = plugin.extensions.add(LiveFigures(plugin))
    live.start()
    live.stop()
    rng = random.Random(1)
    for i in range(groups * requests):
        times = [0.03 + rng.random() * 0.05 + 0.015 * k + rng.random() * 0.002 for k in range(30)]
        plugin.record(
            RequestRecord(
                backend=f"gpu-{i % groups}",
                model="m",
                user_class="Chat",
                endpoint="/v1/chat/completions",
                t_send=0.0,
                start_wall=1.0,
                token_times=times,
                t_end=times[-1],
                completion_tokens=30,
                prompt_tokens=5,
            )
        )
        if i % max(groups * requests // (SLICES + 1), 1) == 0:
            live.rotate()
    live.compute()  # merges the closed slices once (per rotation)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector.LLMLoadCollector(plugin))
    computes, scrapes = [], []
    for _ in range(repeat):
        live._cached = None  # a benchmark defeats the cache on purpose
        started = time.perf_counter()
        live.compute()
        computes.append(time.perf_counter() - started)
        live._cached = None
        started = time.perf_counter()
        text = generate_latest(registry)
        scrapes.append(time.perf_counter() - started)
    series = sum(1 for line in text.decode().splitlines() if line and not line.startswith("#"))
    environment.runner.quit()
    return {
        "compute_ms": statistics.median(computes) * 1e3,
        "scrape_ms": statistics.median(scrapes) * 1e3,
        "series": series,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--requests", type=int, default=2000, help="requests per group (default 2000)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'groups':>6}  {'compute ms':>10}  {'scrape ms':>9}  {'per group ms':>12}  {'series':>6}")
    for groups in args.groups:
        figures = measure(groups, args.requests, args.repeat)
        print(
            f"{groups:>6}  {figures['compute_ms']:>10.1f}  {figures['scrape_ms']:>9.1f}  "
            f"{figures['scrape_ms'] / groups:>12.2f}  {figures['series']:>6.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
