"""Fleet scale: one S3 session and client per process, idle ticks that lock and write nothing,
folder scans that stay inside their policy, `run --jobs`, and `--name` validating one file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from helpers import make_setup

from drtool.crypto import age
from drtool.policy import StorageTarget, load_fleet
from drtool.storage import LocalStore, open_store
from drtool.storage import s3 as s3mod

DAILY_AT_MIDNIGHT = '[schedule]\nbackup = "0 0 * * *"\n[retention]\nkeep_last = 5\n'


def fleet_of(setup, folder: Path, n: int) -> list[str]:
    """n policies in folder, all backing up setup's database into setup's store, each its own name."""
    folder.mkdir(exist_ok=True)
    base = setup.db.replace("_", "-")
    text = setup.policy.read_text()
    names = []
    for i in range(n):
        name = f"{base}-{i}"
        (folder / f"p{i}.toml").write_text(text.replace(f'name = "{base}"', f'name = "{name}"'))
        names.append(name)
    return names


def env_of(setup) -> dict[str, str]:
    env = {**os.environ, **{k: v for k, v in setup.env.items() if v is not None}}
    return {k: v for k, v in env.items() if k not in ("PGPASSWORD", "PGPASSFILE", "DRTOOL_POLICY")}


# -- point 1: shared clients --------------------------------------------------------------------


@pytest.fixture
def fresh_clients(monkeypatch):
    """Empty client caches, and a count of the boto3 sessions created meanwhile."""
    monkeypatch.setattr(s3mod, "_SESSION", None)
    monkeypatch.setattr(s3mod, "_CLIENTS", {})
    made = []
    real = boto3.session.Session

    class Counting(real):
        def __init__(self, *a, **kw):
            made.append(self)
            super().__init__(*a, **kw)

    monkeypatch.setattr(boto3.session, "Session", Counting)
    return made


def target(prefix: str, endpoint: str = "http://127.0.0.1:1") -> StorageTarget:
    return StorageTarget(url=f"s3://fleet-bucket/{prefix}", region="us-east-1", endpoint_url=endpoint)


def test_stores_of_many_policies_share_one_session_and_one_client(fresh_clients):
    stores = [open_store(target(f"policy-{i}")) for i in range(20)]
    assert len(fresh_clients) == 1
    assert len({id(s.client) for s in stores}) == 1
    assert [s.prefix for s in stores[:2]] == ["policy-0", "policy-1"]  # the store is still per policy
    other = open_store(target("policy-x", endpoint="http://127.0.0.1:2"))
    assert other.client is not stores[0].client  # another endpoint: its own client, the same session
    assert len(fresh_clients) == 1


def test_stores_opened_from_many_threads_at_once_share_one_client(fresh_clients):
    clients, start = [], threading.Barrier(8)

    def open_one(i: int) -> None:
        start.wait()
        clients.append(open_store(target(f"p{i}")).client)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(clients) == 8 and len({id(c) for c in clients}) == 1
    assert len(fresh_clients) == 1


@pytest.mark.integration
def test_a_fleet_on_one_bucket_opens_it_with_one_head_bucket(pg, tmp_path, proxied_s3_toml, fault_proxy, bucket):
    s = make_setup(pg, tmp_path, proxied_s3_toml, extra_toml=DAILY_AT_MIDNIGHT)
    folder = tmp_path / "fleet"
    fleet_of(s, folder, 4)
    fault_proxy.requests.clear()
    r = s.cli("status", "-p", str(folder), "--json")
    assert "Traceback" not in r.err
    assert len(r.json["policies"]) == 4
    assert fault_proxy.count("HEAD", rf"^/{bucket}/?$") == 1, fault_proxy.requests


# -- point 4: nothing idle that costs -------------------------------------------------------------


@pytest.mark.integration
def test_idle_run_takes_no_lock_and_writes_nothing(pg, tmp_path, proxied_s3_toml, fault_proxy):
    s = make_setup(pg, tmp_path, proxied_s3_toml, extra_toml=DAILY_AT_MIDNIGHT)
    folder = tmp_path / "fleet"
    names = fleet_of(s, folder, 3)
    first = s.cli("run", str(folder), "--json")
    assert first.code == 0, first.err
    assert [p["jobs"]["backup"]["outcome"] for p in first.json["policies"]] == ["ok"] * 3
    fault_proxy.requests.clear()
    idle = s.cli("run", str(folder), "--json")
    assert idle.code == 0, idle.err
    assert [p["jobs"] for p in idle.json["policies"]] == [{"backup": {"due": False}}] * 3
    writes = [r for r in fault_proxy.requests if r[0] in ("PUT", "POST", "DELETE")]
    assert writes == []
    assert fault_proxy.count("*", r"/locks/policy\.lock") == 0
    per_policy = len(fault_proxy.requests) / len(names)
    print(f"idle tick: {len(fault_proxy.requests)} requests for {len(names)} policies ({per_policy:.2f} each)")
    assert per_policy <= 3, fault_proxy.requests


def test_folder_scan_of_one_policy_never_visits_the_others(tmp_path, monkeypatch):
    root = tmp_path / "store"
    for rel in ["a/backups/1/dump", "a/backups/1/.tmp-up", "a/locks/.tmp-lock", "b/backups/1/dump",
                "b/backups/1/.tmp-other", "c/x/y/z"]:  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    store = LocalStore(root)
    visited: list[str] = []
    real_scandir = os.scandir

    def spy(path="."):
        visited.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", spy)
    assert [x.key for x in store.leftovers("a/backups/")] == ["a/backups/1/.tmp-up"]
    assert [o.key for o in store.list_objects("a/backups/")] == ["a/backups/1/dump"]
    assert visited, "the scan did not go through os.scandir"
    inside = str(root / "a" / "backups")
    assert all(v == inside or v.startswith(inside + os.sep) for v in visited), visited


# -- point 3: run --jobs -------------------------------------------------------------------------


def backup_count(setup, policy_file: Path) -> int:
    return len(setup.cli("list", "-p", str(policy_file), "--json").json["backups"])


@pytest.mark.integration
def test_two_runs_with_jobs_on_one_folder_do_each_slot_once(pg, tmp_path):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=DAILY_AT_MIDNIGHT)
    folder = tmp_path / "fleet"
    names = fleet_of(s, folder, 6)
    argv = [sys.executable, "-m", "drtool", "run", "--jobs", "2", str(folder), "--json"]
    t0 = time.monotonic()
    procs = [subprocess.Popen(argv, env=env_of(s), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    wall = time.monotonic() - t0
    assert [p.returncode for p in procs] == [0, 0], outs
    assert not any("Traceback" in err for _, err in outs)
    docs = [json.loads(out) for out, _ in outs]
    by_process = [[p["policy"] for p in d["policies"] if p["jobs"].get("backup", {}).get("outcome") == "ok"]
                  for d in docs]  # fmt: skip
    for doc in docs:
        assert [p["policy"] for p in doc["policies"]] == names  # every policy reported, in order
    assert sorted(by_process[0] + by_process[1]) == names  # each slot done by exactly one of the two
    assert [backup_count(s, folder / f"p{i}.toml") for i in range(len(names))] == [1] * len(names)
    print(f"two `run --jobs 2` processes, {len(names)} policies: {wall:.1f} s wall, backups made by each: "
          f"{[len(b) for b in by_process]}")  # fmt: skip


@pytest.mark.integration
def test_run_jobs_reports_every_policy_in_order_and_a_failure_does_not_stop_the_others(pg, tmp_path):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=DAILY_AT_MIDNIGHT)
    folder = tmp_path / "fleet"
    names = fleet_of(s, folder, 4)
    broken = folder / "p1.toml"
    broken.write_text(broken.read_text().replace(s.pg.dsn(s.db), s.pg.dsn("no_such_db")))
    r = s.cli("run", "--jobs", "3", str(folder), "--json")
    assert r.code == 1, r.err
    assert "Traceback" not in r.err
    outcomes = [p["jobs"]["backup"]["outcome"] for p in r.json["policies"]]
    assert [p["policy"] for p in r.json["policies"]] == names
    assert outcomes == ["ok", "failed", "ok", "ok"]
    assert re.search(rf"drtool: error: {names[1]} backup: .*no_such_db", r.err), r.err


def test_run_jobs_below_one_is_bad_usage(tmp_path):
    from helpers import run_cli

    (tmp_path / "p.toml").write_text('name = "x"\n')
    r = run_cli("run", "--jobs", "0", str(tmp_path / "p.toml"))
    assert r.code == 2 and "Traceback" not in r.err
    assert "--jobs" in r.err and "0 is not in the range" in r.err


# -- point 4: policy files parsed once, only those asked for ----------------------------------------


def policy_text(name: str) -> str:
    return (f'name = "{name}"\n[database]\ndsn = "host=127.0.0.1 dbname=x"\n[storage]\nurl = "file:///tmp/s"\n'
            f'[encryption]\nrecipients = ["{age.Identity.generate().recipient}"]\n')  # fmt: skip


def test_name_validates_only_the_file_that_declares_it(tmp_path):
    folder = tmp_path / "fleet"
    folder.mkdir()
    (folder / "a.toml").write_text(policy_text("wanted"))
    (folder / "b.toml").write_text(policy_text("other").replace("[storage]", "[retention]\nkeep_lasst = 1\n[storage]"))
    (folder / "c.toml").write_text("not toml [")
    assert {bad.source.name for bad in load_fleet(folder).invalid} == {"b.toml", "c.toml"}
    picked = load_fleet(folder, "wanted")
    assert [p.name for p in picked.policies] == ["wanted"]
    # b.toml declares another name: not validated at all; c.toml cannot say its name, so it is looked at
    assert [bad.source.name for bad in picked.invalid] == ["c.toml"]


def test_name_still_refuses_a_later_file_claiming_the_same_name(tmp_path):
    folder = tmp_path / "fleet"
    folder.mkdir()
    (folder / "a.toml").write_text(policy_text("wanted"))
    (folder / "b.toml").write_text(policy_text("wanted"))
    picked = load_fleet(folder, "wanted")
    assert [p.source.name for p in picked.policies] == ["a.toml"]
    [dup] = picked.invalid
    assert dup.source.name == "b.toml" and "is also used by" in dup.problems[0]


# -- the idle tick reads the states of the fleet at once --------------------------------------------


def idle_fleet(tmp_path: Path, n: int) -> list:
    """n policies on a folder store whose schedule states say the backup of today's slot is done."""
    from drtool import clock, ledger, scheduler
    from drtool.records import ScheduleState

    store, folder = tmp_path / "store", tmp_path / "fleet"
    store.mkdir(mode=0o700)
    folder.mkdir()
    recipient = age.Identity.generate().recipient
    for i in range(n):
        (folder / f"p{i}.toml").write_text(f'name = "p{i}"\n[database]\ndsn = "postgresql://u@127.0.0.1:1/db"\n'
                                           f'[storage]\nurl = "file://{store}"\n[encryption]\n'
                                           f'recipients = ["{recipient}"]\n{DAILY_AT_MIDNIGHT}')  # fmt: skip
    policies = load_fleet(folder).policies
    slot = scheduler.latest_slot("0 0 * * *", "UTC", clock.utcnow())
    done = ScheduleState({"backup": {"last_slot": clock.iso(slot)}})
    for p in policies:
        ledger.write_schedule_state(LocalStore(store), p.name, done)
    return policies


