"""The README's PITR runbook as a new user follows it on a fresh Debian machine (issue 12, "Done
when"), and the attacks on the archive it invites: what that walk-through found, against real
PostgreSQL 15 clusters archiving into the real S3 server (tests/pitr_fixtures.py).

The postgres user runs drtool from a venv made with Debian's own python3 (3.11.2 on Debian 12):
the fixtures' launcher does the same, so these tests run drtool's code under that interpreter
where the runbook runs it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import boto3
import pytest
from pitr_fixtures import start_daemon, stop_daemon
from services import PgCluster, pg_bindir, tmpdir

from drtool import walnames, walspool
from drtool.app import datadir


def _launcher(c, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The cluster's drtool launcher (system python3, as the runbook installs it), run as root."""
    env = dict(os.environ)
    for k, v in c.env.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run([str(c.drtool), *args], capture_output=True, text=True, timeout=timeout, env=env)


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture
def restore_root():
    root = tmpdir("drtool-runbook-")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_restore_to_latest_with_the_system_python_extracts_the_base_backup_and_recovers(make_pitr, restore_root):
    """Debian 12's python3 (3.11.2) has no tarfile extraction filters: restore must still extract
    (with the same refusals), not end in a traceback."""
    c = make_pitr()
    c.pg.psql("CREATE TABLE runbook_rows (id int PRIMARY KEY); INSERT INTO runbook_rows SELECT generate_series(1, 50)")
    assert c.cli("backup", "--physical", "-p", str(c.policy)).code == 0
    c.pg.psql("INSERT INTO runbook_rows SELECT generate_series(51, 60)")
    c.wait_archived(c.switch_wal())
    c.stop()
    if os.geteuid() == 0:
        shutil.chown(c.key, "postgres")  # restore_command runs as postgres and reads the identity
    target = restore_root / "restored"
    r = _launcher(c, "restore", "-p", str(c.policy), "--pgdata", str(target), "--drtool", str(c.drtool),
                  "--to-latest", "--json")  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    start = json.loads(r.stdout)["start_command"]
    pg = PgCluster(pg_bindir(), target.parent)
    pg.data, pg.port, pg.sock = target, c.pg.port, c.pg.sock
    assert subprocess.run(shlex.split(start), capture_output=True, text=True, timeout=120).returncode == 0
    try:
        for _ in range(600):
            if pg.psql("SELECT pg_is_in_recovery()", check=False) == "f":
                break
            subprocess.run(["sleep", "0.2"])
        assert pg.psql("SELECT count(*) FROM runbook_rows") == "60"
    finally:
        subprocess.run(_as_postgres([str(pg_bindir() / "pg_ctl"), "-D", str(target), "stop", "-m", "fast"]),
                       capture_output=True, timeout=60)  # fmt: skip


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b"x") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o6777
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else b"")


def _extract_all(members: list[tuple], dest: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="r|") as tar:
        for m in tar:
            datadir.extract_member(tar, m, dest)


@pytest.mark.parametrize(
    "members",
    [
        [_member("/etc/evil")],
        [_member("base/../../evil")],
        [_member("link", tarfile.SYMTYPE, "/etc")],
        [_member("link", tarfile.SYMTYPE, "../..")],
        [
            _member("d", tarfile.DIRTYPE),
            _member("d/up", tarfile.SYMTYPE, ".."),
            _member("d/up/up2", tarfile.SYMTYPE, ".."),
        ],
        [_member("hard", tarfile.LNKTYPE, "../../etc/passwd")],
        [_member("dev", tarfile.CHRTYPE)],
        [_member("fifo", tarfile.FIFOTYPE)],
    ],
    ids=["absolute", "dotdot", "symlink-absolute", "symlink-up", "symlink-chain", "hardlink-out", "device", "fifo"],
)
def test_without_tarfile_filters_members_outside_the_data_folder_are_refused(members, tmp_path, monkeypatch):
    monkeypatch.setattr(datadir, "HAS_FILTERS", False)
    dest = tmp_path / "pgdata"
    dest.mkdir()
    with pytest.raises(datadir.UnsafeMember):
        _extract_all(members, dest)
    assert not (tmp_path / "evil").exists() and sorted(os.listdir(tmp_path)) == ["pgdata"]


def test_without_tarfile_filters_a_base_backup_extracts_without_set_id_bits(tmp_path, monkeypatch):
    monkeypatch.setattr(datadir, "HAS_FILTERS", False)
    dest = tmp_path / "pgdata"
    dest.mkdir()
    _extract_all([_member("base", tarfile.DIRTYPE), _member("base/1", data=b"page"),
                  _member("inside", tarfile.SYMTYPE, "base/1")], dest)  # fmt: skip
    assert (dest / "base" / "1").read_bytes() == b"page" and (dest / "inside").read_bytes() == b"page"
    assert (dest / "base" / "1").stat().st_mode & 0o7777 == 0o755


