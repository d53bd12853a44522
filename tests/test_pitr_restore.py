"""Point-in-time restore from the store alone (issue 12, point 5): base backup + archived WAL,
`restore --pgdata --to-time/--to-latest`, `wal fetch` and its faults, against real PostgreSQL 15
clusters archiving with `drtool wal push` into the real S3 server (tests/pitr_fixtures.py)."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from services import PgCluster, pg_bindir, tmpdir


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Restored:
    """A data directory made by `restore --pgdata`, started with the command restore printed."""

    def __init__(self, like: PgCluster, data: Path, start_command: str):
        self.pg = PgCluster(pg_bindir(), data.parent)  # psql through the source's port and socket
        self.pg.data, self.pg.port, self.pg.sock = data, like.port, like.sock
        self.start_command = start_command

    def start(self) -> subprocess.CompletedProcess:
        return subprocess.run(shlex.split(self.start_command), capture_output=True, text=True, timeout=120)

    def log(self) -> str:
        path = self.pg.data / "restore.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def running(self) -> bool:
        r = subprocess.run(_as_postgres([str(pg_bindir() / "pg_ctl"), "-D", str(self.pg.data), "status"]),
                           capture_output=True, text=True)  # fmt: skip
        return r.returncode == 0

    def wait_promoted(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pg.psql("SELECT pg_is_in_recovery()", check=False) == "f":
                return
            if not self.running():
                break
            time.sleep(0.2)
        raise AssertionError(f"restored server did not promote; its log:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.running():
            subprocess.run(_as_postgres([str(pg_bindir() / "pg_ctl"), "-D", str(self.pg.data), "stop", "-m", "fast"]),
                           capture_output=True, timeout=60)  # fmt: skip


@pytest.fixture
def restore_root():
    """Where restored data directories go: reachable by the postgres user."""
    root = tmpdir("drtool-pitr-restore-")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _restore(c, target: Path, *args: str, policy: Path | None = None):
    """restore --pgdata on the restore host, where the server's user (postgres) reads the identity
    for restore_command (as the README's runbook sets it up)."""
    if os.geteuid() == 0:
        import pwd

        os.chown(c.key, pwd.getpwnam("postgres").pw_uid, -1)
    return c.cli("restore", "-p", str(policy or c.policy), "--pgdata", str(target), "--drtool", str(c.drtool),
                 "--json", *args)  # fmt: skip


def _commit_rows(c, ids) -> None:
    for i in ids:  # one transaction each: each its own commit record
        c.pg.psql(f"INSERT INTO pitr_rows (id) VALUES ({i})")


def _archive_everything(c) -> None:
    c.wait_archived(c.switch_wal())


def _ids(pg: PgCluster) -> list[int]:
    out = pg.psql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM pitr_rows")
    return [int(x) for x in out.split(",") if x]


def test_restore_to_time_has_exactly_the_transactions_committed_before_it_then_latest_follows_timeline_2(
    make_pitr, restore_root
):
    c = make_pitr()
    c.pg.psql("CREATE TABLE pitr_rows (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    _commit_rows(c, range(1, 6))
    r = c.cli("backup", "--physical", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    base = r.only
    assert base["kind"] == "physical" and base["physical"]["sysid"] == str(c.sysid())
    _commit_rows(c, range(6, 11))
    time.sleep(0.3)
    target_time = c.pg.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    time.sleep(0.3)
    _commit_rows(c, range(11, 16))
    _archive_everything(c)
    c.stop()  # from here on, only the store

    r = _restore(c, restore_root / "at-t", "--to-time", target_time)
    assert r.code == 0, r.err
    assert r.json["backup"] == base["id"] and r.json["target"] == "time"
    at_t = Restored(c.pg, restore_root / "at-t", r.json["start_command"])
    started = at_t.start()
    assert started.returncode == 0, started.stderr + at_t.log()
    try:
        at_t.wait_promoted()
        assert _ids(at_t.pg) == list(range(1, 11))  # exactly the rows committed before T
        # the restored cluster is the new primary: it archives its timeline 2 (history file
        # included) into the same archive, and a later restore to latest follows it
        at_t.pg.psql("INSERT INTO pitr_rows (id) VALUES (100)")
        name = at_t.pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
        assert name.startswith("00000002")
        deadline = time.monotonic() + 90
        while at_t.pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < name:
            assert time.monotonic() < deadline, at_t.log()[-3000:]
            time.sleep(0.2)
    finally:
        at_t.stop()

    r = _restore(c, restore_root / "latest", "--to-latest")
    assert r.code == 0, r.err
    latest = Restored(c.pg, restore_root / "latest", r.json["start_command"])
    assert latest.start().returncode == 0, latest.log()
    try:
        latest.wait_promoted()
        assert _ids(latest.pg) == [*range(1, 11), 100]
        assert int(latest.pg.psql("SELECT timeline_id FROM pg_control_checkpoint()")) >= 2
    finally:
        latest.stop()


def test_store_down_during_wal_fetch_stops_recovery_and_never_promotes(make_pitr, restore_root, fault_proxy):
    c = make_pitr()
    c.pg.psql("CREATE TABLE pitr_rows (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    assert c.cli("backup", "--physical", "-p", str(c.policy)).code == 0
    _commit_rows(c, range(1, 4))
    _archive_everything(c)
    c.stop()
    proxied = c.base / "proxied.toml"
    text = c.policy.read_text()
    endpoint = text.split('endpoint_url = "')[1].split('"')[0]
    proxied.write_text(text.replace(endpoint, fault_proxy.endpoint))
    proxied.chmod(0o644)
    r = _restore(c, restore_root / "down", "--to-latest", policy=proxied)
    assert r.code == 0, r.err
    fault_proxy.add("*", r".*", "error", status=503)  # the store is down from here on
    restored = Restored(c.pg, restore_root / "down", r.json["start_command"])
    restored.start()
    deadline = time.monotonic() + 120
    while restored.running() and time.monotonic() < deadline:
        time.sleep(0.5)
    log = restored.log()
    try:
        assert not restored.running(), log[-3000:]  # recovery aborted: the server is down, not promoted
        assert "could not restore file" in log and "200" in log, log[-3000:]
        assert "database system is ready to accept connections" not in log
        assert "selected new timeline ID" not in log
        assert (restore_root / "down" / "recovery.signal").exists()
    finally:
        restored.stop()


def test_target_after_the_newest_archived_wal_names_the_latest_restorable_time(make_pitr, restore_root):
    c = make_pitr()
    assert c.cli("backup", "--physical", "-p", str(c.policy)).code == 0, "base backup"
    _archive_everything(c)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = _restore(c, restore_root / "late", "--to-time", later)
    assert r.code == 2, r.err
    lines = [ln for ln in r.err.splitlines() if "error" in ln]
    assert len(lines) == 1 and "after the newest archived WAL" in lines[0] and "latest restorable time" in lines[0]
    assert not (restore_root / "late").exists()


def test_wal_fetch_answers_not_archived_with_1_and_serves_read_ahead_without_the_store(make_pitr, tmp_path):
    c = make_pitr(extra_pitr="prefetch = 4")
    first = c.switch_wal()
    c.wait_archived(first)
    for _ in range(3):
        c.wait_archived(c.switch_wal())
    spool = tmp_path / "spool"
    (spool / "fetch").mkdir(parents=True)
    r = c.cli("wal", "fetch", "-p", str(c.policy), "00000009.history", str(tmp_path / "h"))
    assert r.code == 1 and not (tmp_path / "h").exists()
    r = c.cli("wal", "fetch", "-p", str(c.policy), "--spool", str(spool), first, str(tmp_path / "seg"))
    assert r.code == 0, r.err
    assert (tmp_path / "seg").stat().st_size == 16 * 1024 * 1024
    deadline = time.monotonic() + 120  # the read-ahead process downloads the next segments in the background
    while len(ahead := sorted(p.name for p in (spool / "fetch").iterdir() if p.name[0] == "0")) < 2:
        assert time.monotonic() < deadline, os.listdir(spool / "fetch")
        time.sleep(0.1)
    nxt = ahead[0]
    assert len(ahead) >= 2 and nxt > first and not any(n.endswith(".history") for n in ahead)
    # the store is gone now: the segment fetched ahead is still served, by a rename
    broken = tmp_path / "broken.toml"
    text = c.policy.read_text()
    broken.write_text(text.replace(text.split('endpoint_url = "')[1].split('"')[0], "http://127.0.0.1:9"))
    r = c.cli("wal", "fetch", "-p", str(broken), "--spool", str(spool), nxt, str(tmp_path / "next"))
    assert r.code == 0, r.err
    assert (tmp_path / "next").stat().st_size == 16 * 1024 * 1024 and not (spool / "fetch" / nxt).exists()
    # and a segment that must come from the store fails with 200, never 1
    r = c.cli("wal", "fetch", "-p", str(broken), "000000010000000000000FFF", str(tmp_path / "x"))
    assert r.code == 200, r.err
    assert "Traceback" not in r.err


def test_run_takes_a_base_backup_on_schedule_base_once_per_slot(make_pitr):
    c = make_pitr(extra_toml='[schedule]\nbase = "0 0 1 1 *"\ntimezone = "UTC"\n')
    r = c.cli("run", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    job = r.json["policies"][0]["jobs"]["base"]
    assert job["outcome"] == "ok" and job["due"], job
    listed = c.cli("list", "-p", str(c.policy), "--json").json["backups"]
    assert [b["id"] for b in listed] == [job["backup_id"]]
    again = c.cli("run", "-p", str(c.policy), "--json")
    assert again.code == 0 and again.json["policies"][0]["jobs"]["base"] == {"due": False}
