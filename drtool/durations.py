"""Durations as written in policies: 90s, 15m, 6h, 7d, 2w (and combinations such as 1h30m)."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")
MAX_SECONDS = 100 * 365 * 86400  # beyond this, date arithmetic overflows; no schedule or period needs more


def parse_duration(text: str) -> int:
    """Seconds in `text`; raises ValueError with the accepted forms on anything else."""
    s = text.strip().lower()
    if not s or _PART.sub("", s) != "":
        raise ValueError(f"'{text}' is not a duration (use e.g. 90s, 15m, 6h, 7d, 2w)")
    parts = _PART.findall(s)
    if any(len(n) > 12 for n, _ in parts) or sum(int(n) * _UNITS[u] for n, u in parts) > MAX_SECONDS:
        raise ValueError(f"'{text[:40]}' is longer than 100 years")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """Short human form: 3725 -> '1h2m5s'."""
    seconds = int(round(seconds))
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def format_size(n: float | None) -> str:
    """33300000 -> '33.3 MB': decimal units, as people read sizes ('-' for unknown)."""
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
