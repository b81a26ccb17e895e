"""Cost of the cockpit page on the master: the CPU of one stats poll, by number of groups.

While a test runs, the page polls every 2 s (Locust's own stats cycle):
Locust's ``/stats/requests`` (with llmload's LLM table rows), the cockpit's
``/llmload/charts?since=<last point>`` (the new chart points) and
``/llmload/state``. This builds a local plugin with a web UI and
``--groups`` groups whose chart history is full (``--points`` slices), then
runs ``--repeat`` polls through Flask's test client, each as the page sends
it (new points since the previous poll: one slice every 5th poll, as at 10-s
slices), each after new requests in every group (as a worker's report lands
between two polls), with the 1-s caches expired as they are between two real
polls. It
prints the median and p90 of the master's CPU time (``time.process_time``)
per poll, the median of each of the three routes, and the rotation cost of
one slice (its chart points).

    .venv/bin/python benchmarks/cockpit_poll.py [--groups 1 10 50] [--repeat 50]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locust import User, constant, task  # noqa: E402
from locust.argument_parser import get_parser  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.event import Events  # noqa: E402

import llmload.hooks  # noqa: E402,F401  (registers the --llm-* options)
from llmload import selfcheck, steering, webui  # noqa: E402
from llmload.live import LiveFigures  # noqa: E402
from llmload.plugin import LLMLoadPlugin  # noqa: E402
from llmload.record import RequestRecord  # noqa: E402


class NoopUser(User):
    wait_time = constant(1)

    @task
    def nothing(self) -> None:
        pass


def record(rng: random.Random, backend: str, user_class: str) -> RequestRecord:
    times = [0.03 + rng.random() * 0.05 + 0.015 * k + rng.random() * 0.002 for k in range(30)]
    return RequestRecord(
        backend=backend,
        model="m",
        user_class=user_class,
        endpoint="/v1/chat/completions",
        t_send=0.0,
        start_wall=1.0,
        token_times=times,
        t_end=times[-1],
        completion_tokens=30,
        prompt_tokens=5,
    )


def locust_web_ui(parsed: Any) -> tuple[Environment, Any]:
    """A local Locust environment and its (not started) web UI."""
    environment = Environment(user_classes=[NoopUser], events=Events(), parsed_options=parsed, host="http://x")
    environment.create_local_runner()
    return environment, environment.create_web_ui("127.0.0.1", 0, delayed_start=True)


def report_to_locust(environments: list[Environment], rec: RequestRecord) -> None:
    """Give Locust's own statistics the request too, as llmload's client does (one entry per backend)."""
    for environment in environments:
        environment.events.request.fire(
            request_type="POST",
            name=f"{rec.backend} {rec.endpoint}",
            response_time=(rec.t_end - rec.t_send) * 1000.0,
            response_length=rec.output_tokens,
            exception=None,
            context={},
            response=None,
        )


def measure(groups: int, points: int, repeat: int) -> dict[str, float]:
    sys.argv = ["locust"]
    parsed = get_parser().parse_args([])
    environment, web_ui = locust_web_ui(parsed)
    stock, stock_web_ui = locust_web_ui(parsed)  # Locust's own page, without llmload: the baseline
    plugin = LLMLoadPlugin(environment).register()
    for module in (selfcheck, steering, webui):
        module.register(environment, plugin)
    clock = [time.time() - points * 10]
    figures = plugin.extensions.add(LiveFigures(plugin, span_s=60, clock=lambda: clock[0]))
    environment.events.test_start.fire(environment=environment)
    figures.start()
    figures.stop()  # the benchmark rotates the slices itself
    rng = random.Random(1)
    keys = [(f"gpu-{i % 10}", f"Class{i // 10}") for i in range(groups)]
    rotate_s = []
    both = [environment, stock]
    for _ in range(points):
        for backend, user_class in keys:
            for _ in range(5):
                rec = record(rng, backend, user_class)
                plugin.record(rec)
                report_to_locust(both, rec)
        clock[0] += 10
        started = time.process_time()
        figures.rotate()
        rotate_s.append(time.process_time() - started)
    ui = plugin.extensions.get(webui.LLMWebUI)
    assert ui is not None
    client, stock_client = web_ui.app.test_client(), stock_web_ui.app.test_client()
    since = clock[0] - 10
    per_poll: list[float] = []
    own: list[float] = []
    per_route: dict[str, list[float]] = {"stats_requests": [], "charts": [], "state": [], "stock_stats_requests": []}
    for n in range(repeat):
        for backend, user_class in keys:  # workers report between two polls: every group changed
            rec = record(rng, backend, user_class)
            plugin.record(rec)
            report_to_locust(both, rec)
        if n % 5 == 0:  # a new slice every 10 s, polls every 2 s
            clock[0] += 10
            figures.rotate()
        ui.expire_caches()
        t0 = time.process_time()
        client.get("/stats/requests")
        t1 = time.process_time()
        charts = client.get(f"/llmload/charts?since={since}").get_json()
        t2 = time.process_time()
        client.get("/llmload/state")
        t3 = time.process_time()
        stock_client.get("/stats/requests")
        t4 = time.process_time()
        per_poll.append(t3 - t0)
        own.append((t3 - t0) - (t4 - t3))
        for name, spent in zip(per_route, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            per_route[name].append(spent)
        since = max([since] + [p[0] for g in charts["groups"] for p in g["points"]])
    for env in both:
        assert env.runner is not None
        env.runner.quit()
    per_poll.sort()
    own.sort()
    return {
        "groups": groups,
        "poll_cpu_median_ms": round(statistics.median(per_poll) * 1e3, 2),
        "poll_cpu_p90_ms": round(per_poll[int(0.9 * (len(per_poll) - 1))] * 1e3, 2),
        "page_own_cpu_median_ms": round(statistics.median(own) * 1e3, 2),
        "page_own_cpu_p90_ms": round(own[int(0.9 * (len(own) - 1))] * 1e3, 2),
        "slice_rotation_cpu_median_ms": round(statistics.median(rotate_s) * 1e3, 2),
        **{f"{name}_cpu_median_ms": round(statistics.median(spent) * 1e3, 2) for name, spent in per_route.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--points", type=int, default=360, help="chart points already kept per group (default 360)")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory():
        for groups in args.groups:
            print(json.dumps(measure(groups, args.points, args.repeat)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
