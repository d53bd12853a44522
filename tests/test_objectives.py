"""RPO arithmetic and the report's verdict as pure functions (no store, no database)."""

from __future__ import annotations

import datetime as dt

from drtool import objectives, reports
from drtool.records import ScheduleState

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 1, tzinfo=UTC)


def backup(i: int, rp_h: float, done_h: float) -> dict:
    return {"id": f"b{i}", "recovery_point": (T0 + dt.timedelta(hours=rp_h)).isoformat(),
            "completed_at": (T0 + dt.timedelta(hours=done_h)).isoformat(),
            "sizes": {"stored_bytes": 10, "plain_bytes": 100, "database_bytes": 50},
            "objects": [{"sha256": "0" * 64}], "encryption": {"recipients": [{"fingerprint": "sha256:x"}]}}  # fmt: skip


def test_gaps_follow_the_definition():
    pts = [objectives.Point("a", T0, T0 + dt.timedelta(minutes=10)),
           objectives.Point("b", T0 + dt.timedelta(hours=6), T0 + dt.timedelta(hours=6, minutes=5))]  # fmt: skip
    gaps = objectives.gaps(pts, T0 + dt.timedelta(hours=8))
    # completion of b minus recovery point of a; then `until` minus the newest recovery point
    assert [g.seconds for g in gaps] == [6 * 3600 + 300, 2 * 3600]
    worst = objectives.worst_rpo(pts, T0 + dt.timedelta(hours=8))
    assert worst.after_backup == "a" and worst.seconds == 6 * 3600 + 300
    assert objectives.worst_rpo([], T0) is None


def test_report_names_an_rpo_miss_with_when():
    section = reports.build_policy(
        policy={"name": "p", "rpo_seconds": 4 * 3600, "rto_seconds": 600, "retention": {}, "copies": [],
                "storage": {"url": "file:///x", "object_lock": None, "copies": []},
                "encryption": {"scheme": "age-v1-x25519", "recipients": []}},
        backups=[backup(1, 0, 0.1), backup(2, 6, 6.1)], drills=[], drill_problems=[], schedule_state=ScheduleState(),
        copies_pending={}, start=T0, end=T0 + dt.timedelta(hours=7),
    )  # fmt: skip
    assert section["compliant"] is False
    assert section["rpo"]["worst_seconds"] == 6.1 * 3600
    assert section["rpo"]["worst_from"].startswith("2026-11-01T00:00:00")
    assert any("worst-case RPO 6h6m exceeds the target 4h" in r for r in section["reasons"])
    assert "no restore drill ran in the period" in section["reasons"]


def test_a_period_that_starts_before_the_first_backup_opens_with_a_gap():
    pts = [objectives.Point("a", T0 + dt.timedelta(days=3), T0 + dt.timedelta(days=3, minutes=10))]
    gaps = objectives.gaps(pts, T0 + dt.timedelta(days=3, hours=1), since=T0)
    assert gaps[0].after_backup is None and gaps[0].start == T0
    assert gaps[0].end == pts[0].completed_at and gaps[0].seconds == 3 * 86400 + 600
    # a period covered from its start has no such gap; a period with no backup at all is one gap
    assert all(g.after_backup for g in objectives.gaps(pts, T0 + dt.timedelta(days=4), since=pts[0].completed_at))
    assert [g.seconds for g in objectives.gaps([], T0 + dt.timedelta(hours=2), since=T0)] == [7200]


def test_report_names_the_uncovered_start_of_the_period():
    section = reports.build_policy(
        policy={"name": "p", "rpo_seconds": 4 * 3600, "rto_seconds": 600, "retention": {}, "copies": [],
                "storage": {"url": "file:///x", "object_lock": None, "copies": []},
                "encryption": {"scheme": "age-v1-x25519", "recipients": []}},
        backups=[backup(1, 48, 48.1)], drills=[], drill_problems=[], schedule_state=ScheduleState(),
        copies_pending={}, start=T0, end=T0 + dt.timedelta(hours=49),
    )  # fmt: skip
    assert section["compliant"] is False
    assert section["rpo"]["uncovered"]["seconds"] == 48.1 * 3600 and section["rpo"]["worst_seconds"] == 48.1 * 3600
    assert any(r.startswith("no backup before 2026-11-03T00:06:00") for r in section["reasons"]), section["reasons"]


def test_the_inventory_names_the_payloads_sha256_and_survives_odd_recipients():
    """A manifest's first object need not be the one a restore reads, and its recipients are not
    checked by the parser: the report took objects[0] and iterated whatever `recipients` held."""
    first = {**backup(1, 0, 0.1), "objects": [{"role": "x", "sha256": "0" * 64}, {"role": "dump", "sha256": "d" * 64}],
             "encryption": {"recipients": 5}}  # fmt: skip
    base = {**backup(2, 1, 1.1), "kind": "physical",
            "objects": [{"role": "dump", "sha256": "0" * 64}, {"role": "base", "sha256": "b" * 64}]}  # fmt: skip
    section = reports.build_policy(
        policy={"name": "p", "rpo_seconds": 4 * 3600, "rto_seconds": 600, "retention": {}, "copies": [],
                "storage": {"url": "file:///x", "object_lock": None, "copies": []},
                "encryption": {"scheme": "age-v1-x25519", "recipients": []}},
        backups=[first, base], drills=[], drill_problems=[], schedule_state=ScheduleState(),
        copies_pending={}, start=T0, end=T0 + dt.timedelta(hours=2),
    )  # fmt: skip
    rows = {r["id"]: r for r in section["inventory"]}
    assert rows["b1"]["sha256"] == "d" * 64 and rows["b2"]["sha256"] == "b" * 64
    assert rows["b1"]["recipients"] == [] and rows["b2"]["recipients"] == ["sha256:x"]
