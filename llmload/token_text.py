"""Prompts of an exact number of tokens, with leading blocks of shared text (``--llm-tokenizer``).

A prompt is built from *pieces*: strings that are each exactly one token and
that stay one token each when joined. Every piece is a space followed by
letters (``" the"``, ``" river"``), so a text of ``n`` pieces is ``n`` tokens:

* :class:`TokenizerText` reads a local Hugging Face tokenizer (``tokenizer.json``,
  or a folder holding one; loaded with the ``tokenizers`` package, never
  downloaded). Its pieces are the vocabulary entries that decode to a space and
  letters and re-encode to themselves alone. A byte-level BPE pre-tokenizer
  (GPT-2, Llama 3, Qwen, Mistral-Nemo...) splits text before each space, so a
  concatenation of pieces re-encodes to the very ids it was made of. Each piece
  is decoded once, on construction, and a probe text checks the property (and
  measures the tokens the tokenizer adds around any text, such as a BOS);
* :class:`WordText` needs no tokenizer: its pieces are common English words,
  exact for the simulator's rule (one token per word, :mod:`llmload.simulator.tokens`)
  and about right for real tokenizers.

``prompt(n, hash_ids=[...])`` leads with the blocks of a trace's ``hash_ids``:
``block(id, block_tokens)`` is seeded by ``(seed, id)`` alone, so two prompts
sharing leading block ids share byte-identical leading text and, because blocks
end on a piece boundary, the same leading token ids (what a server's prefix
cache reuses). A shorter block is the start of the longer one with the same id.
The rest is random pieces from the caller's ``rng``. Building a prompt is string
joins only: no tokenizer call.

Chat: a chat template adds tokens (role headers, end-of-turn) that the
``tokenizers`` package alone cannot apply, so these prompts are exact on
``/v1/completions``; on ``/v1/chat/completions`` the server adds its template's
tokens to the count.
"""

from __future__ import annotations

import functools
import os
import random
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from llmload.errors import ConfigError
from llmload.prompts import WORDS
from llmload.simulator.tokens import COMPLETION_OVERHEAD, count_text_tokens

if TYPE_CHECKING:
    from tokenizers import Tokenizer

#: Fewest usable pieces a tokenizer must have.
MIN_PIECES = 50
#: Blocks whose text is kept; the least recently used beyond this are rebuilt on demand.
MAX_CACHED_BLOCKS = 16384
_PIECE_RE = re.compile(r" [A-Za-z]+")
_PROBE_LENGTHS = (1, 2, 7, 4096)
_PROBE_SEED = 20240601


class TextMaker(Protocol):
    """Makes text of an exact token count, and prompts that lead with shared blocks."""

    special_tokens: int
    """Tokens the tokenizer adds around any text (a BOS...)."""
    exact: bool
    """True when counts come from a real tokenizer."""

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """``count`` of each text, in one call."""
        ...

    def count(self, text: str) -> int:
        """Tokens of ``text``, special tokens included (what a ``/v1/completions`` server counts)."""
        ...

    def text(self, n_tokens: int, rng: random.Random) -> str:
        """Random text of exactly ``n_tokens`` content tokens (special tokens excluded)."""
        ...

    def block(self, block_id: int, n_tokens: int) -> str:
        """The text of ``n_tokens`` content tokens of block ``block_id``: the same in every process for one seed."""
        ...

    def prompt(
        self, n_tokens: int, *, hash_ids: Sequence[int] = (), block_tokens: int = 512, rng: random.Random
    ) -> str:
        """A completions prompt of exactly ``n_tokens`` tokens (special tokens included) led by blocks."""
        ...


