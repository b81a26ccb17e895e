"""This process's CPU use, measured once per interval by the self-check and read by the gauges."""

from __future__ import annotations

import psutil


class CpuMeter:
    """This process's CPU use, percent of one core: sampled once per interval, read by anyone."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent()
        self.last_percent = 0.0
        """The latest sample (0 before the first)."""

    def sample(self) -> float:
        """Measure the CPU use since the previous sample, keep it as ``last_percent`` and return it."""
        self.last_percent = float(self._process.cpu_percent())
        return self.last_percent
