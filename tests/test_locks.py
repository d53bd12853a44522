"""Policy locks under long jobs and lost replies, against real stores (folder and S3): the lease is
renewed while a job runs, a job that lost its lock commits nothing, release removes only our own
lock, prune leaves a backup that is still uploading alone, and a live local process is never stale."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from gated_dump import GatedDump
from helpers import SAMPLE_SQL, make_setup, template_db

from drtool import clock, locks
from drtool.errors import NotFound

pytestmark = pytest.mark.integration

SCHEDULE = '[schedule]\nbackup = "0 0 * * *"\n'
BULK = "CREATE TABLE bulk AS SELECT g, md5(random()::text) AS t FROM generate_series(1, 1000000) g"
HELD_AFTER = 32 * 1024 * 1024  # bytes of dump before the gate: more than one 8 MiB part after zstd


@pytest.fixture
def gate(tmp_path) -> GatedDump:
    return GatedDump(tmp_path / "gated-bin", HELD_AFTER)


@pytest.fixture(scope="module")
def bulk_db(pg):
    """The sample data and BULK, loaded once per module: each test backs up its own copy of it."""
    name = template_db(pg, SAMPLE_SQL, BULK)
    yield name
    pg.psql(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def setup(pg, tmp_path, store_toml, gate, bulk_db):
    return make_setup(pg, tmp_path, store_toml, extra_toml=SCHEDULE + gate.toml, template=bulk_db)


def policy_of(setup):
    from drtool.policy import load_policy

    return load_policy(setup.policy)


def store_of(setup):
    from drtool.storage import open_store

    return open_store(policy_of(setup).storage)


def env_of(setup, **extra: str) -> dict[str, str]:
    env = {**os.environ, **{k: v for k, v in setup.env.items() if v is not None}, **extra}
    return {k: v for k, v in env.items() if k not in ("PGPASSWORD", "PGPASSFILE", "DRTOOL_POLICY")}


def start_backup(setup, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "drtool", "backup", "-p", str(setup.policy)],
                            env=env_of(setup, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def lock_body(store, policy: str) -> dict:
    from drtool.storage import get_bytes

    return json.loads(get_bytes(store, locks.lock_key(policy)))


def backup_ids(setup) -> list[str]:
    return [b["id"] for b in setup.cli("list", "-p", str(setup.policy), "--json").json["backups"]]


def test_a_job_renews_its_lock_past_its_first_lease_and_another_run_skips(setup, gate):
    name, store = policy_of(setup).name, store_of(setup)
    proc = start_backup(setup, **{locks.TEST_LEASE_ENV: "4"})
    try:
        gate.wait_reached(proc)
        first = lock_body(store, name)
        first_expiry = clock.parse_iso(first["expires"])
        deadline = time.monotonic() + 120
        while clock.utcnow() < first_expiry + dt.timedelta(seconds=2):  # outlive the first lease
            assert time.monotonic() < deadline
            time.sleep(0.2)
        now = lock_body(store, name)
        assert now["token"] == first["token"] and "renewed" in now
        assert clock.parse_iso(now["expires"]) > first_expiry  # still live to any other host
        other = setup.cli("run", str(setup.policy), "--json")
        assert other.code == 0, other.err
        assert "another job holds the lock" in other.json["policies"][0]["skipped"]
    finally:
        gate.release()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert backup_ids(setup) == [out.strip()]
    with pytest.raises(NotFound):
        store.stat(locks.lock_key(name))  # released


def test_a_job_whose_lock_was_taken_over_commits_nothing(setup, gate):
    name, store = policy_of(setup).name, store_of(setup)
    proc = start_backup(setup)
    try:
        gate.wait_reached(proc)
        thief = {"host": "other-host", "pid": 4242, "job": "backup", "since": clock.iso(clock.utcnow()),
                 "expires": "2999-01-01T00:00:00Z", "token": "thief"}  # fmt: skip
        store.put(locks.lock_key(name), [json.dumps(thief).encode()])
    finally:
        gate.release()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, (out, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and "warning:" not in ln]
    assert len(lines) == 1 and f"lost the lock of policy '{name}'" in lines[0] and "other-host pid 4242" in lines[0]
    assert "Traceback" not in err
    assert backup_ids(setup) == []
    assert list(store.list_objects(f"{name}/backups/")) == []  # the dump it wrote is gone
    assert lock_body(store, name)["token"] == "thief"  # release left the new holder's lock alone


def test_prune_leaves_a_backup_that_is_still_uploading_alone(setup, gate):
    from drtool.app import App, Context

    policy, store = policy_of(setup), store_of(setup)
    base = f"{policy.name}/backups/"
    proc = start_backup(setup)
    try:
        gate.wait_reached(proc)
        deadline = time.monotonic() + 120
        while not store.leftovers(base):  # the upload has begun: a temp file, or a multipart upload
            assert time.monotonic() < deadline and proc.poll() is None, "no upload in progress"
            time.sleep(0.1)
        before = store.leftovers(base)
        r = setup.cli("prune", "-p", str(policy.source))
        assert r.code == 1 and "is locked: held by" in r.err
        # a prune that runs anyway (say it took the lock for stale on a host with a skewed clock),
        # with no grace at all: the backup's lock is live, so its upload is not touched
        os.environ["TEST_PGPASSWORD"] = setup.pg.PASSWORD
        try:
            result = App(Context(incomplete_grace=0)).schedule._prune(policy, store, dry_run=False)
        finally:
            os.environ.pop("TEST_PGPASSWORD", None)
        assert [(x["action"], "live lock" in x["reason"]) for x in result["incomplete"]] == [("keep", True)]
        assert {x.handle for x in store.leftovers(base)} >= {x.handle for x in before}
    finally:
        gate.release()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert backup_ids(setup) == [out.strip()]
    v = setup.cli("verify", "-p", str(policy.source), "--backup", out.strip())
    assert v.code == 0, v.err


def test_an_expired_lock_of_a_live_process_on_this_host_is_not_taken_over(pg, tmp_path, store_toml):
    setup = make_setup(pg, tmp_path, store_toml)
    name, store = policy_of(setup).name, store_of(setup)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "job": "backup", "since": "2026-01-01T00:00:00Z",
              "expires": "2026-01-01T00:15:00Z", "token": "alive"}  # fmt: skip
    store.put(locks.lock_key(name), [json.dumps(holder).encode()])
    r = setup.cli("backup", "-p", str(setup.policy))
    assert r.code == 1 and f"is locked: held by {socket.gethostname()} pid {os.getpid()}" in r.err
    assert "took over" not in r.err
    assert lock_body(store, name)["token"] == "alive"
    assert backup_ids(setup) == []


@pytest.mark.parametrize("lost", ["taking", "renewing"])
def test_a_lost_reply_to_a_lock_write_is_recognised_as_our_own(pg, tmp_path, proxied_s3_toml, fault_proxy, lost):
    setup = make_setup(pg, tmp_path, proxied_s3_toml)
    # the first PUT takes the lock; the next one renews it right before the manifest is written
    fault_proxy.add("PUT", r"locks/policy\.lock", "lose_reply", times=1, skip=0 if lost == "taking" else 1)
    r = setup.cli("backup", "-p", str(setup.policy), "--json")
    assert r.code == 0, r.err
    assert fault_proxy.count("PUT", r"locks/policy\.lock", "lose_reply (store said 200)") == 1
    assert backup_ids(setup) == [r.only["id"]]
    with pytest.raises(NotFound):
        store_of(setup).stat(locks.lock_key(policy_of(setup).name))  # and released


def test_lease_renewal_grace_and_unit_timeout_are_one_consistent_set():
    from drtool import units
    from drtool.app import Context

    assert locks.LEASE == 15 * 60 and locks.RENEW_EVERY == locks.LEASE / 3
    assert Context().lock_lease == locks.LEASE  # the test override is not set here
    assert Context().incomplete_grace > locks.LEASE  # a dead job's lock expires before its leftovers go
    assert f"TimeoutStartSec={units.LONGEST_RUN}" in units.systemd_units([], "/etc/drtool", "drtool")["drtool.service"]
