"""Physical base backups and restores (issue 12, points 4 and 5): `backup --physical`,
`restore --pgdata`, and their faults, against real PostgreSQL and the store."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import stat
import tarfile
import time
from pathlib import Path

import pytest
from helpers import make_setup
from services import free_port

from drtool import catalog, pipeline
from drtool.policy import load_policy
from drtool.records import Manifest, ManifestObject, PhysicalInfo, Sizes
from drtool.storage import open_store


def pitr_toml(tmp_path: Path, pgdata: str = "/var/lib/postgresql/15/main") -> str:
    spool = tmp_path / "spool"
    return f'\n[pitr]\nenabled = true\npgdata = "{pgdata}"\nspool_dir = "{spool}"\n'


@pytest.fixture
def phys(pg, tmp_path):
    """A folder store and a policy with [pitr] enabled on the shared test cluster."""
    return make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=pitr_toml(tmp_path))


def _store(setup):
    return open_store(load_policy(setup.policy).storage)


def _listed(setup) -> list[dict]:
    r = setup.cli("list", "-p", str(setup.policy), "--json")
    assert r.code == 0, r.err
    return r.json["backups"] if isinstance(r.json, dict) else r.json


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- backup --physical faults -------------------------------------------------------------------------


def test_base_backup_without_replication_permission_is_one_clear_line(pg, tmp_path):
    pg.psql("DROP ROLE IF EXISTS norepl; CREATE ROLE norepl LOGIN PASSWORD 'norepl-pw-9x'")
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=pitr_toml(tmp_path))
    s.policy.write_text(s.policy.read_text().replace("postgresql://postgres@", "postgresql://norepl@"))
    s.env["TEST_PGPASSWORD"] = "norepl-pw-9x"
    r = s.cli("backup", "--physical", "-p", str(s.policy))
    assert r.code == 1, r.err
    line = _one_error_line(r.err)
    assert "pg_basebackup failed" in line and "REPLICATION" in line and s.db in line
    assert "norepl-pw-9x" not in r.err + r.out
    assert _listed(s) == []


def _fake_basebackup(tmp_path: Path, body: str) -> Path:
    """A pg_bin_dir whose pg_basebackup runs the real one through `body` (a shell fragment)."""
    from services import pg_bindir

    folder = tmp_path / "fakebin"
    folder.mkdir()
    real = pg_bindir() / "pg_basebackup"
    script = folder / "pg_basebackup"
    script.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then exec {real} --version; fi\n{body}\n')
    script.chmod(0o755)
    return folder


def test_base_backup_killed_mid_stream_is_never_listed(phys, tmp_path):
    from services import pg_bindir

    real = pg_bindir() / "pg_basebackup"
    # half a megabyte of the real tar, then pg_basebackup dies by SIGKILL
    fake = _fake_basebackup(tmp_path, f'{real} "$@" | head -c 500000\nkill -9 $$')
    phys.policy.write_text(phys.policy.read_text() + f'\n[backup]\npg_bin_dir = "{fake}"\n')
    r = phys.cli("backup", "--physical", "-p", str(phys.policy))
    assert r.code == 1, r.err
    assert "pg_basebackup failed" in _one_error_line(r.err)
    assert _listed(phys) == []
    assert list(_store(phys).list_objects(f"{load_policy(phys.policy).name}/backups/")) == []


def _silent_basebackup(tmp_path: Path) -> tuple[Path, Path]:
    """A pg_bin_dir whose pg_basebackup writes its pid and then waits, silent (as in a checkpoint)."""
    pid_file = tmp_path / "pg_basebackup.pid"
    return _fake_basebackup(tmp_path, f"echo $$ > {pid_file}\nexec sleep 600"), pid_file


def _written_pid(pid_file: Path) -> int | None:
    """The pid the fake wrote; None when its shell was killed between creating the file (the
    redirection) and writing to it: a shell still alive finishes that `echo` within milliseconds,
    so a file still empty after 2 s was left by a shell that is gone."""
    deadline = time.monotonic() + 2
    while not (text := pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(text) if text else None


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    os.kill(pid, 9)  # the test's own child's child: not left behind when the assertion fails
    return False


def test_base_backup_starts_pg_basebackup_before_the_lock_and_kills_it_when_the_lock_is_held(phys, tmp_path):
    """pg_basebackup's checkpoint overlaps opening the store and taking the lock; a base backup
    refused by a lock held elsewhere leaves no pg_basebackup running and nothing listed."""
    from drtool import clock, locks

    fake, pid_file = _silent_basebackup(tmp_path)
    phys.policy.write_text(phys.policy.read_text() + f'\n[backup]\npg_bin_dir = "{fake}"\n')
    store, name = _store(phys), load_policy(phys.policy).name
    held = locks.acquire(store, name, "backup", now=clock.utcnow)
    # drtool kills pg_basebackup as soon as the lock is refused; on a loaded machine its shell may
    # not have run its first line by then (CI saw that once). Started before the lock means its
    # pid file appears in some attempt; started after, it never would.
    started = False
    try:
        for _ in range(3):
            r = phys.cli("backup", "--physical", "-p", str(phys.policy))
            assert r.code == 1, r.err
            assert "is locked" in _one_error_line(r.err)
            if pid_file.exists():
                started = True
                pid = _written_pid(pid_file)  # None: killed before it could write its pid, so gone
                assert pid is None or _gone(pid), "pg_basebackup was left running"
                break
    finally:
        locks.release(store, held)
    assert started, "pg_basebackup was not started before the lock was taken"
    assert _listed(phys) == []


def test_base_backup_with_lock_wait_takes_the_lock_before_starting_pg_basebackup(phys, tmp_path):
    """Waiting for a lock must not hold a backup open on the server all that time."""
    from drtool import clock, locks

    fake, pid_file = _silent_basebackup(tmp_path)
    phys.policy.write_text(phys.policy.read_text() + f'\n[backup]\npg_bin_dir = "{fake}"\n')
    store, name = _store(phys), load_policy(phys.policy).name
    held = locks.acquire(store, name, "backup", now=clock.utcnow)
    try:
        r = phys.cli("--lock-wait", "0.5", "backup", "--physical", "-p", str(phys.policy))
    finally:
        locks.release(store, held)
    assert r.code == 1, r.err
    assert "is locked" in _one_error_line(r.err)
    assert not pid_file.exists()


def test_base_backup_refuses_a_cluster_with_tablespaces(phys, pg, tmp_path):
    from services import tmpdir

    loc = tmpdir("drtool-ts-")  # reachable by postgres (pytest's tmp_path is root-only)
    os.chmod(loc, 0o700)
    if os.geteuid() == 0:
        import pwd

        os.chown(loc, pwd.getpwnam("postgres").pw_uid, -1)
    pg.psql(f"CREATE TABLESPACE drtool_ts_{os.getpid()} LOCATION '{loc}'")
    try:
        r = phys.cli("backup", "--physical", "-p", str(phys.policy))
    finally:
        pg.psql(f"DROP TABLESPACE drtool_ts_{os.getpid()}")
        shutil.rmtree(loc, ignore_errors=True)
    assert r.code == 1, r.err
    line = _one_error_line(r.err)
    assert "tablespaces are not supported" in line and f"drtool_ts_{os.getpid()}" in line


def test_base_backup_needs_pitr_enabled(pg, tmp_path):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')
    r = s.cli("backup", "--physical", "-p", str(s.policy))
    assert r.code == 2, r.err
    assert "[pitr] enabled" in _one_error_line(r.err)


# -- restore --pgdata without WAL: choosing, refusing ---------------------------------------------------

T0 = dt.datetime(2026, 11, 30, 7, 0, tzinfo=dt.UTC)


def _plant_base(setup, members: dict[str, bytes], end: dt.datetime, *, link: tuple[str, str] | None = None) -> str:
    """A committed physical backup whose tar holds `members` (and a symlink `link` = (name, target))."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            t.addfile(info)
    policy = load_policy(setup.policy)
    store = _store(setup)
    backup_id = catalog.new_backup_id(end)
    key = catalog.backup_prefix(policy.name, backup_id) + "base.tar.zst.age"
    stats = pipeline.EncodeStats()
    stored = store.put(key, pipeline.encode([out.getvalue()], recipients=policy.recipients, level=1, threads=0,
                                            stats=stats))  # fmt: skip
    info = PhysicalInfo(sysid="7312345678901234567", timeline=1, start_lsn="0/2000028", end_lsn="0/2000100",
                        wal_segment_size=1 << 24, pg_version="15", start_time=end, end_time=end)  # fmt: skip
    m = Manifest(id=backup_id, policy=policy.name, database=setup.db, server_version="15.18",
                 server_version_num=150018, pg_dump_version="15.18", recovery_point=end, started_at=end,
                 completed_at=end, sizes=Sizes(stored.size, stats.plain_bytes), tables={},
                 objects=(ManifestObject("base", "base.tar.zst.age", stored.size, stats.sha256),), kind="physical",
                 physical=info)  # fmt: skip
    catalog.write_manifest(store, m)
    return backup_id


