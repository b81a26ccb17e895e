"""Fault selection: seeded, rate-controlled, validated."""

from __future__ import annotations

import pytest

from llmload.errors import ConfigError
from llmload.simulator.faults import FAULT_KINDS, FaultConfig, FaultPlan


def draws(seed: int, rate: float, n: int = 2000) -> list[str | None]:
    plan = FaultPlan(config=FaultConfig(kind="http_500", rate=rate), seed=seed)
    return [plan.draw() for _ in range(n)]


def test_same_seed_same_faulty_requests():
    assert draws(3, 0.3) == draws(3, 0.3)
    assert draws(3, 0.3) != draws(4, 0.3)


def test_rate_is_the_share_of_faulty_requests():
    hits = sum(d is not None for d in draws(1, 0.25))
    assert 0.22 * 2000 < hits < 0.28 * 2000  # binomial sd ~19 at n=2000: ±3 sd
    assert all(d == "http_500" for d in draws(1, 1.0, 50))
    assert all(d is None for d in draws(1, 0.0, 50))


def test_no_fault_configured():
    assert FaultPlan().draw() is None


def test_kinds_and_validation():
    assert FAULT_KINDS == (
        "http_429",
        "http_500",
        "http_503",
        "http_400",
        "disconnect",
        "malformed",
        "incomplete",
        "stall",
    )
    with pytest.raises(ConfigError, match="unknown fault 'boom'.*http_429"):
        FaultConfig(kind="boom")
    with pytest.raises(ConfigError, match="--fault-rate"):
        FaultConfig(kind="stall", rate=1.5)
    with pytest.raises(ConfigError, match="--fault-after"):
        FaultConfig(kind="stall", after=-1)
