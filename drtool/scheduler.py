"""When jobs are due: pure functions of (cron expression, time zone, last slot done, now).

`drtool run` calls these often (every few minutes, from a timer); each job runs at most once
per scheduled slot. Slots missed while nothing ran (the host was down) are caught up once, by
running for the latest slot, and counted as missed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from croniter import croniter

JOBS = ("backup", "base", "prune", "drill")  # the order `run` does them in: prune and drill see the new backup
_MAX_COUNT = 10_000


@dataclass(frozen=True)
class Due:
    slot: dt.datetime  # the scheduled time this run stands for (UTC)
    missed: int  # earlier slots since the last one done that no run covered


_SLOTS: dict[tuple[str, str], tuple[dt.datetime, dt.datetime]] = {}  # (expr, tz) -> (latest slot, the next)
_SECOND = dt.timedelta(seconds=1)


def latest_slot(expr: str, tz: str, now: dt.datetime) -> dt.datetime:
    """The most recent scheduled time at or before `now`, in UTC: the latest firing before
    now + 1 s. Remembered per expression until the next firing, so a fleet tick sharing
    expressions asks croniter once each (~1 ms a call)."""
    cached = _SLOTS.get((expr, tz))
    if cached is not None and cached[0] < now + _SECOND <= cached[1]:
        return cached[0]
    local = now.astimezone(ZoneInfo(tz)) + _SECOND  # croniter's prev is strictly before
    found: dt.datetime = croniter(expr, local).get_prev(dt.datetime)  # croniter is untyped
    slot = found.astimezone(dt.UTC)
    following = croniter(expr, found).get_next(dt.datetime).astimezone(dt.UTC)
    if slot < now + _SECOND <= following:  # croniter agrees with itself (not a DST oddity): keep it
        _SLOTS[(expr, tz)] = (slot, following)
    return slot


def next_times(expr: str, tz: str, after: dt.datetime, n: int = 3) -> list[dt.datetime]:
    it = croniter(expr, after.astimezone(ZoneInfo(tz)))
    return [it.get_next(dt.datetime).astimezone(dt.UTC) for _ in range(n)]


def due(expr: str, tz: str, last_slot: dt.datetime | None, now: dt.datetime) -> Due | None:
    """The slot to run now, or None if the latest slot was already done. A clock that jumped
    back (now before the last slot done) makes nothing due until it catches up."""
    slot = latest_slot(expr, tz, now)
    if last_slot is None:
        return Due(slot, 0)
    if slot <= last_slot:
        return None
    missed = 0
    it = croniter(expr, last_slot.astimezone(ZoneInfo(tz)))
    while missed < _MAX_COUNT:
        t = it.get_next(dt.datetime).astimezone(dt.UTC)
        if t >= slot:
            break
        missed += 1
    return Due(slot, missed)


def tightest_interval(exprs: list[str], tz: str = "UTC", sample: int = 50) -> int:
    """The shortest gap in seconds between consecutive firings of any expression."""
    best = 24 * 3600
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for expr in exprs:
        times = next_times(expr, tz, start, sample)
        for a, b in zip(times, times[1:], strict=False):
            best = min(best, int((b - a).total_seconds()))
    return best
