"""Where prompts come from: seeded length distributions, dataset files, shared prefixes.

Three sources feed the users (``llmload.users``), chosen by options:

* a **length distribution** (``--llm-input-tokens``, ``--llm-output-tokens``,
  ``--llm-turns``) written ``KIND:key=value,...``::

      250                                      fixed
      100-300                                  uniform integers (inclusive)
      fixed:250
      uniform:min=100,max=300
      normal:mean=200,sd=50,min=10,max=512
      lognormal:mean=200,sigma=0.5,min=10,max=1024     mean = arithmetic mean of the
      lognormal:median=180,sigma=0.5                   unclamped distribution; or its median

  Draws are rounded to whole tokens and clamped to ``[min, max]`` (``min``
  defaults to 1, ``max`` to no limit);
* a **dataset file** (``--llm-dataset PATH``): ShareGPT-format JSON (a list
  of ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}``)
  or JSON Lines, one object per line, each ``{"prompt": ...}`` (optionally
  ``"output_tokens"``/``"max_tokens"``), ``{"messages": [{"role", "content"}]}``
  or a ShareGPT ``{"conversations": [...]}``. Entries are filtered by their
  estimated input and output lengths. Files are read once per process;
* an optional **shared prefix** of N tokens (``--llm-shared-prefix-tokens``),
  the same text in every process for a given ``--llm-seed``, for
  prefix-cache workloads.

Token counts of dataset text are estimated with the simulator's rule (one
token per run of word characters and per other non-space character), a cheap
regular expression computed once at load time, never per request.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from llmload import prompts
from llmload.errors import ConfigError
from llmload.files import file_version

_TOKEN = re.compile(r"\w+|[^\w\s]")
DATASET_FORMATS = ("auto", "sharegpt", "jsonl")
DISTRIBUTION_KINDS = {
    "fixed": ("value", "min", "max"),
    "uniform": ("min", "max"),
    "normal": ("mean", "sd", "min", "max"),
    "lognormal": ("mean", "median", "sigma", "min", "max"),
}
_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}


def estimate_tokens(text: str) -> int:
    """Return the approximate token count of ``text`` (words and punctuation marks)."""
    return len(_TOKEN.findall(text))


# -- length distributions ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LengthDistribution:
    """A seeded distribution of whole token counts, clamped to ``[low, high]``."""

    kind: str
    a: float  # fixed: value; uniform: min; normal: mean; lognormal: mu of the underlying normal
    b: float  # uniform: max; normal: sd; lognormal: sigma
    low: int = 1
    high: int | None = None
    spec: str = ""

    def draw(self, rng: random.Random) -> int:
        """Draw one length."""
        if self.kind == "fixed":
            value = self.a
        elif self.kind == "uniform":
            value = rng.randint(int(self.a), int(self.b))
        elif self.kind == "normal":
            value = rng.gauss(self.a, self.b)
        else:
            value = rng.lognormvariate(self.a, self.b)
        value = max(int(round(value)), self.low)
        return min(value, self.high) if self.high is not None else value

    @property
    def mean(self) -> float:
        """The mean of the unclamped distribution, in tokens."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "normal":
            return self.a
        return math.exp(self.a + self.b**2 / 2)

    def __str__(self) -> str:
        return self.spec


