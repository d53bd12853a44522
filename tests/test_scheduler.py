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


def test_latest_slot_asks_croniter_once_per_expression_until_the_next_firing(monkeypatch):
    """An idle tick asks for the latest slot of every policy's every job: ~1 ms of croniter each."""
    import croniter as croniter_module

    made = []
    real = croniter_module.croniter

    class Counting(real):  # type: ignore[misc,valid-type]
        def __init__(self, *a, **kw):
            made.append(a[0])
            super().__init__(*a, **kw)

    monkeypatch.setattr(scheduler, "croniter", Counting)
    monkeypatch.setattr(scheduler, "_SLOTS", {})
    slots = {scheduler.latest_slot("17 */6 * * *", "Europe/Berlin", t(13, 5) + dt.timedelta(seconds=s))
             for s in range(0, 3600, 7)}  # fmt: skip
    assert slots == {t(11, 17)}  # 12:17 Berlin
    assert len(made) <= 2


def test_latest_slot_remembered_is_the_same_as_asking_croniter_for_any_now():
    """Back and forth in time, across a DST change, at and a second around the firings."""
    import random
    from zoneinfo import ZoneInfo

    from croniter import croniter

    def asked(expr: str, tz: str, now: dt.datetime) -> dt.datetime:
        return (
            croniter(expr, now.astimezone(ZoneInfo(tz)) + dt.timedelta(seconds=1)).get_prev(dt.datetime).astimezone(UTC)
        )

    rnd = random.Random(15)
    start = dt.datetime(2026, 3, 27, tzinfo=UTC)  # Europe's clocks go forward on 29 March
    exprs = ["0 0 * * *", "*/5 * * * *", "30 2 * * *", "0 */6 * * *", "15 1 * * 0", "0 3 1 * *"]
    nows = [start + dt.timedelta(seconds=rnd.randint(0, 4 * 86400), microseconds=rnd.randint(0, 999999))
            for _ in range(400)]  # fmt: skip
    for tz in ("UTC", "Europe/Berlin", "America/New_York"):
        for now in nows:
            expr = rnd.choice(exprs)
            assert scheduler.latest_slot(expr, tz, now) == asked(expr, tz, now), (expr, tz, now)
            slot = scheduler.latest_slot(expr, tz, now)
            for d in (-1, -0.5, 0, 0.5, 1):
                at = slot + dt.timedelta(seconds=d)
                assert scheduler.latest_slot(expr, tz, at) == asked(expr, tz, at), (expr, tz, at)
