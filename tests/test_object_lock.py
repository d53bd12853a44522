"""S3 Object Lock against SeaweedFS, which enforces it: every backup object is written locked,
prune reports locked objects as retained and deletes them once the lock has expired, and a
policy asking for Object Lock on a bucket without it is refused."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
from helpers import make_setup

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def locked_bucket(seaweed) -> str:
    c = seaweed.client()
    for _ in range(60):
        try:
            c.create_bucket(Bucket="drtool-locked", ObjectLockEnabledForBucket=True)
            return "drtool-locked"
        except c.exceptions.BucketAlreadyOwnedByYou:
            return "drtool-locked"
        except Exception:  # noqa: BLE001 - the server is still assigning volumes
            time.sleep(0.5)
    raise RuntimeError("could not create the Object Lock bucket")


def storage(seaweed, bucket, prefix, days=1) -> str:
    return (f'[storage]\nurl = "s3://{bucket}/{prefix}"\nregion = "us-east-1"\nendpoint_url = "{seaweed.endpoint}"\n'
            f"object_lock_days = {days}\n")  # fmt: skip


@pytest.fixture
def setup(pg, tmp_path, seaweed, locked_bucket, s3_prefix):
    return make_setup(
        pg, tmp_path, storage(seaweed, locked_bucket, s3_prefix), extra_toml="[retention]\nkeep_last = 1\n"
    )


def test_every_backup_object_is_written_locked(setup, seaweed, locked_bucket, s3_prefix):
    m = setup.cli("backup", "-p", str(setup.policy), "--json")
    assert m.code == 0, m.err
    c = seaweed.client()
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)
    for name in ("dump.zst.age", "manifest.json"):
        key = f"{s3_prefix}/{m.only['policy']}/backups/{m.only['id']}.{name}"
        ret = c.get_object_retention(Bucket=locked_bucket, Key=key)["Retention"]
        assert ret["Mode"] == "COMPLIANCE" and ret["RetainUntilDate"] > soon
    check = setup.cli("check", "-p", str(setup.policy))
    assert check.code == 0 and "Object Lock COMPLIANCE for 1 days" in check.out


def test_prune_reports_locked_backups_as_retained_and_never_fails(setup):
    first = setup.cli("backup", "-p", str(setup.policy), "--json").only["id"]
    second = setup.cli("backup", "-p", str(setup.policy), "--json").only["id"]
    r = setup.cli("prune", "-p", str(setup.policy), "--json")
    assert r.code == 0, r.err
    rows = {b["id"]: b for b in r.only["backups"]}
    assert rows[first]["action"] == "retained-by-lock" and "Object Lock retains it until" in rows[first]["reasons"][-1]
    assert rows[second]["action"] == "keep" and r.only["retained_by_lock"] == 1
    ids = [b["id"] for b in setup.cli("list", "-p", str(setup.policy), "--json").json["backups"]]
    assert ids == [second, first]  # still whole and restorable until the lock expires


def test_locked_backup_is_deleted_by_a_later_prune_once_the_lock_expires(setup, monkeypatch):
    from drtool.app import App
    from drtool.policy import load_policy
    from drtool.storage import s3

    def short_lock(self):
        until = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
        return {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}

    monkeypatch.setattr(s3.S3Store, "_lock_args", short_lock)  # a 3-second lock instead of a day
    monkeypatch.setenv("TEST_PGPASSWORD", setup.pg.PASSWORD)
    policy, app = load_policy(setup.policy), App()
    old = app.backup(policy)["id"]
    app.backup(policy)
    assert [b["action"] for b in app.prune(policy)["backups"]] == ["keep", "retained-by-lock"]
    time.sleep(4.5)
    later = app.prune(policy)
    assert [(b["id"], b["action"]) for b in later["backups"]][1] == (old, "delete")
    assert old not in [b["id"] for b in app.list_backups(policy)]
    assert not [o for o in app.store(policy).list_objects("") if old in o.key]


def test_object_lock_on_a_bucket_without_it_is_refused(pg, tmp_path, seaweed, bucket, s3_prefix):
    s = make_setup(pg, tmp_path, storage(seaweed, bucket, s3_prefix), init=False)
    r = s.cli("backup", "-p", str(s.policy))
    assert r.code == 1 and f"bucket '{bucket}' has no Object Lock" in r.err and "Traceback" not in r.err
    c = s.cli("check", "-p", str(s.policy))
    assert c.code == 3 and "object_lock_days is set" in c.out


def test_object_lock_on_a_folder_store_is_an_invalid_policy(pg, tmp_path):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"\nobject_lock_days = 7', init=False)
    r = s.cli("backup", "-p", str(s.policy))
    assert r.code == 2 and "storage.object_lock_days: Object Lock needs an S3 bucket" in r.err
    assert os.path.exists(s.policy)


def test_an_interrupted_backup_whose_dump_is_locked_is_retained_and_prune_goes_on(setup):
    """A backup that died before its manifest leaves a locked dump: prune reports it retained by
    the lock (and deletes it once the lock passes) instead of failing every run until then."""
    from drtool.policy import load_policy
    from drtool.storage import open_store

    good = setup.cli("backup", "-p", str(setup.policy), "--json").only
    store = open_store(load_policy(setup.policy).storage)
    old = "20200101T000000Z-aaaaaa"
    store.put(f"{good['policy']}/backups/{old}.dump.zst.age", [b"partial"], retain=True)  # written locked
    r = setup.cli("prune", "-p", str(setup.policy), "--json")
    assert r.code == 0 and "Traceback" not in r.err, r.err
    (row,) = r.only["incomplete"]
    assert row["id"] == old and row["action"] == "retained-by-lock" and "Object Lock" in row["reason"]
    assert store.stat(f"{good['policy']}/backups/{old}.dump.zst.age").size == 7
