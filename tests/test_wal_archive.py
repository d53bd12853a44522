"""WAL archiving into the store (issue 12 points 2-3): a real PostgreSQL 15 runs `drtool wal push`
as its archive_command against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import jsonschema
import pytest
from pitr_fixtures import daemon_pid, start_daemon, stop_daemon, wait_for
from test_notify import TOKEN, Receiver

from drtool import walnames, walspool

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "schemas" / "status.schema.json"


def s3_object(seaweed, bucket: str, key: str) -> dict:
    c = boto3.client("s3", endpoint_url=seaweed.endpoint, region_name="us-east-1")
    return c.get_object(Bucket=bucket, Key=key)


def store_key(cluster, name: str) -> tuple[str, str]:
    """(bucket, full key) of an archived file of this cluster."""
    bucket, prefix = cluster.store_url[len("s3://") :].split("/", 1)
    return bucket, f"{prefix}/{walnames.key_for(cluster.policy_name, cluster.sysid(), name)}"


def test_segments_archived_by_postgres_decrypt_with_stock_age_and_zstd(pitr, seaweed):
    pitr.pg.psql("CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t SELECT generate_series(1, 1000)")
    name = pitr.switch_wal()
    pitr.wait_archived(name)
    original = (pitr.pg_wal / name).read_bytes()  # not recycled before the next checkpoint
    bucket, key = store_key(pitr, name)
    obj = s3_object(seaweed, bucket, key)
    stored = obj["Body"].read()
    plain = subprocess.run(f"age -d -i {pitr.key} | zstd -d", shell=True, input=stored, capture_output=True,
                           check=True).stdout  # fmt: skip
    assert plain == original
    meta = obj["Metadata"]
    assert meta["sha256"] == hashlib.sha256(original).hexdigest() and meta["size"] == str(len(original))
    assert meta["sysid"] == str(pitr.sysid()) and meta["end"].endswith("Z")
    cluster = json.loads(s3_object(seaweed, bucket, key.split("/wal/")[0] + "/wal/cluster.json")["Body"].read())
    assert cluster["sysid"] == str(pitr.sysid()) and cluster["wal_segment_size"] == 16 * 1024 * 1024
    assert cluster["pg_version"] == "15" and cluster["version"] == 1


@pytest.mark.parametrize("bad", ["000000010000000000000001.tmp", "../000000010000000000000001", "RECOVERYXLOG"])
def test_a_name_postgres_would_never_archive_is_refused_with_exit_1(pitr, bad, tmp_path):
    r = pitr.as_postgres("wal", "push", "--policy", str(pitr.policy), f"pg_wal/{bad}")
    assert r.returncode == 1, r
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


# -- the thin entry point ---------------------------------------------------------------------------


def thin_policy(tmp_path, ack_timeout: str = "60s"):
    """A policy whose pitr.pgdata is tmp_path/pgdata: the pushes below run there, as PostgreSQL runs them."""
    spool = tmp_path / "spool"
    (spool / "ack").mkdir(parents=True)
    (tmp_path / "pgdata" / "pg_wal").mkdir(parents=True)
    policy = tmp_path / "p.toml"
    policy.write_text(f'name = "x"\n[pitr]\nenabled = true\nspool_dir = "{spool}"\nack_timeout = "{ack_timeout}"\n'
                      f'pgdata = "{tmp_path / "pgdata"}"\n')  # fmt: skip
    return policy, spool


THIN = r"""
import sys
before = set(sys.modules)  # what the interpreter's start (site, an editable install's finder) loaded
sys.argv = ["drtool", "wal", "push", "--policy", sys.argv[1], "pg_wal/000000010000000000000007"]
from drtool import entry
import os
real_exit = os._exit
def report(code):
    slow = ("tomllib", "pathlib", "uuid", "re", "typing", "enum", "contextlib", "signal", "click", "boto3",
            "botocore", "cryptography", "zstandard", "psycopg")
    print(code, ",".join(m for m in slow if m in sys.modules and m not in before) or "-", flush=True)
    real_exit(code)
