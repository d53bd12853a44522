"""PITR drills (issue 13): `drill --physical` replays a base backup and the archived WAL in a
throwaway server, promotes it, measures RPO from the replayed data and RTO to promotion, against
real PostgreSQL 15 clusters archiving with `drtool wal push` into the real S3 server
(tests/pitr_fixtures.py)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from pitr_fixtures import s3_storage_toml
from test_drills import leftovers


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def _prepare(c, scratch_root) -> None:
    """A table of committed rows, the drill's scratch folder in scratch_root, one base backup."""
    c.env["TMPDIR"] = str(scratch_root)
    c.pg.psql("CREATE TABLE rows (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    r = c.cli("backup", "--physical", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err


def _commit(c, n: int = 1) -> None:
    for _ in range(n):
        c.pg.psql("INSERT INTO rows DEFAULT VALUES")


def _drill(c, *args: str):
    return c.cli("drill", "--physical", "-p", str(c.policy), "--json", *args)


def _archive_segments(c, count: int) -> list[str]:
    """`count` completed segments, each with a commit in it, all archived."""
    names = []
    for _ in range(count):
        _commit(c)
        names.append(c.switch_wal())
        c.wait_archived(names[-1])
    return names


def _archive_keys(seaweed, bucket: str, c) -> list[str]:
    prefix = c.store_url.split(f"s3://{bucket}/", 1)[1]
    pages = seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


class WriteLoad:
    """One row committed every `every` seconds on the source, from its own connection."""

    def __init__(self, c, every: float = 0.2):
        self.dsn, self.password, self.every = c.pg.dsn(), c.pg.PASSWORD, every
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, password=self.password, autocommit=True) as conn:
            while not self.stop_flag.is_set():
                conn.execute("INSERT INTO rows DEFAULT VALUES")
                time.sleep(self.every)

    def __enter__(self) -> WriteLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=30)


def test_physical_drill_to_latest_under_write_load_records_an_rpo_of_seconds_from_the_replayed_data(
    make_pitr, scratch_root, seaweed, bucket
):
    c = make_pitr()
    c.pg.psql("ALTER SYSTEM SET archive_timeout = 5")
    c.pg.psql("SELECT pg_reload_conf()")
    _prepare(c, scratch_root)
    assert c.cli("backup", "-p", str(c.policy)).code == 0  # a logical dump, for the comparison below
    with WriteLoad(c):
        time.sleep(12)  # a couple of archive_timeout switches
        outside = time.monotonic()
        r = _drill(c)
        wall = time.monotonic() - outside
        assert r.code == 0, r.out + r.err
        rec = r.only
        logical = c.cli("drill", "-p", str(c.policy), "--json")
    assert logical.code == 0, logical.out + logical.err
    assert rec["kind"] == "physical" and rec["outcome"] == "passed" and rec["target"] == "latest"
    assert rec["recovery_point_source"] == "last replayed commit"
    # the recovery point is a commit the source really made: a row stamped just before it exists
    point = _parse(rec["recovery_point"])
    nearest = c.pg.psql(
        f"SELECT extract(epoch FROM '{rec['recovery_point']}'::timestamptz - max(at)) FROM rows "
        f"WHERE at <= '{rec['recovery_point']}'::timestamptz"
    )
    assert 0 <= float(nearest) < 0.5
    # ... and the rows committed after it on the source are exactly what a disaster at D loses
    started = _parse(rec["started_at"])
    assert rec["rpo_seconds"] == pytest.approx((started - point).total_seconds(), abs=0.01)
    assert 0 < rec["rpo_seconds"] < 20  # archive_timeout 5 s + the upload, not the dump's age
    lost = int(c.pg.psql(f"SELECT count(*) FROM rows WHERE at > '{rec['recovery_point']}' AND at < '{_iso(started)}'"))
    assert lost >= 1
    # RTO: to promotion, and no larger than the wall time measured outside
    m = rec["milestones"]
    assert m["extracted"] <= m["verified"] <= m["server_started"] <= m["consistent"] <= m["promoted"]
    assert m["promoted"] <= m["first_write"]
    assert rec["rto_seconds"] == m["promoted"] and rec["rto_first_write_seconds"] == m["first_write"]
    assert rec["rto_seconds"] <= wall
    names = [ch["name"] for ch in rec["checks"]]
    assert {"wal_chain", "pg_verifybackup", "write", "fresh_connection"} <= set(names)
    assert all(ch["ok"] for ch in rec["checks"])
    assert rec["source_archiver"]["archived_count"] >= 2 and rec["source_archiver"]["failed_count"] == 0
    assert rec["timeline"] == 2  # promoted onto its own timeline ...
    assert leftovers(scratch_root) == []  # ... in a server that is gone
    assert not [k for k in _archive_keys(seaweed, bucket, c) if "/00000002" in k]  # ... which never reached the archive
    # the logical drill on the same policy restores the dump: its RPO is the dump's age, larger
    assert logical.only["rpo_seconds"] > rec["rpo_seconds"]


