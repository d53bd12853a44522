"""Small inline SVG line charts: time on the x axis (dated ticks), values in human units on the y axis
at round steps (6h, 1d; 5.0 MB), an optional dashed target line. Labels sit inside the drawing, so
nothing is clipped at 1280 px or in print."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import parse_iso
from ..durations import format_duration, format_size

WIDTH, HEIGHT = 680, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 40  # room for y labels on the left and dates below


@dataclass(frozen=True)
class Scale:
    """How a chart's values read: round steps for the y ticks and a label for a value."""

    step: Callable[[float], float]  # the round tick step for values up to `top` (at most 4 steps)
    label: Callable[[float], str]


# durations people set and read: 15m, 1h, 6h, 1d, 1w, ...
_DURATION_STEPS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400,
                   14 * 86400, 30 * 86400, 90 * 86400, 365 * 86400)  # fmt: skip


def _duration_step(top: float) -> float:
    for step in _DURATION_STEPS:
        if top / step <= 4:
            return step
    return _decimal_step(top / 86400) * 86400  # centuries of gap: whole multiples of days


def _decimal_step(top: float) -> float:
    """1, 2 or 5 times a power of ten."""
    power = 10.0 ** math.floor(math.log10(max(top, 1e-9) / 4))
    return next(m * power for m in (1, 2, 5, 10) if top / (m * power) <= 4)


SECONDS = Scale(_duration_step, format_duration)
BYTES = Scale(_decimal_step, format_size)


@dataclass(frozen=True)
class Series:
    points: tuple[tuple[dt.datetime, float], ...]  # (time, value), oldest first

    @classmethod
    def of(cls, pairs: list[tuple[str, float]]) -> Series:
        return cls(tuple(sorted((parse_iso(t), v) for t, v in pairs)))


def line_chart(title: str, series: Series, target: float | None, scale: Scale, escape: Callable[[str], str]) -> str:
    caption = f"<figcaption>{escape(title)}</figcaption>"
    if not series.points:
        return f'<figure>{caption}<p class="none">no data in the period</p></figure>'
    t0, t1 = series.points[0][0], series.points[-1][0]
    span = max((t1 - t0).total_seconds(), 1.0)
    top = max([v for _, v in series.points] + ([target] if target else [])) or 1.0
    step = scale.step(top)
    ticks = [step * i for i in range(math.ceil(top / step - 1e-9) + 1)]
    ymax = ticks[-1]

    def px(t: dt.datetime) -> float:
        if t1 == t0:
            return LEFT + (WIDTH - LEFT - RIGHT) / 2
        return LEFT + (t - t0).total_seconds() / span * (WIDTH - LEFT - RIGHT)

    def py(v: float) -> float:
        return HEIGHT - BOTTOM - v / ymax * (HEIGHT - TOP - BOTTOM)

    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">']
    for v in ticks:  # y ticks: value and unit, right-aligned left of the axis
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(v):.1f}" y2="{py(v):.1f}"/>'
                     f'<text x="{LEFT - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{escape(scale.label(v))}</text>')  # fmt: skip
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}"/>'
                 f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>')  # fmt: skip
    for t, anchor in _time_ticks(t0, t1):
        parts.append(f'<line class="tick" x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{HEIGHT - BOTTOM}" '
                     f'y2="{HEIGHT - BOTTOM + 4}"/><text x="{px(t):.1f}" y="{HEIGHT - BOTTOM + 17}" '
                     f'text-anchor="{anchor}">{escape(_time_label(t, span))}</text>')  # fmt: skip
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 4}" text-anchor="end">time (UTC)</text>')
    line = " ".join(f"{px(t):.1f},{py(v):.1f}" for t, v in series.points)
    parts.append(f'<polyline points="{line}"/>')
    parts += [f'<circle cx="{px(t):.1f}" cy="{py(v):.1f}" r="3"/>' for t, v in series.points]
    if target:
        parts.append(f'<line class="target" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(target):.1f}" '
                     f'y2="{py(target):.1f}"/><text class="target-label" x="{WIDTH - RIGHT}" '
                     f'y="{py(target) - 4:.1f}" text-anchor="end">target {escape(scale.label(target))}</text>')  # fmt: skip
    parts.append("</svg>")
    return f"<figure>{caption}{''.join(parts)}</figure>"


def _time_ticks(t0: dt.datetime, t1: dt.datetime) -> list[tuple[dt.datetime, str]]:
    """Up to five evenly spaced times; the outer labels are anchored inward so they stay on the chart."""
    if t1 == t0:
        return [(t0, "middle")]
    n = 4
    ticks = [t0 + (t1 - t0) * i / n for i in range(n + 1)]
    return [(t, "start" if i == 0 else "end" if i == n else "middle") for i, t in enumerate(ticks)]


def _time_label(t: dt.datetime, span_seconds: float) -> str:
    if span_seconds >= 3 * 86400:
        return t.strftime("%Y-%m-%d")
    if span_seconds >= 6 * 3600:
        return t.strftime("%m-%d %H:%M")
    return t.strftime("%H:%M:%S")