os._exit = report
entry.main()
"""


def test_wal_push_of_an_acknowledged_segment_imports_no_tomllib_pathlib_uuid_or_re(tmp_path):
    """Each import costs milliseconds on every WAL file PostgreSQL archives (issue 12: <= 20 ms)."""
    policy, spool = thin_policy(tmp_path)
    (spool / "ack" / "000000010000000000000007.ok").write_bytes(b"")
    r = subprocess.run([sys.executable, "-c", THIN, str(policy)], capture_output=True, text=True, check=True,
                       cwd=tmp_path / "pgdata")  # fmt: skip
    assert r.stdout.split() == ["0", "-"], r.stderr


def test_wal_push_takes_a_relative_spool_dir_from_the_policy_files_folder(tmp_path):
    """As the policy loader does (and so the daemon): not from PostgreSQL's working directory."""
    policy, spool = thin_policy(tmp_path)
    policy.write_text(policy.read_text().replace(f'spool_dir = "{spool}"', 'spool_dir = "spool"'))
    (spool / "ack" / "000000010000000000000007.ok").write_bytes(b"")
    r = subprocess.run([sys.executable, "-c", THIN, str(policy)], capture_output=True, text=True,
                       cwd=tmp_path / "pgdata")  # fmt: skip
    assert r.stdout.split() == ["0", "-"], r.stderr


def test_wal_push_of_a_refused_segment_exits_1_with_the_reason(tmp_path):
    policy, spool = thin_policy(tmp_path)
    (spool / "ack" / "000000010000000000000007.error").write_text("s3://b/k: already archived with different content\n")
    r = subprocess.run(
        [sys.executable, "-c", THIN, str(policy)], capture_output=True, text=True, cwd=tmp_path / "pgdata"
    )
    assert r.stdout.split() == ["1", "-"]
    assert "already archived with different content" in r.stderr and len(r.stderr.splitlines()) == 1


def test_wal_push_stopped_by_sigterm_while_waiting_for_the_daemon_exits_1(tmp_path):
    """PostgreSQL stops the archiver's command with SIGTERM at shutdown: the answer must be 1 (retry),
    never death by a signal or a code above 125, which stop the archiver."""
    policy, spool = thin_policy(tmp_path)
    with open(spool / "daemon.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a daemon that never acknowledges
        p = subprocess.Popen([sys.executable, "-m", "drtool", "wal", "push", "--policy", str(policy),
                              "pg_wal/000000010000000000000007"], stderr=subprocess.PIPE, text=True,
                             cwd=tmp_path / "pgdata")  # fmt: skip
        wait_for("wal push to wait", lambda: _python_sleeps(p.pid))
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=30)[1]
    assert p.returncode == 1 and "SIGTERM" in err and "Traceback" not in err


def _python_sleeps(pid: int) -> bool:
    """The process sleeps in its poll loop (it has parsed its arguments and checked the spool)."""
    try:
        return open(f"/proc/{pid}/wchan").read() in ("hrtimer_nanosleep", "do_nanosleep", "clock_nanosleep")
    except OSError:
        return False


def test_wal_push_with_a_bad_policy_path_exits_1_not_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "drtool", "wal", "push", "--policy", str(tmp_path / "nope.toml"),
                        "pg_wal/000000010000000000000007"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 1 and "nope.toml" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -- the daemon and its faults ------------------------------------------------------------------------


def test_daemon_uploads_ready_segments_and_push_only_acknowledges(pitr):
    daemon = start_daemon(pitr)
    try:
        names = [pitr.switch_wal() for _ in range(3)]
        for n in names:
            pitr.wait_archived(n)
        status = wait_for("status.json", lambda: _status_doc(pitr, lambda d: d["archived"] >= 3))
        assert status["pid"] == daemon_pid(pitr) and status["failures"] == 0
        r = pitr.cli("wal", "status", "-p", str(pitr.policy), "--json")
        doc = json.loads(r.out)
        assert r.code == 0 and doc["daemon_alive"] is True and doc["problems"] == []
        assert doc["newest_archived"] >= names[-1] and doc["newest_archived_age_seconds"] is not None
    finally:
        assert stop_daemon(pitr, daemon) == 0
    assert not walspool.daemon_alive(pitr.spool)
    assert json.loads((pitr.spool / "status.json").read_text())["pid"] is None


