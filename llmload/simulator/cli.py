"""The ``llmload sim`` sub-command (placeholder until the server lands)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``sim`` sub-command on ``subparsers``."""
    parser = subparsers.add_parser("sim", help="run the embedded vLLM-compatible simulator")
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    print("llmload sim: not implemented yet")
    return 1