def _number(text: str, *, key: str, option: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--{option}: {key}={text!r} is not a number in {spec!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"--{option}: {key}={text!r} is not a finite number in {spec!r}")
    return value


@lru_cache(maxsize=64)
def parse_distribution(spec: str, *, option: str = "llm-input-tokens") -> LengthDistribution:
    """Parse ``N``, ``A-B`` or ``KIND:key=value,...`` (see the module docstring)."""
    text = str(spec).strip()
    if not text:
        raise ConfigError(f"--{option}: empty distribution")
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    if not sep:
        low_text, dash, high_text = text.partition("-")
        try:
            low, high = float(low_text), float(high_text) if dash else float(low_text)
        except ValueError:
            raise ConfigError(
                f"--{option}: expected N, A-B or KIND:key=value,... with KIND one of "
                f"{', '.join(DISTRIBUTION_KINDS)}; got {spec!r}"
            ) from None
        kind, params = ("uniform", {"min": low, "max": high}) if dash else ("fixed", {"value": low})
    else:
        if kind not in DISTRIBUTION_KINDS:
            raise ConfigError(
                f"--{option}: unknown distribution {kind!r}; expected one of {', '.join(DISTRIBUTION_KINDS)}"
            )
        params = {}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            if not eq and kind == "fixed" and not params:
                key, value = "value", key
            elif key not in DISTRIBUTION_KINDS[kind]:
                raise ConfigError(
                    f"--{option}: unknown key {key!r} for {kind}; expected {', '.join(DISTRIBUTION_KINDS[kind])}"
                )
            params[key] = _number(value.strip(), key=key, option=option, spec=text)
    return _build(kind, params, option=option, spec=text)


def _build(kind: str, params: dict[str, float], *, option: str, spec: str) -> LengthDistribution:
    def need(*keys: str) -> None:
        missing = [k for k in keys if k not in params]
        if missing:
            raise ConfigError(f"--{option}: {kind} needs {', '.join(missing)} in {spec!r}")

    low = params.get("min", 1.0)
    high = params.get("max")
    if low < 0 or (high is not None and high < low):
        raise ConfigError(f"--{option}: expected 0 <= min <= max in {spec!r}")
    if kind == "fixed":
        need("value")
        a, b = params["value"], 0.0
        if a < 0:
            raise ConfigError(f"--{option}: expected a length >= 0 in {spec!r}")
        low = int(params.get("min", 0))
    elif kind == "uniform":
        need("min", "max")
        a, b = params["min"], params["max"]
        if a != int(a) or b != int(b):
            raise ConfigError(f"--{option}: uniform bounds must be whole numbers in {spec!r}")
    elif kind == "normal":
        need("mean", "sd")
        a, b = params["mean"], params["sd"]
        if b < 0:
            raise ConfigError(f"--{option}: sd must be >= 0 in {spec!r}")
    else:
        need("sigma")
        b = params["sigma"]
        if b < 0:
            raise ConfigError(f"--{option}: sigma must be >= 0 in {spec!r}")
        if ("mean" in params) == ("median" in params):
            raise ConfigError(f"--{option}: lognormal needs exactly one of mean, median in {spec!r}")
        centre = params["mean"] if "mean" in params else params["median"]
        if centre <= 0:
            raise ConfigError(f"--{option}: lognormal mean/median must be > 0 in {spec!r}")
        # mean = exp(mu + sigma^2 / 2); median = exp(mu)
        a = math.log(centre) - (b * b / 2 if "mean" in params else 0.0)
    return LengthDistribution(
        kind, float(a), float(b), low=int(low), high=None if high is None else int(high), spec=spec
    )


# -- dataset files -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One dataset entry: a conversation's turns, with estimated lengths."""

    turns: tuple[tuple[str, str], ...]  # (role, text), roles user/assistant/system
    input_tokens: int  # of the first user turn (with any system turn before it)
    output_tokens: int | None  # of the first assistant reply, or the entry's output_tokens
    output_given: bool = False  # output_tokens came from the file, not from counting the reply

    @property
    def prompt(self) -> str:
        """The first user turn's text."""
        return next(text for role, text in self.turns if role == "user")

    def user_turns(self) -> list[str]:
        """Every user turn's text, in order."""
        return [text for role, text in self.turns if role == "user"]


@dataclass(frozen=True, slots=True)
class Dataset:
    """The filtered entries of one file."""

    path: str
    format: str
    entries: tuple[Entry, ...]
    skipped: int  # entries dropped by the length filters

    def sample(self, rng: random.Random) -> Entry:
        """Return a random entry."""
        return self.entries[rng.randrange(len(self.entries))]


def _error(path: str, line: int | None, message: str) -> ConfigError:
    where = f"{path} line {line}" if line is not None else path
    return ConfigError(f"--llm-dataset {where}: {message}")


def _turns_from_sharegpt(conversations: Any, path: str, line: int) -> list[tuple[str, str]]:
    if not isinstance(conversations, list):
        raise _error(path, line, '"conversations" must be a list of {"from", "value"} objects')
    turns = []
    for turn in conversations:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise _error(path, line, 'each conversation turn needs a string "value"')
        role = _ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise _error(path, line, f"unknown speaker {turn.get('from')!r}; expected human, gpt or system")
        turns.append((role, turn["value"]))
    return turns


def _entry_from_object(obj: Any, path: str, line: int) -> Entry | None:
    """Turn one JSON object into an entry; None when it has no user turn (skipped, as ShareGPT tools do)."""
    if not isinstance(obj, dict):
        raise _error(path, line, f"expected a JSON object, got {type(obj).__name__}")
    output_tokens = obj.get("output_tokens", obj.get("max_tokens"))
    if output_tokens is not None and (
        not isinstance(output_tokens, int) or isinstance(output_tokens, bool) or output_tokens < 1
    ):
        raise _error(path, line, f"output_tokens must be a positive integer, got {output_tokens!r}")
    prompt = obj.get("prompt", obj.get("text"))
    if "conversations" in obj:
        turns = _turns_from_sharegpt(obj["conversations"], path, line)
    elif "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not all(
            isinstance(m, dict)
            and isinstance(m.get("content"), str)
            and m.get("role") in ("user", "assistant", "system")
            for m in messages
        ):
            raise _error(path, line, '"messages" must be a list of {"role": user|assistant|system, "content": str}')
        turns = [(m["role"], m["content"]) for m in messages]
    elif isinstance(prompt, str):
        turns = [("user", prompt)]
    else:
        raise _error(path, line, 'expected "prompt", "text", "messages" or "conversations"')
    # Drop anything before the first user turn except a system prompt.
    while turns and turns[0][0] == "assistant":
        turns.pop(0)
    if not any(role == "user" for role, _ in turns):
        return None
    first_user = next(i for i, (role, _) in enumerate(turns) if role == "user")
    given = output_tokens is not None
    input_tokens = sum(estimate_tokens(text) for _, text in turns[: first_user + 1])
    if output_tokens is None:
        reply = next((text for role, text in turns[first_user + 1 :] if role == "assistant"), None)
        output_tokens = estimate_tokens(reply) if reply is not None else None
    return Entry(tuple(turns), input_tokens, output_tokens, output_given=given)


