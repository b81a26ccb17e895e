"""The ``llmload sim`` sub-command: run the vLLM-compatible simulator.

It prints ``llmload-sim listening on http://HOST:PORT`` once the socket is
bound and stops cleanly (exit 0) on SIGINT or SIGTERM. Only asyncio, the
standard library, orjson and prometheus_client are imported (uvloop when
installed); never Locust or gevent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from llmload.simulator.faults import FAULT_KINDS, FaultConfig
from llmload.simulator.profiles import FIXED_PROFILE, GPU_PROFILES, MODEL_PROFILES

if TYPE_CHECKING:
    from llmload.simulator.server import SimConfig


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the ``sim`` sub-command on ``subparsers``."""
    p = subparsers.add_parser(
        "sim",
        help="run the embedded vLLM-compatible simulator",
        description="A vLLM-compatible OpenAI server whose timing comes from a continuous-batching "
        "performance model (or fixed latencies with --profile fixed).",
    )
    profiles = [*GPU_PROFILES, FIXED_PROFILE]
    p.add_argument(
        "--profile", default="rtx3090", metavar="NAME", help=f"GPU profile: {', '.join(profiles)} (default: rtx3090)"
    )
    p.add_argument(
        "--model-profile",
        default="llama-3.1-8b",
        metavar="NAME",
        help=f"model profile: {', '.join(MODEL_PROFILES)} (default: llama-3.1-8b)",
    )
    p.add_argument(
        "--served-model-name", default="meta-llama/Llama-3.1-8B-Instruct", help="model name in /v1/models and responses"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to bind; 0 picks a free one (default: 8000)")
    p.add_argument("--ttft-ms", type=float, default=0.0, help="profile fixed: time to first token (ms)")
    p.add_argument("--itl-ms", type=float, default=0.0, help="profile fixed: time between tokens (ms); 0 = full speed")
    p.add_argument("--seed", type=int, default=None, help="seed for answer words and fault choices")
    p.add_argument(
        "--answer-tokens",
        type=int,
        default=None,
        metavar="N",
        help="natural answer length: stop after min(max_tokens, N) tokens with finish_reason "
        "'stop' unless ignore_eos (default: always max_tokens)",
    )
    p.add_argument(
        "--reasoning-tokens",
        type=int,
        default=0,
        metavar="N",
        help="reasoning mode: the first N tokens of each chat answer are thinking, streamed as reasoning "
        "deltas and counted in usage (default: 0, no thinking)",
    )
    p.add_argument(
        "--reasoning-field",
        choices=["reasoning", "reasoning_content"],
        default="reasoning",
        help="the delta field of thinking tokens (vLLM renamed reasoning_content to reasoning; default: reasoning)",
    )
    p.add_argument(
        "--lora-modules",
        nargs="+",
        default=[],
        metavar="NAME[=PATH]",
        help="LoRA adapters served besides the model, as vLLM's flag (the path is ignored): listed in "
        "/v1/models and accepted as a request's model",
    )
    p.add_argument(
        "--vision-encode-ms",
        type=float,
        default=0.0,
        help="profile fixed: the vision encoder's time per image, added to TTFT (image tokens: one per 28x28 "
        "patch, counted as prompt tokens; default 0)",
    )
    p.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens when a request omits it")
    p.add_argument(
        "--max-num-seqs",
        type=int,
        default=None,
        help="most requests decoded together (default: vLLM's for the GPU: 1024 on h100-80gb, else 256)",
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="tokens per step (default: the GPU profile's, as vLLM picks it)",
    )
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="share of GPU memory used (0.9)")
    p.add_argument(
        "--kv-cache-tokens", type=int, default=None, help="override the KV-cache capacity derived from memory (tokens)"
    )
    p.add_argument("--max-model-len", type=int, default=None, help="override the longest prompt + output")
    p.add_argument(
        "--block-size",
        type=int,
        default=16,
        help="KV-cache block size in tokens: paging and prefix-cache blocks (default: 16, vLLM's)",
    )
    p.add_argument(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="automatic prefix caching as vLLM V1: cached leading prompt blocks skip prefill "
        "(default: on; --no-enable-prefix-caching turns it off)",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="PATH",
        help="a local Hugging Face tokenizer (tokenizer.json or a folder holding it) to count prompt tokens "
        "instead of the word rule (output tokens stay one word each)",
    )
    p.add_argument(
        "--fault", choices=FAULT_KINDS, default=None, metavar="KIND", help=f"inject a fault: {', '.join(FAULT_KINDS)}"
    )
    p.add_argument("--fault-rate", type=float, default=1.0, help="share of requests hit by --fault (default 1.0)")
    p.add_argument("--fault-after", type=int, default=5, help="tokens sent before a mid-stream fault (default 5)")
    p.add_argument("--stall-s", type=float, default=30.0, help="--fault stall: silence before closing (default 30)")
    p.add_argument(
        "--reject-stream-options",
        action="store_true",
        help="answer 400 to any request with stream_options, like servers that do not know it",
    )
    p.add_argument(
        "--slow-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="after this many seconds, run every request --slow-factor times slower (a degrading GPU, soak tests)",
    )
    p.add_argument("--slow-factor", type=float, default=4.0, help="slow-down factor of --slow-after (default 4)")
    p.add_argument("--list-profiles", action="store_true", help="print the profiles and their derived figures")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build the simulator configuration from parsed options (validates them)."""
    from llmload.errors import ConfigError
    from llmload.simulator.profiles import get_gpu_profile, get_model_profile
    from llmload.simulator.server import SimConfig

    if args.profile != FIXED_PROFILE:
        get_gpu_profile(args.profile)
    get_model_profile(args.model_profile)
    if args.ttft_ms < 0 or args.itl_ms < 0:
        raise ConfigError("--ttft-ms and --itl-ms must be >= 0")
    if args.answer_tokens is not None and args.answer_tokens < 1:
        raise ConfigError(f"--answer-tokens must be >= 1, got {args.answer_tokens}")
    if args.reasoning_tokens < 0:
        raise ConfigError(f"--reasoning-tokens must be >= 0, got {args.reasoning_tokens}")
    if args.slow_after is not None and (args.slow_after < 0 or args.slow_factor <= 0):
        raise ConfigError("--slow-after must be >= 0 and --slow-factor > 0")
    if args.block_size < 1:
        raise ConfigError(f"--block-size must be >= 1, got {args.block_size}")
    if args.tokenizer is not None:
        from llmload.simulator.tokens import load_tokenizer

        load_tokenizer(args.tokenizer)  # raises TokenizerError: one line, exit 2 (see run)
    fault = FaultConfig(kind=args.fault, rate=args.fault_rate, after=args.fault_after, stall_s=args.stall_s)
    config = SimConfig(
        profile=args.profile,
        model_profile=args.model_profile,
        served_model_name=args.served_model_name,
        host=args.host,
        port=args.port,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        seed=args.seed,
        fault=fault,
        reject_stream_options=args.reject_stream_options,
        answer_tokens=args.answer_tokens,
        reasoning_tokens=args.reasoning_tokens,
        reasoning_field=args.reasoning_field,
        vision_encode_ms=max(args.vision_encode_ms, 0.0),
        lora_modules=tuple(dict.fromkeys(m.partition("=")[0].strip() for m in args.lora_modules if m.strip())),
        default_max_tokens=args.default_max_tokens,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_tokens=args.kv_cache_tokens,
        max_model_len=args.max_model_len,
        slow_after_s=args.slow_after,
        slow_factor=args.slow_factor,
        block_size=args.block_size,
        enable_prefix_caching=args.enable_prefix_caching,
        tokenizer=args.tokenizer,
    )
    config.perf_model()  # fail now on an impossible GPU/model combination
    return config


def list_profiles() -> int:
    """Print every GPU profile's derived figures as JSON lines."""
    from llmload.simulator.perfmodel import PerfModel

    for model in MODEL_PROFILES.values():
        for gpu in GPU_PROFILES.values():
            print(
                json.dumps(
                    {"profile": gpu.name, "description": gpu.description, **PerfModel(gpu=gpu, model=model).describe()}
                )
            )
    print(json.dumps({"profile": FIXED_PROFILE, "description": "fixed --ttft-ms and --itl-ms, no batching"}))
    return 0


def _prepare_process() -> None:
    """Allow thousands of connections, and say so if gevent patched the sockets."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        print(
            "llmload sim: warning: gevent has monkey-patched this process (Locust was imported); "
            "the simulator runs slower. Set LOCUST_SKIP_MONKEY_PATCH=1 to avoid it.",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    """Run the simulator until SIGINT or SIGTERM; return the exit code."""
    if args.list_profiles:
        return list_profiles()
    from llmload.simulator.tokens import TokenizerError

    try:
        config = config_from_args(args)
    except TokenizerError as exc:  # a bad path is a usage error: one line, argparse's exit status
        print(f"llmload sim: error: {exc}", file=sys.stderr)
        return 2
    from llmload.simulator.server import serve

    _prepare_process()

    runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    try:
        # An optional speed-up, often not installed (the ignore is unused where it is).
        import uvloop  # type: ignore[import-not-found, unused-ignore]

        runner = getattr(uvloop, "run", asyncio.run)  # uvloop.run exists from uvloop 0.18
    except ImportError:
        pass
    runner(serve(config))
    return 0
