"""prune against real stores: retention with reasons, safety floors, failed-backup cleanup, locks."""

from __future__ import annotations

import json
import socket

import pytest
from helpers import make_setup

from drtool.errors import NotFound

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(pg, tmp_path, store_toml):
    return make_setup(pg, tmp_path, store_toml, extra_toml="[retention]\nkeep_last = 2\n")


def store_of(setup):
    from drtool.policy import load_policy
    from drtool.storage import open_store

    return open_store(load_policy(setup.policy).storage)


def ids(setup) -> list[str]:
    return [b["id"] for b in setup.cli("list", "-p", str(setup.policy), "--json").json["backups"]]


def test_prune_keeps_what_rules_say_and_deletes_the_rest(setup):
    made = [setup.cli("backup", "-p", str(setup.policy), "--json").only["id"] for _ in range(4)]
    dry = setup.cli("prune", "-p", str(setup.policy), "--dry-run", "--json")
    assert dry.code == 0, dry.err
    actions = {b["id"]: (b["action"], b["reasons"]) for b in dry.only["backups"]}
    assert actions[made[3]] == ("keep", ["last 1/2", "newest complete backup"])
    assert actions[made[2]] == ("keep", ["last 2/2"])
    assert actions[made[0]] == ("delete", ["matches no retention rule"])
    assert len(ids(setup)) == 4  # dry run changed nothing
    r = setup.cli("prune", "-p", str(setup.policy))
    assert r.code == 0, r.err
    assert "DELETE" in r.out and "last 1/2" in r.out
    assert ids(setup) == [made[3], made[2]]
    store = store_of(setup)
    assert not [o for o in store.list_objects("") if made[0] in o.key]  # data gone too, not just manifests


def test_newest_passed_drill_survives_keep_last_1(pg, tmp_path, scratch_root):
    setup = make_setup(
        pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml="[retention]\nkeep_last = 1\n"
    )
    setup.env["TMPDIR"] = str(scratch_root)
    drilled = setup.cli("backup", "-p", str(setup.policy), "--json").only["id"]
    assert setup.cli("drill", "-p", str(setup.policy)).code == 0
    newer = [setup.cli("backup", "-p", str(setup.policy), "--json").only["id"] for _ in range(2)]
    r = setup.cli("prune", "-p", str(setup.policy), "--json")
    kept = {b["id"]: b["reasons"] for b in r.only["backups"] if b["action"] == "keep"}
    assert kept == {newer[1]: ["last 1/1", "newest complete backup"], drilled: ["newest backup that passed a drill"]}


def test_failed_backups_are_cleaned_after_the_grace_period_only(setup):
    good = setup.cli("backup", "-p", str(setup.policy), "--json").only
    store = store_of(setup)
    name = good["policy"]
    old, recent = "20200101T000000Z-aaaaaa", good["id"][:16] + "-bbbbbb"
    for bid in (old, recent):  # what a crash leaves: data without a manifest
        store.put(f"{name}/backups/{bid}.dump.zst.age", [b"partial"])
    r = setup.cli("prune", "-p", str(setup.policy), "--json")
    inc = {x["id"]: x["action"] for x in r.only["incomplete"]}
    assert inc == {old: "delete", recent: "keep"}
    with pytest.raises(NotFound):
        store.stat(f"{name}/backups/{old}.dump.zst.age")
    assert store.stat(f"{name}/backups/{recent}.dump.zst.age").size == 7
    assert ids(setup) == [good["id"]]


def test_empty_rules_delete_nothing(setup):
    setup.policy.write_text(setup.policy.read_text().replace("keep_last = 2", ""))
    for _ in range(3):
        setup.cli("backup", "-p", str(setup.policy))
    r = setup.cli("prune", "-p", str(setup.policy), "--json")
    assert r.only["deleted"] == 0 and len(ids(setup)) == 3


def test_prune_waits_for_or_reports_a_live_lock_holder(setup):
    setup.cli("backup", "-p", str(setup.policy))
    store = store_of(setup)
    name = json.loads(setup.cli("list", "-p", str(setup.policy), "--json").out)["backups"][0]["policy"]
    holder = {"host": "other-host", "pid": 4242, "job": "backup", "since": "2026-01-01T00:00:00Z",
              "expires": "2999-01-01T00:00:00Z", "token": "x"}  # fmt: skip
    store.put(f"{name}/locks/policy.lock", [json.dumps(holder).encode()])
    r = setup.cli("prune", "-p", str(setup.policy))
    assert r.code == 1 and "is locked: held by other-host pid 4242 for backup" in r.err
    # a dead holder on this host: taken over at once
    holder.update(host=socket.gethostname(), pid=2**22 + 17)
    store.put(f"{name}/locks/policy.lock", [json.dumps(holder).encode()])
    r = setup.cli("prune", "-p", str(setup.policy))
    assert r.code == 0 and "took over a stale lock" in r.err
    with pytest.raises(NotFound):
        store.stat(f"{name}/locks/policy.lock")  # released afterwards
