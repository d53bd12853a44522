"""Small inline SVG line charts: time on the x axis (dated ticks), the value with its unit on the y
axis, an optional dashed target line. Labels sit inside the drawing, so nothing is clipped at 1280 px
or in print."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import parse_iso

WIDTH, HEIGHT = 680, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 40  # room for y labels on the left and dates below


@dataclass(frozen=True)
class Series:
    points: tuple[tuple[dt.datetime, float], ...]  # (time, value), oldest first

    @classmethod
    def of(cls, pairs: list[tuple[str, float]]) -> Series:
        return cls(tuple(sorted((parse_iso(t), v) for t, v in pairs)))


def line_chart(title: str, unit: str, series: Series, target: float | None, escape: Callable[[str], str]) -> str:
    caption = f"<figcaption>{escape(title)} ({escape(unit)})</figcaption>"
    if not series.points:
        return f'<figure>{caption}<p class="none">no data in the period</p></figure>'
    t0, t1 = series.points[0][0], series.points[-1][0]
    span = max((t1 - t0).total_seconds(), 1.0)
    ymax = max([v for _, v in series.points] + ([target] if target else [])) * 1.1 or 1.0

    def px(t: dt.datetime) -> float:
        if t1 == t0:
            return LEFT + (WIDTH - LEFT - RIGHT) / 2
        return LEFT + (t - t0).total_seconds() / span * (WIDTH - LEFT - RIGHT)

    def py(v: float) -> float:
        return HEIGHT - BOTTOM - v / ymax * (HEIGHT - TOP - BOTTOM)

    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">']
    for v in (0, ymax / 2, ymax):  # y ticks: value and unit, right-aligned left of the axis
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(v):.1f}" y2="{py(v):.1f}"/>'
                     f'<text x="{LEFT - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{escape(_number(v))}</text>')  # fmt: skip
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
                     f'y="{py(target) - 4:.1f}" text-anchor="end">target {escape(_number(target))} {escape(unit)}</text>')  # fmt: skip
    parts.append("</svg>")
    return f"<figure>{caption}{''.join(parts)}</figure>"


def _number(v: float) -> str:
    return f"{v:.3g}" if v < 1e4 else f"{v:,.0f}"


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
