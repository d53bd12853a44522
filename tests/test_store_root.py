"""The store root: only `drtool init` creates it (folder or bucket), everything else refuses a
missing one with a hint; a read-only folder store fails writes with one line, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest
from helpers import Result, make_setup
from services import need

pytestmark = pytest.mark.integration

HINT = "does not exist; run `drtool init -p "
SCHEDULE = '[schedule]\nbackup = "0 0 * * *"\n[retention]\nkeep_last = 1\n'


def assert_one_line_failure(r: Result, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.err + r.out
    for n in needles:
        assert n in r.err, (n, r.err)


# -- point 9: a missing root is refused; init creates it ----------------------------------------------


def test_missing_store_folder_is_refused_with_a_hint_by_backup_check_and_run(pg, tmp_path):
    root = tmp_path / "not-mounted" / "store"
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{root}"', extra_toml=SCHEDULE, init=False)
    b = s.cli("backup", "-p", str(s.policy))
    assert_one_line_failure(b, 1, f"file://{root}: store folder {HINT}{s.policy}` to create it")
    c = s.cli("check", "-p", str(s.policy), "--json")
    assert c.code == 3, c.err
    storage = [x for x in c.json["policies"][0]["checks"] if x["check"] == "storage"][0]
    assert storage["ok"] is False and HINT in storage["detail"]
    r = s.cli("run", str(s.policy))
    assert_one_line_failure(r, 1, HINT)
    for cmd in (["list"], ["prune"], ["verify"]):
        assert_one_line_failure(s.cli(*cmd, "-p", str(s.policy)), 1, HINT)
    assert not (tmp_path / "not-mounted").exists()  # nothing created it behind the user's back


def test_init_creates_every_store_folder_0700_and_running_it_again_is_fine(pg, tmp_path):
    primary, copy = tmp_path / "disk" / "store", tmp_path / "other-disk" / "copy"
    storage = f'[storage]\nurl = "file://{primary}"\n[[storage.copies]]\nname = "dr"\nurl = "file://{copy}"\n'
    s = make_setup(pg, tmp_path, storage, init=False)
    first = s.cli("init", "-p", str(s.policy), "--json")
    assert first.code == 0, first.err
    targets = first.json["policies"][0]["targets"]
    assert [(t["target"], t["created"], t["ok"]) for t in targets] == [("primary", True, True), ("dr", True, True)]
    assert (primary.stat().st_mode & 0o777, copy.stat().st_mode & 0o777) == (0o700, 0o700)
    again = s.cli("init", "-p", str(s.policy), "--json")
    assert again.code == 0, again.err
    assert [t["created"] for t in again.json["policies"][0]["targets"]] == [False, False]
    b = s.cli("backup", "-p", str(s.policy), "--json")
    assert b.code == 0, b.err
    assert b.only["copies"] == {"dr": "ok"}


def test_copy_target_folder_missing_is_not_created_by_backup(pg, tmp_path):
    copy = tmp_path / "unmounted" / "copy"
    storage = f'[storage]\nurl = "file://{tmp_path}/store"\n[[storage.copies]]\nname = "dr"\nurl = "file://{copy}"\n'
    s = make_setup(pg, tmp_path, storage, init=False)
    (tmp_path / "store").mkdir()
    b = s.cli("backup", "-p", str(s.policy), "--json")
    assert b.code == 0, b.err  # the primary backup commits; the copy waits for init
    assert b.only["copies"]["dr"].startswith("failed: ") and HINT in b.only["copies"]["dr"]
    assert not copy.parent.exists()


def test_init_on_s3_creates_the_bucket_with_versioning_and_object_lock(pg, tmp_path, seaweed):
    """One fresh bucket (SeaweedFS runs out of volumes after a handful): refused before init,
    created by init with Object Lock and versioning, checked (not recreated) by a second init."""
    name = f"init-{uuid.uuid4().hex[:8]}"
    storage = (f'[storage]\nurl = "s3://{name}/pg"\nregion = "us-east-1"\nendpoint_url = "{seaweed.endpoint}"\n'
               "object_lock_days = 1\n")  # fmt: skip
    s = make_setup(pg, tmp_path, storage, init=False)
    client = seaweed.client()
    b = s.cli("backup", "-p", str(s.policy))
    assert_one_line_failure(b, 1, f"bucket '{name}' {HINT}")
    assert name not in [x["Name"] for x in client.list_buckets()["Buckets"]]
    first = s.cli("init", "-p", str(s.policy), "--json")
    assert first.code == 0, first.err
    target = first.json["policies"][0]["targets"][0]
    assert target["created"] is True and "Object Lock and versioning enabled" in target["detail"]
    assert client.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    lock = client.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    again = s.cli("init", "-p", str(s.policy), "--json")
    assert again.code == 0 and again.json["policies"][0]["targets"][0]["created"] is False, again.err
    b = s.cli("backup", "-p", str(s.policy), "--json")
    assert b.code == 0, b.err


def test_init_of_an_existing_bucket_without_object_lock_names_the_problem(pg, tmp_path, seaweed, bucket, s3_prefix):
    storage = (f'[storage]\nurl = "s3://{bucket}/{s3_prefix}"\nregion = "us-east-1"\n'
               f'endpoint_url = "{seaweed.endpoint}"\nobject_lock_days = 1\n')  # fmt: skip
    s = make_setup(pg, tmp_path, storage, init=False)
    r = s.cli("init", "-p", str(s.policy))
    assert_one_line_failure(r, 1, f"bucket '{bucket}' has no Object Lock")
    assert "FAIL" in r.out


# -- point 8: a read-only folder store ----------------------------------------------------------------


def readonly_cli(s, ro_dir, *args: str) -> Result:
    """drtool with `ro_dir` bind-mounted read-only in a private mount namespace of its own.

    The tests run as root, where chmod 0555 does not stop writes; a read-only bind mount does,
    as it would for an operator's read-only mount. The namespace dies with the command, so
    nothing is left mounted on the host even if the test is killed."""
    need(shutil.which("unshare") is not None, "unshare (util-linux)")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    need(probe.returncode == 0, "permission to make a mount namespace (unshare --mount)")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    env = {**os.environ, **{k: v for k, v in s.env.items() if v is not None}}
    for k, v in s.env.items():
        if v is None:
            env.pop(k, None)
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(ro_dir),
         sys.executable, "-m", "drtool", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    return Result(r.returncode, r.stdout, r.stderr)


@pytest.fixture
def with_backup(pg, tmp_path, scratch_root):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=SCHEDULE)
    s.env["TMPDIR"] = str(scratch_root)
    first = s.cli("backup", "-p", str(s.policy), "--json")
    assert first.code == 0, first.err
    return s, first.only


@pytest.mark.parametrize("command", ["backup", "prune", "drill", "run"])
def test_read_only_store_folder_fails_in_one_line(with_backup, tmp_path, command):
    s, _ = with_backup
    store = tmp_path / "store"
    args = [command, str(s.policy)] if command == "run" else [command, "-p", str(s.policy)]
    r = readonly_cli(s, store, *args)
    assert_one_line_failure(r, 1, f"file://{store}", "Read-only file system")


def test_read_only_backups_folder_fails_the_backup_naming_the_object(with_backup, tmp_path):
    """The lock folder is writable, the backups folder is not: the dump write itself fails."""
    s, first = with_backup
    backups = tmp_path / "store" / first["policy"] / "backups"
    r = readonly_cli(s, backups, "backup", "-p", str(s.policy))
    assert_one_line_failure(r, 1, f"file://{tmp_path}/store: cannot write '{first['policy']}/backups/",
                            "dump.zst.age", "Read-only file system")  # fmt: skip
    ids = [b["id"] for b in s.cli("list", "-p", str(s.policy), "--json").json["backups"]]
    assert ids == [first["id"]]
    assert not (tmp_path / "store" / first["policy"] / "locks" / "policy.lock").exists()  # released