def test_restore_refuses_a_tar_member_that_leaves_the_data_directory(phys, tmp_path):
    bid = _plant_base(phys, {"PG_VERSION": b"15\n", "../escaped": b"x"}, T0)
    target = tmp_path / "restored"
    r = phys.cli("restore", "-p", str(phys.policy), "--pgdata", str(target), "--to-latest")
    assert r.code == 3, r.err
    line = _one_error_line(r.err)
    assert "refused to extract" in line and bid in line
    assert not (tmp_path / "escaped").exists()
    assert not target.exists()  # the restore made it, and takes it away again


def test_restore_refuses_a_symlink_out_of_the_data_directory(phys, tmp_path):
    bid = _plant_base(phys, {"PG_VERSION": b"15\n"}, T0, link=("pg_wal", "/etc"))
    target = tmp_path / "restored"
    target.mkdir()
    r = phys.cli("restore", "-p", str(phys.policy), "--pgdata", str(target))
    assert r.code == 3, r.err
    assert "refused to extract" in _one_error_line(r.err) and bid in r.err
    assert target.is_dir() and list(target.iterdir()) == []  # left as it was: empty


def test_restore_to_a_time_before_the_oldest_base_backup_names_the_oldest(phys, tmp_path):
    old = _plant_base(phys, {"PG_VERSION": b"15\n"}, T0)
    _plant_base(phys, {"PG_VERSION": b"15\n"}, T0 + dt.timedelta(hours=1))
    r = phys.cli("restore", "-p", str(phys.policy), "--pgdata", str(tmp_path / "r"),
                 "--to-time", "2026-11-30T06:59:00Z")  # fmt: skip
    assert r.code == 2, r.err
    line = _one_error_line(r.err)
    assert "before the oldest base backup" in line and old in line and "2026-11-30T07:00:00" in line
    assert not (tmp_path / "r").exists()


