"""The ``llmload target`` sub-command: run a real LLM server locally as a load-test target.

``llmload target vllm`` installs vLLM into a cached venv (once), builds a
random-weight model (once), starts vLLM's OpenAI-compatible server, prints::

    llmload target: vLLM ready at http://127.0.0.1:8000 (model llmload-tiny)

and stays in the foreground until Ctrl-C or SIGTERM, then stops vLLM and
exits 0. Progress goes to stderr, the ready line to stdout.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

from llmload.errors import TargetError

if TYPE_CHECKING:
    from llmload.target.process import VLLMProcess


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``llmload target`` and its ``vllm`` sub-command."""
    from llmload.target.model import SHAPES

    parser = subparsers.add_parser(
        "target",
        help="run a real LLM server locally as a load-test target",
        description="Run a real LLM server on this machine as a load-test target.",
    )
    targets = parser.add_subparsers(dest="target", metavar="TARGET")
    parser.set_defaults(func=lambda args: _usage(parser))

    vllm = targets.add_parser(
        "vllm",
        help="a real vLLM server with a random-weight Llama model (CPU or GPU)",
        description=(
            "Install vLLM into a cached venv (once, a few minutes), build a random-weight Llama-architecture "
            "model (once), start vLLM's OpenAI-compatible server and stay in the foreground until Ctrl-C or SIGTERM."
        ),
    )
    vllm.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="tiny",
        help="model shape: tiny (0.66 M parameters, fast on CPU) or llama-3.1-8b (the exact 8B shape, for GPUs); "
        "default: tiny",
    )
    vllm.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    vllm.add_argument("--port", type=int, default=8000, help="port to bind; 0 picks a free one (default: 8000)")
    vllm.add_argument("--served-model-name", metavar="NAME", help="model name clients send (default: llmload-SHAPE)")
    vllm.add_argument("--max-model-len", type=int, metavar="N", help="context length (default: 2048 tiny, 8192 8B)")
    vllm.add_argument(
        "--max-num-seqs", type=int, metavar="N", help="largest batch (default: 128 tiny, vLLM's own for 8B)"
    )
    vllm.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where the vLLM venv, models and logs live (default: $LLMLOAD_CACHE or ~/.cache/llmload)",
    )
    vllm.add_argument(
        "--python",
        metavar="PATH",
        help="a Python that already imports vllm (default: $LLMLOAD_VLLM_PYTHON, else the cached venv)",
    )
    vllm.add_argument(
        "--startup-timeout", type=float, metavar="S", help="seconds to wait for /health (default: 180 tiny, 900 8B)"
    )
    vllm.add_argument(
        "--install-only", action="store_true", help="install vLLM and build the model, then exit without serving"
    )
    vllm.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for vLLM's server, repeatable (e.g. --vllm-arg=--seed --vllm-arg=7)",
    )
    vllm.set_defaults(func=run_vllm)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_vllm(args: argparse.Namespace) -> int:
    """Run ``llmload target vllm``: prepare, serve in the foreground, stop on Ctrl-C/SIGTERM."""
    from llmload.target.process import VLLMProcess
    from llmload.target.vllm import StartCancelled

    if not 0 <= args.port <= 65535:
        raise TargetError(f"--port must be between 0 and 65535, not {args.port}")
    for name in ("max_model_len", "max_num_seqs", "startup_timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise TargetError(f"--{name.replace('_', '-')} must be positive, not {value}")
    timeout = args.startup_timeout or (900.0 if args.shape != "tiny" else 180.0)
    server = VLLMProcess(
        shape=args.shape,
        cache_dir=args.cache_dir,
        extra_args=tuple(args.vllm_arg),
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        python=args.python,
        startup_timeout=timeout,
    )
    if args.install_only:
        server.prepare()
        assert server.vllm is not None
        print(
            f"llmload target: vLLM {server.version} ({server.vllm.python}) and the {server.shape.name} model "
            f"({server.model_path}) are ready"
        )
        return 0

    server.prepare()
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop.set) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start(cancelled=stop.is_set)
        except StartCancelled:
            print("llmload target: cancelled; vLLM stopped", file=sys.stderr, flush=True)
            return 0
        print(f"llmload target: vLLM ready at {server.base_url} (model {server.model})", flush=True)
        print(
            f"llmload target: started in {server.startup_s:.1f} s; Ctrl-C or SIGTERM stops it",
            file=sys.stderr,
            flush=True,
        )
        rc = server.wait(cancelled=stop.is_set)
        if rc is not None:
            reason = server.exit_reason()
            raise TargetError(f"vLLM exited unexpectedly with code {rc}: {reason} (log: {server.log_path})")
        _stop_uninterrupted(server)
        print(f"llmload target: vLLM stopped ({stop.signal_name})", file=sys.stderr, flush=True)
        return 0
    finally:
        _stop_uninterrupted(server)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _StopFlag:
    """Set by SIGINT/SIGTERM; polled by the wait loops.

    The handler only records the signal: raising from it would surface inside
    gevent's hub (Locust, imported with llmload, patches ``time.sleep``) as a
    printed traceback instead of a clean stop.
    """

    def __init__(self) -> None:
        self.signal_name = ""

    def set(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name

    def is_set(self) -> bool:
        return bool(self.signal_name)


def _stop_uninterrupted(server: VLLMProcess) -> None:
    """Stop the server; a second Ctrl-C or SIGTERM meanwhile must not leave vLLM running."""
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.stop()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