_SPACE = re.compile(r"\s*")


def _skip_space(text: str, pos: int) -> int:
    """Return the index of the first non-whitespace character of ``text`` at or after ``pos``."""
    match = _SPACE.match(text, pos)
    assert match is not None  # \s* matches everywhere, if only the empty string
    return match.end()


def _iter_json_array(text: str, path: str) -> Iterator[tuple[int, object]]:
    """Yield ``(line, object)`` for each element of a top-level JSON array, with its line number."""
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 0)
    if text[pos : pos + 1] != "[":
        raise _error(path, 1, "expected a JSON array of ShareGPT entries")
    pos = _skip_space(text, pos + 1)
    if text[pos : pos + 1] == "]":
        return
    while True:
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _error(path, exc.lineno, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
        yield line, obj
        pos = _skip_space(text, pos)
        char = text[pos : pos + 1]
        if char == "]":
            return
        if char != ",":
            line = text.count("\n", 0, pos) + 1
            raise _error(path, line, "not valid JSON (expected ',' or ']' between array elements)")
        pos = _skip_space(text, pos + 1)


def _iter_jsonl(text: str, path: str) -> Iterator[tuple[int, object]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise _error(path, number, f"not valid JSON ({exc.msg}, column {exc.colno})") from None


def detect_format(path: str, text: str) -> str:
    """Return ``sharegpt`` for a JSON array, ``jsonl`` otherwise."""
    stripped = text.lstrip()
    return "sharegpt" if stripped.startswith("[") else "jsonl"


def _within(value: int | None, bounds: tuple[int, int] | None) -> bool:
    if bounds is None:
        return True
    if value is None:
        return False
    return bounds[0] <= value <= bounds[1]


def load_dataset(
    path: str,
    *,
    format: str = "auto",
    input_tokens: tuple[int, int] | None = None,
    output_tokens: tuple[int, int] | None = None,
    tokenizer: str = "",
) -> Dataset:
    """Load and filter a dataset file, once per process (cached by path, mtime and filters).

    With ``tokenizer`` (``--llm-tokenizer``) the lengths the filters compare are exact counts
    (content tokens, special tokens aside); else estimates (words and punctuation marks).
    """
    return _load_cached(
        path, file_version(path, option="--llm-dataset"), format, input_tokens, output_tokens, tokenizer
    )


@lru_cache(maxsize=8)
def _load_cached(
    path: str,
    _mtime: int,
    format: str,
    input_tokens: tuple[int, int] | None,
    output_tokens: tuple[int, int] | None,
    tokenizer: str = "",
) -> Dataset:
    if format not in DATASET_FORMATS:
        raise ConfigError(f"--llm-dataset-format: expected one of {', '.join(DATASET_FORMATS)}, got {format!r}")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        line = None
        try:
            with open(path, "rb") as handle:
                line = handle.read()[: exc.start].count(b"\n") + 1
        except OSError:
            pass
        raise _error(path, line, "not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"--llm-dataset {path}: cannot read ({exc.strerror})") from None
    fmt = detect_format(path, text) if format == "auto" else format
    items = _iter_json_array(text, path) if fmt == "sharegpt" else _iter_jsonl(text, path)
    parsed = [_entry_from_object(obj, path, line) for line, obj in items]
    if tokenizer:
        parsed = _counted(parsed, tokenizer)
    entries, skipped = [], 0
    for entry in parsed:
        if entry is None or not (
            _within(entry.input_tokens, input_tokens) and _within(entry.output_tokens, output_tokens)
        ):
            skipped += 1
            continue
        entries.append(entry)
    if not entries:
        why = f" after the length filters ({skipped} dropped)" if skipped else ""
        raise ConfigError(f"--llm-dataset {path}: no usable entries{why}")
    return Dataset(path=path, format=fmt, entries=tuple(entries), skipped=skipped)


def _counted(entries: list[Entry | None], tokenizer: str) -> list[Entry | None]:
    """The entries with their lengths counted by the tokenizer (one batch for inputs, one for replies)."""
    from llmload.token_text import count_content

    real = [e for e in entries if e is not None]
    inputs = count_content(tokenizer, [_input_text(e) for e in real])
    replies = {i: _reply(e) for i, e in enumerate(real) if not e.output_given}
    reply_counts = dict(zip(replies, count_content(tokenizer, [r or "" for r in replies.values()]), strict=True))
    counted = {}
    for i, entry in enumerate(real):
        output = entry.output_tokens if entry.output_given or replies.get(i) is None else reply_counts[i]
        counted[id(entry)] = replace(entry, input_tokens=inputs[i], output_tokens=output)
    return [None if e is None else counted[id(e)] for e in entries]


def _input_text(entry: Entry) -> str:
    first_user = next(i for i, (role, _) in enumerate(entry.turns) if role == "user")
    return "\n".join(text for _role, text in entry.turns[: first_user + 1])


def _reply(entry: Entry) -> str | None:
    first_user = next(i for i, (role, _) in enumerate(entry.turns) if role == "user")
    return next((text for role, text in entry.turns[first_user + 1 :] if role == "assistant"), None)


# -- shared prefix ---------------------------------------------------------------------------


@lru_cache(maxsize=8)
def shared_prefix(n_tokens: int, seed: int) -> str:
    """Return the same ~``n_tokens``-token text in every process for a given seed ("" for 0)."""
    if n_tokens <= 0:
        return ""
    text = prompts.synthetic_text(n_tokens, random.Random(f"llmload-prefix:{seed}"))
    return f"Reference material:\n{text}\n"
