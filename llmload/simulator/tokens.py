"""The simulator's own tokenizer and its seeded output vocabulary.

Counting rule (also in docs/simulator.md):

* a text has ``len(re.findall(r"\\w+|[^\\w\\s]", text))`` tokens: each run of
  word characters is one token and so is each other non-space character;
* a chat request adds ``CHAT_REQUEST_OVERHEAD`` (26) tokens for the template
  around the conversation (BOS, default system header, assistant prompt) and
  ``CHAT_MESSAGE_OVERHEAD`` (5) per message (role header and end-of-turn),
  roughly what Llama 3.1's template adds;
* a completions prompt adds ``COMPLETION_OVERHEAD`` (1, the BOS token); a
  prompt given as token ids counts one token per id.

Token sequences (for the prefix cache, ``prefix_cache.py``): the same rule gives
each prompt's tokens in order, as strings, with the overhead tokens as fixed
marker strings where a template puts them: BOS first for completions; for chat,
BOS and the default system header (22 tokens) first, the role header (4 tokens)
before each message's content and end-of-turn (1) after it, the assistant
generation prompt (4) last. An image is its patch count of one marker derived
from its data. With ``--tokenizer`` (a Hugging Face ``tokenizer.json``) texts are
that tokenizer's ids instead (completions: ``encode(prompt,
add_special_tokens=True)``; chat contents without special tokens, the template
markers around them as above).

Output tokens are single words drawn from a seeded vocabulary, one word per
token: " word" (with a leading space) except the first token of an answer. So
the answer text re-tokenized by the same rule gives back exactly the number of
tokens sent.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import orjson

from llmload.errors import ConfigError

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
CHAT_REQUEST_OVERHEAD = 26
CHAT_MESSAGE_OVERHEAD = 5
COMPLETION_OVERHEAD = 1
IMAGE_PATCH_PX = 28
"""An image costs one prompt token per 28x28-pixel patch (a Qwen2-VL-style encoder: 14-px patches merged 2x2)."""

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have "
    "an they you were their one all we can her has there been if more when will would who so no she "
    "other its may these about some into them out time only could new than first two like then any "
    "also our made over most such after way where many through well years before must between same "
    "much those each under high both used three very long system often state number world still part "
    "given large small model token stream batch server request latency memory cache layer value point "
    "order field light water energy signal result method process engine queue answer question reason "
    "example simple second third always never again around below above along across within without "
    "during against among every several general common public early later local power class level "
    "place group line area form case fact idea house river city country market story music paper"
).split()

#: Length of the seeded word sequence answers are cut from.
SEQUENCE_LEN = 4096


BOS = "<|begin_of_text|>"
_HEADER = ("<|start_header_id|>", "<|end_header_id|>", "\n\n")
_EOT = "<|eot_id|>"
CHAT_PREFIX: tuple[str, ...] = (
    BOS,
    _HEADER[0],
    "system",
    *_HEADER[1:],
    *(f"<|system_header:{i}|>" for i in range(16)),  # "Cutting Knowledge Date: ...\nToday Date: ..."
    _EOT,
)
"""Chat template tokens before the first message: BOS and the default system header."""
CHAT_SUFFIX: tuple[str, ...] = (_HEADER[0], "assistant", *_HEADER[1:])
"""Chat template tokens after the last message: the assistant generation prompt."""
assert len(CHAT_PREFIX) + len(CHAT_SUFFIX) == CHAT_REQUEST_OVERHEAD
assert len(_HEADER) + 2 == CHAT_MESSAGE_OVERHEAD  # role header (with the role) + end-of-turn


class ApiInputError(ValueError):
    """A request body the simulator cannot count (mapped to HTTP 400)."""


class TokenizerError(ConfigError):
    """``--tokenizer`` names no usable tokenizer file."""


class PromptTokenizer(Protocol):
    """Turns texts into token sequences (the word rule, or a Hugging Face tokenizer)."""

    def text(self, text: str) -> list[Any]:
        """Tokens of ``text`` alone (no special tokens)."""
        ...

    def prompt(self, text: str) -> list[Any]:
        """Tokens of a completions prompt, special tokens (BOS) included."""
        ...


class WordTokenizer:
    """The simulator's own rule: ``TOKEN_RE`` tokens as strings, BOS as a marker."""

    def text(self, text: str) -> list[Any]:
        return TOKEN_RE.findall(text)

    def prompt(self, text: str) -> list[Any]:
        return [BOS, *TOKEN_RE.findall(text)]


