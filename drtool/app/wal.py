"""WAL archiving use cases: the synchronous push, the daemon that uploads ahead, its status.
The spool they share is described in drtool/walspool.py."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import clock, walarchive, walnames, walspool
from ..errors import DrtoolError, UsageError
from ..policy import Policy, load_fleet
from ..walspool import ACK, write_durably
from .context import Context, UseCase
from .heartbeat import Heartbeat, beat

# -- the spool (drtool/walspool.py) -------------------------------------------------------------


def ack_dir(policy: Policy) -> Path | None:
    return Path(policy.pitr.spool_dir) / ACK if policy.pitr.spool_dir else None


def acknowledge(policy: Policy, name: str) -> None:
    """Tell `wal push` that name is durable in the store (only ever after the PUT returned).

    The ack is an empty file created in place, not fsynced: it is on the path of every segment
    (two fsyncs cost ~10-20 ms each here), and losing it in a crash costs only a re-push that finds
    the object "present". Never a wrong answer: it is only ever created after the PUT returned."""
    folder = ack_dir(policy)
    if folder is not None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        walspool.create_empty(folder / f"{name}.ok")


def refuse(ctx: Context, policy: Policy, name: str, err: DrtoolError) -> None:
    """Record a permanent refusal (`wal push` fails on it from now on) and alert once."""
    folder = ack_dir(policy)
    if folder is not None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_durably(folder / f"{name}.error", f"{err}\n".encode())
    ctx.notify_outcome(policy, "wal push", False, str(err), {"wal": name})


# -- push -------------------------------------------------------------------------------------------


def push(ctx: Context, policy: Policy, path: Path) -> dict[str, Any]:
    """Archive one file of pg_wal now (durable when this returns); refusals are recorded in the
    spool and alerted, then raised."""
    if not policy.pitr.enabled:
        raise UsageError(f"{policy.source}: [pitr] enabled is not true; not archiving {path.name}")
    store = ctx.store(policy)
    try:
        outcome = walarchive.push_file(store, policy, path, path.name, signer=ctx.signer(policy))
    except (walarchive.WalConflict, walarchive.ForeignWal) as e:
        refuse(ctx, policy, path.name, e)
        raise
    return {"name": path.name, "outcome": outcome}


def push_sync(policy_file: str, wal_path: str) -> tuple[int, str]:
    """`wal push` without a daemon: (0, "") once the file is durable in the store, else (1, the
    one-line reason). Never raises a DrtoolError (walack turns anything else into 1 too)."""
    try:
        fleet = load_fleet(policy_file)
        if fleet.invalid or len(fleet.policies) != 1:
            problems = [p for bad in fleet.invalid for p in bad.problems]
            raise UsageError("; ".join(problems) or f"{policy_file}: expected one policy file")
        push(Context(), fleet.policies[0], Path(wal_path))
    except DrtoolError as e:
        return 1, " ".join(str(e).split())
    return 0, ""


# -- the daemon -------------------------------------------------------------------------------------

SCAN_INTERVAL = 0.05  # seconds between looks at archive_status: a listdir, cheap; `wal push` waits on it
FIRST_RETRY = 1.0  # seconds before a file whose upload failed is tried again; doubles up to MAX_RETRY
MAX_RETRY = 30.0
STATUS_EVERY = 1.0  # seconds between rewrites of status.json


class DaemonRunning(DrtoolError):
    """Another daemon holds the spool's lock."""


@dataclass
class _State:
    """What the daemon knows between scans (only its main thread touches it)."""

    in_flight: dict[str, Future] = field(default_factory=dict)
    retry_at: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (monotonic time, delay)
    failures: int = 0
    last_failure: str | None = None
    last_archived: str | None = None
    last_archived_at: str | None = None
    archived: int = 0
    backlog: int = 0
    oldest_ready: str | None = None


def ready_names(pg_wal: Path) -> list[str]:
    """The files PostgreSQL waits to archive, history files first (a timeline's segments need
    them), then in name order (oldest first)."""
    try:
        names = [n[: -len(".ready")] for n in os.listdir(pg_wal / "archive_status") if n.endswith(".ready")]
    except FileNotFoundError:
        return []
    return sorted(names, key=lambda n: (not n.endswith(".history"), n))


TMP_STALE_SECONDS = 300.0  # a temp file this old was left by a crash: a write takes milliseconds


