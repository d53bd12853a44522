"""Backups that are not what they seem: phantom manifests (lost replies, objects deleted behind
drtool's back), backups a check proved damaged, manifests in the wrong folder, malformed manifests.
What is listed must be restorable or say why not; retention never keeps a bad backup in place of
a good one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import backup_key, make_setup

from drtool.errors import NotFound

pytestmark = pytest.mark.integration


def clean(r, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.err and "Traceback" not in r.out
    for n in needles:
        assert n in r.err, (n, r.err)


def store_of(setup):
    from drtool.policy import load_policy
    from drtool.storage import open_store

    return open_store(load_policy(setup.policy).storage)


def backup(setup) -> dict:
    r = setup.cli("backup", "-p", str(setup.policy), "--json")
    assert r.code == 0, r.err
    return r.only


def listing(setup) -> list[dict]:
    r = setup.cli("list", "-p", str(setup.policy), "--json")
    clean(r, 0)
    return r.json["backups"]


def prune(setup) -> dict:
    r = setup.cli("prune", "-p", str(setup.policy), "--json")
    clean(r, 0)
    return {b["id"]: (b["action"], b["reasons"]) for b in r.only["backups"]}


def restored_id(setup, *extra: str) -> str:
    r = setup.restore(setup.target_db(), "--json", *extra)
    assert r.code == 0, r.err
    return r.json["backup"]


def obj(setup, m: dict, name: str) -> Path:
    return setup.policy.parent / "store" / backup_key(m["policy"], m["id"], name)


@pytest.fixture
def local(pg, tmp_path):
    return make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"',
                      extra_toml="[retention]\nkeep_last = 1\n")  # fmt: skip


# -- 1. phantom manifests ----------------------------------------------------------------------------


def test_backup_whose_manifest_reply_is_lost_commits_and_stays_restorable(pg, tmp_path, proxied_s3_toml, fault_proxy):
    setup = make_setup(pg, tmp_path, proxied_s3_toml, extra_toml="[retention]\nkeep_last = 1\n")
    older = backup(setup)
    fault_proxy.add("PUT", r"manifest\.json$", "lose_reply")  # the store keeps it; every reply is lost
    r = setup.cli("backup", "-p", str(setup.policy))
    clean(r, 0, "reply", "lost", "committed")
    fault_proxy.clear()
    rows = listing(setup)
    assert [b["status"] for b in rows] == ["ok", "ok"]
    newest = rows[0]["id"]
    assert restored_id(setup) == newest
    assert prune(setup) == {newest: ("keep", ["last 1/1", "newest complete backup"]),
                            older["id"]: ("delete", ["matches no retention rule"])}  # fmt: skip
    assert restored_id(setup) == newest


def test_manifest_that_cannot_be_read_back_leaves_the_dump_in_place(pg, tmp_path, proxied_s3_toml, fault_proxy):
    setup = make_setup(pg, tmp_path, proxied_s3_toml)
    fault_proxy.add("PUT", r"manifest\.json$", "lose_reply")
    fault_proxy.add("GET", r"manifest\.json$", "error", status=503)
    r = setup.cli("backup", "-p", str(setup.policy))
    clean(r, 1, "manifest.json", "reading it back failed too", "left in place")
    fault_proxy.clear()
    rows = listing(setup)  # the manifest did land: the backup is there, with its data
    assert [b["status"] for b in rows] == ["ok"]
    assert restored_id(setup) == rows[0]["id"]


def test_backup_whose_dump_was_deleted_is_damaged_never_latest_and_never_kept_for_retention(local):
    good = backup(local)
    phantom = backup(local)
    (obj(local, phantom, "dump.zst.age")).unlink()  # behind drtool's back
    rows = {b["id"]: b for b in listing(local)}
    assert rows[phantom["id"]]["status"] == "damaged"
    assert "missing object" in rows[phantom["id"]]["damage"] and "dump.zst.age" in rows[phantom["id"]]["damage"]
    assert rows[good["id"]]["status"] == "ok"
    assert restored_id(local) == good["id"]
    clean(local.restore(local.target_db(), "--backup", phantom["id"]), 3, phantom["id"], "dump.zst.age", "missing")
    decisions = prune(local)
    assert decisions[good["id"]] == ("keep", ["last 1/1", "newest backup not known to be damaged"])
    assert decisions[phantom["id"]][0] == "keep" and "kept as evidence" in decisions[phantom["id"]][1][0]
    newer = backup(local)  # once a newer good backup exists, the phantom is older than it: deleted
    decisions = prune(local)
    assert decisions[newer["id"]][0] == "keep"
    assert decisions[phantom["id"]][0] == "delete" and "known damaged" in decisions[phantom["id"]][1][0]
    assert decisions[good["id"]] == ("delete", ["matches no retention rule"])


# -- 2. damage found by verify and drill ------------------------------------------------------------


def flip(setup, m: dict) -> None:
    path = obj(setup, m, "dump.zst.age")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_backup_verify_found_damaged_never_displaces_the_last_good_one(local):
    good = backup(local)
    bad = backup(local)
    flip(local, bad)
    clean(local.cli("verify", "-p", str(local.policy)), 3, bad["id"], "dump.zst.age")
    checks = list((local.policy.parent / "store" / bad["policy"] / "checks" / bad["id"]).glob("*.json"))
    assert len(checks) == 1
    rec = json.loads(checks[0].read_text())
    assert (rec["format"], rec["kind"], rec["result"]) == ("drtool-check-record", "deep-verify", "damaged")
    assert bad["id"] in rec["reason"]
    rows = {b["id"]: b for b in listing(local)}
    assert rows[bad["id"]]["status"] == "damaged" and "deep-verify" in rows[bad["id"]]["damage"]
    decisions = prune(local)
    assert decisions[good["id"]] == ("keep", ["last 1/1", "newest backup not known to be damaged"])
    assert decisions[bad["id"]][0] == "keep" and "kept as evidence" in decisions[bad["id"]][1][0]
    assert (obj(local, good, "dump.zst.age")).exists()
    r = local.restore(local.target_db(), "--json")
    assert r.code == 0 and r.json["backup"] == good["id"]
    assert f"skipping backup {bad['id']}" in r.err


def test_a_damaged_backup_newer_than_the_one_restored_is_named_even_when_its_id_sorts_lower(local):
    """Two backups in one second have ids ordered by their random suffix, not by time: the skipped
    damaged one is found by the listing's order (recovery point), not by comparing ids (a full run
    once restored the good one without naming the damaged newer one)."""
    import dataclasses
    import datetime as dt

    from drtool import catalog

    good = backup(local)
    store = store_of(local)
    src = catalog.read_manifest(store, good["policy"], good["id"]).record
    newer = dataclasses.replace(src, id=good["id"].rsplit("-", 1)[0] + "-000000",
                                recovery_point=src.recovery_point + dt.timedelta(microseconds=1))  # fmt: skip
    assert newer.id < good["id"]
    dump = (obj(local, good, "dump.zst.age")).read_bytes()
    store.put(catalog.dump_key(good["policy"], newer.id), [dump], size_hint=len(dump))
    catalog.write_manifest(store, newer)
    told = []
    chosen = catalog.find_backup(store, good["policy"], None, {newer.id: "a check found it damaged"},
                                 skipped=lambda bid, why: told.append((bid, why)))  # fmt: skip
    assert chosen.id == good["id"]
    assert told == [(newer.id, "a check found it damaged")]


def test_a_good_verify_records_ok_and_a_store_failure_records_nothing(local):
    m = backup(local)
    assert local.cli("verify", "-p", str(local.policy)).code == 0
    checks = local.policy.parent / "store" / m["policy"] / "checks" / m["id"]
    assert [json.loads(p.read_text())["result"] for p in checks.glob("*.json")] == ["ok"]
    assert listing(local)[0]["status"] == "ok"


def test_drill_that_finds_the_backup_damaged_records_it_and_prune_keeps_the_good_one(pg, tmp_path, scratch_root):
    setup = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"',
                       extra_toml="[retention]\nkeep_last = 1\n")  # fmt: skip
    setup.env["TMPDIR"] = str(scratch_root)
    good = backup(setup)
    bad = backup(setup)
    flip(setup, bad)
    r = setup.cli("drill", "-p", str(setup.policy), "--backup", bad["id"], "--json")
    assert r.code == 3 and "Traceback" not in r.err
    assert r.only["passed"] is False
    rows = {b["id"]: b for b in listing(setup)}
    assert rows[bad["id"]]["status"] == "damaged" and "drill" in rows[bad["id"]]["damage"]
    decisions = prune(setup)
    assert decisions[good["id"]][0] == "keep" and decisions[bad["id"]][0] == "keep"
    assert "newest backup not known to be damaged" in decisions[good["id"]][1]


# -- 3. a manifest in the wrong folder ---------------------------------------------------------------


def test_manifest_copied_into_another_folder_is_invalid_there_and_protects_the_real_one(local):
    a, b, c = backup(local), backup(local), backup(local)
    (obj(local, b, "manifest.json")).write_bytes((obj(local, a, "manifest.json")).read_bytes())
    r = local.cli("list", "-p", str(local.policy), "--json")
    clean(r, 0, f"{b['id']}.manifest.json", f"of backup '{a['id']}'")
    rows = [(x["id"], x["status"]) for x in r.json["backups"]]
    assert rows == [(c["id"], "ok"), (a["id"], "ok"), (b["id"], "unreadable")]  # A once, not twice
    clean(local.restore(local.target_db(), "--backup", b["id"]), 3, f"{b['id']}.manifest.json", a["id"])
    clean(local.cli("verify", "-p", str(local.policy), "--backup", b["id"]), 3, f"{b['id']}.manifest.json")
    decisions = prune(local)
    assert decisions[c["id"]][0] == "keep"
    assert decisions[a["id"]][0] == "keep" and "unreadable manifest" in decisions[a["id"]][1][-1]
    for m in (a, b, c):  # nothing the bad manifest sits in or names was deleted
        assert (obj(local, m, "dump.zst.age")).exists()


# -- 7. malformed manifests ---------------------------------------------------------------------------


def _drop(field):
    return lambda m: {k: v for k, v in m.items() if k != field}


MALFORMED = {
    "version_string": lambda m: {**m, "version": "1"},
    "no_recovery_point": _drop("recovery_point"),
    "no_objects": _drop("objects"),
    "empty_objects": lambda m: {**m, "objects": []},
    "bad_time": lambda m: {**m, "completed_at": "yesterday-ish"},
    "negative_size": lambda m: {**m, "sizes": {**m["sizes"], "stored_bytes": -1}},
    "not_a_dict": lambda m: [m],
}


@pytest.mark.parametrize("shape", sorted(MALFORMED))
def test_malformed_manifest_is_named_and_the_others_work(local, shape):
    good = backup(local)
    bad = backup(local)
    path = obj(local, bad, "manifest.json")
    path.write_text(json.dumps(MALFORMED[shape](json.loads(path.read_text()))))
    named = f"{bad['id']}.manifest.json"
    p = str(local.policy)
    r = local.cli("list", "-p", p, "--json")
    clean(r, 0, named)
    assert [(x["id"], x["status"]) for x in r.json["backups"]] == [(good["id"], "ok"), (bad["id"], "unreadable")]
    st = local.cli("status", "-p", p, "--json")
    assert "Traceback" not in st.err and st.code in (0, 3), st.err
    assert [x["backups"] for x in st.json["policies"].values()] == [1]
    clean(local.cli("verify", "-p", p, "--backup", bad["id"]), 3, named)
    v = local.cli("verify", "-p", p, "--all", "--json")
    clean(v, 3, named)
    results = {x["id"]: x["ok"] for x in v.json["policies"][0]["backups"]}
    assert results == {good["id"]: True, bad["id"]: False}
    clean(local.restore(local.target_db(), "--backup", bad["id"]), 3, named)
    assert restored_id(local) == good["id"]
    d = local.cli("drill", "-p", p, "--backup", bad["id"])  # a recorded failed drill: its reason is the result
    assert d.code == 3 and "Traceback" not in d.err + d.out and named in d.out, (d.code, d.out, d.err)
    pr = local.cli("prune", "-p", p, "--json")
    clean(pr, 0, named)
    assert [u["id"] for u in pr.only["unreadable"]] == [bad["id"]]
    assert path.exists() and (obj(local, bad, "dump.zst.age")).exists()


@pytest.mark.parametrize("status", [404, 403])
def test_manifest_unreadable_between_list_and_get_is_named_and_the_others_work(
    pg, tmp_path, proxied_s3_toml, fault_proxy, status
):
    setup = make_setup(pg, tmp_path, proxied_s3_toml, extra_toml="[retention]\nkeep_last = 1\n")
    good, bad = backup(setup), backup(setup)
    store_of(setup).delete(f"{bad['policy']}/index.json")  # the manifests' path: the index reads none
    fault_proxy.add("GET", rf"{bad['id']}\.manifest\.json$", "error", status=status)
    named = f"{bad['id']}.manifest.json"
    r = setup.cli("list", "-p", str(setup.policy), "--json")
    clean(r, 0, named)
    assert [(x["id"], x["status"]) for x in r.json["backups"]] == [(good["id"], "ok"), (bad["id"], "unreadable")]
    assert restored_id(setup) == good["id"]
    pr = setup.cli("prune", "-p", str(setup.policy), "--json")
    clean(pr, 0, named)
    fault_proxy.clear()
    left = {o.key for o in store_of(setup).list_objects(f"{bad['policy']}/backups/")}
    for m in (good, bad):  # nothing deleted
        assert backup_key(m["policy"], m["id"]) in left


# -- 15b. verify --all reports every backup ---------------------------------------------------------------


def test_verify_all_reports_every_backup_when_one_read_is_refused(pg, tmp_path, proxied_s3_toml, fault_proxy):
    setup = make_setup(pg, tmp_path, proxied_s3_toml)
    first, second, third = backup(setup), backup(setup), backup(setup)
    fault_proxy.add("GET", rf"{second['id']}\.dump\.zst\.age$", "error", status=403)
    r = setup.cli("verify", "-p", str(setup.policy), "--all", "--json")
    clean(r, 3, second["id"])
    results = {x["id"]: x["ok"] for x in r.json["policies"][0]["backups"]}
    assert results == {first["id"]: True, second["id"]: False, third["id"]: True}
    fault_proxy.clear()
    rows = {b["id"]: b["status"] for b in listing(setup)}
    assert rows[second["id"]] == "ok"  # a refused read says nothing about the backup itself
    with pytest.raises(NotFound):
        store_of(setup).stat(f"{second['policy']}/checks/{second['id']}/none")