def test_physical_drill_fails_naming_a_segment_missing_mid_chain(make_pitr, scratch_root, seaweed, bucket):
    c = make_pitr()
    _prepare(c, scratch_root)
    names = _archive_segments(c, 3)
    key = next(k for k in _archive_keys(seaweed, bucket, c) if f"/{names[1]}." in k)
    seaweed.client().delete_object(Bucket=bucket, Key=key)
    r = _drill(c)
    assert r.code == 3, r.out + r.err
    rec = r.only
    assert rec["outcome"] == "failed" and names[1] in rec["failure"] and "missing" in rec["failure"]
    assert [ch for ch in rec["checks"] if ch["name"] == "wal_chain"][0]["ok"] is False
    assert rec["rto_seconds"] is None
    assert leftovers(scratch_root) == []


def test_physical_drill_could_not_run_when_the_store_is_unreachable_during_the_wal_fetch(
    make_pitr, scratch_root, seaweed, bucket, fault_proxy
):
    c = make_pitr(s3_storage_toml(fault_proxy.endpoint, bucket, f"t-{uuid.uuid4().hex[:12]}"))
    _prepare(c, scratch_root)
    _archive_segments(c, 2)
    fault_proxy.add("*", r"/wal/\d+/[0-9A-F]{16}/", "error", status=503)  # WAL objects only
    r = _drill(c)
    assert r.code == 1, r.out + r.err
    rec = r.only
    assert rec["outcome"] == "could-not-run" and rec["failure"].startswith("fetch:")
    assert not [ch for ch in rec["checks"] if ch["ok"] is False]  # nothing is held against the backup
    errors = [ln for ln in r.err.splitlines() if "could not run" in ln]
    assert len(errors) == 1 and "Traceback" not in r.err
    assert leftovers(scratch_root) == []


def test_physical_drill_to_a_time_after_the_archive_fails_naming_the_newest_restorable_time(make_pitr, scratch_root):
    c = make_pitr()
    _prepare(c, scratch_root)
    last = _archive_segments(c, 1)[-1]
    later = _iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    r = _drill(c, "--to-time", later)
    assert r.code == 3, r.out + r.err
    rec = r.only
    assert rec["outcome"] == "failed" and "newest restorable time" in rec["failure"] and last in rec["failure"]
    assert rec["target_time"] is not None


def test_physical_drill_to_a_time_stops_at_it_and_records_the_accuracy(make_pitr, scratch_root):
    c = make_pitr(extra_pitr='heartbeat_interval = "1s"')
    _prepare(c, scratch_root)
    _commit(c, 3)
    time.sleep(0.5)
    target = dt.datetime.now(dt.UTC)
    time.sleep(0.5)
    _commit(c, 3)
    _archive_segments(c, 1)
    r = _drill(c, "--to-time", _iso(target))
    assert r.code == 0, r.out + r.err
    rec = r.only
    assert rec["outcome"] == "passed" and rec["target"] == "time" and rec["rpo_seconds"] is None
    before = c.pg.psql(f"SELECT max(at) FROM rows WHERE at < '{_iso(target)}'")
    assert rec["recovery_point_source"] == "last replayed commit"
    # the last commit replayed is the last one before T (the row's stamp precedes its commit)
    point = _parse(rec["recovery_point"])
    assert dt.datetime.fromisoformat(before) <= point < target
    assert rec["recovery_accuracy_seconds"] == pytest.approx((target - point).total_seconds(), abs=0.01)


