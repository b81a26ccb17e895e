"""Weighted shares: the one rule for spreading users over backends and requests over LoRA adapters.

A weight is a number >= 0; a weight of 0 keeps an entry listed but unused; all zero is
refused. ``SmoothWeightedRoundRobin`` hands out entries in exact proportion to their weights
(nginx's smooth weighted round robin: after ``sum(weights)`` picks each entry was picked
``weight`` times, interleaved rather than in runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from llmload.errors import ConfigError

T = TypeVar("T")


def check_weight(value: object, *, where: str, key: str = "weight") -> float:
    """Return a valid weight (a number >= 0) or raise ``ConfigError`` saying where."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise ConfigError(f"{where}: {key} must be a number >= 0, got {value!r}")
    return float(value)


def check_not_all_zero(weights: Sequence[float], *, where: str) -> None:
    if not any(w > 0 for w in weights):
        raise ConfigError(f"{where}: every weight is 0")


def parse_named_weights(text: str, *, option: str) -> tuple[tuple[str, float], ...]:
    """Parse ``name=weight,name,...`` (a missing weight is 1) under the weight rule."""
    out: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, weight_text = part.partition("=")
        name = name.strip()
        if not name:
            raise ConfigError(f"--{option}: an entry has no name in {text!r}")
        weight: object = 1.0
        if sep:
            try:
                weight = float(weight_text)
            except ValueError:
                weight = weight_text.strip()
        if name in {n for n, _ in out}:
            raise ConfigError(f"--{option}: {name!r} is listed twice")
        out.append((name, check_weight(weight, where=f"--{option} {name}")))
    if not out:
        raise ConfigError(f"--{option}: expected name=weight,... got {text!r}")
    check_not_all_zero([w for _, w in out], where=f"--{option}")
    return tuple(out)


class SmoothWeightedRoundRobin(Generic[T]):
    """Entries in exact proportion to their weights (entries of weight 0 never come)."""

    def __init__(self, weighted: Sequence[tuple[T, float]]) -> None:
        self.entries = [(item, weight) for item, weight in weighted if weight > 0]
        self._current = [0.0] * len(self.entries)
        self._total = sum(weight for _, weight in self.entries)

    def next(self) -> T:
        best = 0
        for i, (_, weight) in enumerate(self.entries):
            self._current[i] += weight
            if self._current[i] > self._current[best]:
                best = i
        self._current[best] -= self._total
        return self.entries[best][0]
