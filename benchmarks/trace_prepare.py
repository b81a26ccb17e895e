"""Preparing a trace replay: reading 100,000 trace requests and building their prompts, with and without a tokenizer.

The target (issue: real traffic shapes) is at most 60 s here for 100k requests. This writes a
seeded Mooncake trace (``tests/fixtures/make_traces.py``: shared 512-token blocks, inputs of
64-2,048 tokens), reads it with ``llmload.traces.load_trace``, then builds every request's
prompt as trace replay does (``TraceReplay.prompt``: leading blocks by ``hash_ids``, then
random text) with the word rule and with a locally trained byte-level BPE tokenizer
(``--llm-tokenizer``), and prints the seconds of each step and the tokens built per second.

    .venv/bin/python benchmarks/trace_prepare.py [--requests 100000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

from make_traces import mooncake_lines  # noqa: E402

from llmload.token_text import TokenizerText, WordText  # noqa: E402
from llmload.traces import load_trace  # noqa: E402
from tests.support.tokenizer import train_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.jsonl"
        path.write_text("\n".join(mooncake_lines(args.requests, seed=1, rate_per_s=50.0)) + "\n")
        started = time.perf_counter()
        trace = load_trace(str(path))
        load_s = time.perf_counter() - started
        tokens = sum(r.input_tokens or 0 for r in trace.requests)
        print(f"read {len(trace.requests):,} requests ({tokens:,} prompt tokens) in {load_s:.2f} s")
        tokenizer = train_tokenizer(Path(tmp) / "tok")
        for name, maker in (("word rule", WordText(seed=0)), ("tokenizer", TokenizerText(str(tokenizer), seed=0))):
            rng = random.Random(0)
            started = time.perf_counter()
            for row in trace.requests:
                maker.prompt(max(row.input_tokens or 1, 2), hash_ids=row.hash_ids, block_tokens=512, rng=rng)
            build_s = time.perf_counter() - started
            print(
                f"{name}: built {len(trace.requests):,} prompts in {build_s:.2f} s "
                f"({tokens / build_s / 1e6:.1f} M tokens/s); read + build {load_s + build_s:.2f} s (target <= 60 s)"
            )


if __name__ == "__main__":
    main()