def recover_spool(spool: Path, pg_wal: Path) -> int:
    """At start and between passes: remove temp files a crash left, and acks PostgreSQL no longer
    needs (their .ready is gone: the file was archived or removed). Returns how many files were
    removed. A temp file younger than TMP_STALE_SECONDS is left alone: it may be another process's
    write in progress (a `wal push` writing its error or ack), whose rename would then fail."""
    removed = 0
    ack = spool / ACK
    listed = {}
    for folder in (spool, ack):
        try:
            listed[folder] = os.listdir(folder)
        except FileNotFoundError:
            listed[folder] = []
    ready = set(ready_names(pg_wal))  # after the acks: an ack listed above whose .ready is gone now is spent
    now = time.time()
    for folder, names in listed.items():
        for n in names:
            stale = (n.endswith(".tmp") and _older_than(folder / n, now - TMP_STALE_SECONDS)) or (
                folder == ack and n.endswith(".ok") and n[: -len(".ok")] not in ready
            )
            if stale:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(folder / n)
                    removed += 1
    return removed


def _older_than(path: Path, t: float) -> bool:
    try:
        return path.stat().st_mtime < t
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def daemon_lock(spool: Path) -> Iterator[None]:
    """Hold `<spool>/daemon.lock` (flock; the kernel drops it when the process dies)."""
    import fcntl

    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(spool / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise DaemonRunning(f"{spool / 'daemon.lock'}: another wal daemon runs (pid {other or '?'})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def run_daemon(ctx: Context, policy: Policy, stop: threading.Event) -> dict[str, Any]:
    """Upload every file PostgreSQL marks ready, `upload_workers` at a time, and acknowledge each
    once it is durable in the store; until `stop` is set (SIGTERM). In-flight uploads finish first
    (an upload cut short is never acknowledged: PostgreSQL keeps the file and `wal push` retries)."""
    pitr = policy.pitr
    if not pitr.enabled or not pitr.spool_dir or not pitr.pgdata:
        raise UsageError(f"{policy.source}: [pitr] is not enabled with pgdata and spool_dir; no WAL daemon")
    spool, pg_wal = Path(pitr.spool_dir), Path(pitr.pgdata) / "pg_wal"
    with daemon_lock(spool):
        recover_spool(spool, pg_wal)
        store = ctx.store(policy)
        sysid = walarchive.sysid_of_cluster(Path(pitr.pgdata))
        signer = ctx.signer(policy)
        state = _State()
        next_status = 0.0
        heart = Heartbeat(ctx, policy)  # writes only with pitr.heartbeat_interval set (docs/pitr.md)
        with ThreadPoolExecutor(max_workers=pitr.upload_workers, thread_name_prefix="wal-push") as pool:
            while not stop.is_set():
                heart.tick()
                _collect(ctx, policy, state)
                _submit(pool, store, policy, pg_wal, sysid, signer, state)
                if time.monotonic() >= next_status:
                    recover_spool(spool, pg_wal)  # acks PostgreSQL has consumed
                    write_status(spool, state)
                    next_status = time.monotonic() + STATUS_EVERY
                stop.wait(SCAN_INTERVAL)
            for f in state.in_flight.values():
                with contextlib.suppress(Exception):
                    f.result()
            _collect(ctx, policy, state)
        write_status(spool, state, stopped=True)
    return {"policy": policy.name, "archived": state.archived, "failures": state.failures}


def _submit(pool, store, policy: Policy, pg_wal: Path, sysid: int | None, signer, state: _State) -> None:
    ack = ack_dir(policy)
    assert ack is not None  # run_daemon refuses a policy without pitr.spool_dir
    names = ready_names(pg_wal)
    state.backlog, state.oldest_ready = len(names), (min(names) if names else None)
    now = time.monotonic()
    for name in names:
        if name in state.in_flight or (ack / f"{name}.ok").exists() or (ack / f"{name}.error").exists():
            continue
        if name in state.retry_at and state.retry_at[name][0] > now:
            continue
        state.in_flight[name] = pool.submit(_push_and_acknowledge, store, policy, pg_wal / name, name, sysid, signer)


def _push_and_acknowledge(store, policy: Policy, path: Path, name: str, sysid: int | None, signer) -> str:
    """Upload, then acknowledge at once from this worker: `wal push` is waiting for it, and the main
    loop would see the finished upload only at its next scan (up to SCAN_INTERVAL later)."""
    outcome = walarchive.push_file(store, policy, path, name, sysid, signer=signer)
    acknowledge(policy, name)
    return outcome


def _collect(ctx: Context, policy: Policy, state: _State) -> None:
    """Acknowledge finished uploads; record refusals; schedule failed ones for another try."""
    for name, fut in list(state.in_flight.items()):
        if not fut.done():
            continue
        del state.in_flight[name]
        try:
            fut.result()
        except (walarchive.WalConflict, walarchive.ForeignWal) as e:
            refuse(ctx, policy, name, e)
            state.failures += 1
            state.last_failure = str(e)
            continue
        except DrtoolError as e:  # the store is down, the file vanished (archived by a sync push): retry
            delay = min(MAX_RETRY, state.retry_at.get(name, (0, FIRST_RETRY / 2))[1] * 2)
            state.retry_at[name] = (time.monotonic() + delay, delay)
            state.failures += 1
            state.last_failure = str(e)
            ctx.warn(f"{name}: not archived yet: {e}; trying again in {delay:g}s")
            continue
        state.retry_at.pop(name, None)  # acknowledged by the worker (_push_and_acknowledge)
        state.archived += 1
        state.last_archived, state.last_archived_at = name, clock.iso(clock.utcnow())


def write_status(spool: Path, state: _State, *, stopped: bool = False) -> None:
    doc = {
        "version": 1,
        "pid": None if stopped else os.getpid(),
        "updated": clock.iso(clock.utcnow()),
        "backlog": state.backlog,
        "oldest_ready": state.oldest_ready,
        "in_flight": len(state.in_flight),
        "archived": state.archived,
        "last_archived": state.last_archived,
        "last_archived_at": state.last_archived_at,
        "failures": state.failures,
        "last_failure": state.last_failure,
    }
    with contextlib.suppress(OSError):  # status is for people; never stop archiving over it
        write_durably(spool / "status.json", json.dumps(doc, indent=2).encode() + b"\n")


# -- status -----------------------------------------------------------------------------------------

BACKLOG_WARN = 8  # .ready files waiting: beyond this archiving is not keeping up


def wal_status(ctx: Context, policy: Policy, *, with_store: bool = True) -> dict[str, Any]:
    """The archive at a glance: backlog of .ready files (from pg_wal when this host can read it, else
    the daemon's last count), daemon alive, refused files, the newest archived segment and its age.
    `problems` lists what needs a person (empty: healthy)."""
    spool = Path(policy.pitr.spool_dir or ".")
    daemon = _read_status(spool)
    pg_wal = Path(policy.pitr.pgdata) / "pg_wal" if policy.pitr.pgdata else None
    ready = ready_names(pg_wal) if pg_wal is not None and os.access(pg_wal / "archive_status", os.R_OK) else None
    refused = sorted(p.name[: -len(".error")] for p in (spool / ACK).glob("*.error")) if spool.is_dir() else []
    doc: dict[str, Any] = {
        "daemon_alive": walspool.daemon_alive(spool),
        "backlog": len(ready) if ready is not None else daemon.get("backlog"),
        "oldest_ready": (min(ready) if ready else None) if ready is not None else daemon.get("oldest_ready"),
        "refused": refused,
        "failures": daemon.get("failures", 0),
        "last_failure": daemon.get("last_failure"),
        "newest_archived": None,
        "newest_archived_end": None,
        "newest_archived_age_seconds": None,
    }
    problems = [f"{n}: refused ({walspool.error_path(spool, n)}); PostgreSQL cannot archive past it" for n in refused]
    if (doc["backlog"] or 0) > BACKLOG_WARN:
        problems.append(f"{doc['backlog']} WAL files wait to be archived (oldest {doc['oldest_ready']})")
    if with_store:
        try:
            _newest_archived(ctx, policy, doc)
        except DrtoolError as e:
            doc["store_error"] = f"cannot read the WAL archive in {policy.storage.url}: {e}"
            problems.append(doc["store_error"])
    doc["problems"] = problems
    return doc


def _read_status(spool: Path) -> dict[str, Any]:
    try:
        doc = json.loads((spool / walspool.STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _newest_archived(ctx: Context, policy: Policy, doc: dict[str, Any]) -> None:
    """The newest archived segment (by name) and how long ago PostgreSQL completed it."""
    store = ctx.store(policy)
    cluster = walarchive.read_cluster(store, policy)
    if cluster is None:
        return
    newest = None
    for info in walarchive.archived(store, policy, cluster.sysid):
        name = walnames.name_of_key(info.key)
        if walnames.kind_of(name) in ("segment", "partial") and (newest is None or name[:24] >= newest[1][:24]):
            newest = (info.key, name)
    if newest is None:
        return
    end = store.stat(newest[0]).metadata.get("end")
    doc["newest_archived"], doc["newest_archived_end"] = newest[1], end
    if end:
        doc["newest_archived_age_seconds"] = round((clock.utcnow() - clock.parse_iso(end)).total_seconds(), 1)


class WalJobs(UseCase):
    """The WAL archive's entry points on the command's Context (`wal push` without a daemon
    needs no App: push_sync builds its own Context)."""

    def run_daemon(self, policy: Policy, stop: threading.Event) -> dict[str, Any]:
        return run_daemon(self.ctx, policy, stop)

    def status(self, policy: Policy, *, with_store: bool = True) -> dict[str, Any]:
        return wal_status(self.ctx, policy, with_store=with_store)

    def heartbeat(self, policy: Policy) -> dict[str, Any]:
        return beat(self.ctx, policy)
