"""Bad input and faults: one clear line naming the thing at fault, the contract's exit code,
no traceback, no secret, and nothing listed that cannot be restored."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from helpers import make_setup, run_cli
from services import PgCluster, free_port, tmpdir

pytestmark = pytest.mark.integration


def local_storage(tmp_path) -> str:
    return f'[storage]\nurl = "file://{tmp_path}/store"'


def s3_storage(seaweed, bucket, prefix: str = "pg") -> str:
    return f'[storage]\nurl = "s3://{bucket}/{prefix}"\nregion = "us-east-1"\nendpoint_url = "{seaweed.endpoint}"'


def assert_clean_failure(r, code: int, *needles: str, secret: str = PgCluster.PASSWORD) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.err and "Traceback" not in r.out
    assert secret not in r.err and secret not in r.out
    for n in needles:
        assert n in r.err, (n, r.err)


def listed(setup) -> list[str]:
    r = setup.cli("list", "-p", str(setup.policy), "--json")
    assert r.code == 0, r.err
    return [b["id"] for b in r.json["backups"]]


@pytest.fixture
def local(pg, tmp_path):
    return make_setup(pg, tmp_path, local_storage(tmp_path))


@pytest.fixture
def s3(pg, tmp_path, seaweed, bucket, s3_prefix):
    return make_setup(pg, tmp_path, s3_storage(seaweed, bucket, s3_prefix))


def fake_bin(tmp_path, name: str, body: str) -> str:
    """A folder with one wrapper script, used as backup.pg_bin_dir to force a fault."""
    d = tmp_path / f"bin-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    f = d / name
    f.write_text("#!/bin/bash\n" + body)
    f.chmod(0o755)
    return str(d)


def with_pg_bin_dir(setup, bin_dir: str) -> None:
    text = setup.policy.read_text()
    setup.policy.write_text(text + f'\n[backup]\npg_bin_dir = "{bin_dir}"\n')


# -- database -----------------------------------------------------------------------------


def test_unreachable_database_names_it(local):
    port = free_port()
    local.policy.write_text(local.policy.read_text().replace(f":{local.pg.port}/", f":{port}/"))
    r = local.cli("backup", "-p", str(local.policy))
    assert_clean_failure(r, 1, f"127.0.0.1:{port}/{local.db}", "cannot connect")
    assert listed(local) == []


def test_wrong_password_is_reported_without_the_password(local):
    env = dict(local.env, TEST_PGPASSWORD="wrong-" + PgCluster.PASSWORD[::-1])
    r = run_cli("backup", "-p", str(local.policy), env=env)
    assert_clean_failure(r, 1, "password authentication failed", secret=env["TEST_PGPASSWORD"])


def test_missing_password_env_var_is_named(local):
    env = dict(local.env, TEST_PGPASSWORD=None)
    r = run_cli("backup", "-p", str(local.policy), env=env)
    assert_clean_failure(r, 2, "TEST_PGPASSWORD is not set")


def test_pg_dump_older_than_server_is_refused_before_anything_starts(local, tmp_path):
    bin_dir = fake_bin(
        tmp_path,
        "pg_dump",
        'if [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) 11.22"; '
        'exit 0; fi\ntouch "$(dirname "$0")/ran"; exit 1\n',
    )
    with_pg_bin_dir(local, bin_dir)
    r = local.cli("backup", "-p", str(local.policy))
    assert_clean_failure(r, 1, "pg_dump 11.22", "older than the server (15.")
    assert not os.path.exists(os.path.join(bin_dir, "ran"))
    assert listed(local) == []


def test_pg_dump_error_means_no_backup(local, tmp_path):
    real = shutil.which("pg_dump", path=str(local.pg.bindir))
    bin_dir = fake_bin(
        tmp_path,
        "pg_dump",
        f'if [ "$1" = --version ]; then exec {real} --version; fi\n'
        f'{real} "$@" | head -c 20000\necho "pg_dump: error: simulated" >&2\n'
        "exit 1\n",
    )
    with_pg_bin_dir(local, bin_dir)
    r = local.cli("backup", "-p", str(local.policy))
    assert_clean_failure(r, 1, "pg_dump failed", "simulated")
    assert listed(local) == []
    assert not list((local.policy.parent / "store").rglob("dump.zst.age"))


def test_server_stopping_mid_dump_leaves_no_backup(tmp_path, s3):
    """A real failure: the source server shuts down while pg_dump is copying a table."""
    base = tmpdir("drtool-pg-own-")  # postgres must be able to reach it; pytest's tmp_path is root-only
    os.chmod(base, 0o755)
    own = PgCluster(s3.pg.bindir, base / "own")
    own.init()
    own.start()
    try:
        own.create_db("src")
        own.psql(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g+1)::text) AS t "
            "FROM generate_series(1, 2000000) g",
            db="src",
        )
        s3.policy.write_text(s3.policy.read_text().replace(s3.pg.dsn(s3.db), own.dsn("src")))
        proc = subprocess.Popen(
            [sys.executable, "-m", "drtool", "backup", "-p", str(s3.policy)],
            env={**os.environ, **{k: v for k, v in s3.env.items() if v is not None}},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            q = own.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY public.big%'", check=False)
            if q == "1":
                break
            time.sleep(0.02)
        else:
            proc.kill()
            pytest.fail("pg_dump never started copying")
        own.stop()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        assert "Traceback" not in err and "pg_dump failed" in err
        assert PgCluster.PASSWORD not in err + out
    finally:
        own.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert listed(s3) == []


def test_table_dropped_after_snapshot_keeps_backup_consistent(local, tmp_path):
    """The table is dropped (and committed) after drtool exported its snapshot, before pg_dump
    locks it. pg_dump then fails; drtool discards that attempt and retries with a fresh snapshot,
    so the backup that commits is consistent: without the table, and restorable as listed."""
    real = shutil.which("pg_dump", path=str(local.pg.bindir))
    psql = local.pg.bindir / "psql"
    bin_dir = fake_bin(
        tmp_path,
        "pg_dump",
        f'if [ "$1" = --version ]; then exec {real} --version; fi\n'
        f"{psql} -h {local.pg.sock} -p {local.pg.port} -U postgres -d {local.db} -qc "
        '"DROP TABLE IF EXISTS orders" >&2 || exit 99\n'
        f'exec {real} "$@"\n',
    )
    original = local.policy.read_text()
    with_pg_bin_dir(local, bin_dir)
    r = local.cli("backup", "-p", str(local.policy), "--json")
    local.policy.write_text(original)  # the wrapper folder has no pg_restore
    assert r.code == 0, r.err
    assert "a table was dropped while the backup started, retrying once" in r.err
    assert "public.orders" not in r.only["tables"] and r.only["tables"]["public.customers"] == 500
    assert listed(local) == [r.only["id"]]
    target = local.target_db()
    res = local.restore(target, "--json")
    assert res.code == 0, res.err
    assert res.json["row_counts"]["mismatched"] == {}


def test_password_never_reaches_pg_dump_argv(local, tmp_path):
    real = shutil.which("pg_dump", path=str(local.pg.bindir))
    record = tmp_path / "argv.txt"
    bin_dir = fake_bin(
        tmp_path,
        "pg_dump",
        f'if [ "$1" = --version ]; then exec {real} --version; fi\n'
        f'printf "%s\\n" "$0" "$@" > {record}\nexec {real} "$@"\n',
    )
    with_pg_bin_dir(local, bin_dir)
    r = local.cli("backup", "-p", str(local.policy), "--json")
    assert r.code == 0, r.err
    argv = record.read_text()
    assert "--snapshot=" in argv and PgCluster.PASSWORD not in argv
    store = local.policy.parent / "store"
    for f in store.rglob("*"):
        if f.is_file():
            assert PgCluster.PASSWORD.encode() not in f.read_bytes()


# -- store ----------------------------------------------------------------------------------


def test_unreachable_store_is_named(pg, tmp_path):
    port = free_port()
    setup = make_setup(
        pg,
        tmp_path,
        f'[storage]\nurl = "s3://some-bucket/pg"\nregion = "us-east-1"\nendpoint_url = "http://127.0.0.1:{port}"',
        init=False,
    )
    r = setup.cli("backup", "-p", str(setup.policy))
    assert_clean_failure(r, 1, "s3://some-bucket/pg", f"cannot reach the store at http://127.0.0.1:{port}")


def test_missing_bucket_is_named(pg, tmp_path, seaweed):
    name = f"missing-{uuid.uuid4().hex[:8]}"
    setup = make_setup(pg, tmp_path, s3_storage(seaweed, name), init=False)
    r = setup.cli("backup", "-p", str(setup.policy))
    assert_clean_failure(r, 1, f"bucket '{name}' does not exist")
    assert name not in [b["Name"] for b in seaweed.client().list_buckets()["Buckets"]]


def _kill_backup_mid_upload(setup, started) -> None:
    setup.pg.psql(
        "CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) AS t "
        "FROM generate_series(1, 1500000) g",
        db=setup.db,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "drtool", "backup", "-p", str(setup.policy)],
        env={**os.environ, **{k: v for k, v in setup.env.items() if v is not None}},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if started():
            break
        time.sleep(0.01)
    assert proc.poll() is None, "backup finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_upload_killed_midway_is_never_listed_and_next_backup_works_s3(s3, seaweed):
    bucket, prefix = s3.store_url[5:].split("/", 1)
    client = seaweed.client()
    _kill_backup_mid_upload(
        s3, lambda: bool(client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads"))
    )
    assert listed(s3) == []
    r = s3.cli("backup", "-p", str(s3.policy), "--json")
    assert r.code == 0, r.err
    assert listed(s3) == [r.only["id"]]


def test_upload_killed_midway_is_never_listed_and_next_backup_works_local(local):
    store = local.policy.parent / "store"
    _kill_backup_mid_upload(
        local,
        lambda: any(p.name.startswith(".tmp-") and p.stat().st_size > (1 << 20) for p in store.rglob("*")),
    )
    assert listed(local) == []
    r = local.cli("backup", "-p", str(local.policy), "--json")
    assert r.code == 0, r.err
    assert listed(local) == [r.only["id"]]


# -- damaged objects and keys -------------------------------------------------------------------


def _damage(setup, how: str) -> tuple[str, str]:
    m = setup.cli("backup", "-p", str(setup.policy), "--json").only
    path = setup.policy.parent / "store" / m["policy"] / "backups" / f"{m['id']}.dump.zst.age"
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) - 100 :]
    path.write_bytes(bytes(data))
    return m["id"], m["objects"][0]["sha256"]


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_object_fails_verify_and_restore_naming_it(local, how):
    backup_id, sha = _damage(local, how)
    v = local.cli("verify", "-p", str(local.policy))
    assert_clean_failure(v, 3, backup_id, "dump.zst.age", f"expected {sha}", "actual ")
    shallow = local.cli("verify", "-p", str(local.policy), "--shallow")
    assert_clean_failure(shallow, 3, backup_id, f"expected {sha}")
    target = local.target_db()
    r = local.restore(target)
    assert_clean_failure(r, 3, backup_id, "dump.zst.age")
    # the single-transaction restore rolled back: the target is still empty
    assert local.pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", db=target) == "0"


def test_damaged_manifest_is_listed_unreadable_and_fails_only_its_own_restore(local):
    """Manifests are read side by side when listing; a damaged one is named in one line, the
    others stay usable, and a restore of the damaged one itself exits 3."""
    made = [local.cli("backup", "-p", str(local.policy), "--json").only for _ in range(2)]
    ids = [m["id"] for m in made]
    manifest = local.policy.parent / "store" / made[0]["policy"] / "backups" / f"{ids[0]}.manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])
    r = local.cli("list", "-p", str(local.policy), "--json")
    assert r.code == 0 and "Traceback" not in r.err
    assert f"{ids[0]}.manifest.json" in r.err and "not valid JSON" in r.err
    assert [(b["id"], b["status"]) for b in r.json["backups"]] == [(ids[1], "ok"), (ids[0], "unreadable")]
    assert local.restore(local.target_db()).code == 0  # the newest is fine
    r = local.restore(local.target_db(), "--backup", ids[0])
    assert_clean_failure(r, 3, f"{ids[0]}.manifest.json", "not valid JSON")


def test_wrong_identity_is_reported(local, tmp_path):
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    other = tmp_path / "other.key"
    assert run_cli("keygen", "--output", str(other)).code == 0
    local.policy.write_text(local.policy.read_text().replace(str(local.key), str(other)))
    target = local.target_db()
    r = local.restore(target)
    assert_clean_failure(r, 1, "no identity matches", "identity_file")
    secret_line = [ln for ln in other.read_text().splitlines() if ln.startswith("AGE-SECRET-KEY-")][0]
    assert secret_line not in r.err


def test_missing_identity_file_is_named(local, tmp_path):
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    gone = tmp_path / "nowhere" / "key.txt"
    local.policy.write_text(local.policy.read_text().replace(str(local.key), str(gone)))
    r = local.cli("verify", "-p", str(local.policy))
    assert_clean_failure(r, 1, str(gone), "does not exist")


def test_target_dsn_with_password_is_refused(local):
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    dsn = local.pg.dsn("x").replace("postgres@", "postgres:hunter2-secret@")
    r = local.cli("restore", "-p", str(local.policy), "--target", dsn)
    assert_clean_failure(r, 2, "--target carries a password", secret="hunter2-secret")


def test_restore_with_no_backups_says_so(local):
    args = ["restore", "-p", str(local.policy), "--target", local.pg.dsn("postgres")]
    assert_clean_failure(local.cli(*args), 1, "has no complete backup yet")
