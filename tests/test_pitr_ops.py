"""list, verify and prune over the WAL archive (issue 12, point 6), against real PostgreSQL 15
clusters archiving with `drtool wal push` into the real S3 server (tests/pitr_fixtures.py): the
restorable window and the chain's gaps, retention per kind, WAL pruned across two timelines."""

from __future__ import annotations

import pytest
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
