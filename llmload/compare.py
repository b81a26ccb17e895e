"""``llmload compare``: one table across results files and backends, printed and written as Markdown and CSV.

The rows and their formulas are in ``llmload.render.compare``; this module
reads the files (either schema version) and writes the outputs, without
importing Locust.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from llmload.errors import ConfigError
from llmload.render import document
from llmload.render.compare import Row, rows_from_results, to_csv, to_markdown

# -- command line ------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``compare`` sub-command."""
    p = subparsers.add_parser(
        "compare",
        help="compare results files across runs and backends (Markdown, CSV)",
        description="Print a table of capacity at SLO, throughput, latency percentiles and "
        "cost across results files, and write it as Markdown and CSV.",
    )
    p.add_argument("results", nargs="+", help="results JSON files (llmload.results/1 or /2)")
    p.add_argument("-o", "--output-dir", default="", help="write compare.md and compare.csv into this directory")
    p.add_argument("--markdown", default="", help="write the Markdown table to this file")
    p.add_argument("--csv", default="", help="write the CSV table to this file")
    p.add_argument("--backends", default="", help="backends TOML file for runs that did not record backend details")
    p.set_defaults(func=run)


def compare_files(paths: list[str], *, backends_file: str = "") -> list[Row]:
    """Read every results file and return its rows."""
    extra: dict[str, dict[str, Any]] = {}
    if backends_file:
        from llmload.backends import load_backends

        extra = {b.name: b.describe() for b in load_backends(backends_file)}
    rows: list[Row] = []
    for path in paths:
        rows += rows_from_results(document.read(path), source=path, extra=extra)
    return rows


def _write(path: str, text: str) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write ({exc.strerror})") from None


def run(args: argparse.Namespace) -> int:
    """Print the comparison and write the requested files."""
    rows = compare_files(args.results, backends_file=args.backends)
    markdown, table_csv = to_markdown(rows), to_csv(rows)
    print(markdown, end="")
    targets = []
    if args.output_dir:
        targets += [
            (os.path.join(args.output_dir, "compare.md"), markdown),
            (os.path.join(args.output_dir, "compare.csv"), table_csv),
        ]
    if args.markdown:
        targets.append((args.markdown, markdown))
    if args.csv:
        targets.append((args.csv, table_csv))
    for path, text in targets:
        _write(path, text)
        print(f"llmload compare: wrote {path}")
    return 0
