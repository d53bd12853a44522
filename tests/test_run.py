"""drtool run and drtool schedule: due jobs once per slot, locks across processes, missed slots,
one policy failing not stopping others, and units that systemd accepts."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from gated_dump import GatedDump
from helpers import make_setup, run_cli

pytestmark = pytest.mark.integration

DAILY_AT_MIDNIGHT = '[schedule]\nbackup = "0 0 * * *"\nprune = "5 0 * * *"\n[retention]\nkeep_last = 5\n'


@pytest.fixture
def local(pg, tmp_path):
    return make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=DAILY_AT_MIDNIGHT)


def backups(setup) -> list[str]:
    return [b["id"] for b in setup.cli("list", "-p", str(setup.policy), "--json").json["backups"]]


def env_of(setup) -> dict[str, str]:
    env = {**os.environ, **{k: v for k, v in setup.env.items() if v is not None}}
    return {k: v for k, v in env.items() if k not in ("PGPASSWORD", "PGPASSFILE", "DRTOOL_POLICY")}


def test_run_does_each_due_job_once_per_slot(local):
    first = local.cli("run", str(local.policy), "--json")
    assert first.code == 0, first.err
    jobs = first.json["policies"][0]["jobs"]
    assert jobs["backup"]["outcome"] == "ok" and jobs["prune"]["outcome"] == "ok"
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT00:00:00")
    assert jobs["backup"]["slot"].startswith(today)
    assert len(backups(local)) == 1
    again = local.cli("run", str(local.policy), "--json")
    assert again.json["policies"][0]["jobs"] == {"backup": {"due": False}, "prune": {"due": False}}
    assert len(backups(local)) == 1


def test_dry_run_says_what_is_due_and_the_next_three_times(local):
    r = local.cli("run", str(local.policy), "--dry-run")
    assert r.code == 0
    line = [ln for ln in r.out.splitlines() if " backup " in ln][0]
    assert "due (slot" in line and line.count("T00:00:00Z") == 4  # the slot and the next three
    assert backups(local) == []


def test_two_runs_at_once_make_exactly_one_backup(local):
    procs = [subprocess.Popen([sys.executable, "-m", "drtool", "run", str(local.policy)], env=env_of(local),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(backups(local)) == 1
    text = " ".join(o for pair in outs for o in pair)
    assert "skipped: another job holds the lock" in text or text.count("backup  ok") == 1


def test_killed_holder_goes_stale_and_the_next_run_proceeds(local):
    local.pg.psql("CREATE TABLE bulk AS SELECT g, md5(random()::text) AS t FROM generate_series(1, 1500000) g",
                  db=local.db)  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "drtool", "run", str(local.policy)], env=env_of(local),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    lock = local.policy.parent / "store" / local.db.replace("_", "-") / "locks" / "policy.lock"
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None and lock.exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    r = local.cli("run", str(local.policy), "--json")
    assert r.code == 0, r.err
    assert "took over a stale lock" in r.err
    assert r.json["policies"][0]["jobs"]["backup"]["outcome"] == "ok"  # the slot was still due
    assert len(backups(local)) == 1


def test_prune_while_a_backup_uploads_waits_its_turn(pg, tmp_path):
    # the backup is held mid-dump by a gate the test opens, not by racing it with a big table
    gate = GatedDump(tmp_path / "gated-bin", 0)
    local = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"',
                       extra_toml=DAILY_AT_MIDNIGHT + gate.toml)  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "drtool", "backup", "-p", str(local.policy)], env=env_of(local),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    waiting = None
    try:
        gate.wait_reached(proc)  # holds the lock, has not written its manifest
        r = local.cli("prune", "-p", str(local.policy))
        assert r.code == 1 and "is locked: held by" in r.err and "for backup" in r.err
        waiting = subprocess.Popen([sys.executable, "-m", "drtool", "--lock-wait", "300", "prune", "-p",
                                    str(local.policy), "--json"], env=env_of(local), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        said = iter(waiting.stderr.readline, "")  # its warnings, up to the one that says it waits
        assert any("is locked" in line and "waiting" in line for line in said)
    finally:
        gate.release()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    w_out, w_err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, w_err
    # prune ran after the backup released the lock: it saw the finished backup and kept it
    assert [(b["id"], b["action"]) for b in json.loads(w_out)["policies"][0]["backups"]] == [(out.strip(), "keep")]
    assert backups(local) == [out.strip()]


def test_one_policy_failing_does_not_stop_the_others(pg, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good = make_setup(pg, tmp_path / "a", f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=DAILY_AT_MIDNIGHT)
    bad = make_setup(pg, tmp_path / "b", f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=DAILY_AT_MIDNIGHT)
    bad.policy.write_text(bad.policy.read_text().replace(f":{pg.port}/", ":1/"))
    folder = tmp_path / "fleet"
    folder.mkdir()
    shutil.copy(bad.policy, folder / "a-bad.toml")
    shutil.copy(good.policy, folder / "b-good.toml")
    r = run_cli("run", str(folder), env=good.env)
    assert r.code == 1
    assert "cannot connect" in r.err
    assert len(backups(good)) == 1


def test_missed_slots_are_recorded_in_the_store(local):
    from drtool.app import App
    from drtool.ledger import read_schedule_state
    from drtool.policy import load_policy

    os.environ["TEST_PGPASSWORD"] = local.pg.PASSWORD
    try:
        policy = load_policy(local.policy)
        app = App()
        day = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
        app.run(policy, now=lambda: day - dt.timedelta(days=3))
        r = app.run(policy, now=lambda: day)  # the host was down for three days
        assert r["jobs"]["backup"]["missed"] == 2 and r["jobs"]["backup"]["outcome"] == "ok"
        state = read_schedule_state(app.store(policy), policy.name)
        assert state.jobs["backup"]["missed_total"] == 2
        assert state.jobs["backup"]["last_outcome"] == "ok"
    finally:
        os.environ.pop("TEST_PGPASSWORD", None)


@pytest.mark.parametrize("fmt", ["systemd", "cron"])
def test_schedule_prints_units_that_run_drtool(local, tmp_path, fmt):
    out_dir = tmp_path / "units"
    r = local.cli("schedule", "-p", str(local.policy), "--format", fmt, "--install", str(out_dir))
    assert r.code == 0, r.err
    if fmt == "cron":
        line = (out_dir / "drtool.cron").read_text().splitlines()[-1]
        assert line.startswith("*/15 * * * * ") and f"run {local.policy}" in line
        return
    service, timer = (out_dir / "drtool.service").read_text(), (out_dir / "drtool.timer").read_text()
    assert "OnCalendar=*:0/15" in timer and "Persistent=true" in timer and "RandomizedDelaySec=" in timer
    assert "NoNewPrivileges=yes" in service and "ProtectSystem=strict" in service and "PrivateTmp=yes" in service
    assert f"ReadWritePaths=-{tmp_path}/store" in service
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    v = subprocess.run([analyze, "verify", str(out_dir / "drtool.service"), str(out_dir / "drtool.timer")],
                       capture_output=True, text=True)  # fmt: skip
    assert v.returncode == 0, v.stderr


def test_timer_runs_often_enough_for_the_tightest_schedule():
    from dataclasses import replace
    from pathlib import Path

    from drtool import units
    from drtool.policy import load_policy

    base = load_policy(Path(__file__).resolve().parents[1] / "policies" / "example.toml")
    every_5 = replace(base, schedule=replace(base.schedule, backup="*/5 * * * *"))
    every_7 = replace(base, schedule=replace(base.schedule, backup="*/7 * * * *"))
    assert units.run_interval_minutes([base]) == 15  # 6-hourly backups: at most 15 minutes late
    assert units.run_interval_minutes([base, every_5]) == 5
    assert units.run_interval_minutes([every_7]) == 4  # */7 fires at :56 and then :00, 4 minutes apart


def test_a_malformed_schedule_state_is_one_line_naming_the_object(local, tmp_path):
    assert local.cli("run", str(local.policy)).code == 0
    state = next((tmp_path / "store").rglob("state/schedule.json"))
    state.write_text('{"format": "drtool-schedule-state", "version": 1, "jobs": {"backup": {"last_slot": 5}}}')
    r = local.cli("run", str(local.policy))
    assert r.code == 3 and "Traceback" not in r.err, r.err
    assert "state/schedule.json: unreadable schedule state: 'last_slot' has the wrong type" in r.err
    errors = [ln for ln in r.err.splitlines() if not ln.startswith("drtool: warning:")]
    assert len(errors) == 1 and len(backups(local)) == 1  # nothing ran on a state it cannot read
