"""The main job end to end, against a real PostgreSQL and both stores (folder and SeaweedFS S3)."""

from __future__ import annotations

import subprocess

import pytest
from helpers import EXPECTED_ROWS, make_setup

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(pg, tmp_path, store_toml):
    return make_setup(pg, tmp_path, store_toml)


def test_backup_list_verify_restore_round_trip(setup):
    b = setup.cli("backup", "-p", str(setup.policy), "--json")
    assert b.code == 0, b.err
    manifest = b.only
    assert manifest["tables"] == EXPECTED_ROWS
    assert manifest["row_count_method"] == "dump-stream"
    assert manifest["sizes"]["stored_bytes"] > 0

    listed = setup.cli("list", "-p", str(setup.policy), "--json")
    assert listed.code == 0, listed.err
    assert [x["id"] for x in listed.json["backups"]] == [manifest["id"]]
    for key in ("id", "recovery_point", "started_at", "completed_at", "size_bytes"):
        assert key in listed.json["backups"][0]

    v = setup.cli("verify", "-p", str(setup.policy), "--json")
    assert v.code == 0, v.err
    assert v.json["policies"][0]["backups"][0]["authenticated"] is True

    target = setup.target_db()
    r = setup.restore(target, "--json")
    assert r.code == 0, r.err
    assert r.json["row_counts"]["mismatched"] == {}
    assert r.json["row_counts"]["matched"] == len(EXPECTED_ROWS)
    assert setup.pg.psql("SELECT add_one(41)", db=target) == "42"
    assert setup.pg.psql("SELECT count(*) FROM big_customers", db=target) == "400"


def test_parallel_restore_stages_a_file_and_matches(setup):
    assert setup.cli("backup", "-p", str(setup.policy)).code == 0
    target = setup.target_db()
    r = setup.restore(target, "--jobs", "2", "--json")
    assert r.code == 0, r.err
    assert r.json["jobs"] == 2 and r.json["row_counts"]["mismatched"] == {}


def test_restore_picks_named_backup_and_defaults_to_newest(setup):
    first = setup.cli("backup", "-p", str(setup.policy), "--json").only["id"]
    setup.pg.psql("INSERT INTO empty_table VALUES (1)", db=setup.db)
    second = setup.cli("backup", "-p", str(setup.policy), "--json").only["id"]
    ids = [b["id"] for b in setup.cli("list", "-p", str(setup.policy), "--json").json["backups"]]
    assert ids == [second, first]

    t1, t2 = setup.target_db(), setup.target_db()
    assert setup.restore(t1).code == 0
    assert setup.pg.psql("SELECT count(*) FROM empty_table", db=t1) == "1"
    assert setup.restore(t2, "--backup", first).code == 0
    assert setup.pg.psql("SELECT count(*) FROM empty_table", db=t2) == "0"


def test_restore_refuses_non_empty_target_unless_clean(setup):
    assert setup.cli("backup", "-p", str(setup.policy)).code == 0
    target = setup.target_db()
    setup.pg.psql("CREATE TABLE customers (id int); INSERT INTO customers VALUES (999)", db=target)
    r = setup.restore(target)
    assert r.code == 1
    assert "is not empty" in r.err and "--clean" in r.err and "Traceback" not in r.err
    assert setup.pg.psql("SELECT id FROM customers", db=target) == "999"  # untouched
    r = setup.restore(target, "--clean")
    assert r.code == 0, r.err
    assert setup.pg.psql("SELECT count(*) FROM customers", db=target) == "500"


def test_restore_without_drtool_runbook(setup, age_bin, tmp_path, request):
    """README's disaster runbook: stock age, zstd and pg_restore, no drtool involved."""
    m = setup.cli("backup", "-p", str(setup.policy), "--json").only
    key = f"{m['policy']}/backups/{m['id']}.dump.zst.age"
    if setup.store_url.startswith("file://"):
        dump = f"{setup.store_url[7:]}/{key}"
    else:  # what `aws s3 cp` would do: fetch the object as it is
        bucket, prefix = setup.store_url[5:].split("/", 1)
        dump = str(tmp_path / "dump.zst.age")
        request.getfixturevalue("seaweed").client().download_file(bucket, f"{prefix}/{key}", dump)
    target = setup.target_db()
    pg_restore = str(setup.pg.bindir / "pg_restore")
    script = (
        f"set -euo pipefail; {age_bin} -d -i {setup.key} {dump} | zstd -d > {tmp_path}/db.dump && "
        f"{pg_restore} --exit-on-error -d '{setup.pg.dsn(target)}' {tmp_path}/db.dump"
    )
    r = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PGPASSWORD": setup.pg.PASSWORD},
    )
    assert r.returncode == 0, r.stderr
    assert setup.pg.psql("SELECT count(*) FROM orders", db=target) == "3000"
    assert setup.pg.psql('SELECT sum(x) FROM "Odd Schema"."Mixed Case"', db=target) == "6"
