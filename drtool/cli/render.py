"""Rendering for people: tables, sizes, and a progress line on interactive terminals."""

from __future__ import annotations

import sys
import time
from typing import Any

from ..durations import format_duration, format_size


def human_bytes(n: float | None) -> str:
    return format_size(n)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain text table: columns are (key, header)."""
    cells = [[h for _, h in columns]] + [["" if r.get(k) is None else str(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


class ProgressLine:
    """Bytes and rate on one self-overwriting stderr line, only when stderr is a terminal."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def __call__(self, label: str, total: int | None, estimate: bool = False):
        if not self.enabled:
            return lambda n: None
        state = {"done": 0, "t0": time.monotonic(), "last": 0.0}

        def update(n: int) -> None:
            state["done"] += n
            now = time.monotonic()
            if now - state["last"] < 0.2:
                return
            state["last"] = now
            rate = state["done"] / max(now - state["t0"], 1e-6)
            of = f" of {'~' if estimate else ''}{human_bytes(total)}" if total else ""
            sys.stderr.write(f"\r{label}: {human_bytes(state['done'])}{of}  {human_rate(rate)}   ")
            sys.stderr.flush()

        return update

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def human_duration(seconds: float | None) -> str:
    """For people: 4.2s under a minute, else 6h, 1h30m, 2d3h (to the second)."""
    if seconds is None:
        return "-"
    if abs(seconds) < 60:
        return f"{seconds:.1f}s"
    return format_duration(seconds)


def human_rate(bytes_per_second: float) -> str:
    return f"{human_bytes(bytes_per_second)}/s"
