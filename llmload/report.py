"""The HTML report, written at the end of a run (``--llm-html PATH``) or from a file (``llmload report``).

The page itself is built by ``llmload.render.html``. On a Locust master or
local process, ``--llm-html PATH`` writes it once the run's results document
is finished (``Extension.finished``); ``llmload report results.json -o
report.html`` builds the same report from a saved results file of either
schema version, without importing Locust.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any

from llmload.errors import ConfigError
from llmload.extension import Extension, exit_on_config_error
from llmload.render import document, html

if TYPE_CHECKING:
    from locust.env import Environment

    from llmload.plugin import LLMLoadPlugin

logger = logging.getLogger("llmload")


def check_writable(path: str) -> None:
    """Fail early, with one line, when the report file cannot be written."""
    document.check_writable(path, option="--llm-html")


# -- Locust extension ------------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    """Register ``--llm-html`` on Locust's parser."""
    parser.add_argument(
        "--llm-html",
        env_var="LOCUST_LLM_HTML",
        default="",
        help="Write a self-contained HTML report (tables and charts) to this path at the end of the run",
    )


class HtmlReport(Extension):
    """Writes the HTML report of the finished run to the path ``--llm-html`` names at that moment."""

    def __init__(self, plugin: LLMLoadPlugin) -> None:
        self.plugin = plugin

    def path(self) -> str:
        # The web form may have changed the path since start-up: read it when needed.
        return str(getattr(self.plugin.environment.parsed_options, "llm_html", "") or "")

    def finished(self, doc: dict[str, Any]) -> None:
        path = self.path()
        if not path:
            return
        try:
            check_writable(path)
            html.write(doc, path, secrets=[self.plugin.options.api_key])
        except (ConfigError, OSError) as exc:
            logger.error("llmload: cannot write the HTML report: %s", exc)
            return
        print(f"llmload: HTML report written to {os.path.abspath(path)}", flush=True)


def register(environment: Environment, plugin: LLMLoadPlugin) -> None:
    """On a master or local process, write the report at the end of each run when ``--llm-html`` is set."""
    if plugin.is_worker or environment.parsed_options is None:
        return
    report = plugin.extensions.add(HtmlReport(plugin))
    if report.path():
        try:
            check_writable(report.path())
        except ConfigError as exc:
            exit_on_config_error(exc)


# -- llmload report --------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``report`` sub-command."""
    parser = subparsers.add_parser("report", help="build the HTML report of a saved results JSON")
    parser.add_argument("results", help="results JSON written by --llm-results (schema 1 or 2)")
    parser.add_argument("-o", "--output", default="", help="HTML file to write (default: the results path with .html)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the report of one results file."""
    doc = document.read(args.results)
    output = args.output or os.path.splitext(args.results)[0] + ".html"
    if os.path.abspath(output) == os.path.abspath(args.results):
        raise ConfigError(f"-o {output}: would overwrite the results file itself")
    check_writable(output)
    try:
        html.write(doc, output)
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write ({exc.strerror or exc})") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{args.results}: malformed results document ({type(exc).__name__}: {exc})") from None
    print(f"llmload report: wrote {os.path.abspath(output)}")
    return 0
