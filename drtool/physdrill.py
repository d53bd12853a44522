"""PITR drills: a base backup plus its archived WAL replayed in a throwaway server, promoted,
checked, written to, measured (docs/drills.md, "Physical drills").

The clock (seconds since the drill began, `marks`), after PITR-NOTES §4.2:
    extracted (download + decrypt + extract, WAL fetched) -> verified (pg_verifybackup)
    -> server_started -> consistent (read-only connections) -> promoted (pg_is_in_recovery()
    false) -> first_write (a row committed)
RTO ends at `promoted`; `first_write` is recorded beside it. pg_isready is not the signal: a
server in recovery accepts connections once consistent, long before the target is reached.

Isolation is the logical drill's (scratch.py: no TCP listener, a socket in a private folder,
stopped and deleted on every exit) plus archive_mode = off: the drill's new timeline shares the
source's system identifier and must never reach the production archive. The server replays WAL
that drtool itself fetched into the scratch folder beforehand (restore_command is a `cp`), so the
store's credentials and the identity never reach the server's user.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from . import pgtools, postgres, scratch
from .drills import Outcome, timed, verify_checks
from .errors import DatabaseError, DrtoolError

WAL_DIR = "wal"  # in the scratch folder: the WAL fetched for this drill
CONF_MARK = "# drtool drill: recovery in a throwaway server"
ROLE_MISSING = "does not exist"

# durable as production by default (the RTO is what a real recovery takes); "fast" skips flushes
_PROFILE = {
    scratch.DURABLE: {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"},
    scratch.FAST: {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
}


class RecoveryFailed(DrtoolError):
    """The restored server stopped before promotion (its log says why)."""


@dataclass
class Plan:
    """Everything the drill needs, found by the application beforehand."""

    bin_dir: Path  # server binaries of the backup's major version
    version: str
    extract: Callable[[Path], int]  # writes the base backup into the folder; returns bytes read
    fetch_wal: Callable[[Path], int]  # writes the WAL the drill replays into the folder; returns files
    verify_tool: pgtools.Tool  # pg_verifybackup
    dbname: str  # the policy's database: checks run there, the first write goes there
    user: str  # a role that exists in the source (the policy's); the superuser is found through it
    to_time: dt.datetime | None = None
    checks: tuple[str, ...] = ()
    amcheck: bool = False
    profile: str = scratch.DURABLE
    timeout: float = 3600  # from server start to promotion


@dataclass
class PhysOutcome(Outcome):
    marks: dict[str, float] = field(default_factory=dict)  # seconds since the drill began
    replay: postgres.ReplayPoint | None = None
    rto_first_write_seconds: float | None = None
    wal_files: int = 0


def run(plan: Plan, *, t0: float, root: Path | None = None) -> PhysOutcome:
    """Run one PITR drill; everything that stops it is in the outcome (drills.Outcome.stop)."""
    out = PhysOutcome()
    with ExitStack() as cleanup:
        try:
            _run(plan, t0, root, out, cleanup)
        finally:
            t = time.monotonic()
            cleanup.close()
            out.phases["teardown"] = round(time.monotonic() - t, 3)
    return out


def _mark(out: PhysOutcome, name: str, t0: float) -> None:
    out.marks[name] = round(time.monotonic() - t0, 3)


def _run(plan: Plan, t0: float, root: Path | None, out: PhysOutcome, cleanup: ExitStack) -> None:
    step = "provision"
    try:
        server = cleanup.enter_context(scratch.scratch_folder(plan.bin_dir, plan.version, root))
        out.target_label = f"scratch PostgreSQL {plan.version} ({server.base})"
        step = "fetch"
        with timed(out.phases, "fetch_decrypt_extract"):
            server.data.mkdir(mode=0o700)
            out.bytes_restored = plan.extract(server.data)
        wal = server.base / WAL_DIR
        wal.mkdir(mode=0o700)
        with timed(out.phases, "fetch_wal"):
            out.wal_files = plan.fetch_wal(wal)
        _mark(out, "extracted", t0)
        step = "pg_verifybackup"
        with timed(out.phases, "pg_verifybackup"):
            pgtools.verify_backup(plan.verify_tool, server.data)
        out.check("pg_verifybackup", True, "every file of the base backup matches its backup_manifest")
        _mark(out, "verified", t0)
        step = "provision"
        _configure(server, plan, wal)
        step = "recovery"
        scratch_db = _recover(server, plan, t0, out)
    except DrtoolError as e:
        out.stop(step, e, at_fault=True if step in ("pg_verifybackup", "recovery") else None)
        return
    try:
        t = time.monotonic()
        postgres.write_probe(scratch_db)
        out.phases["first_write"] = round(time.monotonic() - t, 3)
        _mark(out, "first_write", t0)
        out.rto_first_write_seconds = out.marks["first_write"]
        out.check("write", True, "a row was committed on the promoted copy (drtool_drill.probe)")
        out.replay = postgres.replay_point(scratch_db)
        with timed(out.phases, "verify"):
            _verify(scratch_db, plan, out)
    except DatabaseError as e:
        out.stop("verify", e, at_fault=True)


def _configure(server: scratch.ScratchServer, plan: Plan, wal: Path) -> None:
    """Recovery settings appended to postgresql.auto.conf (later lines win over the source's),
    our own pg_hba (local trust, inside the private socket folder), recovery.signal, and every
    file owned by the server's user."""
    hba = server.base / "pg_hba.conf"
    hba.write_text("local all all trust\n")
    (server.base / "pg_ident.conf").write_text("")
    settings = {
        "listen_addresses": "",
        "unix_socket_directories": str(server.socket_dir),
        "port": str(server.port),
        "archive_mode": "off",  # the new timeline must never reach the source's archive
        "archive_command": "",
        "restore_command": f"cp '{wal}/%f' '%p'",
        "recovery_target_timeline": "latest",
        "recovery_target_action": "promote",
        "hot_standby": "on",  # read-only connections once consistent: the `consistent` mark
        "hba_file": str(hba),
        "ident_file": str(server.base / "pg_ident.conf"),
        "logging_collector": "off",  # the log goes to server.log, read when recovery fails
        "log_destination": "stderr",
        "ssl": "off",  # the source's certificates are not part of the copy
        "primary_conninfo": "",
        **_PROFILE[plan.profile],
    }
    if plan.to_time is not None:
        settings["recovery_target_time"] = plan.to_time.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    lines = [CONF_MARK] + [f"{k} = '{v.replace(chr(39), chr(39) * 2)}'" for k, v in settings.items()]
    with open(server.data / "postgresql.auto.conf", "a", encoding="utf-8") as f:
        f.write("\n" + "\n".join(lines) + "\n")
    conf = server.data / "postgresql.conf"
    if not conf.exists():  # Debian keeps it in /etc: the server needs one in its data folder
        conf.write_text("")
    for stale in ("standby.signal", "postmaster.pid"):
        (server.data / stale).unlink(missing_ok=True)
    (server.data / "recovery.signal").touch(mode=0o600)
    if server.ids:
        uid, gid = server.ids["user"], server.ids["group"]
        for folder, dirs, files in os.walk(server.base):
            os.chown(folder, uid, gid)
            for n in dirs + files:
                os.chown(os.path.join(folder, n), uid, gid, follow_symlinks=False)


def _recover(server: scratch.ScratchServer, plan: Plan, t0: float, out: PhysOutcome) -> postgres.Conninfo:
    """Start the server and wait for consistency, then promotion; returns a superuser connection
    to the policy's database. RecoveryFailed (with the log's FATAL line) when the server stops."""
    t = time.monotonic()
    scratch.start(server)
    _mark(out, "server_started", t0)
    users = [u for u in (plan.user, "postgres") if u]
    deadline = time.monotonic() + plan.timeout
    while True:
        if server.proc is not None and server.proc.poll() is not None:
            raise RecoveryFailed(f"the restored server stopped before promotion: {_fatal(server)}")
        if time.monotonic() > deadline:
            raise RecoveryFailed(f"not promoted within {plan.timeout:.0f}s; last log lines: {_fatal(server)}")
        scratch_db = postgres.Conninfo(
            f"host={server.socket_dir} port={server.port} user={users[0]} dbname={plan.dbname}"
        )
        try:
            recovering = postgres.in_recovery(scratch_db)
        except DatabaseError as e:
            if ROLE_MISSING in str(e) and len(users) > 1:
                users.pop(0)
            time.sleep(0.05)
            continue
        if "consistent" not in out.marks:
            _mark(out, "consistent", t0)
            out.phases["consistent"] = round(time.monotonic() - t, 3)
        if not recovering:
            _mark(out, "promoted", t0)
            out.phases["promoted"] = round(time.monotonic() - t - out.phases["consistent"], 3)
            out.rto_seconds = out.marks["promoted"]
            break
        time.sleep(0.05)
    su = postgres.superuser_of(scratch_db)
    return postgres.Conninfo(f"host={server.socket_dir} port={server.port} user={su} dbname={plan.dbname}")


def _fatal(server: scratch.ScratchServer) -> str:
    """The log line that says why recovery stopped (FATAL/PANIC), else the log's tail."""
    tail = scratch.log_tail(server, 20000)
    for line in reversed(tail.splitlines()):
        if "FATAL:" in line or "PANIC:" in line:
            return line.split("FATAL:", 1)[-1].split("PANIC:", 1)[-1].strip()
    return " ".join(tail.splitlines()[-3:])[-300:]


def _verify(scratch_db: postgres.Conninfo, plan: Plan, out: PhysOutcome) -> None:
    verify_checks(scratch_db, plan.checks, plan.amcheck, out, True, fresh="the promoted copy accepts a new connection")
