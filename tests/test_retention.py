"""Retention as a pure function: worked examples with their reasons, and invariants checked by
hypothesis over arbitrary backup histories and rules."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from drtool import retention
from drtool.policy.schema import Retention
from drtool.retention import Candidate

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def history(hours_apart: int, count: int) -> list[Candidate]:
    return [Candidate(f"b{i:04d}", NOW - dt.timedelta(hours=i * hours_apart)) for i in range(count)]


def kept(decisions) -> list[str]:
    return [d.backup_id for d in decisions if d.keep]


def test_empty_rules_delete_nothing():
    ds = retention.apply(history(6, 20), Retention(), NOW)
    assert all(d.keep for d in ds)
    assert ds[0].reasons == ["no retention rules: nothing is deleted"]


def test_keep_last_and_daily_with_reasons():
    # every 6 hours for 10 days: keep the 4 newest and the newest of each of the last 3 days
    ds = retention.apply(history(6, 40), Retention(keep_last=4, keep_daily=3), NOW)
    # (backups at 12:00, 06:00, 00:00, 18:00 the day before, ...)
    assert kept(ds) == ["b0000", "b0001", "b0002", "b0003", "b0007"]
    by_id = {d.backup_id: d.reasons for d in ds}
    assert by_id["b0000"] == ["last 1/4", "daily 2026-11-26", "newest complete backup"]
    assert by_id["b0003"] == ["last 4/4", "daily 2026-11-25"]
    assert by_id["b0007"] == ["daily 2026-11-24"]
    assert by_id["b0004"] == ["matches no retention rule"]


def test_weekly_monthly_yearly_buckets():
    ds = retention.apply(history(24, 800), Retention(keep_weekly=2, keep_monthly=2, keep_yearly=3), NOW)
    reasons = {r for d in ds for r in d.reasons}
    assert {"weekly 2026-W48", "weekly 2026-W47", "monthly 2026-11", "monthly 2026-10"} <= reasons
    assert {"yearly 2026", "yearly 2025", "yearly 2024"} <= reasons
    assert "yearly 2024" in dict((d.backup_id, " ".join(d.reasons)) for d in ds)[kept(ds)[-1]]


def test_keep_within_is_relative_to_now():
    ds = retention.apply(history(12, 10), Retention(keep_within=2 * 86400), NOW)
    assert kept(ds) == ["b0000", "b0001", "b0002", "b0003", "b0004"]
    assert "within 2d" in ds[4].reasons


def test_buckets_follow_the_policy_time_zone():
    # 23:30 UTC on the 25th is already the 26th in Berlin
    late = [Candidate("a", dt.datetime(2026, 11, 25, 23, 30, tzinfo=UTC)),
            Candidate("b", dt.datetime(2026, 11, 25, 22, 30, tzinfo=UTC))]  # fmt: skip
    utc = retention.apply(late, Retention(keep_daily=2), NOW)
    berlin = retention.apply(late, Retention(keep_daily=2), NOW, tz="Europe/Berlin")
    assert kept(utc) == ["a"]
    assert kept(berlin) == ["a", "b"] and berlin[0].reasons[0] == "daily 2026-11-26"


def test_newest_passed_drill_is_kept_whatever_the_rules():
    ds = retention.apply(history(24, 30), Retention(keep_last=1), NOW, passed_drills=frozenset({"b0020", "b0025"}))
    assert kept(ds) == ["b0000", "b0020"]
    assert ds[20].reasons == ["newest backup that passed a drill"]


# -- invariants ------------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=6)
rules_st = st.builds(
    Retention, keep_last=counts, keep_hourly=counts, keep_daily=counts, keep_weekly=counts,
    keep_monthly=counts, keep_yearly=counts, keep_within=st.sampled_from([0, 3600, 86400, 7 * 86400]),
)  # fmt: skip
times_st = st.lists(st.integers(min_value=0, max_value=3 * 365 * 24 * 60), min_size=0, max_size=60, unique=True).map(
    lambda mins: [Candidate(f"b{m}", NOW - dt.timedelta(minutes=m)) for m in mins]
)


@settings(max_examples=300, deadline=None)
@given(times_st, rules_st, st.sets(st.integers(min_value=0, max_value=59)))
def test_invariants(backups, rules, drilled_idx):
    ids = [b.backup_id for b in sorted(backups, key=lambda b: b.recovery_point, reverse=True)]
    passed = frozenset(ids[i] for i in drilled_idx if i < len(ids))
    ds = retention.apply(backups, rules, NOW, passed_drills=passed)
    assert sorted(d.backup_id for d in ds) == sorted(ids)  # one decision per backup
    assert all(d.reasons for d in ds)  # every decision says why
    if not ds:
        return
    assert ds[0].keep  # the newest is never deleted
    if retention.is_empty(rules):
        assert all(d.keep for d in ds)
    assert all(d.keep for d in ds[: rules.keep_last])
    if passed:
        newest_passed = next(d for d in ds if d.backup_id in passed)
        assert newest_passed.keep
    for d in ds:
        if rules.keep_within and d.recovery_point >= NOW - dt.timedelta(seconds=rules.keep_within):
            assert d.keep
    # applying the rules again to what was kept keeps all of it (no slow erosion run after run)
    survivors = [Candidate(d.backup_id, d.recovery_point) for d in ds if d.keep]
    again = retention.apply(survivors, rules, NOW, passed_drills=passed)
    assert all(d.keep for d in again)


def test_known_damaged_backups_count_toward_no_rule_and_never_displace_the_last_good_one():
    backups = history(6, 4)  # b0000 newest
    damaged = {"b0000": "verify found it damaged", "b0002": "missing object"}
    ds = {d.backup_id: d for d in retention.apply(backups, Retention(keep_last=1), NOW, damaged=damaged)}
    assert ds["b0001"].keep and ds["b0001"].reasons == ["last 1/1", "newest backup not known to be damaged"]
    assert ds["b0000"].keep and "kept as evidence" in ds["b0000"].reasons[0]  # newer than any good one
    assert not ds["b0002"].keep and "older than the newest good backup" in ds["b0002"].reasons[0]
    assert not ds["b0003"].keep


def test_when_every_backup_is_damaged_none_is_deleted():
    ds = retention.apply(history(6, 3), Retention(keep_last=1), NOW, damaged={f"b{i:04d}": "x" for i in range(3)})
    assert all(d.keep for d in ds)


@settings(max_examples=200, deadline=None)
@given(times_st, rules_st, st.sets(st.integers(min_value=0, max_value=59)))
def test_the_newest_backup_not_known_damaged_is_always_kept(backups, rules, damaged_idx):
    ids = [b.backup_id for b in sorted(backups, key=lambda b: (b.recovery_point, b.backup_id), reverse=True)]
    damaged = {ids[i]: "damaged" for i in damaged_idx if i < len(ids)}
    ds = retention.apply(backups, rules, NOW, damaged=damaged)
    good = [d for d in ds if d.backup_id not in damaged]
    if good:
        assert good[0].keep
    for d in ds:  # a damaged backup is kept only as evidence newer than every good one
        if d.backup_id in damaged and d.keep and good:
            assert d.recovery_point >= good[0].recovery_point
