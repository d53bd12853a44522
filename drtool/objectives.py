"""Recovery point arithmetic (DESIGN.md "RPO and RTO, precisely"). Pure functions of the catalog."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    """A complete backup as RPO sees it."""

    backup_id: str
    recovery_point: dt.datetime
    completed_at: dt.datetime


@dataclass(frozen=True)
class Gap:
    seconds: float
    start: dt.datetime  # recovery point that was the newest during the gap
    end: dt.datetime  # when a newer backup completed, or `now`
    after_backup: str | None


def gaps(points: list[Point], until: dt.datetime, since: dt.datetime | None = None) -> list[Gap]:
    """Every stretch during which the newest complete backup aged, up to `until`: for
    consecutive backups k, k+1 (by completion), completion of k+1 minus recovery point of k;
    and `until` minus the newest recovery point. Backups completed after `until` are ignored.
    With `since` (a period's start), a period that begins before any backup was complete opens
    with a gap from `since` to the first completion (its `after_backup` is None): nothing
    covered that stretch, so it counts against the RPO like any other."""
    ordered = sorted((p for p in points if p.completed_at <= until), key=lambda p: p.completed_at)
    out = []
    if since is not None and since < until and (not ordered or ordered[0].completed_at > since):
        covered_from = ordered[0].completed_at if ordered else until
        out.append(Gap((covered_from - since).total_seconds(), since, covered_from, None))
    if not ordered:
        return out
    newest = ordered[0]
    for nxt in ordered[1:]:
        out.append(Gap((nxt.completed_at - newest.recovery_point).total_seconds(), newest.recovery_point,
                       nxt.completed_at, newest.backup_id))  # fmt: skip
        if nxt.recovery_point > newest.recovery_point:
            newest = nxt
    out.append(Gap((until - newest.recovery_point).total_seconds(), newest.recovery_point, until, newest.backup_id))
    return out


def worst_rpo(points: list[Point], now: dt.datetime) -> Gap | None:
    """The largest achieved RPO over the backups' span; None when there is no backup at all
    (the RPO is unbounded)."""
    return max(gaps(points, now), key=lambda g: g.seconds, default=None)