def test_physical_drill_killed_during_recovery_leaves_nothing_and_no_timeline_2_wal(
    make_pitr, scratch_root, seaweed, bucket
):
    c = make_pitr()
    # replay of the commits after the backup waits an hour: the drill is caught in recovery
    c.pg.psql("ALTER SYSTEM SET recovery_min_apply_delay = '1h'")
    c.pg.psql("SELECT pg_reload_conf()")
    _prepare(c, scratch_root)
    _archive_segments(c, 2)
    env = {**os.environ, **{k: v for k, v in c.env.items() if v is not None}}
    env = {k: v for k, v in env.items() if k not in ("PGPASSWORD", "PGPASSFILE", "DRTOOL_POLICY")}
    proc = subprocess.Popen([sys.executable, "-m", "drtool", "drill", "--physical", "-p", str(c.policy)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    caught = False
    while time.monotonic() < deadline and proc.poll() is None and not caught:
        for log in scratch_root.glob("drtool-drill-*/server.log"):
            caught = caught or "consistent recovery state reached" in log.read_text(errors="replace")
        time.sleep(0.1)
    assert caught and proc.poll() is None, "the drill ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    time.sleep(1)
    assert leftovers(scratch_root) == []
    c.wait_archived(c.switch_wal())  # the source keeps archiving; the drill's timeline 2 never arrived
    keys = _archive_keys(seaweed, bucket, c)
    assert [k for k in keys if "/wal/" in k and "/0000000100" in k]
    assert not [k for k in keys if "/00000002" in k], keys


def test_drill_kind_is_validated_and_physical_kinds_need_pitr(tmp_path):
    from test_pitr_policy import PITR
    from test_policy import VALID, problems, write

    from drtool.policy import load_policy

    assert load_policy(write(tmp_path, VALID)).drill.kind == "logical"
    both = VALID.replace("[drill]\n", '[drill]\nkind = "both"\n')
    assert any(": drill.kind:" in p and "[pitr]" in p for p in problems(tmp_path, both))
    assert load_policy(write(tmp_path, both + PITR)).drill.kind == "both"
    wrong = VALID.replace("[drill]\n", '[drill]\nkind = "pitr"\n') + PITR
    assert any(": drill.kind:" in p and "'logical', 'physical', 'both'" in p for p in problems(tmp_path, wrong))


def test_run_drills_both_kinds_when_the_policy_says_both(make_pitr, scratch_root):
    c = make_pitr(extra_toml='[schedule]\nbackup = "0 * * * *"\ndrill = "0 * * * *"\n\n[drill]\nkind = "both"\n')
    _prepare(c, scratch_root)
    assert c.cli("backup", "-p", str(c.policy)).code == 0
    _archive_segments(c, 1)
    r = c.cli("run", "--only", "drill", str(c.policy), "--json")
    assert r.code == 0, r.out + r.err
    job = r.json["policies"][0]["jobs"]["drill"]
    assert job["outcome"] == "ok" and len(job["drill_ids"]) == 2 and "physical drill" in job["summary"]
    logical, physical = job["summary"].split("; ")
    assert logical.startswith("drill ") and physical.startswith("physical drill ")


def test_heartbeat_row_gives_an_idle_database_a_measurable_recovery_point(make_pitr, scratch_root):
    c = make_pitr(extra_pitr='heartbeat_interval = "2s"')
    _prepare(c, scratch_root)
    db = c.pg.dsn().rsplit("/", 1)[1]
    assert c.pg.psql("SELECT to_regclass('drtool.heartbeat') IS NULL", db=db) == "t"  # created only when beating
    r = c.cli("wal", "heartbeat", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    beat = c.pg.psql("SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM drtool.heartbeat",
                     db=db)  # fmt: skip
    c.wait_archived(c.switch_wal())
    r = _drill(c)
    assert r.code == 0, r.out + r.err
    rec = r.only
    assert rec["newest_heartbeat"] == beat
    assert _parse(rec["recovery_point"]) >= _parse(beat)
    rpo = (_parse(rec["started_at"]) - _parse(rec["recovery_point"])).total_seconds()
    assert rec["rpo_seconds"] == pytest.approx(rpo, abs=0.01)


def test_heartbeat_without_an_interval_is_refused(make_pitr):
    c = make_pitr(start=False)
    r = c.cli("wal", "heartbeat", "-p", str(c.policy))
    assert r.code == 2 and "heartbeat_interval" in r.err and "Traceback" not in r.err


def test_archive_lagging_behind_the_rpo_degrades_status_sets_the_metrics_and_has_an_alert_rule(
    make_pitr, scratch_root, seaweed, bucket, tmp_path
):
    c = make_pitr()
    _prepare(c, scratch_root)
    names = _archive_segments(c, 3)
    r = c.cli("status", "-p", str(c.policy), "--json")
    wal = r.json["policies"][c.policy_name]["wal_archive"]
    assert wal["newest_segment"] == names[-1] and wal["gaps"] == 0 and wal["backlog"] == 0
    assert wal["failed_count"] == 0 and r.json["policies"][c.policy_name]["components"]["wal_archive"] == "ok"
    c.policy.write_text(c.policy.read_text().replace('rpo = "5m"', 'rpo = "2s"'))
    time.sleep(3)  # nothing archived for longer than the RPO
    key = next(k for k in _archive_keys(seaweed, bucket, c) if f"/{names[1]}." in k)
    seaweed.client().delete_object(Bucket=bucket, Key=key)
    metrics = tmp_path / "drtool.prom"
    r = c.cli("status", "-p", str(c.policy), "--json", "--metrics-file", str(metrics))
    assert r.code != 0
    pol = r.json["policies"][c.policy_name]
    state = pol["components"]["wal_archive"]
    assert f"newest archived segment {names[-1]}" in state and "more than objectives.rpo (2s)" in state
    assert f"first missing {names[1]}" in state and pol["status"] in ("degraded", "unhealthy")
    text = metrics.read_text()
    lag = [ln for ln in text.splitlines() if ln.startswith("drtool_wal_archive_lag_seconds{")]
    assert lag and float(lag[0].split()[-1]) > 2
    assert any(ln.startswith("drtool_wal_gap{") and ln.endswith(" 1.0") for ln in text.splitlines())
    assert any(ln.startswith("drtool_wal_backlog_segments{") for ln in text.splitlines())
    rules = (Path(__file__).resolve().parent.parent / "docs" / "alerts.yml").read_text()
    assert "drtool_wal_archive_lag_seconds > drtool_rpo_objective_seconds" in rules and "drtool_wal_gap" in rules
