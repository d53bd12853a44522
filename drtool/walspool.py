"""The WAL spool (pitr.spool_dir): how `wal push` and `wal daemon` talk. Standard library only,
because the thin `wal push` (drtool/walack.py) reads it on every WAL file.

    ack/<name>.ok      the file is durable in the store (written only after the PUT returned)
    ack/<name>.error   refused for good: `wal push` fails with its text until a person removes it
    daemon.lock        an exclusive flock held while `drtool wal daemon` lives (its pid inside)
    status.json        the daemon's state, rewritten every second (for `status`)
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path

ACK = "ack"
LOCK = "daemon.lock"
STATUS = "status.json"


def ok_path(spool: Path, name: str) -> Path:
    return spool / ACK / f"{name}.ok"


def error_path(spool: Path, name: str) -> Path:
    return spool / ACK / f"{name}.error"


def write_durably(path: Path, data: bytes) -> None:
    """path holds data, or (after a crash) what it held before: tmp, fsync, rename, fsync the folder."""
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
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def answer(spool: Path, name: str) -> tuple[int, str] | None:
    """(0, "") when name is acknowledged, (1, reason) when it was refused, None when neither yet."""
    if os.path.exists(ok_path(spool, name)):
        return 0, ""
    err = error_path(spool, name)
    try:
        with open(err, encoding="utf-8", errors="replace") as f:
            text = " ".join(f.read().split())
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        return 1, f"{err}: cannot read: {e.strerror}"
    return 1, f"{text or name + ': refused'} (remove {err} once resolved)"


def daemon_alive(spool: Path) -> bool:
    """True while some process holds the daemon's lock."""
    return lock_held(spool / LOCK)


def lock_held(path: Path) -> bool:
    """True while some process holds a flock on `path` (a missing file is no lock)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops a shared lock taken here
    return False
