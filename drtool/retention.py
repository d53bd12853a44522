"""Retention: which backups to keep, as a pure function of (backups, rules, now).

GFS rules as in restic's `forget --keep-*`: keep the newest backup in each of the last N
hours/days/weeks/months/years that have a backup, the N newest overall, and everything younger
than `keep_within`. Buckets follow the policy's time zone. Safety floors no rule overrides:
no rules at all deletes nothing; the newest backup not known to be damaged and the newest backup
that passed a drill or a deep verify are always kept. A backup known to be damaged (a check found
it so, or objects are missing) counts toward no rule and no floor: it is kept as evidence while it
is newer than the newest good backup, and deleted once older. Every decision carries its reasons.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from .policy.schema import Retention


@dataclass(frozen=True)
class Candidate:
    backup_id: str
    recovery_point: dt.datetime  # aware


@dataclass
class Decision:
    backup_id: str
    recovery_point: dt.datetime
    keep: bool = False
    reasons: list[str] = field(default_factory=list)


_BUCKETS = (
    ("hourly", "keep_hourly", lambda t: t.strftime("%Y-%m-%dT%H")),
    ("daily", "keep_daily", lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", "keep_weekly", lambda t: f"{t.isocalendar()[0]}-W{t.isocalendar()[1]:02d}"),
    ("monthly", "keep_monthly", lambda t: t.strftime("%Y-%m")),
    ("yearly", "keep_yearly", lambda t: t.strftime("%Y")),
)


def is_empty(rules: Retention) -> bool:
    return not any(
        (rules.keep_last, rules.keep_hourly, rules.keep_daily, rules.keep_weekly, rules.keep_monthly,
         rules.keep_yearly, rules.keep_within)
    )  # fmt: skip


def apply(
    backups: list[Candidate],
    rules: Retention,
    now: dt.datetime,
    tz: str = "UTC",
    passed_drills: frozenset[str] = frozenset(),
    damaged: dict[str, str] | None = None,
) -> list[Decision]:
    """A decision for every backup, newest first. `passed_drills`: backups that passed a drill or a
    deep verify; `damaged`: backup id -> why it is known to be damaged."""
    zone = ZoneInfo(tz)
    ordered = sorted(backups, key=lambda b: (b.recovery_point, b.backup_id), reverse=True)
    out = [Decision(b.backup_id, b.recovery_point) for b in ordered]
    if not out:
        return out

    def keep(d: Decision, reason: str) -> None:
        d.keep = True
        d.reasons.append(reason)

    if is_empty(rules):
        for d in out:
            keep(d, "no retention rules: nothing is deleted")
        return out

    damaged = damaged or {}
    good = [d for d in out if d.backup_id not in damaged]
    for i, d in enumerate(good[: rules.keep_last]):
        keep(d, f"last {i + 1}/{rules.keep_last}")
    for name, attr, bucket_of in _BUCKETS:
        limit = getattr(rules, attr)
        seen: list[str] = []
        for d in good:  # newest first: the first backup seen in a bucket is that bucket's newest
            if len(seen) >= limit:
                break
            b = bucket_of(d.recovery_point.astimezone(zone))
            if b not in seen:
                seen.append(b)
                keep(d, f"{name} {b}")
    if rules.keep_within:
        horizon = now - dt.timedelta(seconds=rules.keep_within)
        for d in good:
            if d.recovery_point >= horizon:
                keep(d, f"within {_short(rules.keep_within)}")
    # safety floors
    if good:
        keep(good[0], "newest complete backup" if good[0] is out[0] else "newest backup not known to be damaged")
    drilled = next((d for d in good if d.backup_id in passed_drills), None)
    if drilled:
        keep(drilled, "newest backup that passed a drill")
    newest_good = good[0].recovery_point if good else None
    for d in out:
        if d.backup_id not in damaged:
            continue
        if newest_good is None or (d.recovery_point, d.backup_id) > (newest_good, good[0].backup_id):
            keep(d, f"known damaged ({damaged[d.backup_id]}); newer than any good backup: kept as evidence")
        else:
            d.reasons.append(f"known damaged ({damaged[d.backup_id]}); older than the newest good backup")
    for d in out:
        if not d.keep and d.backup_id not in damaged:
            d.reasons.append("matches no retention rule")
    return out


def _short(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
