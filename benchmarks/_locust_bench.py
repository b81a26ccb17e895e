"""The locustfile client_bench.py drives llmload with: closed-loop users, no think time.

Each request's prompt starts with a unique id (``<pid>.<user>.<n>``) that the
truth server uses as the request's key. With ``LLMLOAD_BENCH_TIMES=PATH`` each
process also keeps, per finished request, its id, ``t_send`` and token
timestamps (lists llmload built anyway: no per-event work is added) and writes
them to ``PATH.<pid>`` at test stop, for per-request matching against the
server's log. With ``LLMLOAD_BENCH_STAGGER_S`` the users' first requests are spread evenly
over that many seconds. Everything else is llmload's normal path.
"""

from __future__ import annotations

import itertools
import os

import gevent
import orjson
from locust import events

from llmload import LLMUser

_TIMES_PATH = os.environ.get("LLMLOAD_BENCH_TIMES")
# Users start spread evenly over this many seconds (one request's duration), so paced streams
# are not phase-locked into bursts of simultaneous requests; "index/count" per process.
_STAGGER_S = float(os.environ.get("LLMLOAD_BENCH_STAGGER_S", "0"))
_STREAMS = int(os.environ.get("LLMLOAD_BENCH_STREAMS", "1"))
_kept: list[tuple[str, float, list[float]]] = []
_user_ids = itertools.count()


class BenchUser(LLMUser):
    """Stream 256-token answers back to back (overridable with --llm-max-tokens)."""

    max_tokens = 256
    think_time = 0
    ignore_eos = True
    model = "bench-model"

    def on_start(self) -> None:
        index = next(_user_ids)
        self._bench_prefix = f"{os.getpid()}.{index}."
        self._bench_n = 0
        if _STAGGER_S:
            gevent.sleep(_STAGGER_S * (index % _STREAMS) / _STREAMS)

    def make_prompt(self) -> str:
        self._bench_n += 1
        return f"{self._bench_prefix}{self._bench_n} Tell me a story about a lighthouse keeper."

    def send(self, prompt, **kwargs):  # noqa: ANN001, ANN003, ANN201 (LLMUser.send's signature)
        record = super().send(prompt, **kwargs)
        if _TIMES_PATH is not None and record is not None and record.ok:
            _kept.append((prompt.split(" ", 1)[0], record.t_send, record.token_times))
        return record


@events.test_stop.add_listener
def _dump_times(**_kwargs: object) -> None:
    if _TIMES_PATH is not None and _kept:
        with open(f"{_TIMES_PATH}.{os.getpid()}", "wb") as handle:
            handle.write(orjson.dumps(_kept))