def _overlapping_store(watched_suffix: str):
    """A folder store whose reads of `watched_suffix` each wait (at most 10 s) until a second one is
    under way: the most reads under way at once is recorded."""
    active, most, lock, together = [0], [0], threading.Lock(), threading.Event()

    class Watched(LocalStore):
        def _watch(self, key: str) -> None:
            if key.endswith(watched_suffix):
                with lock:
                    active[0] += 1
                    most[0] = max(most[0], active[0])
                    if active[0] >= 2:
                        together.set()
                together.wait(10)
                with lock:
                    active[0] -= 1

        def get(self, key, *a, **kw):
            self._watch(key)
            return super().get(key, *a, **kw)

        def list_objects(self, prefix, *a, **kw):
            self._watch(prefix)
            return super().list_objects(prefix, *a, **kw)

    return Watched, most


def test_an_idle_tick_reads_the_schedule_states_of_the_fleet_at_once(tmp_path):
    """An idle tick of 1,000 policies is 1,000 state GETs: one after another they were most of its
    wall time on S3 (issue 15). Each read here waits (at most 10 s) until another one is under way."""
    from drtool.app import App, Context

    policies = idle_fleet(tmp_path, 4)
    watched, most = _overlapping_store("/state/schedule.json")
    app = App(Context(open_store=lambda t: watched(Path(t.url.removeprefix("file://")))))
    results = list(app.run_fleet(policies))
    assert [(p.name, r) for p, r in results] == [(p.name, {"policy": p.name, "jobs": {"backup": {"due": False}}})
                                                 for p in policies]  # fmt: skip
    assert most[0] >= 2


