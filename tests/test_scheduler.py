"""The scheduler as pure functions, with the clock injected."""

from __future__ import annotations

import datetime as dt

from drtool import scheduler

UTC = dt.UTC


def t(h: int, m: int = 0, day: int = 26) -> dt.datetime:
    return dt.datetime(2026, 11, day, h, m, tzinfo=UTC)


def test_first_run_does_the_latest_slot():
    assert scheduler.due("0 */6 * * *", "UTC", None, t(13, 5)) == scheduler.Due(t(12), 0)


def test_each_slot_runs_at_most_once():
    assert scheduler.due("0 */6 * * *", "UTC", t(12), t(13, 5)) is None
    assert scheduler.due("0 */6 * * *", "UTC", t(12), t(17, 59)) is None
    assert scheduler.due("0 */6 * * *", "UTC", t(12), t(18, 0)) == scheduler.Due(t(18), 0)


def test_missed_slots_are_caught_up_once_and_counted():
    # down from 12:00 to 09:30 the next day: 06:00 runs now (late); 18:00 and 00:00 are missed
    d = scheduler.due("0 */6 * * *", "UTC", t(12), t(9, 30, day=27))
    assert d == scheduler.Due(t(6, day=27), 2)


def test_clock_jumping_back_makes_nothing_due():
    assert scheduler.due("0 */6 * * *", "UTC", t(18), t(13)) is None


def test_clock_jumping_forward_runs_once():
    d = scheduler.due("*/15 * * * *", "UTC", t(12), t(12, 50, day=28))
    assert d is not None and d.slot == t(12, 45, day=28) and d.missed == 2 * 96 + 2


def test_time_zone_is_honoured():
    # 02:00 in Berlin is 01:00 UTC in winter
    assert scheduler.latest_slot("0 2 * * *", "Europe/Berlin", t(1, 30)) == t(1)
    assert scheduler.next_times("0 2 * * *", "Europe/Berlin", t(1, 30), 2) == [t(1, day=27), t(1, day=28)]


def test_tightest_interval():
    assert scheduler.tightest_interval(["0 */6 * * *", "30 4 * * *"]) == 6 * 3600
    assert scheduler.tightest_interval(["*/5 * * * *"]) == 300
