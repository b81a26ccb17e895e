"""Inline SVG charts drawn in Python: line charts and grouped bar charts, no script, no fonts, no fetch.

The HTML report must open offline with no external resource, so every chart
is a plain ``<svg>`` element built here from numbers. Each chart carries
``data-chart="<id>"``; its drawn marks (lines, points, bars) carry
``class="mark"`` and a ``<title>`` tooltip with their values; reference lines
(an SLO, a capacity answer) carry ``class="ref"``; shaded spans of the x axis
(soak breach episodes) carry ``class="band"``. Axes always have a label
with the unit and ticks at round numbers. A ``None`` y value is a gap in its
line, never a zero. ``llmload.charts`` decides which charts the report draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")
REF_COLOUR = "#C0392B"
WIDTH, PLOT_HEIGHT = 720, 240
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, AXIS_BOTTOM = 70, 24, 16, 44
LEGEND_ROW = 18
CHAR_WIDTH = 6.6  # average width of a 11px sans-serif character, to lay out legend rows
MAX_POINT_MARKERS = 60  # above this many points a line is drawn without a circle per point


@dataclass(frozen=True)
class Series:
    """One named line: ``(x, y)`` points, y None for a gap."""

    label: str
    points: Sequence[tuple[float, float | None]]
    dashed: bool = False


@dataclass(frozen=True)
class RefLine:
    """A labelled reference line: horizontal at ``y=value`` (``axis="y"``) or vertical at ``x=value``."""

    value: float
    label: str
    axis: str = "y"


@dataclass(frozen=True)
class Band:
    """A shaded span of the x axis (a breach episode), from ``start`` to ``end``, with a tooltip."""

    start: float
    end: float
    label: str
    colour: str = REF_COLOUR


@dataclass(frozen=True)
class Bars:
    """One named bar series: a value (or None) per category."""

    label: str
    values: Sequence[float | None]


def nice_ticks(low: float, high: float, *, count: int = 5) -> list[float]:
    """Return round tick values covering ``[low, high]`` (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks, value = [], first
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def format_number(value: float) -> str:
    """Format a tick or tooltip value compactly: 1200 -> 1,200; 0.25 -> 0.25; 12.345 -> 12.3."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    if magnitude >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


class _Frame:
    """Scales from data to pixels, and the axes, grid, legend and reference lines of one chart."""

    def __init__(
        self, *, x_range: tuple[float, float], y_ticks: list[float], legend: Sequence[tuple[str, str, bool]]
    ) -> None:
        self.x0, self.x1 = x_range
        self.y_ticks = y_ticks
        self.legend = legend
        self.left, self.right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
        self.top, self.bottom = MARGIN_TOP, MARGIN_TOP + PLOT_HEIGHT
        self.legend_rows = self._legend_layout()
        self.height = self.bottom + AXIS_BOTTOM + LEGEND_ROW * len(self.legend_rows) + 6

    def x(self, value: float) -> float:
        span = self.x1 - self.x0
        return self.left + (value - self.x0) / span * (self.right - self.left) if span else (self.left + self.right) / 2

    def y(self, value: float) -> float:
        y0, y1 = self.y_ticks[0], self.y_ticks[-1]
        return self.bottom - (value - y0) / (y1 - y0) * (self.bottom - self.top)

    def _legend_layout(self) -> list[list[tuple[float, str, str, bool]]]:
        rows: list[list[tuple[float, str, str, bool]]] = [[]]
        cursor: float = self.left
        for label, colour, dashed in self.legend:
            width = 26 + CHAR_WIDTH * len(label) + 18
            if rows[-1] and cursor + width > self.right:
                rows.append([])
                cursor = self.left
            rows[-1].append((cursor, label, colour, dashed))
            cursor += width
        return rows if rows[0] else []

    def axes(self, *, x_label: str, y_label: str, x_ticks: Sequence[tuple[float, str]]) -> list[str]:
        out = []
        for tick in self.y_ticks:
            y = self.y(tick)
            out.append(f'<line class="grid" x1="{self.left}" x2="{self.right}" y1="{y:.1f}" y2="{y:.1f}"/>')
            out.append(
                f'<text class="tick" x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end">{format_number(tick)}</text>'
            )
        for value, label in x_ticks:
            x = self.x(value)
            out.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{self.bottom}" y2="{self.bottom + 4}"/>')
            out.append(
                f'<text class="tick" x="{x:.1f}" y="{self.bottom + 17}" text-anchor="middle">{escape(label)}</text>'
            )
        out.append(f'<line class="axis" x1="{self.left}" x2="{self.right}" y1="{self.bottom}" y2="{self.bottom}"/>')
        out.append(f'<line class="axis" x1="{self.left}" x2="{self.left}" y1="{self.top}" y2="{self.bottom}"/>')
        middle_x, middle_y = (self.left + self.right) / 2, (self.top + self.bottom) / 2
        out.append(
            f'<text class="axis-label" x="{middle_x:.1f}" y="{self.bottom + 36}" '
            f'text-anchor="middle">{escape(x_label)}</text>'
        )
        out.append(
            f'<text class="axis-label" transform="translate(16,{middle_y:.1f}) rotate(-90)" '
            f'text-anchor="middle">{escape(y_label)}</text>'
        )
        return out

    def refs(self, refs: Sequence[RefLine]) -> list[str]:
        out = []
        for ref in refs:
            if ref.axis == "x":
                x = self.x(ref.value)
                geometry = f'x1="{x:.1f}" x2="{x:.1f}" y1="{self.top}" y2="{self.bottom}"'
                # Label on the side with room: a line in the right half gets its label on its left.
                side = f'x="{x - 4:.1f}" text-anchor="end"' if x > (self.left + self.right) / 2 else f'x="{x + 4:.1f}"'
                text = f'<text class="ref-label" {side} y="{self.bottom - 6}">{escape(ref.label)}</text>'
            else:
                y = self.y(ref.value)
                geometry = f'x1="{self.left}" x2="{self.right}" y1="{y:.1f}" y2="{y:.1f}"'
                text = (
                    f'<text class="ref-label" x="{self.right - 4}" y="{y - 5:.1f}" '
                    f'text-anchor="end">{escape(ref.label)}</text>'
                )
            out.append(f'<g class="ref"><line {geometry} stroke="{REF_COLOUR}" stroke-dasharray="6 4"/>{text}</g>')
        return out

    def bands(self, bands: Sequence[Band]) -> list[str]:
        out = []
        for band in bands:
            x0, x1 = self.x(band.start), self.x(max(band.end, band.start))
            out.append(
                f'<rect class="band" x="{x0:.1f}" y="{self.top}" width="{max(x1 - x0, 1.0):.1f}" '
                f'height="{self.bottom - self.top}" fill="{band.colour}" fill-opacity="0.15">'
                f"<title>{escape(band.label)}</title></rect>"
            )
        return out

    def legend_marks(self) -> list[str]:
        out = []
        for row_index, row in enumerate(self.legend_rows):
            y = self.bottom + AXIS_BOTTOM + LEGEND_ROW * row_index + 8
            for x, label, colour, dashed in row:
                dash = ' stroke-dasharray="5 3"' if dashed else ""
                out.append(
                    f'<line x1="{x:.1f}" x2="{x + 20:.1f}" y1="{y}" y2="{y}" '
                    f'stroke="{colour}" stroke-width="2.5"{dash}/>'
                )
                out.append(f'<text class="legend" x="{x + 26:.1f}" y="{y + 4}">{escape(label)}</text>')
        return out


def _svg(chart_id: str, title: str, frame: _Frame, body: list[str], *, css_class: str = "chart") -> str:
    return (
        f'<svg class="{css_class}" data-chart="{escape(chart_id)}" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {WIDTH} {frame.height}" width="{WIDTH}" height="{frame.height}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def empty_chart(chart_id: str, title: str, message: str = "no data") -> str:
    """Return a placeholder SVG saying why a chart has nothing to draw."""
    frame = _Frame(x_range=(0.0, 1.0), y_ticks=[0.0, 1.0], legend=())
    text = f'<text class="empty" x="{WIDTH / 2}" y="{frame.height / 2}" text-anchor="middle">{escape(message)}</text>'
    return _svg(chart_id, title, frame, [text], css_class="chart empty")


def _y_ticks(values: list[float], y_min: float | None, y_max: float | None) -> list[float]:
    low = min(values) if y_min is None else y_min
    high = max(values) if y_max is None else y_max
    if high <= low:
        high = low + (abs(low) or 1.0)
    # Headroom above the highest value so a line at the top stays visible; a fixed maximum is kept.
    return nice_ticks(low, high if y_max is not None else high + (high - low) * 0.04)


def line_chart(
    *,
    chart_id: str,
    title: str,
    x_label: str,
    y_label: str,
    series: Sequence[Series],
    refs: Sequence[RefLine] = (),
    x_categories: Sequence[str] | None = None,
    x_span: tuple[float, float] | None = None,
    y_min: float | None = 0.0,
    y_max: float | None = None,
    bands: Sequence[Band] = (),
) -> str:
    """Return an SVG line chart.

    With ``x_categories`` the x values are indexes into those labels; ``x_span`` fixes the x
    axis (charts of one run over time share it); ``y_max`` fixes the top of the y axis;
    ``bands`` are shaded behind the lines (numeric x axes only).
    """
    xs = [x for s in series for x, y in s.points if y is not None]
    ys = [y for s in series for _, y in s.points if y is not None]
    if not ys:
        return empty_chart(chart_id, title)
    ys += [ref.value for ref in refs if ref.axis == "y"]
    y_ticks = _y_ticks(ys, y_min, y_max)
    legend = [(s.label, PALETTE[i % len(PALETTE)], s.dashed) for i, s in enumerate(series)]
    x_ticks: list[tuple[float, str]]
    if x_categories is not None:
        x_range = (-0.5, len(x_categories) - 0.5)
        x_ticks = list(enumerate(x_categories))
    else:
        xs += [ref.value for ref in refs if ref.axis == "x"]
        xs += [x for band in bands for x in (band.start, band.end)]
        if x_span is not None:
            xs += list(x_span)
        ticks = nice_ticks(min(xs), max(xs)) if max(xs) > min(xs) else [min(xs) - 1, min(xs), min(xs) + 1]
        x_range = (ticks[0], ticks[-1])
        x_ticks = [(t, format_number(t)) for t in ticks]
    frame = _Frame(x_range=x_range, y_ticks=y_ticks, legend=legend)
    body = frame.axes(x_label=x_label, y_label=y_label, x_ticks=x_ticks)
    if x_categories is None:
        body += frame.bands(bands)
    for (label, colour, dashed), s in zip(legend, series, strict=True):
        body.append(_line(frame, s, label=label, colour=colour, dashed=dashed, x_categories=x_categories))
    body += frame.refs(refs)
    body += frame.legend_marks()
    return _svg(chart_id, title, frame, body)


def _line(
    frame: _Frame, s: Series, *, label: str, colour: str, dashed: bool, x_categories: Sequence[str] | None
) -> str:
    segments: list[list[tuple[float, float]]] = [[]]
    markers = []
    drawn = [(x, y) for x, y in s.points if y is not None]
    for x, y in s.points:
        if y is None:
            if segments[-1]:
                segments.append([])
            continue
        px, py = frame.x(x), frame.y(y)
        segments[-1].append((px, py))
        if len(drawn) <= MAX_POINT_MARKERS:
            x_text = x_categories[int(x)] if x_categories is not None else format_number(x)
            markers.append(
                f'<circle class="mark point" cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(label)}: {x_text}, {format_number(y)}</title></circle>"
            )
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    paths = [
        f'<path class="mark line" d="M{" L".join(f"{px:.1f},{py:.1f}" for px, py in seg)}" fill="none" '
        f'stroke="{colour}" stroke-width="2"{dash}><title>{escape(label)}</title></path>'
        for seg in segments
        if len(seg) >= 2
    ]
    return f'<g class="series">{"".join(paths)}{"".join(markers)}</g>'


def bar_chart(
    *, chart_id: str, title: str, y_label: str, categories: Sequence[str], bars: Sequence[Bars], x_label: str = ""
) -> str:
    """Return an SVG grouped bar chart: one group of bars per category, one colour per ``Bars``."""
    values = [v for b in bars for v in b.values if v is not None]
    if not values:
        return empty_chart(chart_id, title)
    legend = [(b.label, PALETTE[i % len(PALETTE)], False) for i, b in enumerate(bars)]
    frame = _Frame(x_range=(-0.5, len(categories) - 0.5), y_ticks=_y_ticks(values, 0.0, None), legend=legend)
    body = frame.axes(x_label=x_label, y_label=y_label, x_ticks=list(enumerate(categories)))
    slot = (frame.right - frame.left) / len(categories)
    bar_width = slot * 0.7 / len(bars)
    for index, ((label, colour, _), b) in enumerate(zip(legend, bars, strict=True)):
        for category, value in enumerate(b.values):
            if value is None:
                continue
            x = frame.x(category) - slot * 0.35 + index * bar_width
            y = frame.y(value)
            body.append(
                f'<rect class="mark bar" x="{x:.1f}" y="{y:.1f}" width="{bar_width - 2:.1f}" '
                f'height="{max(frame.bottom - y, 0.5):.1f}" fill="{colour}">'
                f"<title>{escape(label)} {escape(categories[category])}: "
                f"{format_number(value)}</title></rect>"
            )
            body.append(
                f'<text class="bar-value" x="{x + (bar_width - 2) / 2:.1f}" y="{y - 4:.1f}" '
                f'text-anchor="middle">{format_number(value)}</text>'
            )
    body += frame.legend_marks()
    return _svg(chart_id, title, frame, body)