class _PieceText:
    """Texts joined from pieces that are one token each, joined or not (shared by both makers)."""

    special_tokens: int
    exact: bool

    def __init__(self, pieces: Sequence[str], *, seed: int) -> None:
        self._pieces = np.array(pieces, dtype=object)
        self._seed = seed
        self._blocks: OrderedDict[tuple[int, int], str] = OrderedDict()

    def count(self, text: str) -> int:  # pragma: no cover - each maker has its own
        raise NotImplementedError

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """``count`` of each text."""
        return [self.count(text) for text in texts]

    def _join(self, rng: random.Random, n_tokens: int) -> str:
        """``n_tokens`` random pieces, joined. The first ``k`` of ``n`` draws are the draws for ``k``."""
        if n_tokens <= 0:
            return ""
        # One getrandbits call gives n 32-bit draws in order (the first k are those of a call for k):
        # far quicker than n rng.choice calls. The modulo bias is below 1e-4 for any vocabulary.
        raw = rng.getrandbits(32 * n_tokens).to_bytes(4 * n_tokens, "little")
        picks = np.frombuffer(raw, dtype="<u4") % len(self._pieces)
        return "".join(self._pieces[picks].tolist())

    def text(self, n_tokens: int, rng: random.Random) -> str:
        """Random text of exactly ``n_tokens`` content tokens, starting with a space."""
        return self._join(rng, n_tokens)

    def block(self, block_id: int, n_tokens: int) -> str:
        """Block ``block_id``'s first ``n_tokens`` tokens of text (seeded by the seed and the id alone)."""
        key = (block_id, n_tokens)
        text = self._blocks.get(key)
        if text is not None:
            self._blocks.move_to_end(key)
            return text
        # Seeding with a str hashes it with SHA-512: the same in every process, whatever PYTHONHASHSEED.
        text = self._join(random.Random(f"llmload-block:{self._seed}:{block_id}"), n_tokens)
        self._blocks[key] = text
        if len(self._blocks) > MAX_CACHED_BLOCKS:
            self._blocks.popitem(last=False)
        return text

    def prompt(
        self, n_tokens: int, *, hash_ids: Sequence[int] = (), block_tokens: int = 512, rng: random.Random
    ) -> str:
        """A prompt of exactly ``n_tokens`` tokens, special tokens included: the blocks of ``hash_ids``, then random.

        Blocks beyond ``n_tokens`` are left out and the last one that fits only
        in part is cut to what is left (it is the start of the whole block).
        """
        left = n_tokens - self.special_tokens
        if left < 1:
            raise ConfigError(
                f"a prompt of {n_tokens} tokens is too short: the tokenizer adds {self.special_tokens} "
                f"around any text, so a prompt has at least {self.special_tokens + 1}"
            )
        if block_tokens < 1:
            raise ConfigError(f"block size must be at least 1 token, not {block_tokens}")
        parts = []
        for block_id in hash_ids:
            if left <= 0:
                break
            size = min(block_tokens, left)
            parts.append(self.block(block_id, size))
            left -= size
        if left > 0:
            parts.append(self._join(rng, left))
        return "".join(parts)


