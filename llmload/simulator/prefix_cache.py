"""Automatic prefix caching, as vLLM V1 does it: chained block hashes in an LRU.

A prompt's token sequence (``tokens.prompt_token_sequence`` / ``chat_token_sequence``)
is cut into blocks of ``block_size`` tokens; only full blocks count. Block ``i``'s
hash is ``hash((hash of block i-1, tokens of block i))``, so equal hashes mean
equal prefixes. The first parent is a per-model seed (the served model or a LoRA
adapter: adapters never share cached blocks, as vLLM keys blocks by LoRA).

The cache is an LRU of block hashes holding at most the KV cache's blocks. When a
request is first scheduled its leading full blocks found in the cache are its hit
(at most ``(num_tokens - 1) // block_size`` blocks: the last prompt token is
always computed), counted in ``queries`` and ``hits``; then every one of its full
prompt blocks is inserted (most recently used), evicting the least recently used
hashes beyond capacity (tail blocks before head blocks). docs/simulator.md, "Prefix caching", has the rules.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmload.simulator.scheduler import SimRequest

#: KV-cache tokens the cache may hold on the ``fixed`` profile without ``--kv-cache-tokens``.
FIXED_PROFILE_CACHE_TOKENS = 1_000_000


class PrefixCache:
    """An LRU of chained block hashes, with vLLM's query and hit counters (in tokens)."""

    __slots__ = ("block_size", "capacity", "_lru", "queries", "hits")

    def __init__(self, *, capacity_blocks: int, block_size: int = 16) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self.capacity = max(0, capacity_blocks)
        self._lru: OrderedDict[int, None] = OrderedDict()
        self.queries = 0
        """Prompt tokens looked up (``vllm:prefix_cache_queries_total``)."""
        self.hits = 0
        """Prompt tokens found cached (``vllm:prefix_cache_hits_total``)."""

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, block_hash: int) -> bool:
        return block_hash in self._lru

    def block_hashes(self, tokens: Sequence[object], seed: object = None) -> list[int]:
        """Chained hashes of the full blocks of ``tokens`` (token strings or ids, hashable)."""
        bs = self.block_size
        parent = hash(("llmload-sim-prefix", seed))
        out = []
        for start in range(0, len(tokens) - bs + 1, bs):
            parent = hash((parent, tuple(tokens[start : start + bs])))
            out.append(parent)
        return out

    def match(self, hashes: Sequence[int], num_tokens: int) -> int:
        """Tokens of the longest cached run of leading blocks, leaving the last token to compute.

        Pure lookup: nothing is counted or touched (see ``admit``).
        """
        lru = self._lru
        limit = min(len(hashes), max(0, num_tokens - 1) // self.block_size)
        n = 0
        while n < limit and hashes[n] in lru:
            n += 1
        return n * self.block_size

    def admit(self, req: SimRequest, hit_tokens: int) -> None:
        """Record ``req``'s first scheduling (counters, once per request) and cache its blocks."""
        if req.block_hashes is None:
            return
        if not req.cache_queried:
            req.cache_queried = True
            self.queries += req.num_tokens
            self.hits += hit_tokens
        self.insert(req.block_hashes)

    def lookup(self, req: SimRequest) -> int:
        """``match`` then ``admit`` in one call (engines with no admission control); return the hit tokens."""
        if req.block_hashes is None:
            return 0
        hit = self.match(req.block_hashes, req.num_tokens)
        self.admit(req, hit)
        return hit

    def insert(self, hashes: Sequence[int]) -> None:
        """Mark ``hashes`` most recently used (adding the new ones), then evict beyond capacity.

        In reverse order, as vLLM frees a request's blocks: a prefix's tail is evicted
        before its head, so a shorter prefix keeps hitting.
        """
        if not hashes:
            return
        lru = self._lru
        for h in reversed(hashes):
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
        excess = len(lru) - self.capacity
        for _ in range(excess):
            lru.popitem(last=False)
