"""Prometheus exporter (being built in issue 3): options and registration entry points."""

from __future__ import annotations

from typing import Any


def add_arguments(parser: Any) -> None:
    """Register the exporter's options."""


def register(environment: Any, plugin: Any) -> None:
    """Start the exporter on the master or local process when asked to."""
