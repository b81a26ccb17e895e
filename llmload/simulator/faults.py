"""Injected faults: which requests fail, and how.

A fault applies to a share ``rate`` of generation requests, chosen by a random
generator seeded from ``--seed``, in the order requests arrive: the same seed
and the same request order give the same faulty requests.

HTTP faults answer at once with an OpenAI-style error body. Stream faults
let ``after`` tokens through first (or the whole answer when it is shorter):

* ``disconnect``: close the TCP connection in the middle of the chunked body;
* ``malformed``: send ``data: {not json`` and end the body (no ``[DONE]``);
* ``incomplete``: end the chunked body cleanly, with no finish_reason and no ``[DONE]``;
* ``stall``: send nothing more for ``stall_s`` seconds, then close the connection.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llmload.errors import ConfigError

HTTP_FAULTS = {"http_429": 429, "http_500": 500, "http_503": 503, "http_400": 400}
STREAM_FAULTS = ("disconnect", "malformed", "incomplete", "stall")
FAULT_KINDS = (*HTTP_FAULTS, *STREAM_FAULTS)

#: Retry-After (seconds) sent with injected 429 and 503 answers.
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class FaultConfig:
    """What ``--fault``, ``--fault-rate``, ``--fault-after`` and ``--stall-s`` asked for."""

    kind: str | None = None
    rate: float = 1.0
    after: int = 5
    stall_s: float = 30.0

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in FAULT_KINDS:
            raise ConfigError(f"unknown fault {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ConfigError(f"--fault-rate must be between 0 and 1, got {self.rate}")
        if self.after < 0:
            raise ConfigError(f"--fault-after must be >= 0, got {self.after}")
        if self.stall_s < 0:
            raise ConfigError(f"--stall-s must be >= 0, got {self.stall_s}")


class FaultPlan:
    """Decides, request by request, whether the configured fault strikes."""

    def __init__(self, *, config: FaultConfig | None = None, seed: int | None = None) -> None:
        self.config = config or FaultConfig()
        # Own generator, so answer words and fault choices do not shift each other.
        self._rng = random.Random(f"llmload-sim-faults-{0 if seed is None else seed}")

    def draw(self) -> str | None:
        """Return the fault kind for the next request, or None when it is served normally."""
        kind = self.config.kind
        if kind is None:
            return None
        if self.config.rate >= 1.0:
            return kind
        return kind if self._rng.random() < self.config.rate else None