class TokenizerText(_PieceText):
    """Exact texts for a local Hugging Face tokenizer (``tokenizer.json``, or a folder holding one)."""

    exact = True

    def __init__(self, path: str, *, seed: int = 0) -> None:
        from tokenizers import Tokenizer

        file = _tokenizer_file(path)
        try:
            tokenizer = Tokenizer.from_file(file)
        except Exception as exc:  # tokenizers raises a bare Exception for a bad file
            raise ConfigError(
                f"--llm-tokenizer: {path}: not a Hugging Face tokenizer.json ({_one_line(exc)})"
            ) from None
        # A tokenizer.json may carry truncation or padding settings: they would change every count.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer: Tokenizer = tokenizer
        ids, pieces = _safe_pieces(tokenizer)
        if len(ids) < MIN_PIECES:
            raise ConfigError(
                f"--llm-tokenizer: {path}: only {len(ids)} tokens decode to a space and letters and re-encode to "
                f"themselves (at least {MIN_PIECES} needed); llmload builds exact prompts with byte-level BPE "
                "tokenizers such as GPT-2's, Llama 3's or Qwen's"
            )
        self._ids = ids
        super().__init__(pieces, seed=seed)
        self.special_tokens = self._probe(path)

    def _probe(self, path: str) -> int:
        """Check that joined pieces re-encode to their own ids; return the tokens added around a text."""
        rng = random.Random(_PROBE_SEED)
        added = set()
        for length in _PROBE_LENGTHS:
            picks = [rng.randrange(len(self._ids)) for _ in range(length)]
            text = "".join(self._pieces[picks].tolist())
            content = self._tokenizer.encode(text, add_special_tokens=False).ids
            if content != [self._ids[i] for i in picks]:
                raise ConfigError(
                    f"--llm-tokenizer: {path}: joined words do not re-encode to their own tokens (a probe "
                    f"of {length} tokens); llmload builds exact prompts with byte-level BPE tokenizers"
                )
            added.add(self.count(text) - length)
        if len(added) != 1 or min(added) < 0:
            raise ConfigError(
                f"--llm-tokenizer: {path}: the tokenizer adds a varying number of tokens around a text "
                f"({', '.join(str(n) for n in sorted(added))})"
            )
        return added.pop()

    def count(self, text: str) -> int:
        """Tokens of ``text``, special tokens included."""
        return len(self._tokenizer.encode(text, add_special_tokens=True).ids)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """``count`` of each text, encoded as one batch (in parallel)."""
        return [len(encoding.ids) for encoding in self._tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def ids(self, text: str) -> list[int]:
        """Token ids of ``text``, special tokens included."""
        return list(self._tokenizer.encode(text, add_special_tokens=True).ids)

    @property
    def vocabulary(self) -> int:
        """How many tokens texts are made of."""
        return len(self._ids)


class WordText(_PieceText):
    """Texts of common English words, exact for the simulator's rule (one token per word), no tokenizer needed."""

    # A completions prompt costs the simulator COMPLETION_OVERHEAD more tokens (its BOS).
    special_tokens = COMPLETION_OVERHEAD
    exact = False

    def __init__(self, *, seed: int = 0) -> None:
        # Words only: the simulator counts a punctuation mark as a token of its own.
        super().__init__([f" {word}" for word in WORDS], seed=seed)

    def count(self, text: str) -> int:
        """Tokens of ``text`` under the simulator's rule, its BOS included."""
        return COMPLETION_OVERHEAD + count_text_tokens(text)


def count_content(path: str, texts: Sequence[str]) -> list[int]:
    """Tokens of each text without the tokenizer's special tokens (an answer's, a dataset entry's)."""
    tokenizer = load_text_maker(path, seed=0)
    return [max(n - tokenizer.special_tokens, 0) for n in tokenizer.count_many(list(texts))]


@functools.lru_cache(maxsize=8)
def load_text_maker(path: str, *, seed: int) -> TextMaker:
    """The text maker for ``--llm-tokenizer PATH``: a :class:`TokenizerText`, or :class:`WordText` without a path."""
    return TokenizerText(path, seed=seed) if path else WordText(seed=seed)


def _tokenizer_file(path: str) -> str:
    """``path`` itself or ``path/tokenizer.json``; ConfigError when there is none."""
    full = os.path.expanduser(path)
    if os.path.isdir(full):
        full = os.path.join(full, "tokenizer.json")
        if not os.path.isfile(full):
            raise ConfigError(f"--llm-tokenizer: {path}: no tokenizer.json in this folder")
    elif not os.path.exists(full):
        raise ConfigError(f"--llm-tokenizer: {path}: no such file or folder")
    if not os.access(full, os.R_OK):
        raise ConfigError(f"--llm-tokenizer: {path}: cannot be read")
    return full


def _safe_pieces(tokenizer: Tokenizer) -> tuple[list[int], list[str]]:
    """Ids and texts of the tokens that decode to a space and letters and re-encode to themselves alone."""
    specials = set(tokenizer.get_added_tokens_decoder())
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    decoded = tokenizer.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
    candidates = [(i, text) for i, text in enumerate(decoded) if i not in specials and _PIECE_RE.fullmatch(text)]
    encoded = tokenizer.encode_batch([text for _, text in candidates], add_special_tokens=False)
    safe = [(i, text) for (i, text), encoding in zip(candidates, encoded, strict=True) if encoding.ids == [i]]
    return [i for i, _ in safe], [text for _, text in safe]


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."