WORD_TOKENIZER = WordTokenizer()


class HFTokenizer:
    """A local Hugging Face tokenizer (``tokenizers`` package): token ids."""

    def __init__(self, tokenizer: Any, path: str) -> None:
        self._tok = tokenizer
        self.path = path

    def text(self, text: str) -> list[Any]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def prompt(self, text: str) -> list[Any]:
        return list(self._tok.encode(text, add_special_tokens=True).ids)


@lru_cache(maxsize=8)
def load_tokenizer(path: str) -> HFTokenizer:
    """Load ``path`` (a ``tokenizer.json`` file or a folder holding one); raise TokenizerError."""
    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
        if not file.is_file():
            raise TokenizerError(f"--tokenizer {path}: no tokenizer.json in that folder")
    elif not file.is_file():
        raise TokenizerError(f"--tokenizer {path}: no such file")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TokenizerError("--tokenizer needs the 'tokenizers' package (pip install tokenizers)") from None
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # the Rust side raises plain Exception on any bad file
        detail = " ".join(str(exc).split())[:200]
        raise TokenizerError(f"--tokenizer {path}: not a Hugging Face tokenizer file ({detail})") from None
    return HFTokenizer(tokenizer, str(file))


def count_text_tokens(text: str) -> int:
    """Return the number of tokens in ``text``."""
    return len(TOKEN_RE.findall(text))


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += count_text_tokens(part["text"])
            elif isinstance(part, dict) and part.get("type") == "image_url":
                total += image_tokens(part)
        return total
    raise ApiInputError("message content must be a string, a list of content parts, or null")


def image_size(part: dict[str, Any]) -> tuple[int, int]:
    """Width and height of an ``image_url`` content part's data URL (the simulator fetches nothing)."""
    import base64
    import binascii
    import io

    from PIL import Image, UnidentifiedImageError

    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise ApiInputError("llmload sim reads images from base64 data URLs only (data:image/...;base64,...)")
    try:
        with Image.open(io.BytesIO(base64.b64decode(url.split(";base64,", 1)[1], validate=True))) as picture:
            width, height = picture.size
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError):
        raise ApiInputError("an image_url data URL does not hold a readable image") from None
    return int(width), int(height)


def image_marker(part: dict[str, Any]) -> str:
    """The token an image stands for in a token sequence: derived from its data, one per patch."""
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    digest = hashlib.blake2b(str(url).encode(), digest_size=8).hexdigest()
    return f"<|image:{digest}|>"


