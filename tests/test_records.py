"""The manifest as a typed record: one serialisation, one validating parser (no I/O)."""

from __future__ import annotations

import json

import pytest

from drtool.records import ManifestInvalid, parse_manifest, serialise_manifest

DOC = {
    "format": "drtool-backup-manifest", "version": 1, "id": "20261126T192709Z-b76a94", "policy": "orders",
    "database": "orders", "encoding": "UTF8", "source": "db1.internal:5432/orders", "host": "backup-host-1",
    "server_version": "15.18", "server_version_num": 150018, "pg_dump_version": "15.18",
    "recovery_point": "2026-11-26T19:27:09.721165Z", "started_at": "2026-11-26T19:27:09.700000Z",
    "completed_at": "2026-11-26T19:27:10.100368Z",
    "sizes": {"database_bytes": 26361191, "plain_bytes": 101022292, "compressed_bytes": 941000,
              "stored_bytes": 941383},
    "objects": [{"role": "dump", "key": "dump.zst.age", "size": 941383, "sha256": "ab" * 32}],
    "payload_format": "age-v1(zstd(pg_dump --format=custom --compress=0))",
    "compression": {"algorithm": "zstd", "level": 1},
    "encryption": {"scheme": "age-v1-x25519", "recipients": [{"recipient": "age1x", "fingerprint": "sha256:0"}]},
    "tables": {"public.orders": 200000}, "row_count_method": "dump-stream",
    "tool": {"name": "drtool", "version": "0.1.0"}, "future_field": {"kept": True},
}  # fmt: skip


def test_manifest_round_trips_unchanged_unknown_fields_included():
    raw = json.dumps(DOC).encode()
    m = parse_manifest(raw, "x")
    assert m.dump.sha256 == "ab" * 32 and m.sizes.stored_bytes == 941383
    assert json.loads(serialise_manifest(m)) == DOC


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"version": "1"}, "'version'"),
        ({"version": 2}, "newer"),
        ({"recovery_point": None}, "'recovery_point' is missing"),
        ({"objects": []}, "role 'dump'"),
        ({"objects": [{"role": "dump", "key": "../x", "size": 1, "sha256": "ab" * 32}]}, "leaves"),
        ({"objects": [{"role": "dump", "key": "d", "size": 1, "sha256": "xyz"}]}, "sha256"),
        ({"completed_at": "not a time"}, "ISO 8601"),
        ({"sizes": {"stored_bytes": -1, "plain_bytes": 1}}, "negative"),
        ({"sizes": {"stored_bytes": True, "plain_bytes": 1}}, "wrong type"),
        ({"tables": {"t": "many"}}, "row counts"),
    ],
)
def test_malformed_manifest_is_one_error_naming_the_object(change, needle):
    doc = {**DOC, **change}
    with pytest.raises(ManifestInvalid) as e:
        parse_manifest(json.dumps(doc).encode(), "s3://b/p/orders/backups/X/manifest.json")
    assert "s3://b/p/orders/backups/X/manifest.json" in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize("raw", [b"", b"[1]", b"{", "\xff".encode("latin-1"), b'{"format": "other"}'])
def test_garbage_is_one_error(raw):
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw, "where")


# -- drill records and state objects -----------------------------------------------------------------

from drtool.records import (  # noqa: E402
    CopyState,
    DrillRecordInvalid,
    ScheduleState,
    StateInvalid,
    parse_copy_state,
    parse_drill_record,
    parse_schedule_state,
    serialise_copy_state,
    serialise_drill_record,
    serialise_schedule_state,
)

DRILL = {
    "format": "drtool-drill-record", "version": 1, "drill_id": "20261126T200000Z-abcdef", "policy": "orders",
    "backup_id": "20261126T192709Z-b76a94", "storage_target": "primary", "started_at": "2026-11-26T20:00:00Z",
    "completed_at": "2026-11-26T20:01:00Z", "outcome": "passed", "passed": True, "failure": None,
    "rto_seconds": 42.5, "rpo_seconds": 1800, "bytes_restored": 1000, "phases": {"pg_restore": 3.2},
    "checks": [{"name": "row_counts", "ok": True, "detail": "3 tables"}], "later_field": [1, 2],
}  # fmt: skip


