"""The compliance report of a PITR policy (issue 13 point 6), over a real cluster archiving with
`drtool wal push` into the real S3 server: the restorable window, the interval a WAL gap leaves
uncovered as the worst-case RPO, and drills of both kinds with their RTO phases."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jsonschema
from test_pitr_drill import _archive_keys, _archive_segments, _drill, _prepare


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def test_report_over_a_physical_drill_and_a_wal_gap_shows_the_window_the_gap_as_worst_rpo_and_both_drill_kinds(
    make_pitr, scratch_root, seaweed, bucket, tmp_path
):
    c = make_pitr()
    began = dt.datetime.now(dt.UTC)
    _prepare(c, scratch_root)  # a base backup
    assert c.cli("backup", "-p", str(c.policy)).code == 0  # and a dump
    _archive_segments(c, 2)
    physical = _drill(c)
    assert physical.code == 0, physical.out + physical.err
    logical = c.cli("drill", "-p", str(c.policy), "--json")
    assert logical.code == 0, logical.out + logical.err
    names = _archive_segments(c, 3)
    key = next(k for k in _archive_keys(seaweed, bucket, c) if f"/{names[1]}." in k)
    seaweed.client().delete_object(Bucket=bucket, Key=key)

    # a period from a minute before the test to an hour from now: the stretch before the base
    # backup is short, and the gap, never followed by a base backup, lasts to the period's end
    period = ["--from", _iso(began - dt.timedelta(minutes=1)), "--to", _iso(began + dt.timedelta(hours=1))]
    out = tmp_path / "report.json"
    r = c.cli("report", "-p", str(c.policy), *period, "--format", "json", "-o", str(out))
    assert r.code == 0, r.err
    doc = json.loads(out.read_text())
    schema = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schemas" / "report.schema.json").read_text())
    jsonschema.validate(doc, schema)
    (section,) = doc["policies"]
    pitr = section["pitr"]
    # the window: from the base backup's end to the end of the last segment before the gap
    gap = pitr["gaps"][0]
    assert gap["missing"] == names[1] and gap["restorable_until"] == pitr["window"]["latest"]
    earliest = pitr["window"]["earliest"]
    assert earliest is not None and _parse(earliest) < _parse(gap["restorable_until"])
    # the worst-case RPO is the interval the gap leaves uncovered: from the last restorable moment
    # (the `end` of the segment before the gap) to the period's end, as no base backup followed it
    rpo = pitr["rpo"]
    assert rpo["after"] == names[0] and rpo["exact"] is True
    assert _parse(rpo["from"]) == _parse(gap["restorable_until"])
    assert _parse(rpo["to"]) == _parse(doc["period"]["to"])
    assert rpo["seconds"] == round((_parse(rpo["to"]) - _parse(rpo["from"])).total_seconds(), 1)
    assert any(names[1] in reason for reason in section["reasons"])
    # drills of both kinds, the PITR one with its milestones, and the figures' objectives
    log = {x["kind"]: x for x in section["drills"]["log"]}
    assert log["physical"]["drill_id"] == physical.only["drill_id"]
    assert log["logical"]["drill_id"] == logical.only["drill_id"]
    assert log["physical"]["milestones"]["promoted"] == physical.only["rto_seconds"]
    assert "pg_restore" in log["logical"]["phases"]
    assert pitr["drills"]["run"] == 1 and pitr["drills"]["rto_last_seconds"] == physical.only["rto_seconds"]
    assert pitr["forecast"]["available"] is True
    assert {(f["figure"], f["objective"]) for f in pitr["proves"]} >= {
        ("worst-case RPO from the WAL archive", "rpo"), ("PITR drill RTO (last)", "rto"),
        ("physical restore RTO forecast", "rto")}  # fmt: skip
    md = tmp_path / "report.md"
    assert c.cli("report", "-p", str(c.policy), *period, "--format", "md", "-o", str(md)).code == 0
    text = md.read_text()
    assert "### Point-in-time recovery" in text and f"WAL gap: {names[1]}" in text and "(PITR)" in text


def test_the_worst_interval_starts_at_a_segments_end_even_when_the_listing_rounds_its_upload_down():
    # S3 listings give whole seconds: a segment whose content ended at 13:09:19.067 shows as
    # uploaded at 13:09:19. Its `end` is the exact start of the loss (the window's `restorable_until`
    # says the same); an `end` a second or more past the upload is a skewed clock and is not used.
    from drtool.app.walview import refined
    from drtool.objectives import Point

    listed = Point("000000010000000000000003", _parse("2026-11-30T13:09:19Z"), _parse("2026-11-30T13:09:20Z"))
    assert refined(listed, "2026-11-30T13:09:19.067197Z").recovery_point == _parse("2026-11-30T13:09:19.067197Z")
    assert refined(listed, "2026-11-30T13:09:12.5Z").recovery_point == _parse("2026-11-30T13:09:12.5Z")
    assert refined(listed, "2026-11-30T13:09:20Z") == listed
    assert refined(listed, None) == listed