def _status_doc(cluster, ok):
    try:
        doc = json.loads((cluster.spool / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return doc if ok(doc) else None


def test_daemon_acknowledges_an_upload_as_soon_as_it_is_stored_not_at_its_next_scan(make_pitr, monkeypatch):
    """`wal push` waits for the ack: it must not wait for the daemon's next look at archive_status too.
    With scans an hour apart, the ack of the segment found at the first scan still comes at once."""
    import threading

    from drtool.app import wal as walapp
    from drtool.app.context import Context
    from drtool.policy import load_policy

    cluster = make_pitr(archive_command="false")  # PostgreSQL leaves the segment .ready for the daemon
    name = cluster.switch_wal()
    wait_for("the segment to be ready", lambda: name in cluster.ready())
    monkeypatch.setattr(walapp, "SCAN_INTERVAL", 3600.0)
    stop = threading.Event()
    daemon = threading.Thread(target=walapp.run_daemon, args=(Context(), load_policy(cluster.policy), stop))
    daemon.start()
    try:
        wait_for("the ack", lambda: walspool.ok_path(cluster.spool, name).exists(), timeout=90)
    finally:
        stop.set()
        daemon.join(timeout=60)
    assert not daemon.is_alive()


def test_store_down_while_archiving_acknowledges_nothing_and_shows_the_backlog(make_pitr, proxied_s3_toml, fault_proxy):
    cluster = make_pitr(proxied_s3_toml, extra_pitr='ack_timeout = "2s"')
    first = cluster.switch_wal()
    cluster.wait_archived(first)  # the cluster record exists; the store works
    daemon = start_daemon(cluster)
    try:
        fault_proxy.add("PUT", r"\.zst\.age$", "error", status=503)
        name = cluster.switch_wal()
        wait_for("a failed upload", lambda: _status_doc(cluster, lambda d: d["failures"] >= 1))
        wait_for("PostgreSQL to retry", lambda: int(cluster.pg.psql("SELECT failed_count FROM pg_stat_archiver")))
        assert not walspool.ok_path(cluster.spool, name).exists()
        assert name in cluster.ready()
        doc = json.loads(cluster.cli("wal", "status", "-p", str(cluster.policy), "--json").out)
        assert doc["backlog"] >= 1 and doc["oldest_ready"] <= name and doc["failures"] >= 1
        fault_proxy.clear()
        cluster.wait_archived(name)
    finally:
        stop_daemon(cluster, daemon)


def test_daemon_killed_mid_upload_never_acknowledged_then_pushed_again(make_pitr, proxied_s3_toml, fault_proxy):
    cluster = make_pitr(proxied_s3_toml, extra_pitr='ack_timeout = "600s"')
    cluster.wait_archived(cluster.switch_wal())
    daemon = start_daemon(cluster)
    stall = fault_proxy.add("PUT", r"\.zst\.age$", "hold", seconds=20, times=1)  # stored, reply held back
    name = cluster.switch_wal()
    wait_for("the upload to hang", lambda: stall.applied >= 1)
    # the object is stored but the store's reply is held back: nothing may be acknowledged yet
    assert not walspool.ok_path(cluster.spool, name).exists()
    os.kill(daemon_pid(cluster), signal.SIGKILL)
    daemon.wait(timeout=30)
    # from here the waiting `wal push` may find the object stored and acknowledge it itself (correct:
    # it is durable), so the check above, made while the reply was held, is the one that counts
    daemon = start_daemon(cluster)  # or the waiting `wal push` pushes it itself: either way "present"
    try:
        cluster.wait_archived(name)
    finally:
        stop_daemon(cluster, daemon)
    bucket, key = store_key(cluster, name)
    assert fault_proxy.count("PUT", key.split("/", 1)[1]) >= 2  # pushed again after the kill


def test_same_segment_pushed_twice_same_content_ok_different_content_refused_and_alerted(make_pitr, tmp_path):
    receiver = Receiver()
    try:
        cluster = make_pitr(extra_toml='[notify]\nwebhook_url_env = "HOOK_URL"\ntimeout = "5s"\n')
        name = cluster.switch_wal()
        cluster.wait_archived(name)
        copy = cluster.base / "copy" / "pg_wal" / name
        copy.parent.mkdir(parents=True)
        copy.write_bytes((cluster.pg_wal / name).read_bytes())
        os.chmod(copy.parent.parent, 0o755)
        os.chmod(copy.parent, 0o755)
        copy.chmod(0o644)
        same = cluster.as_postgres("wal", "push", "--policy", str(cluster.policy), str(copy))
        assert same.returncode == 0, same.stderr
        data = bytearray(copy.read_bytes())
        data[5000] ^= 0xFF
        copy.write_bytes(bytes(data))
        env = {"HOOK_URL": receiver.url}
        other = cluster.as_postgres("wal", "push", "--policy", str(cluster.policy), str(copy), env=env)
        assert other.returncode == 1 and len(other.stderr.strip().splitlines()) == 1
        assert f"{name}.zst.age: already archived with different content" in other.stderr
        assert walspool.error_path(cluster.spool, name).exists()
        again = cluster.as_postgres("wal", "push", "--policy", str(cluster.policy), str(copy), env=env)
        assert again.returncode == 1 and "already archived with different content" in again.stderr
        (alert,) = [json.loads(body) for _, _, body in receiver.requests]  # once, not on every retry
        assert alert["ok"] is False and alert["details"]["wal"] == name
        assert TOKEN not in other.stderr + again.stderr
        st = cluster.cli("status", "-p", str(cluster.policy), "--json")
        row = json.loads(st.out)["policies"][cluster.policy_name]
        jsonschema.validate(json.loads(st.out), json.loads(SCHEMA.read_text()))
        assert st.code == 3 and f"{name}: refused" in row["components"]["wal_archive"]
        assert row["wal"]["newest_archived"] >= name and row["wal"]["daemon_alive"] is False
    finally:
        receiver.close()


def test_another_clusters_wal_is_refused_naming_both_system_identifiers(pitr, make_pitr):
    pitr.wait_archived(pitr.switch_wal())
    other = make_pitr()
    name = other.switch_wal()
    other.wait_archived(name)
    copy = other.base / "foreign" / "pg_wal" / name
    copy.parent.mkdir(parents=True)
    copy.write_bytes((other.pg_wal / name).read_bytes())
    for p in (copy.parent.parent, copy.parent):
        os.chmod(p, 0o755)
    copy.chmod(0o644)
    r = pitr.as_postgres("wal", "push", "--policy", str(pitr.policy), str(copy))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert str(pitr.sysid()) in r.stderr and str(other.sysid()) in r.stderr and "wal/cluster.json" in r.stderr


def test_the_spool_cleanup_leaves_a_temp_file_being_written_and_removes_one_a_crash_left(tmp_path):
    """The daemon cleans the spool at start and between passes. It removed every temp file, so a
    `wal push` writing its ack or error at that moment failed on the rename ("No such file or
    directory", seen in tests/test_runbook.py): only a temp file old enough to be a crash's goes."""
    import os
    import time

    from drtool.app.wal import TMP_STALE_SECONDS, recover_spool
    from drtool.walspool import ACK

    spool, pg_wal = tmp_path / "spool", tmp_path / "pg_wal"
    (spool / ACK).mkdir(parents=True)
    (pg_wal / "archive_status").mkdir(parents=True)
    fresh = spool / ACK / ".000000010000000000000001.error.0a1b2c3d.tmp"
    old = spool / ".000000010000000000000002.0a1b2c3d.tmp"
    for f in (fresh, old):
        f.write_bytes(b"x")
    then = time.time() - TMP_STALE_SECONDS - 60
    os.utime(old, (then, then))
    assert recover_spool(spool, pg_wal) == 1
    assert fresh.exists() and not old.exists()
