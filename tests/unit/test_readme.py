"""The README documents every ``--llm-*`` option and every ``llmload`` sub-command."""

from pathlib import Path

from locust.argument_parser import get_empty_argument_parser

from llmload import hooks
from llmload.cli import build_parser
from llmload.options import add_arguments

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def registered_llm_options() -> set[str]:
    parser = get_empty_argument_parser()
    add_arguments(parser)
    for extension in hooks.extension_modules():
        extension.add_arguments(parser)
    return {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--llm-")}


def test_every_llm_option_is_in_the_readme():
    options = registered_llm_options()
    assert len(options) >= 12
    missing = sorted(flag for flag in options if f"`{flag}" not in README)
    assert missing == []


def test_every_subcommand_is_in_the_readme():
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    missing = sorted(name for name in subparsers.choices if f"llmload {name}" not in README)
    assert missing == []
