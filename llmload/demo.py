"""``llmload demo``: the main job on the embedded simulator, with no GPU and no server.

Starts the simulator (RTX 3090 profile by default) on loopback, runs the
chatbot locustfile headless with the Backprop study's settings (100 users,
closed loop, ``max_tokens`` 100), prints Locust's and llmload's tables, writes
the results JSON and the HTML report next to it (same name, ``.html``) and stops
the simulator.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from llmload.errors import ConfigError

REPO_LOCUSTFILES = Path(__file__).resolve().parent.parent / "locustfiles"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the chatbot load test against the embedded simulator")
    parser.add_argument("--profile", default="rtx3090", help="simulator GPU profile (default: rtx3090)")
    parser.add_argument("--users", type=int, default=100, help="concurrent users (default: 100)")
    parser.add_argument("--run-time", default="60s", help="Locust run time (default: 60s)")
    parser.add_argument("--results", default="results/demo.json", help="results JSON path")
    parser.add_argument("--locustfile", default=str(REPO_LOCUSTFILES / "chatbot.py"), help="locustfile to run")
    parser.add_argument("locust_args", nargs=argparse.REMAINDER, help="extra Locust arguments after --")
    parser.set_defaults(func=run)


def locust_command(args: argparse.Namespace, host: str) -> list[str]:
    """Return the Locust command line the demo runs."""
    extra = [a for a in args.locust_args if a != "--"]
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        args.locustfile,
        "--headless",
        "-u",
        str(args.users),
        "-r",
        str(args.users),
        "-t",
        args.run_time,
        "--host",
        host,
        "--llm-think-time",
        "0",
        "--llm-max-tokens",
        "100",
        "--llm-results",
        args.results,
        "--llm-html",
        os.path.splitext(args.results)[0] + ".html",
        "--only-summary",
        *extra,
    ]


def run(args: argparse.Namespace) -> int:
    from llmload.simulator.process import SimulatorProcess

    if not os.path.isfile(args.locustfile):
        raise ConfigError(f"--locustfile {args.locustfile}: no such file (run the demo from a checkout of llmload)")
    if args.users < 1:
        raise ConfigError(f"--users: expected at least 1, got {args.users}")
    with SimulatorProcess(profile=args.profile) as sim:
        print(
            f"llmload demo: simulator ({args.profile}) at {sim.base_url}; {args.users} users for {args.run_time}",
            flush=True,
        )
        completed = subprocess.run(locust_command(args, sim.base_url), check=False)
    return completed.returncode
