"""Answers to requests that ask for tools or a JSON schema: a tool call, or JSON following the schema.

vLLM's structured outputs make even a random model emit JSON valid against the asked schema;
the simulator does the same, deterministically: ``instance_of(schema)`` builds a value of the
schema's shape (objects with every property, the first of an ``enum``/``anyOf``, bounds kept),
and ``pieces`` cuts its JSON into token-sized parts that stream one per token.
"""

from __future__ import annotations

from typing import Any

import orjson

PIECE_CHARS = 4
"""Characters per streamed token of a structured answer (about what a tokenizer gives for JSON)."""


def instance_of(schema: Any, depth: int = 0) -> Any:
    """A value of ``schema``'s shape (the JSON Schema subset structured outputs use)."""
    if not isinstance(schema, dict) or depth > 8:
        return "value"
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return instance_of(schema[key][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        return {name: instance_of(sub, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        items = [instance_of(schema.get("items", {}), depth + 1)]
        return items * max(int(schema.get("minItems", 1)), 1)
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        low, high = schema.get("minimum", 0), schema.get("maximum", 1)
        return (low + high) / 2
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "text" * max(1, (int(schema.get("minLength", 4)) + 3) // 4)


def pieces(value: Any) -> list[str]:
    """The JSON text of ``value`` cut into streamed pieces of ``PIECE_CHARS`` characters."""
    text = orjson.dumps(value).decode()
    return [text[i : i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)]


def structured_request(data: dict[str, Any]) -> tuple[list[str], str | None] | None:
    """The pieces of the answer a request asks for, and the tool called (None: JSON content); None: plain."""
    tools = data.get("tools")
    choice = data.get("tool_choice", "auto")
    messages = data.get("messages")
    after_tool = isinstance(messages, list) and bool(messages) and (messages[-1] or {}).get("role") == "tool"
    # With auto, a model given a tool's result answers in words instead of calling again.
    if isinstance(tools, list) and tools and choice != "none" and not (choice == "auto" and after_tool):
        chosen = None
        if isinstance(choice, dict):
            chosen = ((choice.get("function") or {}) if isinstance(choice.get("function"), dict) else {}).get("name")
        for tool in tools:
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict) and (chosen is None or function.get("name") == chosen):
                return pieces(instance_of(function.get("parameters") or {})), str(function.get("name") or "tool")
    response_format = data.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        return pieces(instance_of(spec.get("schema") if isinstance(spec, dict) else {})), None
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        return pieces({"answer": "text"}), None
    return None


class FixedAnswer:
    """The words of a structured answer, with the interface of ``Vocabulary`` the stream format reads."""

    def __init__(self, parts: list[str], *, closing: bytes = b"") -> None:
        self.parts = parts
        self.json = [orjson.dumps(p) + closing for p in parts]

    def word_json(self, offset: int, k: int) -> bytes:
        return self.json[k]

    def fragments(self, offset: int, first: int, count: int) -> list[bytes]:
        return self.json[first : first + count]

    def text(self, offset: int, count: int) -> str:
        return "".join(self.parts[:count])