def test_policy_in_a_folder_postgres_cannot_enter_is_named_in_one_line(make_pitr, tmp_path):
    """`drtool keygen` makes /etc/drtool mode 0700: a policy there is out of the postgres user's
    reach, whatever the file's own mode. wal status/daemon say so in one line, wal push too (exit 1)."""
    c = make_pitr(start=False)
    closed = c.base / "closed"
    closed.mkdir(mode=0o700)
    policy = closed / "orders.toml"
    shutil.copy(c.policy, policy)
    policy.chmod(0o644)
    for args, code in ((("wal", "status"), 2), (("wal", "daemon"), 2), (("wal", "push"), 1)):
        tail = ("pg_wal/000000010000000000000001",) if args[1] == "push" else ()
        r = c.as_postgres(*args, "--policy", str(policy), *tail)
        assert r.returncode == code and "Traceback" not in r.stderr, r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert f"{policy}: cannot read: Permission denied (as user postgres)" in line, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _foreign_copy(c, name: str, data: bytes) -> Path:
    """A WAL file of the same cluster in another data folder's pg_wal (a restored copy)."""
    folder = c.base / "restored" / "pg_wal"
    folder.mkdir(parents=True, exist_ok=True)
    for p in (folder.parent, folder):
        os.chmod(p, 0o755)
    path = folder / name
    path.write_bytes(data)
    path.chmod(0o644)
    return path


def test_push_from_another_data_folder_is_not_answered_by_the_daemons_ack(make_pitr):
    """A restored copy started from another folder archives files the daemon (which reads
    pitr.pgdata) never sees: a spool ack for the same name is about another file and must not
    make a different content count as archived; a new name must not wait for the daemon."""
    c = make_pitr(extra_pitr='ack_timeout = "5s"')
    daemon = start_daemon(c)
    try:
        name = c.switch_wal()
        c.wait_archived(name)
        walspool.write_durably(walspool.ok_path(c.spool, name), b"")  # as the daemon acknowledged it
        data = bytearray((c.pg_wal / name).read_bytes())
        data[5000] ^= 0xFF
        other = c.as_postgres("wal", "push", "--policy", str(c.policy), str(_foreign_copy(c, name, bytes(data))))
        assert other.returncode == 1 and "already archived with different content" in other.stderr, other.stderr
        later = walnames.parse_segment(name).next().next().next().name
        fresh = c.as_postgres("wal", "push", "--policy", str(c.policy), str(_foreign_copy(c, later, bytes(data))))
        assert fresh.returncode == 0, fresh.stderr
    finally:
        stop_daemon(c, daemon)


def _plant(seaweed, c, name: str, plain: bytes, with_digest: bool = True, digest: str | None = None) -> None:
    """An object put straight into the archive with S3 rights (no drtool): encrypted to the policy's
    recipient like a real one, its metadata consistent with its content (or without any)."""
    enc = subprocess.run(f"zstd -1 -c | age -r {c.recipient}", shell=True, input=plain, capture_output=True,
                         check=True).stdout  # fmt: skip
    meta = {"sha256": digest or hashlib.sha256(plain).hexdigest(), "size": str(len(plain)), "sysid": str(c.sysid()),
            "end": "2026-01-01T00:00:00Z"} if with_digest else {}  # fmt: skip
    bucket, prefix = c.store_url[len("s3://") :].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint, region_name="us-east-1")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{walnames.key_for(c.policy_name, c.sysid(), name)}", Body=enc,
                  Metadata=meta)  # fmt: skip


@pytest.mark.parametrize("planted", ["another-clusters-segment", "segment-under-another-name", "no-digest"])
def test_wal_fetch_refuses_a_planted_segment_instead_of_handing_it_to_recovery(make_pitr, seaweed, planted, tmp_path):
    """PostgreSQL ends recovery at a segment it rejects and promotes there: wal fetch must refuse
    (exit 200: recovery aborts) a segment that is not this cluster's WAL at the position its name says."""
    c = make_pitr()
    name = c.switch_wal()
    c.wait_archived(name)
    plain = bytearray((c.pg_wal / name).read_bytes())
    target, expect = walnames.parse_segment(name).next().name, "its name says"
    if planted == "another-clusters-segment":
        plain[24:32] = (1234567890123456789).to_bytes(8, "little")
        target, expect = name, f"segment header says cluster 1234567890123456789, the archive is of cluster {c.sysid()}"
    elif planted == "no-digest":
        expect = "no sha256 in its metadata"
    _plant(seaweed, c, target, bytes(plain), with_digest=planted != "no-digest")
    dest = tmp_path / "RECOVERYXLOG"
    r = c.cli("wal", "fetch", "-p", str(c.policy), target, str(dest))
    assert r.code == 200 and not dest.exists(), r.err
    assert expect in r.err and f"{target}.zst.age" in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_verify_names_objects_planted_in_the_wal_archive_and_exits_3(make_pitr, seaweed):
    """A name outside PostgreSQL's patterns, and a timeline history whose content is not the one
    archived: verify names each (exit 3) instead of reporting the chain ok."""
    c = make_pitr()
    assert c.cli("backup", "--physical", "-p", str(c.policy)).code == 0
    c.wait_archived(c.switch_wal())
    assert c.cli("verify", "-p", str(c.policy)).code == 0
    bucket, prefix = c.store_url[len("s3://") :].split("/", 1)
    stray = f"{prefix}/{walnames.archive_prefix(c.policy_name, c.sysid())}0000000100000000/evil.zst.age"
    boto3.client("s3", endpoint_url=seaweed.endpoint, region_name="us-east-1").put_object(
        Bucket=bucket, Key=stray, Body=b"x"
    )
    _plant(seaweed, c, "00000002.history", b"1\t0/5000000\tplanted\n", digest="0" * 64)
    r = c.cli("verify", "-p", str(c.policy))
    assert r.code == 3, r.err
    assert f"{stray}: not a WAL file name drtool archives" in r.err
    assert "00000002.history.zst.age: timeline history cannot be read with the identity" in r.err
    assert "Traceback" not in r.err
