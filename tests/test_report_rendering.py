"""The report's renderings as pure functions: every store-derived value is escaped in HTML and in
Markdown, and the forecast is said in plain words (no store, no database)."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import os
import re
import tracemalloc
from pathlib import Path

import pytest

from drtool import reports
from drtool.app import reporting
from drtool.objectives import Point
from drtool.records import ScheduleState
from drtool.reports import stream

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 1, tzinfo=UTC)
HOSTILE = "a|b <script>alert(1)</script> *x* [l](http://e) `c`\nsecond line"


def _at(hours: float) -> str:
    return (T0 + dt.timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def _backup(i: int, hours: float, size: int = 10_000_000) -> dict:
    return {"id": f"b{i}", "recovery_point": _at(hours), "completed_at": _at(hours + 0.1),
            "sizes": {"stored_bytes": size, "plain_bytes": size * 3},
            "objects": [{"sha256": "0" * 64}],
            "encryption": {"recipients": [{"fingerprint": "sha256:" + HOSTILE}]}}  # fmt: skip


def _drill(i: int, hours: float, outcome: str = "passed", failure: str | None = None) -> dict:
    return {"drill_id": f"d{i}", "started_at": _at(hours), "backup_id": "b1", "outcome": outcome,
            "passed": outcome == "passed", "failure": failure, "rto_seconds": 60.0 + i, "rpo_seconds": 10.0,
            "storage_target": "primary", "bytes_restored": 30_000_000,
            "phases": {"fetch_decrypt_decompress": 1.0, "pg_restore": 2.0, "provision": 3.0, "verify": 1.0},
            "checks": [{"name": "tables " + HOSTILE, "ok": False, "detail": HOSTILE}]}  # fmt: skip


def _doc(rto: int | None = 600) -> dict:
    state = ScheduleState(jobs={"backup": {"last_slot": _at(47), "last_outcome": "failed", "last_message": HOSTILE,
                                           "missed_total": 3}})  # fmt: skip
    section = reports.build_policy(
        policy={"name": "orders " + HOSTILE, "rpo_seconds": 4 * 3600, "rto_seconds": rto, "retention": {"keep_last": 4},
                "copies": [{"name": "dr " + HOSTILE, "url": "file:///y", "region": None}],
                "storage": {"url": "s3://b/" + HOSTILE, "region": None, "object_lock": None, "copies": []},
                "encryption": {"scheme": "age-v1-x25519", "recipients": []}},
        backups=[_backup(1, 0), _backup(2, 24, 12_000_000), _backup(3, 46, 14_000_000)],
        drills=[_drill(1, 1), _drill(2, 25, "could-not-run", HOSTILE), _drill(3, 47)],
        drill_problems=[], schedule_state=state, copies_pending={"dr " + HOSTILE: ["b3"]},
        start=T0, end=T0 + dt.timedelta(hours=48),
    )  # fmt: skip
    return reports.build([section], start=T0, end=T0 + dt.timedelta(hours=48), now=T0, version="test")


def test_markdown_tables_keep_their_columns_whatever_the_store_says():
    text = reports.render_md(_doc())
    for line in text.splitlines():
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]  # a `|` not escaped by a backslash ends a cell
            assert len(cells) in (3, 5, 7), line  # the measures, inventory and drill log tables
        assert not re.search(r"(?<!\\)(<script|\]\(http)", line), line  # no live HTML tag, no live link
    assert "a\\|b \\<script\\>" in text and "second line" in text


def test_html_escapes_every_value_from_the_store():
    page = reports.render_html(_doc())
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("&lt;script&gt;") >= 8  # policy, reasons, checks, failure, storage, copies, schedule, recipients
    assert "missed slots so far: 3" in page and "$" not in page.replace("$(", "")


def test_forecast_is_said_in_plain_words():
    md = reports.render_md(_doc())
    assert "not within the trend" not in md and "RTO target reached" not in md
    assert "Forecast: a restore now would take about" in md
    assert "Restores stay within the RTO target of 10m at this rate." in md or "longer than the RTO target" in md
    assert "No RTO target is set." in reports.render_md(_doc(rto=None))


def test_charts_label_time_on_x_and_values_on_y():
    page = reports.render_html(_doc())
    assert page.count("<svg") == 3 and "time (UTC)" in page
    # 48 hours of evidence: ticks carry the date and the hour; the y axis names its values
    assert re.search(r">11-01 \d\d:\d\d</text>", page) and re.search(r">11-02 \d\d:\d\d</text>", page)


def test_charts_and_times_read_in_human_units():
    page = reports.render_html(_doc())
    # y ticks at round steps in the unit people set objectives in; no bare floats such as 2.38e+03
    assert re.search(r">12h</text>", page) and re.search(r">1d</text>", page) and ">target 4h</text>" in page
    assert ">5m</text>" in page and ">target 10m</text>" in page
    assert ">5.0 MB</text>" in page and ">10.0 MB</text>" in page
    assert not re.search(r">[0-9.]+e[+-]\d+", page)
    # times to the second with their zone, not ISO with microseconds
    for text in (page, reports.render_md(_doc())):
        assert "Period 2026-11-01 00:00:00 UTC to 2026-11-03 00:00:00 UTC" in text
        assert "2026-11-02 22:00:00 UTC" in text  # b3's recovery point in the inventory
        assert "T00:00:00Z" not in text
        assert "3 backups kept" in text


# -- a fleet's report, a policy at a time (issue 15: bounded memory at 1,000 policies x 100 backups) ----------


def _fleet_doc(policies: int, backups: int = 3) -> dict:
    doc = copy.deepcopy(_doc())
    base = doc["policies"][0]
    row = base["inventory"][0]
    doc["policies"] = []
    for i in range(policies):
        section = copy.deepcopy(base)
        section["policy"], section["compliant"] = f"p{i:05d}", i % 7 != 3
        section["inventory"] = [{**row, "id": f"b{i}-{j}"} for j in range(backups)]
        doc["policies"].append(section)
    doc["compliant"] = bool(doc["policies"]) and all(p["compliant"] for p in doc["policies"])
    return doc


@pytest.mark.parametrize("fmt", ["json", "md", "html"])
@pytest.mark.parametrize("policies", [0, 1, 3, "pitr"])
def test_streamed_report_is_byte_identical_to_the_whole_document(fmt, policies, monkeypatch):
    doc = _pitr_doc() if policies == "pitr" else _fleet_doc(policies)
    monkeypatch.setattr(reporting.clock, "utcnow", lambda: T0)  # generated_at of the frame
    monkeypatch.setattr(reporting, "__version__", "test")
    monkeypatch.setattr(reporting, "SPOOL_BYTES", 1024)  # spills to a file: the copy back is exercised too
    streamed = reporting.compose(iter(doc["policies"]), fmt, start=T0, end=T0 + dt.timedelta(hours=48))
    out = io.BytesIO()
    written = reporting.write_to(streamed, out)
    whole = {"json": reports.render_json, "md": reports.render_md, "html": reports.render_html}[fmt]
    assert out.getvalue().decode() == whole(doc)
    assert written.sha256 == hashlib.sha256(out.getvalue()).hexdigest()
    assert streamed.verdicts == [(p["policy"], p["compliant"]) for p in doc["policies"]]


@pytest.mark.parametrize("name", ["two", "none", "pitr"])
@pytest.mark.parametrize("fmt", ["json", "md", "html"])
def test_report_renderings_are_unchanged_byte_for_byte(name, fmt):
    """tests/golden/report/: the renderings before the report was streamed (two policies, none),
    and of a PITR policy (window, WAL gap, drills of both kinds). DRTOOL_UPDATE_GOLDEN=1 rewrites them."""
    doc = copy.deepcopy(_doc())
    if name == "two":
        second = copy.deepcopy(_doc(rto=None)["policies"][0])
        second["policy"], second["compliant"] = "second", True
        doc["policies"].append(second)
    elif name == "pitr":
        doc = _pitr_doc()
    else:
        doc["policies"] = []
    doc["compliant"] = False
    path = Path(__file__).parent / "golden" / "report" / f"{name}.{fmt}"
    if os.environ.get("DRTOOL_UPDATE_GOLDEN") == "1":
        path.write_text(stream.render(fmt, doc))
    assert stream.render(fmt, doc) == path.read_text()


# -- point-in-time recovery (issue 13 point 6) ---------------------------------------------------------


def _seg(n: int) -> str:
    return f"00000001000000000000{n:04X}"


def _physical_drill(i: int, hours: float) -> dict:
    return {"drill_id": f"p{i}", "kind": "physical", "started_at": _at(hours), "backup_id": "base1",
            "outcome": "passed", "passed": True, "failure": None, "rto_seconds": 40.0, "rpo_seconds": 4.2,
            "rto_first_write_seconds": 40.5, "storage_target": "primary", "bytes_restored": 60_000_000,
            "scratch_profile": "durable",
            "phases": {"fetch_decrypt_extract": 10.0, "fetch_wal": 2.0, "pg_verifybackup": 3.0, "consistent": 20.0},
            "milestones": {"extracted": 12.0, "verified": 15.0, "server_started": 16.0, "consistent": 36.0,
                           "promoted": 40.0, "first_write": 40.5},
            "checks": [{"name": "wal_chain", "ok": True, "detail": "3 segments, no gap"}]}  # fmt: skip


def _pitr_section(rpo: int = 600) -> dict:
    """A PITR policy over 48 hours: a base backup at hour 1, a segment a minute until hour 30,
    where segment 42 went missing; a second base backup at hour 40 covers what follows."""
    t = lambda hours: T0 + dt.timedelta(hours=hours)  # noqa: E731
    base1 = {"id": "base1", "kind": "physical", "recovery_point": _at(1), "completed_at": _at(1.01),
             "sizes": {"stored_bytes": 20_000_000, "plain_bytes": 60_000_000}, "objects": [{"sha256": "1" * 64}],
             "encryption": {"recipients": []},
             "physical": {"end_time": _at(1), "sysid": "7", "timeline": 1, "wal_segment_size": 16 << 20}}  # fmt: skip
    base2 = {**base1, "id": "base2", "recovery_point": _at(40), "completed_at": _at(40.01),
             "physical": {**base1["physical"], "end_time": _at(40)}}  # fmt: skip
    points = [Point("base backup base1", t(1), t(1.01)), Point("base backup base2", t(40), t(40.01))]
    points += [Point(_seg(n), t(1 + n / 60), t(1 + n / 60)) for n in range(2, 42)]  # then 42 is missing
    points += [Point(_seg(n), t(40 + n / 6000), t(40 + n / 6000)) for n in range(2400, 2410)]
    gap = {"backup": "base1", "missing": _seg(42), "through": _seg(42), "segments": 1,
           "key": "s3://b/orders/wal/7/x/" + _seg(42), "restorable_until": _at(1 + 41 / 60),
           "breaks": f"restores from backup base1 stop before {_seg(42)}"}  # fmt: skip
    window = {"sysid": "7", "earliest": _at(1), "latest": _at(40 + 2409 / 6000), "timeline": 1,
              "newest_segment": _seg(2409), "newest_segment_end": _at(40 + 2409 / 6000), "gaps": [gap],
              "timelines_inferred": False}  # fmt: skip
    return reports.build_policy(
        policy={"name": "orders", "drill_kind": "both", "rpo_seconds": rpo, "rto_seconds": 1800, "retention": {},
                "copies": [], "storage": {"url": "s3://b/orders", "region": None, "object_lock": None, "copies": []},
                "encryption": {"scheme": "age-v1-x25519", "recipients": []}},
        backups=[base2, base1, _backup(9, 20)], drills=[_drill(1, 2), _physical_drill(2, 41)], drill_problems=[],
        schedule_state=ScheduleState(), copies_pending={}, start=T0, end=T0 + dt.timedelta(hours=48),
        pitr={"window": window, "points": points, "worst_exact": True, "bound": "upload times; the worst is exact"},
    )  # fmt: skip


def _pitr_doc() -> dict:
    return reports.build([_pitr_section()], start=T0, end=T0 + dt.timedelta(hours=48), now=T0, version="test")


def test_pitr_report_shows_the_window_the_gap_interval_as_worst_rpo_and_drills_of_both_kinds():
    section = _pitr_section()
    pitr = section["pitr"]
    assert pitr["window"]["earliest"] == _at(1) and pitr["window"]["latest"] == _at(40 + 2409 / 6000)
    # the gap: from the end of the last segment before it until the next base backup completed
    assert (pitr["rpo"]["from"], pitr["rpo"]["to"]) == (_at(1 + 41 / 60), _at(40.01))
    assert pitr["rpo"]["after"] == _seg(41) and pitr["rpo"]["seconds"] == pytest.approx((40.01 - 1 - 41 / 60) * 3600)
    assert pitr["rpo"]["largest"][0]["from"] == pitr["rpo"]["from"]
    # the period's first hour, before any base backup, is uncovered by PITR
    assert pitr["rpo"]["uncovered"] == {"from": _at(0), "to": _at(1.01), "seconds": 3636.0}
    assert [x["kind"] for x in section["drills"]["log"]] == ["logical", "physical"]
    assert pitr["drills"]["run"] == 1 and pitr["drills"]["rto_last_seconds"] == 40.0
    proves = {f["figure"]: f for f in pitr["proves"]}
    assert proves["worst-case RPO from the WAL archive"]["met"] is False
    assert proves["PITR drill RTO (last)"] == {**proves["PITR drill RTO (last)"], "objective": "rto", "met": True}
    # the forecast: 60 MB base at 6 MB/s extract (10 s) plus 30 s of WAL, verify, start and promotion
    assert pitr["forecast"]["expected_rto_seconds"] == 40.0
    # the verdict is the archive's RPO, and the gap is named
    assert not section["compliant"]
    assert any(r.startswith("worst-case RPO from the WAL archive") for r in section["reasons"])
    assert any(_seg(42) in r for r in section["reasons"])
    assert not any(r.startswith("worst-case RPO 1") for r in section["reasons"])  # not the dumps' verdict
    md, page = reports.render_md(_pitr_doc()), reports.render_html(_pitr_doc())
    for out in (md, page):
        assert "Restorable window: 2026-11-01 01:00:00 UTC to 2026-11-02 16:24:05 UTC" in out
        assert "2026-11-01 01:41:00 UTC to 2026-11-02 16:00:36 UTC after " + _seg(41) in out
        assert "p2 (PITR)" in out and "promoted at 40s" in out and "pg restore 2s" in out
    # a policy without [pitr] has no PITR part: its renderings are as before
    assert "Point-in-time recovery" not in reports.render_md(_doc()) and "pitr" not in _doc()["policies"][0]


def _peak_bytes_of_a_report(policies: int, tmp_path: Path) -> int:
    def sections():  # made as they are asked for, as the app reads each policy's evidence
        section = _fleet_doc(1, backups=100)["policies"][0]
        for i in range(policies):
            yield {**section, "policy": f"p{i:05d}", "inventory": [dict(row) for row in section["inventory"]]}

    tracemalloc.start()
    try:
        streamed = reporting.compose(sections(), "json", start=T0, end=T0 + dt.timedelta(hours=48))
        reporting.write_files(str(tmp_path / f"r{policies}.json"), streamed, None)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_report_memory_does_not_grow_with_the_fleet(tmp_path, monkeypatch):
    monkeypatch.setattr(reporting, "SPOOL_BYTES", 64 << 10)
    small, large = _peak_bytes_of_a_report(5, tmp_path), _peak_bytes_of_a_report(100, tmp_path)
    rendered = (tmp_path / "r100.json").stat().st_size
    assert large < 2 * small, (small, large)  # 20 times the policies, not twice the memory
    assert rendered > 2 * large  # the report is bigger than what was held to write it
