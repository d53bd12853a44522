"""WAL archiving use cases: the synchronous push, the daemon that uploads ahead, the spool it keeps.

Spool layout (pitr.spool_dir, outside PGDATA, owned by postgres):
    ack/<name>.ok      the file is durable in the store (written after the PUT returned; tmp, fsync,
                       rename, fsync the folder), read by `wal push` (drtool/walack.py)
    ack/<name>.error   refused for good (different content archived under the name, another cluster's
                       WAL): `wal push` fails with its text until a person removes it
    daemon.lock        flock held while `drtool wal daemon` lives
    status.json        the daemon's state for `drtool status` (backlog, last archived, failures)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

from .. import walarchive
from ..errors import DrtoolError, UsageError
from ..policy import Policy, load_fleet
from .base import AppBase

ACK = "ack"


# -- the spool --------------------------------------------------------------------------------------


def write_durably(path: Path, data: bytes) -> None:
    """path holds data, or (after a crash) its old content: tmp, fsync, rename, fsync the folder."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ack_dir(policy: Policy) -> Path | None:
    return Path(policy.pitr.spool_dir) / ACK if policy.pitr.spool_dir else None


def acknowledge(policy: Policy, name: str) -> None:
    """Tell `wal push` that name is durable in the store (only ever after the PUT returned)."""
    folder = ack_dir(policy)
    if folder is not None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_durably(folder / f"{name}.ok", b"")


def refuse(app: AppBase, policy: Policy, name: str, err: DrtoolError) -> None:
    """Record a permanent refusal (`wal push` fails on it from now on) and alert once."""
    folder = ack_dir(policy)
    if folder is not None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_durably(folder / f"{name}.error", f"{err}\n".encode())
    app.notify_outcome(policy, "wal push", False, str(err), {"wal": name})


# -- push -------------------------------------------------------------------------------------------


def push(app: AppBase, policy: Policy, path: Path) -> dict[str, Any]:
    """Archive one file of pg_wal now (durable when this returns); refusals are recorded in the
    spool and alerted, then raised."""
    if not policy.pitr.enabled:
        raise UsageError(f"{policy.source}: [pitr] enabled is not true; not archiving {path.name}")
    store = app.store(policy)
    try:
        outcome = walarchive.push_file(store, policy, path, path.name, signer=app.signer(policy))
    except (walarchive.WalConflict, walarchive.ForeignWal) as e:
        refuse(app, policy, path.name, e)
        raise
    return {"name": path.name, "outcome": outcome}


def push_sync(policy_file: str, wal_path: str) -> tuple[int, str]:
    """`wal push` without a daemon: (0, "") once the file is durable in the store, else (1, the
    one-line reason). Never raises a DrtoolError (walack turns anything else into 1 too)."""
    from . import App

    try:
        fleet = load_fleet(policy_file)
        if fleet.invalid or len(fleet.policies) != 1:
            problems = [p for bad in fleet.invalid for p in bad.problems]
            raise UsageError("; ".join(problems) or f"{policy_file}: expected one policy file")
        push(App(), fleet.policies[0], Path(wal_path))
    except DrtoolError as e:
        return 1, " ".join(str(e).split())
    return 0, ""
