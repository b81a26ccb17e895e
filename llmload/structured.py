"""Tool calls and structured output: what a request asks for, and whether its answer is valid.

``--llm-tools FILE`` (a JSON list of OpenAI tool definitions) with ``--llm-tool-choice
auto|required|none|NAME``, and ``--llm-response-format FILE`` (a JSON schema) make every
chat request send ``tools``/``tool_choice`` or ``response_format``. After the stream ends,
on the text and tool calls the reader kept, ``Ask.judge`` says whether a valid answer came
back (docs/metrics.md, "Tool calls and structured output"):

* with a schema: the answer text is JSON and valid against the schema;
* with tools: a complete tool call came back (a known tool; with ``NAME``, that one; its
  arguments are JSON and valid against the tool's ``parameters``); with ``auto`` or
  ``none``, a non-empty text answer is valid too (the model may answer without a call; with
  ``none`` a call is invalid).

An invalid answer is not a transport failure: the request succeeded, and it misses the SLO.
Files are validated when the options load (one clear line and exit 2 for a bad one) and read
once per process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson
from jsonschema import exceptions as schema_errors
from jsonschema import validators

from llmload.errors import ConfigError
from llmload.files import file_version

if TYPE_CHECKING:
    from llmload.record import RequestRecord

TOOL_CHOICES = ("auto", "required", "none")


def _validator(schema: Any, *, where: str) -> Any:
    """A validator for ``schema``, or ``ConfigError`` when it is not a valid JSON schema."""
    if not isinstance(schema, dict):
        raise ConfigError(f"{where}: a JSON schema must be an object, got {type(schema).__name__}")
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except schema_errors.SchemaError as exc:
        raise ConfigError(f"{where}: not a valid JSON schema: {exc.message}") from None
    return cls(schema)


def _read_json(path: str, *, option: str) -> Any:
    try:
        with open(path, "rb") as handle:
            return orjson.loads(handle.read())
    except OSError as exc:
        raise ConfigError(f"--{option} {path}: cannot read ({exc.strerror or exc})") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"--{option} {path}: not valid JSON ({exc})") from None


def checked_tools(tools: Any, *, where: str) -> dict[str, Any]:
    """Validate a list of OpenAI tool definitions; return a validator of each tool's arguments by name."""
    if not isinstance(tools, list) or not tools:
        raise ConfigError(f"{where}: expected a non-empty JSON list of tools")
    checkers: dict[str, Any] = {}
    for index, tool in enumerate(tools):
        at = f"{where} tool {index + 1}"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise ConfigError(f'{at}: expected {{"type": "function", "function": {{"name": ..., "parameters": ...}}}}')
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{at}: function.name is required (a non-empty string)")
        if name in checkers:
            raise ConfigError(f"{at}: tool {name!r} is defined twice")
        checkers[name] = _validator(function.get("parameters", {"type": "object"}), where=f"{at} ({name})")
    return checkers


@lru_cache(maxsize=8)
def _load_tools(path: str, _version: int) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    tools = _read_json(path, option="llm-tools")
    return tuple(tools), checked_tools(tools, where=f"--llm-tools {path}")


@lru_cache(maxsize=8)
def _load_schema(path: str, _version: int) -> tuple[dict[str, Any], Any]:
    schema = _read_json(path, option="llm-response-format")
    return schema, _validator(schema, where=f"--llm-response-format {path}")


@dataclass(frozen=True)
class Ask:
    """What the run's requests ask for beyond the prompt, and how their answers are judged."""

    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str = "auto"
    schema: dict[str, Any] | None = None
    _tool_checkers: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    _schema_checker: Any = field(default=None, compare=False, repr=False)

    @property
    def judged(self) -> bool:
        """Whether answers are checked (tools or a schema were asked for)."""
        return bool(self.tools) or self.schema is not None

    def extra_body(self) -> dict[str, Any]:
        """The request body's ``tools``, ``tool_choice`` and ``response_format`` (empty when none)."""
        body: dict[str, Any] = {}
        if self.tools:
            body["tools"] = list(self.tools)
            if self.tool_choice in TOOL_CHOICES:
                body["tool_choice"] = self.tool_choice
            else:
                body["tool_choice"] = {"type": "function", "function": {"name": self.tool_choice}}
        if self.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": str(self.schema.get("title") or "answer"), "schema": self.schema},
            }
        return body

    def judge(self, record: RequestRecord) -> bool:
        """Whether the record's kept answer is a complete tool call or a schema-valid answer."""
        if self.tools and self.tool_choice == "none":  # a call was not allowed
            if record.tool_calls:
                return False
        elif self.tools:
            for call in record.tool_calls:
                name = call.get("name")
                if self.tool_choice not in TOOL_CHOICES and name != self.tool_choice:
                    continue
                checker = self._tool_checkers.get(name or "")
                if checker is not None and _valid_json(call.get("arguments") or "", checker):
                    return True
            if record.tool_calls or self.tool_choice != "auto":
                return False
        if self.tools and self.schema is None:
            return bool((record.text or "").strip())
        if self.schema is not None:
            return _valid_json(record.text or "", self._schema_checker)
        return True


def _valid_json(text: str, checker: Any) -> bool:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return bool(checker.is_valid(value))


def ask_from(*, tools_path: str, tool_choice: str, schema_path: str) -> Ask:
    """The run's ``Ask`` from its options (files read once per process); ``ConfigError`` on bad input."""
    tools: tuple[dict[str, Any], ...] = ()
    checkers: dict[str, Any] = {}
    if tools_path:
        tools, checkers = _load_tools(tools_path, file_version(tools_path, option="--llm-tools"))
    elif tool_choice.strip():
        raise ConfigError("--llm-tool-choice: only with --llm-tools FILE")
    schema, schema_checker = None, None
    if schema_path:
        schema, schema_checker = _load_schema(schema_path, file_version(schema_path, option="--llm-response-format"))
    return _ask(tools, checkers, tool_choice, schema, schema_checker, where=f"--llm-tool-choice ({tools_path})")


def ask_of(*, tools: list[dict[str, Any]] | None, tool_choice: str, schema: dict[str, Any] | None, where: str) -> Ask:
    """An ``Ask`` from a user class's own ``tools``, ``tool_choice`` and ``response_schema``."""
    checkers = checked_tools(tools, where=where) if tools else {}
    schema_checker = _validator(schema, where=f"{where} response_schema") if schema is not None else None
    return _ask(tuple(tools or ()), checkers, tool_choice, schema, schema_checker, where=where)


def _ask(
    tools: tuple[dict[str, Any], ...],
    checkers: dict[str, Any],
    tool_choice: str,
    schema: dict[str, Any] | None,
    schema_checker: Any,
    *,
    where: str,
) -> Ask:
    choice = tool_choice.strip() or "auto"
    if tools and choice not in TOOL_CHOICES and choice not in checkers:
        known = ", ".join(checkers)
        raise ConfigError(f"{where}: no tool {choice!r}; expected auto, required, none or one of {known}")
    return Ask(tools=tools, tool_choice=choice, schema=schema, _tool_checkers=checkers, _schema_checker=schema_checker)
