"""The ``llmload`` command: one entry point, one sub-command per tool.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``,
which registers its arguments and sets ``func`` to a callable taking the parsed
namespace and returning an exit code. Errors derived from ``LLMLoadError`` are
printed as one line and exit non-zero, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from llmload.errors import LLMLoadError

# (module, help) per sub-command; modules are imported only when needed so that
# `llmload sim` never imports Locust and `llmload target` never imports torch.
_SUBCOMMANDS = {
    "sim": "llmload.simulator.cli",
    "target": "llmload.target.cli",
    "demo": "llmload.demo",
    "grafana": "llmload.grafana",
    "capacity": "llmload.capacity_cli",
    "compare": "llmload.compare",
    "report": "llmload.report",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(prog="llmload", description="Load-test LLM serving endpoints with Locust.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _SUBCOMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``llmload`` command line and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from llmload._version import __version__

        print(f"llmload {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LLMLoadError as exc:
        print(f"llmload {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
