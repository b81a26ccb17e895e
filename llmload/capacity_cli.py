"""``llmload capacity``: run the capacity search from one command line.

It builds the Locust command of ``locustfiles/capacity.py`` (the
``CapacityShape`` of llmload/capacity.py) against a host, the embedded
simulator, or each backend of a backends file in turn, and prints the answer
of each search.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from llmload.capacity_search import DEFAULT_SLO_TTFT_S, MODES
from llmload.errors import ConfigError

REPO_LOCUSTFILE = Path(__file__).resolve().parent.parent / "locustfiles" / "capacity.py"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``capacity`` sub-command."""
    p = subparsers.add_parser(
        "capacity",
        help="find how many users a backend serves within the SLO",
        description="Run Locust's capacity search (locustfiles/capacity.py) against a host, the simulator, or "
        "each backend of a backends file, and print the answer.",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--host", help="base URL of the OpenAI-compatible server")
    target.add_argument("--sim", metavar="PROFILE", help="start the embedded simulator with this profile")
    target.add_argument("--backends", metavar="FILE", help="search each backend of this TOML file in turn")
    p.add_argument("--backend", default="", help="with --backends: only these backends (comma-separated)")
    p.add_argument("--sim-args", default="", help="extra simulator arguments, e.g. '--max-num-seqs 1024'")
    p.add_argument("--label", default="", help="name of the backend in the answer")
    p.add_argument("--results", default="", help="results JSON path (default results/capacity-LABEL.json)")
    p.add_argument("--mode", choices=MODES, default="users")
    for name, default in (
        ("start", "10"),
        ("growth", "2"),
        ("max", "1000"),
        ("resolution", "0.05"),
        ("warmup", "30"),
        ("hold", "60"),
        ("attainment", "0.95"),
        ("min-requests", ""),
    ):
        p.add_argument(f"--{name}", default=default, help=f"--llm-capacity-{name} (default {default or 'auto'})")
    p.add_argument("--slo-stream-rate", default="10", help="SLO: stream rate in tokens/s (default 10)")
    p.add_argument("--slo-ttft", default=f"{DEFAULT_SLO_TTFT_S:g}", help="SLO: TTFT in seconds (default 2)")
    p.add_argument("--max-tokens", default="100", help="max_tokens per request (default 100, the Backprop study's)")
    p.add_argument("--arrival", default="poisson", help="rate mode: poisson or constant")
    p.add_argument("--processes", type=int, default=0, help="Locust --processes (load-generator processes)")
    p.add_argument("--locustfile", default=str(REPO_LOCUSTFILE), help="locustfile with the capacity shape")
    p.add_argument("locust_args", nargs=argparse.REMAINDER, help="extra Locust arguments after --")
    p.set_defaults(func=run)


def locust_command(
    args: argparse.Namespace, *, host: str | None, label: str, results: str, backend: str = ""
) -> list[str]:
    """Return the Locust command line of one capacity search."""
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        args.locustfile,
        "--headless",
        "--only-summary",
        "--llm-results",
        results,
        "--llm-capacity-label",
        label,
        "--llm-capacity-mode",
        args.mode,
        "--llm-slo-stream-rate",
        args.slo_stream_rate,
        "--llm-slo-ttft",
        args.slo_ttft,
        "--llm-max-tokens",
        args.max_tokens,
        "--llm-think-time",
        "0",
    ]
    for name in ("start", "growth", "max", "resolution", "warmup", "hold", "attainment", "min_requests"):
        value = getattr(args, name)
        if value != "":
            cmd += [f"--llm-capacity-{name.replace('_', '-')}", str(value)]
    if host:
        cmd += ["--host", host]
    if backend:
        cmd += ["--llm-backends", args.backends, "--llm-backend", backend]
    if args.mode == "rate":
        cmd += ["--llm-arrival", args.arrival, "--llm-rate", str(args.start)]
    if args.processes:
        cmd += ["--processes", str(args.processes)]
    return cmd + [a for a in args.locust_args if a != "--"]


def _search(args: argparse.Namespace, *, host: str | None, label: str, backend: str = "") -> tuple[int, str | None]:
    from llmload import results as results_io

    path = args.results if args.results and not backend else os.path.join("results", f"capacity-{label}.json")
    if args.results and backend:
        root, ext = os.path.splitext(args.results)
        path = f"{root}-{label}{ext or '.json'}"
    completed = subprocess.run(locust_command(args, host=host, label=label, results=path, backend=backend), check=False)
    try:
        doc = results_io.read(path)
    except ConfigError:
        return completed.returncode or 1, None
    capacity = doc.get("capacity") or {}
    answer = capacity.get("answer") or {}
    # Overload steps fail requests on purpose, which makes Locust exit 1: a finished search is a success.
    code = 0 if answer.get("complete") else (completed.returncode or 1)
    return code, answer.get("text")


def run(args: argparse.Namespace) -> int:
    """Run the search(es) and print the answer line(s)."""
    if not os.path.isfile(args.locustfile):
        raise ConfigError(f"--locustfile {args.locustfile}: no such file (run from a checkout of llmload)")
    answers: list[str] = []
    code = 0
    if args.backends:
        from llmload.backends import load_backends

        for backend in load_backends(args.backends, only=args.backend):
            rc, text = _search(args, host=None, label=backend.name, backend=backend.name)
            code = code or rc
            answers.append(text or f"{backend.name}: no answer (exit code {rc})")
    elif args.sim:
        import shlex

        from llmload.simulator.process import SimulatorProcess

        with SimulatorProcess(profile=args.sim, extra_args=shlex.split(args.sim_args)) as sim:
            print(f"llmload capacity: simulator ({args.sim}) at {sim.base_url}", flush=True)
            code, text = _search(args, host=sim.base_url, label=args.label or args.sim)
        answers.append(text or f"{args.label or args.sim}: no answer (exit code {code})")
    else:
        code, text = _search(args, host=args.host, label=args.label or args.host)
        answers.append(text or f"{args.label or args.host}: no answer (exit code {code})")
    print("\n".join(["", "Capacity at SLO:", *(f"  {a}" for a in answers)]), flush=True)
    return code
