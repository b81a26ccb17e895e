"""Per-event cost of the stream reader (``StreamReader.on_event``): plain chat and reasoning streams.

Feeds canned vLLM chat events (continuous usage in every event, as llmload asks for) to
the event handler, 200 events per request, and prints the best of ``--repeat`` runs in
nanoseconds per event. Compare two versions of llmload by running it with each on
``PYTHONPATH`` (the reasoning issue's bound: reasoning attribution within 10% of before).

    .venv/bin/python benchmarks/event_handler.py [--repeat 7] [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import orjson

if __package__ is None:
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: a version under test wins

from llmload.record import RequestRecord  # noqa: E402
from llmload.stream import StreamReader  # noqa: E402

EVENTS = 200


def stream(thinking: int) -> list[bytes]:
    """One request's events as vLLM streams them: ``thinking`` reasoning deltas, then content."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = []
    for k in range(EVENTS):
        delta = {"reasoning": " think"} if k < thinking else {"content": " word"}
        finish = "stop" if k == EVENTS - 1 else None
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        usage = {"prompt_tokens": 20, "total_tokens": 21 + k, "completion_tokens": k + 1}
        out.append(orjson.dumps({**head, "choices": [choice], "usage": usage}))
    return out


def best_ns_per_event(events: list[bytes], *, requests: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(requests):
            record = RequestRecord(
                backend="b", model="m", user_class="U", endpoint="/v1/chat/completions", t_send=0.0, start_wall=0.0
            )
            on_event = StreamReader(record, chat=True).on_event
            t = 0.0
            for data in events:
                t += 0.01
                on_event(data, t)
        best = min(best, (time.perf_counter() - started) / (requests * len(events)))
    return best * 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    import llmload

    figures = {
        "llmload": str(Path(llmload.__file__).parent),
        "plain_ns_per_event": round(best_ns_per_event(stream(0), requests=args.requests, repeat=args.repeat), 1),
        "reasoning_ns_per_event": round(
            best_ns_per_event(stream(EVENTS // 2), requests=args.requests, repeat=args.repeat), 1
        ),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
