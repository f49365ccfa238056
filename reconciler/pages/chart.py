"""Geometry of the server-rendered SVG charts (canary vs baseline over time). Pure.

The template only draws what this computes: two polylines, a threshold line, and axis
ticks. Long series are reduced to at most one point per horizontal pixel column, keeping
each column's maximum, so a spike never disappears and the SVG stays small at any length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[int, float]  # (seconds since start, value)


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    unit: str
    width: int
    height: int
    plot_left: int
    plot_top: int
    plot_width: int
    plot_height: int
    canary: str  # SVG polyline points "x,y x,y ..."
    baseline: str
    threshold_y: float | None
    y_ticks: tuple[tuple[float, str], ...]
    x_ticks: tuple[tuple[float, str], ...]
    canary_last: str
    baseline_last: str
    empty: bool


def nice_max(value: float) -> float:
    """The smallest 1/2/5 x 10^k not below `value` (a round axis top); 1 for empty data."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 5.0, 10.0):
        top = step * 10.0**exponent
        if top >= value * (1 - 1e-12):
            return top
    return 10.0 ** (exponent + 1)


def downsample(points: Sequence[Point], columns: int) -> list[Point]:
    """At most `columns` points: the maximum of each bucket of consecutive points."""
    if columns < 1:
        raise ValueError("columns must be positive")
    if len(points) <= columns:
        return list(points)
    times = [p[0] for p in points]
    values = [p[1] for p in points]
    size = len(points) / columns
    out: list[Point] = []
    for i in range(columns):
        start = int(i * size)
        end = max(int((i + 1) * size), start + 1)
        out.append((times[end - 1], max(values[start:end])))
    return out


def format_value(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.2f}%" if value < 10 else f"{value:.1f}%"
    if unit == "ms":
        return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
    return f"{value:.2f} {unit}".rstrip()


def line_chart(
    title: str,
    unit: str,
    canary: Sequence[Point],
    baseline: Sequence[Point],
    *,
    threshold: float | None = None,
    width: int = 640,
    height: int = 180,
) -> Chart:
    """Lay out a canary-vs-baseline chart in a `width` x `height` box."""
    left, right, top, bottom = 64, 12, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    if plot_w < 10 or plot_h < 10:
        raise ValueError("chart too small")
    # One point per 3 px column: finer is invisible and only costs render time.
    c = downsample(canary, max(plot_w // 3, 1))
    b = downsample(baseline, max(plot_w // 3, 1))
    all_points = c + b
    empty = not all_points
    t_min = min((p[0] for p in all_points), default=0)
    t_max = max((p[0] for p in all_points), default=1)
    t_span = max(t_max - t_min, 1)
    peak = max(
        [p[1] for p in all_points] + ([threshold] if threshold is not None else []), default=0.0
    )
    y_top = nice_max(peak)

    def x_of(t: int) -> float:
        return round(left + (t - t_min) / t_span * plot_w, 1)

    def y_of(v: float) -> float:
        clamped = min(max(v, 0.0), y_top)
        return round(top + plot_h - clamped / y_top * plot_h, 1)

    def poly(points: Sequence[Point]) -> str:
        x_scale, y_scale, bottom_px = plot_w / t_span, plot_h / y_top, top + plot_h
        return " ".join(
            f"{left + (t - t_min) * x_scale:.1f},{bottom_px - min(max(v, 0.0), y_top) * y_scale:.1f}"
            for t, v in points
        )

    y_ticks = tuple((y_of(y_top * k / 4), format_value(y_top * k / 4, unit)) for k in range(5))
    x_ticks = tuple(
        (x_of(t_min + round(t_span * k / 4)), f"{t_min + round(t_span * k / 4)}s") for k in range(5)
    )
    return Chart(
        title=title,
        unit=unit,
        width=width,
        height=height,
        plot_left=left,
        plot_top=top,
        plot_width=plot_w,
        plot_height=plot_h,
        canary=poly(c),
        baseline=poly(b),
        threshold_y=y_of(threshold) if threshold is not None else None,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        canary_last=format_value(canary[-1][1], unit) if canary else "-",
        baseline_last=format_value(baseline[-1][1], unit) if baseline else "-",
        empty=empty,
    )