def test_a_fleet_tick_runs_the_due_policy_and_names_the_broken_state_in_order(tmp_path):
    """Reading the states at once changes no outcome: an idle policy stays idle, one whose state is
    malformed fails alone with the object named, and one never run is due (its backup runs and fails
    here: no database), in the fleet's order."""
    from drtool.app import App, Context
    from drtool.errors import DrtoolError

    policies = idle_fleet(tmp_path, 3)
    (tmp_path / "store" / "p1" / "state" / "schedule.json").write_text("{not json")
    (tmp_path / "store" / "p2" / "state" / "schedule.json").unlink()
    results = list(App(Context()).run_fleet(policies))
    assert [p.name for p, _ in results] == ["p0", "p1", "p2"]
    assert results[0][1] == {"policy": "p0", "jobs": {"backup": {"due": False}}}
    assert isinstance(results[1][1], DrtoolError) and "p1/state/schedule.json" in str(results[1][1])
    assert results[2][1]["jobs"]["backup"]["due"] is True
    assert results[2][1]["jobs"]["backup"]["outcome"] == "failed"


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_due_policy_starts_while_the_states_of_the_rest_are_still_being_read(tmp_path, jobs):
    """An all-due tick of 1,000 policies spent its first ~3 s reading every state before any backup
    began. Here the read of the last policy's state waits (at most 10 s) for the first policy's run
    to start: it must have started by then."""
    from drtool.app import App, Context

    policies = idle_fleet(tmp_path, 4)
    (tmp_path / "store" / "p0" / "state" / "schedule.json").unlink()  # never run: due
    started, seen = threading.Event(), []

    class Watched(LocalStore):
        def get(self, key, *a, **kw):
            if key == "p3/state/schedule.json" and not seen:
                seen.append(started.wait(10))
            return super().get(key, *a, **kw)

    app = App(Context(open_store=lambda t: Watched(Path(t.url.removeprefix("file://")))))
    run = app.schedule.run

    def run_and_tell(policy, **kw):
        started.set()
        return run(policy, **kw)

    app.schedule.run = run_and_tell
    results = list(app.schedule.run_fleet(policies, jobs=jobs))
    assert [p.name for p, _ in results] == ["p0", "p1", "p2", "p3"]
    assert results[0][1]["jobs"]["backup"]["due"] is True
    assert [r for _, r in results[1:]] == [{"policy": p.name, "jobs": {"backup": {"due": False}}}
                                           for p in policies[1:]]  # fmt: skip
    assert seen == [True]


