"""A base backup (`backup --physical`) that outlives its lock lease, against a real PostgreSQL 15
cluster archiving into the real S3 server: it keeps renewing its lock while pg_basebackup streams, so
a second job is refused; and once its lease is lost to another host, it commits nothing.
(The same for a long logical backup: tests/test_locks.py.)

pg_basebackup is held mid-stream by a gate (tests/gated_dump.py) rather than throttled, so the job
outlives the lease by as much as the test needs without racing the clock; the lease is shortened
with DRTOOL_TEST_LOCK_LEASE (drtool/locks.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gated_dump import GatedDump

from drtool import clock, locks
from drtool.errors import NotFound
from drtool.policy import load_policy
from drtool.storage import get_bytes, open_store

pytestmark = pytest.mark.integration

LEASE = "4"  # seconds: renewed every 4/3 s
HELD_AFTER = 1024 * 1024  # bytes of the base backup tar before the gate


def _gated_policy(c, tmp_path: Path, endpoint: str | None = None) -> tuple[Path, GatedDump]:
    """The module cluster's policy with pg_basebackup held at a gate (and its S3 requests sent to
    `endpoint`, a fault proxy, when given)."""
    gate = GatedDump(tmp_path / "gated-bin", HELD_AFTER, tool="pg_basebackup")
    text = c.policy.read_text()
    if endpoint:
        text = text.replace(text.split('endpoint_url = "')[1].split('"')[0], endpoint)
    policy = tmp_path / "policy.toml"
    policy.write_text(text + "\n" + gate.toml)
    return policy, gate


def _start_base_backup(c, policy: Path) -> subprocess.Popen:
    env = {**os.environ, **{k: v for k, v in c.env.items() if v is not None}, locks.TEST_LEASE_ENV: LEASE}
    env = {k: v for k, v in env.items() if k not in ("PGPASSWORD", "PGPASSFILE", "DRTOOL_POLICY")}
    return subprocess.Popen([sys.executable, "-m", "drtool", "backup", "--physical", "-p", str(policy)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _store(c):
    return open_store(load_policy(c.policy).storage)  # straight to the S3 server, never through a proxy


def _lock_body(store, name: str) -> dict:
    return json.loads(get_bytes(store, locks.lock_key(name)))


def _taken_lock(store, name: str, proc: subprocess.Popen) -> dict:
    """The job's lock once it holds it: pg_basebackup starts before the lock is taken (its checkpoint
    overlaps opening the store), so the gate can be reached first."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return _lock_body(store, name)
        except NotFound:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the base backup never took its lock"
            time.sleep(0.1)


def _listed(c) -> list[str]:
    r = c.cli("list", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    return [b["id"] for b in r.json["backups"] if b.get("kind") == "physical"]


def _objects(store, name: str) -> set[str]:
    return {o.key for o in store.list_objects(f"{name}/backups/")}


def _past(expires: str, seconds: float = 1.5) -> None:
    """Until the clock is `seconds` past the lease's expiry."""
    end = clock.parse_iso(expires) + dt.timedelta(seconds=seconds)
    deadline = time.monotonic() + 120
    while clock.utcnow() < end:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_base_backup_renews_its_lock_past_its_first_lease_and_a_second_job_is_refused(pitr, tmp_path):
    c, store = pitr, _store(pitr)
    policy, gate = _gated_policy(c, tmp_path)
    before = _listed(c)
    proc = _start_base_backup(c, policy)
    try:
        gate.wait_reached(proc)
        first = _taken_lock(store, c.policy_name, proc)
        assert first["job"] == "base"
        _past(first["expires"])  # the first lease ran out while pg_basebackup was held
        now = _lock_body(store, c.policy_name)
        assert now["token"] == first["token"] and "renewed" in now
        assert clock.parse_iso(now["expires"]) > clock.parse_iso(first["expires"])  # live to any other host
        other = c.cli("backup", "--physical", "-p", str(c.policy))
        assert other.code == 1, other.err
        assert f"policy '{c.policy_name}' is locked: held by" in other.err and "Traceback" not in other.err
        assert _lock_body(store, c.policy_name)["token"] == first["token"]  # the second job took nothing
    finally:
        gate.release()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert _listed(c) == [*before, out.strip()]
    with pytest.raises(NotFound):
        store.stat(locks.lock_key(c.policy_name))  # released


def test_a_base_backup_whose_lease_ran_out_and_was_taken_by_another_host_commits_nothing(
    pitr, tmp_path, fault_proxy, monkeypatch
):
    c, store = pitr, _store(pitr)
    policy, gate = _gated_policy(c, tmp_path, endpoint=fault_proxy.endpoint)
    before, objects_before = _listed(c), _objects(store, c.policy_name)
    proc = _start_base_backup(c, policy)
    try:
        gate.wait_reached(proc)
        first = _taken_lock(store, c.policy_name, proc)
        fault_proxy.add("PUT", r"locks/policy\.lock", "error", status=503)  # its renewals fail from now on
        _past(first["expires"])
        assert _lock_body(store, c.policy_name)["expires"] == first["expires"]  # not renewed: the lease is over
        # another host finds the lease expired and takes the lock over, as `drtool run` there would
        monkeypatch.setattr(locks.socket, "gethostname", lambda: "other-host")
        thief = locks.acquire(store, c.policy_name, "backup", ttl=600, now=clock.utcnow)
        monkeypatch.undo()
        assert thief.body["took_over"]["pid"] == first["pid"]
        fault_proxy.clear()  # the store answers again: the job could commit, if it did not check its lock
    finally:
        gate.release()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, (out, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and "warning:" not in ln]
    assert len(lines) == 1, err
    assert f"lost the lock of policy '{c.policy_name}'" in lines[0] and "nothing was committed" in lines[0]
    assert "Traceback" not in err
    assert _listed(c) == before
    assert _objects(store, c.policy_name) == objects_before  # its base tar is gone again
    assert _lock_body(store, c.policy_name)["token"] == thief.token  # the new holder's lock is left alone
    locks.release(store, thief)
