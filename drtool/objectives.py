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


def worst_rpo(points: list[Point], now: dt.datetime) -> Gap | None:
    """The largest achieved RPO over the backups' span: for consecutive backups k, k+1 (by
    completion), completion of k+1 minus recovery point of k; and now minus the newest recovery
    point. None when there is no backup at all (the RPO is unbounded)."""
    if not points:
        return None
    ordered = sorted(points, key=lambda p: p.completed_at)
    gaps = []
    newest = ordered[0]
    for nxt in ordered[1:]:
        gaps.append(Gap((nxt.completed_at - newest.recovery_point).total_seconds(), newest.recovery_point,
                        nxt.completed_at, newest.backup_id))  # fmt: skip
        if nxt.recovery_point > newest.recovery_point:
            newest = nxt
    gaps.append(Gap((now - newest.recovery_point).total_seconds(), newest.recovery_point, now, newest.backup_id))
    return max(gaps, key=lambda g: g.seconds)