def test_drill_record_round_trips_every_field_as_stored():
    r = parse_drill_record(json.dumps(DRILL).encode(), "s/orders/drills/x.json")
    assert (r.drill_id, r.outcome, r.passed, r.rto_seconds) == (DRILL["drill_id"], "passed", True, 42.5)
    assert json.loads(serialise_drill_record(r)) == DRILL and r.as_dict() == DRILL


def test_drill_record_older_than_outcome_takes_it_from_passed():
    old = {k: v for k, v in DRILL.items() if k != "outcome"} | {"passed": False, "failure": "verify: x"}
    assert parse_drill_record(json.dumps(old).encode(), "x").outcome == "failed"


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"started_at": None}, "'started_at' is missing"),
        ({"started_at": "yesterday"}, "'started_at' is not an ISO 8601 time"),
        ({"drill_id": 7}, "'drill_id' has the wrong type"),
        ({"rto_seconds": "fast"}, "'rto_seconds' has the wrong type"),
        ({"rto_seconds": True}, "'rto_seconds' has the wrong type"),
        ({"outcome": "maybe"}, "unknown outcome"),
        ({"passed": False}, "'passed' contradicts outcome"),
        ({"checks": ["row_counts"]}, "'checks'"),
        ({"phases": {"pg_restore": "3s"}}, "'phases'"),
        ({"version": 2}, "version 2"),
        ({"format": "something-else"}, "not a drtool drill record"),
    ],
)
def test_malformed_drill_record_is_one_error_naming_the_object(change, needle):
    with pytest.raises(DrillRecordInvalid, match="^s/orders/drills/x.json: unreadable drill record: ") as e:
        parse_drill_record(json.dumps({**DRILL, **change}).encode(), "s/orders/drills/x.json")
    assert needle in str(e.value)


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[]", b"\xff\xfe", b"null"])
def test_garbage_drill_record_or_state_is_one_error(raw):
    with pytest.raises(DrillRecordInvalid, match="^w: unreadable drill record"):
        parse_drill_record(raw, "w")
    with pytest.raises(StateInvalid, match="^w: unreadable schedule state"):
        parse_schedule_state(raw, "w")
    with pytest.raises(StateInvalid, match="^w: unreadable copy state"):
        parse_copy_state(raw, "w")


def test_schedule_state_round_trips_as_documented():
    doc = {"format": "drtool-schedule-state", "version": 1, "jobs": {"backup": {
        "last_slot": "2026-11-26T18:00:00Z", "last_attempt": "2026-11-26T18:00:03Z", "last_missed": 0,
        "missed_total": 2, "last_outcome": "ok", "last_message": "backup x",
        "last_success": "2026-11-26T18:00:03Z"}}}  # fmt: skip
    state = parse_schedule_state(json.dumps(doc).encode(), "w")
    assert state.last_slot("backup").isoformat() == "2026-11-26T18:00:00+00:00" and state.last_slot("drill") is None
    assert json.loads(serialise_schedule_state(state)) == doc
    assert json.loads(serialise_schedule_state(ScheduleState())) == {**doc, "jobs": {}}


@pytest.mark.parametrize(
    "jobs, needle",
    [({"backup": []}, "job 'backup' is not an object"), ({"backup": {"last_slot": "soon"}}, "'last_slot'"),
     ({"backup": {"missed_total": -1}}, "'missed_total' is negative")],
)  # fmt: skip
def test_malformed_schedule_state_is_one_error_naming_the_object(jobs, needle):
    raw = json.dumps({"format": "drtool-schedule-state", "version": 1, "jobs": jobs}).encode()
    with pytest.raises(StateInvalid, match="^s/p/state/schedule.json: unreadable schedule state: ") as e:
        parse_schedule_state(raw, "s/p/state/schedule.json")
    assert needle in str(e.value)


def test_copy_state_round_trips_and_drops_targets_with_nothing_pending():
    doc = {"format": "drtool-copy-state", "version": 1,
           "pending": {"dr": {"b1": {"attempts": 2, "last_error": "timeout"}}, "empty": {}}}  # fmt: skip
    state = parse_copy_state(json.dumps(doc).encode(), "w")
    assert state.pending["dr"]["b1"]["attempts"] == 2
    assert json.loads(serialise_copy_state(state))["pending"] == {"dr": doc["pending"]["dr"]}
    assert parse_copy_state(serialise_copy_state(CopyState()), "w").pending == {}
    with pytest.raises(StateInvalid, match="pending copies to 'dr'"):
        parse_copy_state(json.dumps({**doc, "pending": {"dr": ["b1"]}}).encode(), "w")