def test_restore_into_a_folder_that_is_not_empty_is_refused(phys, tmp_path):
    _plant_base(phys, {"PG_VERSION": b"15\n"}, T0)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "PG_VERSION").write_text("15\n")
    r = phys.cli("restore", "-p", str(phys.policy), "--pgdata", str(target))
    assert r.code == 2, r.err
    assert "is not empty" in _one_error_line(r.err)
    assert (target / "PG_VERSION").read_text() == "15\n"


def test_logical_restore_skips_base_backups_and_names_them_when_asked(phys, tmp_path):
    bid = _plant_base(phys, {"PG_VERSION": b"15\n"}, T0)
    r = phys.restore(phys.target_db(), "--backup", bid)
    assert r.code == 2, r.err
    assert "physical backup" in _one_error_line(r.err) and "--pgdata" in r.err
    r = phys.restore(phys.target_db())
    assert r.code == 1 and "no complete backup" in r.err


def test_restore_options_that_do_not_go_together_are_bad_usage(phys, tmp_path):
    for args in (["--pgdata", str(tmp_path / "x"), "--target", "postgresql://h/db"],
                 ["--to-latest"], ["--pgdata", str(tmp_path / "x"), "--to-latest", "--to-time", "2026-01-01"],
                 ["--pgdata", str(tmp_path / "x"), "--to-time", "yesterday"]):  # fmt: skip
        r = phys.cli("restore", "-p", str(phys.policy), *args)
        assert r.code == 2, (args, r.err)
        assert "Traceback" not in r.err
    assert not (tmp_path / "x").exists()


def test_restored_folder_is_private(phys, tmp_path):
    """A restore that fails late (pg_verifybackup: a tar with no backup_manifest) still made the
    folder 0700 on the way and leaves nothing behind."""
    _plant_base(phys, {"PG_VERSION": b"15\n"}, T0)
    target = tmp_path / "restored"
    target.mkdir(mode=0o755)
    r = phys.cli("restore", "-p", str(phys.policy), "--pgdata", str(target))
    assert r.code == 3, r.err
    assert "pg_verifybackup" in _one_error_line(r.err)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700 and list(target.iterdir()) == []


# -- wal status -----------------------------------------------------------------------------------------


def test_wal_status_with_an_unreachable_store_fails_naming_it(pg, tmp_path):
    port = free_port()
    storage = f'[storage]\nurl = "s3://some-bucket/pg"\nregion = "us-east-1"\nendpoint_url = "http://127.0.0.1:{port}"'
    s = make_setup(pg, tmp_path, storage + "\nmax_attempts = 1", extra_toml=pitr_toml(tmp_path), init=False)
    r = s.cli("wal", "status", "-p", str(s.policy))
    assert r.code == 1, (r.code, r.out, r.err)
    line = _one_error_line(r.err)
    assert "s3://some-bucket/pg" in line and f"127.0.0.1:{port}" in line, line
    assert "WAL archive" not in r.out  # said once, on the error line; the local backlog is still shown
    r = s.cli("wal", "status", "-p", str(s.policy), "--json")
    assert r.code == 1, (r.code, r.out, r.err)
    assert "s3://some-bucket/pg" in _one_error_line(r.err) and "s3://some-bucket/pg" in r.json["store_error"]
