"""list, verify and prune over the WAL archive (issue 12, point 6), against real PostgreSQL 15
clusters archiving with `drtool wal push` into the real S3 server (tests/pitr_fixtures.py): the
restorable window and the chain's gaps, retention per kind, WAL pruned across two timelines."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
from services import need, pg_bindir
from test_pitr_restore import Restored, _restore
from test_pitr_restore import restore_root as restore_root  # noqa: F401  (a fixture)

from drtool import walnames

pytestmark = pytest.mark.integration


def _one_line(r, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.err
    for n in needles:
        assert n in r.err, (n, r.err)


def _bucket_key(c, sysid: str, name: str) -> tuple[str, str]:
    bucket, _, prefix = c.store_url[len("s3://") :].partition("/")
    return bucket, f"{prefix}/{walnames.key_for(c.policy_name, sysid, name)}"


def _archive(c, rows: range) -> list[str]:
    """A segment per row: insert, switch, wait until archived."""
    names = []
    for i in rows:
        c.pg.psql(f"INSERT INTO ops_rows (id) VALUES ({i})")
        names.append(c.switch_wal())
        c.wait_archived(names[-1])
    return names


def _stored_wal(seaweed, c, sysid: str) -> set[str]:
    bucket, key = _bucket_key(c, sysid, "00000001.history")
    prefix = key.rsplit("/", 2)[0] + "/"
    out = set()
    for page in seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out |= {o["Key"].rsplit("/", 1)[-1][: -len(walnames.SUFFIX)] for o in page.get("Contents", [])}
    return out


def test_segment_deleted_from_the_middle_of_the_chain_is_named_by_verify_and_list(make_pitr, seaweed):
    c = make_pitr()
    c.pg.psql("CREATE TABLE ops_rows (id int PRIMARY KEY)")
    r = c.cli("backup", "--physical", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    base = r.only
    names = _archive(c, range(4))

    r = c.cli("verify", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    [checked] = r.json["policies"][0]["backups"]  # the base backup's object, decrypted to the end
    assert checked["id"] == base["id"] and checked["ok"] and checked["authenticated"]
    [chain] = r.json["policies"][0]["wal"]
    assert chain["ok"] and chain["backup"] == base["id"] and chain["newest"] == names[-1]
    r = c.cli("list", "-p", str(c.policy), "--json")
    [window] = r.json["windows"]
    assert window["earliest"] == base["physical"]["end_time"]
    assert window["latest"] == window["newest_segment_end"] and window["gaps"] == []
    assert {b["kind"] for b in r.json["backups"]} == {"physical"}

    victim = names[1]
    bucket, key = _bucket_key(c, base["physical"]["sysid"], victim)
    seaweed.client().delete_object(Bucket=bucket, Key=key)

    r = c.cli("verify", "-p", str(c.policy))
    _one_line(r, 3, victim, "missing from the WAL archive", f"restores from backup {base['id']} stop before {victim}")
    assert r.err.count("missing from the WAL archive") == 1  # one gap, one line
    r = c.cli("list", "-p", str(c.policy), "--json")
    [window] = r.json["windows"]
    [gap] = window["gaps"]
    assert gap["missing"] == victim and gap["segments"] == 1
    assert gap["restorable_until"] is not None and gap["restorable_until"] < window["newest_segment_end"]
    assert window["latest"] == gap["restorable_until"]  # nothing after the gap can be reached
    r = c.cli("list", "-p", str(c.policy))
    assert r.code == 0 and f"GAP: {victim} missing" in r.out and "physical" in r.out


def test_prune_with_two_timelines_keeps_what_the_kept_base_backup_needs(make_pitr, seaweed, restore_root):
    c = make_pitr(extra_toml="[retention]\nkeep_last = 1\n")
    c.pg.psql("CREATE TABLE ops_rows (id int PRIMARY KEY)")
    for _ in range(2):  # two dumps: retention keeps one of them, whatever the base backups do
        assert c.cli("backup", "-p", str(c.policy)).code == 0
    r = c.cli("backup", "--physical", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    b1 = r.only
    tl1 = _archive(c, range(1, 4))
    c.stop()

    # a restore to latest promotes timeline 2, which archives into the same archive
    r = _restore(c, restore_root / "tl2", "--to-latest")
    assert r.code == 0, r.err
    tl2 = Restored(c.pg, restore_root / "tl2", r.json["start_command"])
    assert tl2.start().returncode == 0, tl2.log()
    try:
        tl2.wait_promoted()
        c.pg = tl2.pg  # the fixture's helpers now talk to the new primary
        r = c.cli("backup", "--physical", "-p", str(c.policy), "--json")
        assert r.code == 0, r.err
        b2 = r.only
        assert b2["physical"]["timeline"] == 2
        tl2_names = _archive(c, range(10, 13))
    finally:
        tl2.stop()
    before = _stored_wal(seaweed, c, b1["physical"]["sysid"])
    assert "00000002.history" in before and set(tl1) <= before

    r = c.cli("prune", "--dry-run", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    result = r.json["policies"][0]
    actions = {(b["kind"], b["action"]) for b in result["backups"]}
    assert actions == {("logical", "keep"), ("logical", "delete"), ("physical", "keep"), ("physical", "delete")}
    assert [b["id"] for b in result["backups"] if b["kind"] == "physical" and b["action"] == "keep"] == [b2["id"]]
    [wal] = result["wal"]
    b2_start = walnames.segment_of(walnames.parse_lsn(b2["physical"]["start_lsn"]), 2)
    doomed = set(wal["delete"])
    assert set(tl1) <= doomed  # b2 cannot read timeline 1
    assert "00000002.history" not in doomed and not any(n.startswith("00000002") and
                                                        walnames.parse_segment(n[:24]).number >= b2_start.number
                                                        for n in doomed)  # fmt: skip
    assert _stored_wal(seaweed, c, b1["physical"]["sysid"]) == before  # a dry run deletes nothing
    # a host without the identity cannot read the history files: it deletes no more than this
    blind = c.base / "blind.toml"
    blind.write_text("\n".join(x for x in c.policy.read_text().splitlines() if not x.startswith("identity_file")))
    r = c.cli("prune", "--dry-run", "-p", str(blind), "--json")
    assert r.code == 0, r.err
    [blind_wal] = r.json["policies"][0]["wal"]
    assert not blind_wal["timelines_followed"] and wal["timelines_followed"]
    assert set(blind_wal["delete"]) <= doomed and "00000002.history" not in blind_wal["delete"]

    r = c.cli("prune", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    after = _stored_wal(seaweed, c, b1["physical"]["sysid"])
    assert after == before - doomed and set(tl2_names) <= after
    r = c.cli("verify", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    assert [(w["backup"], w["ok"]) for w in r.json["policies"][0]["wal"]] == [(b2["id"], True)]

    # and the kept base backup still restores to latest from what is left
    r = _restore(c, restore_root / "after-prune", "--to-latest")
    assert r.code == 0, r.err
    restored = Restored(c.pg, restore_root / "after-prune", r.json["start_command"])
    assert restored.start().returncode == 0, restored.log()
    try:
        restored.wait_promoted()
        ids = restored.pg.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM ops_rows")
        assert ids == "1,2,3,10,11,12"
    finally:
        restored.stop()


def _runbook_restore_command(store: Path, sysid: str, policy: str, key: Path) -> str:
    """The restore_command of docs/storage-format.md, as written there, with this test's paths."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "storage-format.md").read_text()
    [line] = [x for x in doc.splitlines() if x.startswith("restore_command = '")]
    command = line[len("restore_command = '") : -1]
    command = command.replace("/var/backups/drtool/orders/wal/7312345678901234567/", f"{store}/{policy}/wal/{sysid}/")
    return command.replace("/etc/drtool/orders.key", str(key))


