"""PostgreSQL 15 clusters that archive their WAL with `drtool wal push` into a real store (issue 12).

`pitr` (one per test module) and `make_pitr` (a factory, for tests that break their cluster): a
cluster run as the `postgres` user with wal_level = replica, archive_mode = on and
archive_command = '<drtool> wal push --policy <file> %p', local replication trusted (pg_hba from
initdb), the S3 credentials in the postmaster's environment (archive_command inherits it), a spool
folder owned by postgres, and a policy file with [pitr] enabled pointing at both.

<drtool> is a launcher beside the policy that runs this worktree's drtool with the system Python
3.11 and the .venv's site-packages: the .venv's own interpreter lives under /root (mode 0700 on this
machine), out of the postgres user's reach, as it would not be for a packaged install.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import Result, run_cli
from services import PgCluster, need, pg_bindir, tmpdir

from drtool.crypto import age

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")


def write_launcher(path: Path) -> Path:
    """An executable `drtool` the postgres user can run (see the module docstring)."""
    path.write_text(
        f"#!{SYSTEM_PYTHON} -s\n"
        "import sys\n"
        f"sys.path[:0] = [{str(ROOT)!r}, {str(SITE)!r}]\n"
        "from drtool.entry import main\n"
        "main()\n"
    )
    path.chmod(0o755)
    return path


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


@dataclass
class PitrCluster:
    pg: PgCluster
    base: Path
    policy: Path
    key: Path
    recipient: str
    spool: Path
    store_url: str
    drtool: Path  # the launcher archive_command runs
    policy_name: str
    env: dict[str, str | None] = field(default_factory=dict)

    @property
    def pg_wal(self) -> Path:
        return self.pg.data / "pg_wal"

    def cli(self, *args: str, timeout: int = 300) -> Result:
        return run_cli(*args, env=self.env, timeout=timeout)

    def as_postgres(self, *args: str, timeout: int = 120, env: dict[str, str] | None = None):
        """The launcher run as the postgres user (as PostgreSQL runs archive_command), in PGDATA."""
        argv = [str(self.drtool), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.pg.data,
                              env={**os.environ, **(env or {})})  # fmt: skip

    def sysid(self) -> int:
        return int(self.pg.psql("SELECT system_identifier FROM pg_control_system()"))

    def switch_wal(self) -> str:
        """Complete the current segment (after writing a record, so there is one to complete) and
        return its name: PostgreSQL archives it next."""
        self.pg.psql("SELECT pg_logical_emit_message(false, 'drtool-test', 'switch')")
        return self.pg.psql("SELECT pg_walfile_name(pg_switch_wal())")

    def wait_archived(self, name: str, timeout: float = 90) -> None:
        """Until PostgreSQL counts name as archived (archive_command exited 0 for it)."""
        deadline = time.monotonic() + timeout
        asked = 0.0
        while time.monotonic() < deadline:
            if (self.pg_wal / "archive_status" / f"{name}.done").exists():
                return
            # the server is asked (a psql process each time) once a second: the .done file, a
            # cheap look, is the usual answer; the server's word covers a segment already recycled
            if time.monotonic() - asked >= 1.0:
                asked = time.monotonic()
                last = self.pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
                if last and len(last) == len(name) and last >= name:
                    return
            time.sleep(0.05)
        failed = self.pg.psql("SELECT coalesce(last_failed_wal, '') || ' ' || failed_count FROM pg_stat_archiver")
        log = (self.pg.base / "postgres.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"{name} not archived in {timeout}s (last failed: {failed}); server log:\n{log}")

    def ready(self) -> list[str]:
        """Names PostgreSQL still waits to archive (archive_status/*.ready)."""
        return sorted(p.name[: -len(".ready")] for p in (self.pg_wal / "archive_status").glob("*.ready"))

    def stop(self) -> None:
        self.pg.stop()


def make_pitr_cluster(storage_toml: str, *, archive_command: str | None = None, extra_pitr: str = "",
                      extra_toml: str = "", start: bool = True) -> PitrCluster:  # fmt: skip
    """A new cluster archiving into the store of `storage_toml` (see the module docstring)."""
    bindir = pg_bindir()
    need(bindir is not None, "PostgreSQL server binaries (initdb)")
    need(SYSTEM_PYTHON.exists(), f"{SYSTEM_PYTHON} (runs drtool as the postgres user)")
    base = tmpdir("drtool-pitr-")
    os.chmod(base, 0o755)
    pg = PgCluster(bindir, base / "c")
    pg.init()
    spool = base / "spool"
    spool.mkdir(mode=0o700)
    _chown_postgres(spool)
    ident = age.Identity.generate()
    key = base / "key.txt"
    key.write_text(f"# public key: {ident.recipient}\n{ident.encode()}\n")
    key.chmod(0o600)  # only restores read it; archiving needs the recipient alone
    name = f"pitr-{uuid.uuid4().hex[:8]}"
    policy = base / "policy.toml"
    policy.write_text(f"""
name = "{name}"

[database]
dsn = "{pg.dsn()}"
password_env = "TEST_PGPASSWORD"

{storage_toml}

[encryption]
recipients = ["{ident.recipient}"]
identity_file = "{key}"

[objectives]
rpo = "5m"
rto = "30m"

[pitr]
enabled = true
pgdata = "{pg.data}"
spool_dir = "{spool}"
{extra_pitr}
{extra_toml}
""")
    policy.chmod(0o644)
    drtool = write_launcher(base / "drtool")
    command = archive_command or f"{drtool} wal push --policy {policy} %p"
    with open(pg.data / "postgresql.conf", "a") as f:
        f.write(f"\nwal_level = replica\narchive_mode = on\narchive_command = '{command}'\narchive_timeout = 60\n")
    env: dict[str, str | None] = {"TEST_PGPASSWORD": pg.PASSWORD, "PGPASSWORD": None, "PGPASSFILE": None,
                                  "DRTOOL_POLICY": None}  # fmt: skip
    url = storage_toml.split('url = "')[1].split('"')[0]
    cluster = PitrCluster(pg, base, policy, key, ident.recipient, spool, url, drtool, name, env)
    r = cluster.cli("init", "-p", str(policy))
    assert r.code == 0, f"drtool init failed: {r.err}"
    if start:
        pg.start()
    return cluster


def s3_storage_toml(endpoint: str, bucket: str, prefix: str) -> str:
    return f'[storage]\nurl = "s3://{bucket}/{prefix}"\nregion = "us-east-1"\nendpoint_url = "{endpoint}"'


@pytest.fixture
def make_pitr(seaweed, bucket):
    """make_pitr(storage_toml=None, **kw) -> PitrCluster; every cluster made is stopped after the test."""
    made: list[PitrCluster] = []

    def make(storage_toml: str | None = None, **kw) -> PitrCluster:
        toml = storage_toml or s3_storage_toml(seaweed.endpoint, bucket, f"t-{uuid.uuid4().hex[:12]}")
        made.append(make_pitr_cluster(toml, **kw))
        return made[-1]

    yield make
    for c in made:
        c.stop()
        shutil.rmtree(c.base, ignore_errors=True)


@pytest.fixture(scope="module")
def pitr(seaweed, bucket):
    """One archiving cluster per test module, storing into its own prefix of the real S3 server."""
    cluster = make_pitr_cluster(s3_storage_toml(seaweed.endpoint, bucket, f"t-{uuid.uuid4().hex[:12]}"))
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.base, ignore_errors=True)


def start_daemon(cluster: PitrCluster, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`drtool wal daemon` as the postgres user (as its systemd service runs), once it holds its lock."""
    from drtool import walspool

    argv = [str(cluster.drtool), "wal", "daemon", "--policy", str(cluster.policy)]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    log = open(cluster.base / "daemon.log", "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, env={**os.environ, **(env or {})}, start_new_session=True)
    deadline = time.monotonic() + 60
    while not walspool.daemon_alive(cluster.spool):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"wal daemon did not start: {(cluster.base / 'daemon.log').read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


def daemon_pid(cluster: PitrCluster) -> int:
    """The daemon's own pid (under runuser), from its lock file."""
    return int((cluster.spool / "daemon.lock").read_text().strip())


def wait_for(what: str, check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stop_daemon(cluster: PitrCluster, proc: subprocess.Popen) -> int:
    """SIGTERM to the daemon itself (as systemd stops it); its exit code."""
    try:
        os.kill(daemon_pid(cluster), signal.SIGTERM)
    except (ProcessLookupError, ValueError, OSError):
        pass
    return proc.wait(timeout=60)