def image_tokens(part: dict[str, Any]) -> int:
    """Prompt tokens of one image: its 28x28 patches (``IMAGE_PATCH_PX``)."""
    width, height = image_size(part)
    return -(-width // IMAGE_PATCH_PX) * -(-height // IMAGE_PATCH_PX)


def count_images(messages: Any) -> int:
    """Image content parts in a chat ``messages`` list."""
    if not isinstance(messages, list):
        return 0
    return sum(
        1
        for message in messages
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )


def count_chat_tokens(messages: Any) -> int:
    """Return the prompt tokens of a chat ``messages`` list, template overhead included."""
    if not isinstance(messages, list) or not messages:
        raise ApiInputError("'messages' must be a non-empty list")
    total = CHAT_REQUEST_OVERHEAD
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiInputError("each message must be an object with a string 'role'")
        total += CHAT_MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
    return total


def _content_sequence(content: Any, tokenizer: PromptTokenizer) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return tokenizer.text(content)
    if isinstance(content, list):
        out: list[Any] = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out += tokenizer.text(part["text"])
            elif isinstance(part, dict) and part.get("type") == "image_url":
                out += [image_marker(part)] * image_tokens(part)
        return out
    raise ApiInputError("message content must be a string, a list of content parts, or null")


def chat_token_sequence(messages: Any, tokenizer: PromptTokenizer = WORD_TOKENIZER) -> list[Any]:
    """The prompt tokens of a chat ``messages`` list in order, template markers included.

    With the word rule its length is ``count_chat_tokens(messages)``.
    """
    if not isinstance(messages, list) or not messages:
        raise ApiInputError("'messages' must be a non-empty list")
    out: list[Any] = list(CHAT_PREFIX)
    start, end, nl = _HEADER
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiInputError("each message must be an object with a string 'role'")
        out += (start, message["role"], end, nl)
        out += _content_sequence(message.get("content"), tokenizer)
        out.append(_EOT)
    out += CHAT_SUFFIX
    return out


def prompt_token_sequence(prompt: Any, tokenizer: PromptTokenizer = WORD_TOKENIZER) -> list[Any]:
    """The tokens of a completions ``prompt`` in order (BOS first for a text; token ids as given).

    With the word rule its length is ``count_prompt_tokens(prompt)``.
    """
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenizer.prompt(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    if isinstance(prompt, list) and len(prompt) > 1:
        raise ApiInputError("llmload sim serves one prompt per request")
    raise ApiInputError("'prompt' must be a non-empty string or list of token ids")


def count_prompt_tokens(prompt: Any) -> int:
    """Return the tokens of a completions ``prompt`` (text, token ids, or a list of one of them)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return COMPLETION_OVERHEAD + count_text_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if isinstance(prompt, list) and len(prompt) > 1:
        raise ApiInputError("llmload sim serves one prompt per request")
    raise ApiInputError("'prompt' must be a non-empty string or list of token ids")


class Vocabulary:
    """Seeded output words, pre-encoded as JSON string fragments."""

    def __init__(self, *, seed: int | None = None) -> None:
        rng = random.Random(0 if seed is None else seed)
        self.words = tuple(_WORDS)
        self.sequence = [rng.randrange(len(self.words)) for _ in range(SEQUENCE_LEN)]
        self.first_json = [orjson.dumps(w) for w in self.words]
        self.spaced_json = [orjson.dumps(" " + w) for w in self.words]
        self._rng = rng

    def start_offset(self) -> int:
        """Return where the next answer starts in the word sequence (seeded, in request order)."""
        return self._rng.randrange(SEQUENCE_LEN)

    def word_json(self, offset: int, k: int) -> bytes:
        """JSON string fragment of token ``k`` of the answer at ``offset``."""
        idx = self.sequence[(offset + k) % SEQUENCE_LEN]
        return self.spaced_json[idx] if k else self.first_json[idx]

    def fragments(self, offset: int, first: int, count: int) -> list[bytes]:
        """JSON string fragments for tokens ``first .. first+count-1`` of the answer at ``offset``."""
        seq, spaced = self.sequence, self.spaced_json
        if count == 1 and first > 0:
            return [spaced[seq[(offset + first) % SEQUENCE_LEN]]]
        out = []
        for k in range(first, first + count):
            idx = seq[(offset + k) % SEQUENCE_LEN]
            out.append(self.first_json[idx] if k == 0 else spaced[idx])
        return out

    def text(self, offset: int, count: int) -> str:
        """Return the answer text of ``count`` tokens at ``offset``."""
        seq, words = self.sequence, self.words
        return " ".join(words[seq[(offset + k) % SEQUENCE_LEN]] for k in range(count))
