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

Reading (percentiles, cumulative counts) and adding histograms run on a NumPy
view of the same cells, limited to the cells between the smallest and the
largest value: a live master reads and merges hundreds of histograms on
every poll, and hdrh's per-cell loops (or its C ``add_array`` over all 22,000
cells) cost tens of microseconds each.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterable, Sequence

import numpy as np
from hdrh.histogram import HdrHistogram


class ScaledHistogram:
    """An HdrHistogram of positive integers in ``[1, highest]`` (values are clamped into that range)."""

    __slots__ = ("_cells", "_hist", "_layout", "highest")

    def __init__(self, *, highest: int, significant_digits: int) -> None:
        hist = self._hist = HdrHistogram(1, highest, significant_digits)
        self.highest = highest
        self._cells = np.ctypeslib.as_array(hist.counts)
        """The cells' counts, a NumPy view sharing hdrh's memory (no copy)."""
        self._layout: tuple[int, int, int, int, int] = (
            int(hist.sub_bucket_mask),
            int(hist.unit_magnitude),
            int(hist.sub_bucket_half_count_magnitude),
            int(hist.sub_bucket_half_count),
            int(hist.counts_len),
        )
        """hdrh's bucket layout (fixed for the histogram's life), read by the index arithmetic."""

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
        return self.values_at_percentiles((q,))[q]

    def _index_of(self, value: int) -> int:
        """The cell of a non-negative value (hdrh's ``get_counts_array_index``, in integer arithmetic)."""
        mask, unit, half_mag, half, _ = self._layout
        bucket = (value | mask).bit_length() - unit - half_mag - 1
        return ((bucket + 1) << half_mag) + (value >> (bucket + unit)) - half

    def _cell_bounds(self, index: int) -> tuple[int, int]:
        """The lowest and the highest value of a cell (hdrh's ``get_value_from_index`` and equivalents)."""
        _, unit, half_mag, half, _ = self._layout
        bucket = (index >> half_mag) - 1
        sub_bucket = (index & (half - 1)) + half
        if bucket < 0:
            sub_bucket -= half
            bucket = 0
        lowest = sub_bucket << (bucket + unit)
        return lowest, lowest + (1 << (bucket + unit)) - 1

    def _index_range(self) -> tuple[int, int]:
        """The first and last cell that can hold a value (those of the smallest and largest)."""
        hist = self._hist
        top = min(self._index_of(hist.max_value), self._layout[4] - 1)
        return min(self._index_of(hist.min_value), top), top

    def values_at_percentiles(self, qs: Sequence[float]) -> dict[float, int]:
        """Return the value at each percentile of ``qs`` (0-100): hdrh's figures, without its per-cell loop.

        The running sums of the occupied cells are built by NumPy and each rank found by
        bisection, with hdrh's own target count and cell-to-value rules.
        """
        hist = self._hist
        total = hist.total_count
        if not total:
            return dict.fromkeys(qs, 0)
        mask, unit, half_mag, half, length = self._layout
        # _index_range, inline: this runs for every group on every poll
        value = hist.max_value
        bucket = (value | mask).bit_length() - unit - half_mag - 1
        top = min(((bucket + 1) << half_mag) + (value >> (bucket + unit)) - half, length - 1)
        value = hist.min_value
        bucket = (value | mask).bit_length() - unit - half_mag - 1
        bottom = min(((bucket + 1) << half_mag) + (value >> (bucket + unit)) - half, top)
        running = self._cells[bottom : top + 1].cumsum()
        # hdrh's get_target_count_at_percentile
        targets = [max(int(min(q, 100.0) * total / 100 + 0.5), 1) for q in qs]
        ranks = running.searchsorted(targets).tolist()
        last = top - bottom
        out: dict[float, int] = {}
        for q, rank in zip(qs, ranks, strict=True):
            lowest, highest = self._cell_bounds(bottom + min(rank, last))
            out[q] = highest if q else lowest
        return out

    def cumulative_counts(self, scaled_bounds: Iterable[int], *, limit: int) -> list[int]:
        """Return, for each ascending bound, how many values lie in cells at or below the bound's cell."""
        hist = self._hist
        bounds = list(scaled_bounds)
        if not hist.total_count:
            return [0] * len(bounds)
        bottom, top = self._index_range()
        running = self._cells[bottom : top + 1].cumsum()  # read by index: no list of every cell
        out: list[int] = []
        for scaled in bounds:
            if scaled < 0:
                out.append(0)
                continue
            index = min(self._index_of(scaled), hist.counts_len - 1)
            below = 0 if index < bottom else int(running[min(index, top) - bottom])
            out.append(min(below, limit))
        return out

    def encode(self) -> bytes:
        """Return hdrh's compressed wire form."""
        return bytes(self._hist.encode())

    def add_encoded(self, encoded: bytes) -> None:
        """Add a histogram encoded by ``encode``."""
        self._hist.decode_and_add(encoded)

    def add(self, other: ScaledHistogram) -> None:
        """Add another histogram of the same layout (hdrh's ``add``, over the other's occupied cells only)."""
        theirs, hist = other._hist, self._hist
        if not theirs.total_count:
            return
        if other._layout != self._layout:
            hist.add(theirs)  # another layout: hdrh adds value by value
            return
        bottom, top = other._index_range()
        self._cells[bottom : top + 1] += other._cells[bottom : top + 1]
        hist.total_count += theirs.total_count
        # Their extremes (as recorded, or of their cells): all that reads them here wants is the cell.
        if theirs.max_value > hist.max_value:
            hist.max_value = theirs.max_value
        if theirs.min_value < hist.min_value:
            hist.min_value = theirs.min_value

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
        counts: list[int] = self._cells.tolist()
        return counts