# -- status: the PostgreSQL binaries are asked their version once per command ------------------------


def fake_tool(folder: Path, name: str, version: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n")
    (folder / name).chmod(0o755)


def test_status_of_a_fleet_asks_pg_restore_its_version_once(tmp_path, monkeypatch):
    """`status` checks per policy that pg_restore can read the newest backup: 1,000 policies ran
    `pg_restore --version` (and pg_config twice) 1,000 times, ~30 ms of wall a process (issue 15)."""
    from drtool import pgtools

    fake_tool(tmp_path / "bin", "pg_restore", "15.3")
    runs = []
    real = subprocess.run
    monkeypatch.setattr(pgtools.subprocess, "run", lambda argv, **kw: runs.append(argv) or real(argv, **kw))
    tools = [pgtools.find_tool("pg_restore", str(tmp_path / "bin")) for _ in range(20)]
    assert {(t.path, t.version) for t in tools} == {(str(tmp_path / "bin" / "pg_restore"), "15.3")}
    assert len(runs) == 1, runs


def test_a_pg_restore_replaced_meanwhile_is_asked_again(tmp_path):
    """`drtool serve` lives across package upgrades: a binary whose file changed is asked anew."""
    from drtool import pgtools

    fake_tool(tmp_path / "bin", "pg_restore", "15.3")
    assert pgtools.find_tool("pg_restore", str(tmp_path / "bin")).version == "15.3"
    (tmp_path / "bin" / "pg_restore").unlink()
    fake_tool(tmp_path / "bin", "pg_restore", "16.10")
    assert pgtools.find_tool("pg_restore", str(tmp_path / "bin")).version == "16.10"


def test_status_of_a_fleet_parses_the_identity_file_once_while_it_is_unchanged(tmp_path, monkeypatch):
    """`status` checks per policy that the identity file opens the newest backup: it read and
    parsed the same file once per policy. A changed file (a new key, a chmod) is read again."""
    from drtool.app import Context
    from drtool.policy import load_policies

    key, warned, mine = tmp_path / "key.txt", [], age.Identity.generate()
    key.write_text(mine.encode() + "\n")
    key.chmod(0o600)
    (tmp_path / "p.toml").write_text(
        f'name = "p"\n[database]\ndsn = "host=x"\n[storage]\nurl = "file://{tmp_path}/s"\n'
        f'[encryption]\nrecipients = ["{mine.recipient}"]\nidentity_file = "{key}"\n'
    )
    policy = load_policies(tmp_path / "p.toml")[0]
    parses = []
    real = age.parse_identity_file
    monkeypatch.setattr(age, "parse_identity_file", lambda text: parses.append(1) or real(text))
    ctx = Context(warn=warned.append)
    first = [i.recipient for i in ctx.identities(policy)]
    assert all([i.recipient for i in ctx.identities(policy)] == first for _ in range(20))
    assert len(parses) == 1
    other = age.Identity.generate()
    key.write_text(other.encode() + "\n")
    assert [i.recipient for i in ctx.identities(policy)] == [other.recipient]
    key.chmod(0o644)
    ctx.identities(policy)
    assert len(parses) == 3 and warned == [f"identity file {key} is readable by other users; chmod 600 it"]


@pytest.mark.integration
def test_threads_opening_one_bucket_at_once_ask_for_it_once(fault_proxy, bucket, monkeypatch):
    """run reads the fleet's states 8 at a time: each reader opening the bucket made its own
    HeadBucket (8 for one bucket)."""
    monkeypatch.setattr(s3mod, "_BUCKETS_SEEN", set())
    start, failed = threading.Barrier(8), []

    def open_one(i: int) -> None:
        start.wait()
        try:
            spec = StorageTarget(url=f"s3://{bucket}/p{i}", region="us-east-1", endpoint_url=fault_proxy.endpoint)
            open_store(spec).check_bucket()
        except Exception as e:  # noqa: BLE001 - shown by the assertion below
            failed.append(e)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed == []
    assert fault_proxy.count("HEAD", rf"^/{bucket}/?$") == 1, fault_proxy.requests


# -- list, status and report read several policies at once -----------------------------------------


@pytest.mark.parametrize("command", ["status", "list", "report", "metrics", "prune --dry-run"])
def test_fleet_reads_work_on_several_policies_at_once_and_answer_in_the_fleets_order(tmp_path, command):
    """status, list, report, the metrics file and prune --dry-run made 4-9 requests per policy one
    policy after another: at 1,000 policies on S3, 21-43 s mostly waiting on the store (issue 15)."""
    import datetime as dt

    from drtool.app import App, Context
    from drtool.app.fleet import fleet_status

    policies = idle_fleet(tmp_path, 5)
    watched, most = _overlapping_store(
        "/backups/" if command in ("list", "prune --dry-run") else "/state/schedule.json"
    )
    app = App(Context(open_store=lambda t: watched(Path(t.url.removeprefix("file://")))))
    end = dt.datetime.now(dt.UTC)
    if command == "status":
        names = list(fleet_status(app.evidence, policies)["policies"])
    elif command == "list":
        names = [p.name for p, (rows, window) in zip(policies, app.list_fleet(policies), strict=True)
                 if rows == [] and window is None]  # fmt: skip
    elif command == "report":
        names = [s["policy"] for s in app.report_sections(policies, start=end - dt.timedelta(days=1), end=end)]
    elif command == "metrics":
        names = [r["policy"] for r in app.metrics_rows(policies)]
    else:
        names = [r["policy"] for r in app.prune_fleet(policies, dry_run=True)]
    assert names == [p.name for p in policies]
    assert most[0] >= 2


def test_policies_sharing_a_database_connect_to_it_once_per_status(tmp_path):
    """status probes each policy's database: a fleet of 1,000 policies on one server made 1,000
    connections (a SCRAM exchange each) to give 1,000 times the same answer."""
    from drtool.app.evidence import DatabaseProbe

    policies = idle_fleet(tmp_path, 6)
    other = type(policies[0])(**{**vars(policies[0]), "dsn": "postgresql://u@127.0.0.1:2/db"})
    asked, lock, gate = [], threading.Lock(), threading.Event()

    def connect(policy) -> str:
        with lock:
            asked.append(policy.dsn)
        gate.wait(10)  # the other threads ask meanwhile: they wait for this answer, not connect again
        return f"unreachable: {policy.dsn}"

    probe = DatabaseProbe(connect)
    threads = [threading.Thread(target=probe, args=(p,)) for p in [*policies, other]]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert sorted(asked) == sorted({policies[0].dsn, other.dsn})
    assert probe(policies[3]) == f"unreachable: {policies[0].dsn}" and probe(other) == f"unreachable: {other.dsn}"


@pytest.mark.integration
def test_status_of_a_fleet_on_one_database_connects_once(pg, tmp_path, store_toml):
    s = make_setup(pg, tmp_path, store_toml, extra_toml=DAILY_AT_MIDNIGHT)
    folder = tmp_path / "fleet"
    fleet_of(s, folder, 4)
    sessions = f"SELECT sessions FROM pg_stat_database WHERE datname = '{s.db}'"
    before = int(pg.psql(sessions, db="postgres").strip())
    r = s.cli("status", "-p", str(folder), "--json")
    assert "Traceback" not in r.err and len(r.json["policies"]) == 4
    assert {p["components"]["database"] for p in r.json["policies"].values()} == {"ok"}
    after = int(pg.psql(sessions, db="postgres").strip())
    assert after - before == 1


@pytest.mark.integration
def test_status_and_list_of_a_policy_without_copy_targets_read_no_copy_state(pg, tmp_path, proxied_s3_toml,
                                                                             fault_proxy):  # fmt: skip
    s = make_setup(pg, tmp_path, proxied_s3_toml, extra_toml=DAILY_AT_MIDNIGHT)
    assert s.cli("backup", "-p", str(s.policy)).code == 0
    fault_proxy.requests.clear()
    assert [p["backups"] for p in s.cli("status", "-p", str(s.policy), "--json").json["policies"].values()] == [1]
    assert len(s.cli("list", "-p", str(s.policy), "--json").json["backups"]) == 1
    assert fault_proxy.count("*", r"/state/copies\.json") == 0, fault_proxy.requests
    assert fault_proxy.count("GET", r"/state/schedule\.json") == 1  # the status read its other state
