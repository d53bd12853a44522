"""`drtool wal push --policy P %p`: PostgreSQL's archive_command, kept cheap (standard library only).

PostgreSQL runs it once per WAL file and waits, so it must not pay for click, boto3 and
cryptography (~250 ms) on every segment. The work is done by `drtool wal daemon`, which uploads
the files of pg_wal/archive_status/*.ready and writes `<spool>/ack/<name>.ok` once each object is
durable in the store. This entry point only:

1. answers 0 at once when `<spool>/ack/<name>.ok` exists (the daemon made it durable);
2. answers 1 when `<spool>/ack/<name>.error` exists (refused for good, e.g. different content is
   archived under the name; a person must look), printing that error;
3. while the daemon holds `<spool>/daemon.lock`, waits up to pitr.ack_timeout for one of the two;
4. when no daemon holds the lock, uploads the file itself (the full drtool, "sync push"), so
   archiving never depends on the daemon.

Exit codes are 0 (durable in the store) and 1 (PostgreSQL retries later), never anything else:
PostgreSQL treats an exit above 125 or death by a signal as fatal for the archiver. Every
exception, KeyboardInterrupt and SIGTERM end in 1.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import tomllib
from pathlib import Path

from .walspool import answer, daemon_alive

POLL = 0.02  # seconds between looks at the spool while the daemon works
USAGE = "usage: drtool wal push --policy FILE PATH (PostgreSQL's archive_command: ... wal push --policy FILE %p)"


class _Stop(Exception):
    """SIGTERM (PostgreSQL shutting down, systemd stop): give up this attempt with exit 1."""


def _on_sigterm(signum, frame) -> None:
    raise _Stop("stopped by SIGTERM; PostgreSQL retries the file later")


def main(argv: list[str] | None = None) -> None:
    """Run `wal push` and leave with 0 or 1 (os._exit: no teardown can change the code)."""
    code, message = 1, ""
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        code, message = run(sys.argv[1:] if argv is None else argv)
    except BaseException as e:  # noqa: BLE001 - anything at all must end in 0/1, never a traceback or 2
        code, message = 1, f"{type(e).__name__}: {e}"
    try:
        if message:
            sys.stderr.write(f"drtool wal push: {message}\n")
            sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a closed stderr must not change the exit code
        pass
    os._exit(0 if code == 0 else 1)


def parse(argv: list[str]) -> tuple[str, str]:
    """(policy file, WAL path) from `wal push [--policy|-p FILE] PATH`; ValueError for anything else."""
    args = list(argv)
    if args[:2] == ["wal", "push"]:
        args = args[2:]
    policy = os.environ.get("DRTOOL_POLICY", "")
    paths = []
    while args:
        a = args.pop(0)
        if a in ("--policy", "-p"):
            if not args:
                raise ValueError(USAGE)
            policy = args.pop(0)
        elif a.startswith("--policy="):
            policy = a.split("=", 1)[1]
        elif a in ("-q", "--quiet"):
            continue
        elif a.startswith("-") and a != "-":
            raise ValueError(f"unknown option {a}; {USAGE}")
        else:
            paths.append(a)
    if not policy or len(paths) != 1:
        raise ValueError(USAGE)
    return policy, paths[0]


def run(argv: list[str]) -> tuple[int, str]:
    try:
        policy_file, wal_path = parse(argv)
    except ValueError as e:
        return 1, str(e)
    name = os.path.basename(wal_path)
    spool, ack_timeout, pgdata = _spool_settings(policy_file)
    if spool is not None:
        inside = _in_pg_wal(wal_path, pgdata)
        verdict = answer(spool, name)
        if verdict is not None and (inside or verdict[0] != 0):  # a refusal holds for any file of that name
            return verdict
        if inside and daemon_alive(spool):
            waited = _wait_for_daemon(spool, name, ack_timeout)
            if waited is not None:
                return waited
    return _sync_push(policy_file, wal_path)


def _spool_settings(policy_file: str) -> tuple[Path | None, float, str | None]:
    """[pitr] spool_dir, ack_timeout and pgdata, read without validating the rest (the sync push does)."""
    try:
        with open(policy_file, "rb") as f:
            pitr = tomllib.load(f).get("pitr", {})
    except (OSError, ValueError):
        return None, 0, None
    if not isinstance(pitr, dict) or not isinstance(pitr.get("spool_dir"), str):
        return None, 0, None
    pgdata = pitr.get("pgdata") if isinstance(pitr.get("pgdata"), str) else None
    return Path(pitr["spool_dir"]), _seconds(pitr.get("ack_timeout", "60s")), pgdata


def _in_pg_wal(wal_path: str, pgdata: str | None) -> bool:
    """Whether the file is in the pg_wal the daemon reads (pitr.pgdata). A server started from
    another folder (a restored copy, before pitr.pgdata points at it) archives files the daemon
    never sees, and an ack in the spool for the same name is about another file: that server's
    pushes upload by themselves (create-only, so different content is still refused). A refusal
    (<name>.error) holds for every file of the name until a person removes it."""
    if not pgdata:
        return False
    here = os.path.realpath(os.path.dirname(os.path.abspath(wal_path)))
    return here == os.path.realpath(os.path.join(pgdata, "pg_wal"))


def _seconds(value: object) -> float:
    from .durations import parse_duration  # stdlib-only module

    try:
        return float(parse_duration(value)) if isinstance(value, str) else 60.0
    except ValueError:
        return 60.0


def _wait_for_daemon(spool: Path, name: str, ack_timeout: float) -> tuple[int, str] | None:
    """The daemon's verdict within ack_timeout; None when the daemon went away meanwhile (then
    this process pushes the file itself)."""
    deadline = time.monotonic() + ack_timeout
    checks = 0
    while time.monotonic() < deadline:
        time.sleep(POLL)
        verdict = answer(spool, name)
        if verdict is not None:
            return verdict
        checks += 1
        if checks % 10 == 0 and not daemon_alive(spool):
            return answer(spool, name)
    return 1, (f"{name}: the WAL daemon did not acknowledge it within {ack_timeout:g}s "
               "(pitr.ack_timeout); PostgreSQL retries it")  # fmt: skip


def _sync_push(policy_file: str, wal_path: str) -> tuple[int, str]:
    """Upload the file in this process: the whole of drtool (~0.3 s), only when no daemon runs."""
    from .app.wal import push_sync

    return push_sync(policy_file, wal_path)
