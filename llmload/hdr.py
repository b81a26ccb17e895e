"""The one adapter around the ``hdrhistogram`` package (imported as ``hdrh``).

llmload records every latency and rate sample into an HdrHistogram. hdrh's
public ``record_value`` costs several Python calls per value, which the hot
path (one call per token gap) cannot afford, so recording computes hdrh's
counts index inline from the histogram's bucket layout (its attributes
``counts``, ``sub_bucket_mask``, ``unit_magnitude``,
``sub_bucket_half_count_magnitude``, ``sub_bucket_half_count``,
``total_count``, ``min_value``, ``max_value``). Those are hdrh internals: this
module is the only place that touches them, pyproject.toml bounds the
version from above, and ``tests/unit/test_hdr.py`` checks the inline index
against hdrh's own ``record_value`` at the installed version.
"""

from __future__ import annotations

import ctypes
import sys
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import accumulate

from hdrh.histogram import HdrHistogram


class ScaledHistogram:
    """An HdrHistogram of positive integers in ``[1, highest]`` (values are clamped into that range)."""

    __slots__ = ("_hist", "highest")

    def __init__(self, *, highest: int, significant_digits: int) -> None:
        self._hist = HdrHistogram(1, highest, significant_digits)
        self.highest = highest

    def clear(self) -> None:
        """Empty the histogram in place (hdrh's ``reset``, with one ``memset`` instead of a loop over cells).

        Windows recycle their histograms this way instead of allocating new ones: a latency histogram
        is about 184 KiB, and allocating and freeing them every few seconds fragments the heap.
        """
        hist = self._hist
        ctypes.memset(ctypes.addressof(hist.counts), 0, ctypes.sizeof(hist.counts))
        hist.total_count = 0
        hist.min_value = sys.maxsize
        hist.max_value = 0

    def record(self, scaled: int) -> None:
        """Add one value (hdrh's ``record_value``, inlined)."""
        hist, highest = self._hist, self.highest
        scaled = 1 if scaled < 1 else highest if scaled > highest else scaled
        half_mag = hist.sub_bucket_half_count_magnitude
        bucket = (scaled | hist.sub_bucket_mask).bit_length() - hist.unit_magnitude - half_mag - 1
        index = ((bucket + 1) << half_mag) + (scaled >> (bucket + hist.unit_magnitude))
        hist.counts[index - hist.sub_bucket_half_count] += 1
        hist.total_count += 1
        if scaled < hist.min_value:
            hist.min_value = scaled
        if scaled > hist.max_value:
            hist.max_value = scaled

    def record_scaled_floats(self, values: list[float], scale: float) -> None:
        """Add ``round(v * scale)`` for every value of a non-empty list, in one pass."""
        hist, highest = self._hist, self.highest
        # bucket = bit_length(v | sub_bucket_mask) - unit_magnitude - (sub_bucket_half_count_magnitude + 1),
        # index = ((bucket + 1) << half_magnitude) + (v >> (bucket + unit_magnitude)) - sub_bucket_half_count.
        counts, mask, unit = hist.counts, hist.sub_bucket_mask, hist.unit_magnitude
        half_mag, half = hist.sub_bucket_half_count_magnitude, hist.sub_bucket_half_count
        shift = unit + half_mag + 1
        for value in values:
            scaled = round(value * scale)
            if scaled < 1:
                scaled = 1
            elif scaled > highest:
                scaled = highest
            bucket = (scaled | mask).bit_length() - shift
            counts[((bucket + 1) << half_mag) + (scaled >> (bucket + unit)) - half] += 1
        # Scaling and clamping are monotonic, so the scaled extremes are those of the extremes.
        lo, hi = min(values), max(values)
        hist.total_count += len(values)
        hist.min_value = min(hist.min_value, min(max(round(lo * scale), 1), highest))
        hist.max_value = max(hist.max_value, min(max(round(hi * scale), 1), highest))

    def value_at_percentile(self, q: float) -> int:
        """Return the (highest equivalent) value at percentile ``q`` (0-100)."""
        return int(self._hist.get_value_at_percentile(q))

    def values_at_percentiles(self, qs: Sequence[float]) -> dict[float, int]:
        """Return the value at each percentile of ``qs`` (0-100): hdrh's figures, without its per-cell loop.

        hdrh walks every cell in Python (about 22,000 for a latency histogram); a live exporter
        asks for several percentiles of many histograms on every scrape, so the running sums
        are built in C (``accumulate``) and each rank found by bisection, with hdrh's own
        target count and cell-to-value rules.
        """
        hist = self._hist
        if not hist.total_count:
            return dict.fromkeys(qs, 0)
        top = min(hist.get_counts_array_index(hist.max_value), hist.counts_len - 1)
        # Cells below the smallest value are empty: the sums start at its cell (a latency band of
        # 40-60 ms spans a few hundred cells of the 22,000).
        bottom = min(max(hist.get_counts_array_index(hist.min_value), 0), top)
        running = list(accumulate(self._counts_view()[bottom : top + 1]))
        last = len(running) - 1
        out: dict[float, int] = {}
        for q in qs:
            index = bottom + min(bisect_left(running, hist.get_target_count_at_percentile(q)), last)
            value = hist.get_value_from_index(index)
            equivalent = hist.get_highest_equivalent_value(value) if q else hist.get_lowest_equivalent_value(value)
            out[q] = int(equivalent)
        return out

    def cumulative_counts(self, scaled_bounds: Iterable[int], *, limit: int) -> list[int]:
        """Return, for each ascending bound, how many values lie in cells at or below the bound's cell."""
        hist = self._hist
        counts, last_index = self._counts_view(), hist.counts_len - 1
        out: list[int] = []
        running = start = 0
        for scaled in scaled_bounds:
            if running < limit and scaled >= 0:
                index = min(hist.get_counts_array_index(scaled), last_index)
                if index >= start:
                    running += sum(counts[start : index + 1])
                    start = index + 1
            out.append(min(running, limit))
        return out

    def encode(self) -> bytes:
        """Return hdrh's compressed wire form."""
        return bytes(self._hist.encode())

    def add_encoded(self, encoded: bytes) -> None:
        """Add a histogram encoded by ``encode``."""
        self._hist.decode_and_add(encoded)

    def add(self, other: ScaledHistogram) -> None:
        """Add another histogram of the same layout."""
        self._hist.add(other._hist)

    def _counts_view(self) -> memoryview[int]:
        """The cells' counts as a flat view of unsigned integers, iterable at C speed."""
        counts = memoryview(self._hist.counts)
        return counts.cast("B").cast("Q" if counts.itemsize == 8 else "I")

    @property
    def total_count(self) -> int:
        return int(self._hist.total_count)

    @property
    def min_value(self) -> int:
        return int(self._hist.min_value)

    @property
    def max_value(self) -> int:
        return int(self._hist.max_value)

    def counts(self) -> list[int]:
        """Return a copy of every cell's count, in hdrh's index order."""
        return list(self._hist.counts)
