"""Unattended operation as the README sets it up: secrets from the env file, jobs split between the
database host (backup, prune: no identity there) and a restore host (drill), and a backup taken by
hand counting for its slot."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from helpers import drill_setup, make_setup

from drtool import units

pytestmark = pytest.mark.integration

SCHEDULE = '[schedule]\nbackup = "0 0 * * *"\nprune = "5 0 * * *"\ndrill = "10 0 * * *"\n[retention]\nkeep_last = 5\n'


def backups(setup) -> list[str]:
    return [b["id"] for b in setup.cli("list", "-p", str(setup.policy), "--json").json["backups"]]


def systemd_verify(*files) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed (Debian package systemd)")
    v = subprocess.run([analyze, "verify", *map(str, files)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr


@pytest.fixture
def split(pg, tmp_path, scratch_root):
    """The restore host's policy (with the identity) and the database host's copy of it, whose
    identity file is not there."""
    restore_host = drill_setup(pg, tmp_path, scratch_root, SCHEDULE)
    text = restore_host.policy.read_text().replace(str(restore_host.key), str(tmp_path / "not-on-this-host.key"))
    db_host = tmp_path / "db-host.toml"
    db_host.write_text(text)
    return restore_host, db_host


def test_service_unit_reads_secrets_from_the_env_file(pg, tmp_path):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=SCHEDULE)
    out = tmp_path / "units"
    r = s.cli("schedule", "-p", str(s.policy), "--format", "systemd", "--install", str(out))
    assert r.code == 0, r.err
    service = (out / "drtool.service").read_text()
    assert f"EnvironmentFile=-{units.ENV_FILE}\n" in service
    systemd_verify(out / "drtool.service", out / "drtool.timer")


def test_cron_line_gives_run_the_secrets_of_the_env_file(pg, tmp_path):
    """The crontab line, run by sh as cron would, with the password only in the env file."""
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=SCHEDULE)
    r = s.cli("schedule", "-p", str(s.policy), "--format", "cron", "--only", "backup")
    assert r.code == 0, r.err
    line = [ln for ln in r.out.splitlines() if ln and not ln.startswith("#")][0]
    env_file = tmp_path / "drtool.env"
    env_file.write_text(f"TEST_PGPASSWORD={pg.PASSWORD}\n")
    env_file.chmod(0o600)
    command = line.split(" ", 5)[5].replace(units.ENV_FILE, str(env_file)).replace(" >> /var/log/drtool.log", "")
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_PGPASSWORD", "PGPASSWORD", "PGPASSFILE")}
    done = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(backups(s)) == 1


def test_database_host_backs_up_and_prunes_without_the_identity_and_restore_host_drills(split):
    restore_host, db_host = split
    r = restore_host.cli("run", "--only", "backup,prune", str(db_host), "--json")
    assert r.code == 0, r.err
    jobs = r.json["policies"][0]["jobs"]
    assert set(jobs) == {"backup", "prune"} and jobs["backup"]["outcome"] == "ok"
    d = restore_host.cli("run", "--only", "drill", str(restore_host.policy), "--json")
    assert d.code == 0, d.err
    assert set(d.json["policies"][0]["jobs"]) == {"drill"}
    assert d.json["policies"][0]["jobs"]["drill"]["outcome"] == "ok"
    assert len(backups(restore_host)) == 1


def test_check_only_backup_prune_passes_on_a_host_without_the_identity(split):
    restore_host, db_host = split
    whole = restore_host.cli("check", "-p", str(db_host))
    assert whole.code == 3 and "not-on-this-host.key" in whole.err
    r = restore_host.cli("check", "-p", str(db_host), "--only", "backup,prune", "--json")
    assert r.code == 0, r.err
    keys = [c for c in r.json["policies"][0]["checks"] if c["check"] == "keys"][0]
    assert "identity not needed for backup, prune" in keys["detail"]
    drill_side = restore_host.cli("check", "-p", str(restore_host.policy), "--only", "drill", "--json")
    assert drill_side.code == 0, drill_side.err
    assert "database" not in {c["check"] for c in drill_side.json["policies"][0]["checks"]}


def test_only_with_an_unknown_job_is_bad_usage(split):
    restore_host, db_host = split
    r = restore_host.cli("run", "--only", "backup,restore", str(db_host))
    assert r.code == 2 and "backup, base, prune, drill" in r.err and "Traceback" not in r.err


def test_schedule_only_makes_distinct_units_per_host(split, tmp_path):
    restore_host, db_host = split
    out = tmp_path / "units"
    for path, only in ((db_host, "backup,prune"), (restore_host.policy, "drill")):
        r = restore_host.cli("schedule", "-p", str(path), "--format", "systemd", "--only", only, "--install", str(out))
        assert r.code == 0, r.err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["drtool-backup-prune.service", "drtool-backup-prune.timer", "drtool-drill.service",
                     "drtool-drill.timer"]  # fmt: skip
    assert f"run --only backup,prune {db_host}" in (out / "drtool-backup-prune.service").read_text()
    assert f"run --only drill {restore_host.policy}" in (out / "drtool-drill.service").read_text()
    assert "not-on-this-host" not in (out / "drtool-backup-prune.service").read_text()  # no identity path to allow
    systemd_verify(*sorted(out.iterdir()))


def test_backup_taken_by_hand_in_the_slot_satisfies_it(pg, tmp_path):
    daily = '[schedule]\nbackup = "0 0 * * *"\n'
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=daily)
    manual = s.cli("backup", "-p", str(s.policy))
    assert manual.code == 0, manual.err
    r = s.cli("run", str(s.policy), "--json")
    assert r.code == 0, r.err
    job = r.json["policies"][0]["jobs"]["backup"]
    assert job["outcome"] == "ok" and job["backup_id"] == manual.out.strip()
    assert backups(s) == [manual.out.strip()]


def test_dry_run_says_a_backup_taken_by_hand_counts_for_the_slot(pg, tmp_path):
    """--dry-run tells what the run would do: no second backup today after one taken by hand."""
    daily = '[schedule]\nbackup = "0 0 * * *"\n'
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=daily)
    manual = s.cli("backup", "-p", str(s.policy))
    assert manual.code == 0, manual.err
    r = s.cli("run", str(s.policy), "--dry-run", "--json")
    assert r.code == 0, r.err
    assert r.json["policies"][0]["jobs"]["backup"]["counted_backup"] == manual.out.strip()
    line = [ln for ln in s.cli("run", str(s.policy), "--dry-run").out.splitlines() if " backup " in ln][0]
    assert f"backup {manual.out.strip()} (taken since the slot began) counts for it" in line