def _as_postgres_sh(script: str) -> subprocess.CompletedProcess:
    argv = ["sh", "-c", script]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def _mirror(seaweed, c, into: Path) -> None:
    """The policy's objects as a folder store holds them (same keys), readable by postgres."""
    bucket, _, prefix = c.store_url[len("s3://") :].partition("/")
    client = seaweed.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/{c.policy_name}/"):
        for o in page.get("Contents", []):
            path = into / o["Key"][len(prefix) + 1 :]
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, o["Key"], str(path))
    for p in [into, *into.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def test_point_in_time_restore_with_stock_tools_and_the_runbook_restore_command(
    make_pitr, seaweed, restore_root, age_bin
):
    need(shutil.which("zstd") is not None, "the stock zstd tool")
    c = make_pitr()
    c.pg.psql("CREATE TABLE ops_rows (id int PRIMARY KEY)")
    c.pg.psql("INSERT INTO ops_rows SELECT generate_series(1, 3)")
    r = c.cli("backup", "--physical", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    base = r.only
    _archive(c, range(4, 7))
    c.stop()
    store = restore_root / "store"
    _mirror(seaweed, c, store)
    if os.geteuid() == 0:  # restore_command runs as the server's user
        os.chown(c.key, pwd.getpwnam("postgres").pw_uid, -1)
    command = _runbook_restore_command(store, base["physical"]["sysid"], c.policy_name, c.key)

    # the command's answers, as PostgreSQL reads them: 1 for a file that is not archived, 200 for
    # one that is there but does not decrypt
    probe = restore_root / "probe"
    probe.mkdir()
    probe.chmod(0o777)  # the server's user writes there
    r = _as_postgres_sh(command.replace("%f", "00000009.history").replace("%p", f"{probe}/x"))
    assert r.returncode == 1, r.stderr
    seg = next((store / c.policy_name / "wal" / base["physical"]["sysid"]).glob("0*/*.zst.age"))
    r = _as_postgres_sh(command.replace("%f", seg.name[:24]).replace("%p", f"{probe}/ok"))
    assert r.returncode == 0 and (probe / "ok").stat().st_size == 16 * 1024 * 1024, r.stderr
    seg.write_bytes(seg.read_bytes()[:-20])  # truncated: age fails on it
    r = _as_postgres_sh(command.replace("%f", seg.name[:24]).replace("%p", f"{probe}/y"))
    assert r.returncode == 200, (r.returncode, r.stderr)
    _mirror(seaweed, c, store)  # back to the archived bytes

    # the runbook, step by step, with no drtool anywhere
    data = restore_root / "stock"
    data.mkdir(mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    b = store / c.policy_name / "backups" / f"{base['id']}.base.tar.zst.age"
    bindir = pg_bindir()
    r = _as_postgres_sh(f"cd {data} && {age_bin} -d -i {c.key} {b} | zstd -d | tar -x && "
                        f"{bindir}/pg_verifybackup -n . && touch recovery.signal")  # fmt: skip
    assert r.returncode == 0, r.stderr
    with open(data / "postgresql.auto.conf", "a") as f:
        f.write(f"restore_command = '{command}'\nrecovery_target_action = 'promote'\narchive_mode = off\n")
    start = f"{bindir}/pg_ctl -D {data} -l {data}/restore.log start"
    restored = Restored(c.pg, data, f"runuser -u postgres -- {start}" if os.geteuid() == 0 else start)
    assert restored.start().returncode == 0, restored.log()
    try:
        restored.wait_promoted()
        assert restored.pg.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM ops_rows") == "1,2,3,4,5,6"
    finally:
        restored.stop()
