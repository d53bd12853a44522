"""The WAL spool (pitr.spool_dir): how `wal push` and `wal daemon` talk. Standard library only,
because the thin `wal push` (drtool/walack.py) reads it on every WAL file.

    ack/<name>.ok      the file is durable in the store (created, empty, only after the PUT returned)
    ack/<name>.error   refused for good: `wal push` fails with its text until a person removes it
    daemon.lock        an exclusive flock held while `drtool wal daemon` lives (its pid inside)
    status.json        the daemon's state, rewritten every second (for `status`)
"""

from __future__ import annotations

import errno
import os

# The ack path (`wal push` of a file the daemon archived) imports only os and errno here: pathlib,
# uuid, contextlib and typing cost milliseconds on every WAL file (docs/benchmarks.md, WAL archiving).
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from pathlib import Path

ACK = "ack"
LOCK = "daemon.lock"
STATUS = "status.json"


def ok_path(spool: str | os.PathLike, name: str) -> Path:
    from pathlib import Path

    return Path(_ok(spool, name))


def error_path(spool: str | os.PathLike, name: str) -> Path:
    from pathlib import Path

    return Path(_error(spool, name))


def _ok(spool: str | os.PathLike, name: str) -> str:
    return os.path.join(spool, ACK, f"{name}.ok")


def _error(spool: str | os.PathLike, name: str) -> str:
    return os.path.join(spool, ACK, f"{name}.error")


def write_durably(path: str | os.PathLike, data: bytes) -> None:
    """path holds data, or (after a crash) what it held before: tmp, fsync, rename, fsync the folder."""
    folder, base = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f".{base}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    fsync_dir(folder or ".")


def create_empty(path: str | os.PathLike) -> None:
    """An empty file at path (created, or left as it is when there)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new file in `folder` survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def answer(spool: str | os.PathLike, name: str) -> tuple[int, str] | None:
    """(0, "") when name is acknowledged, (1, reason) when it was refused, None when neither yet."""
    if os.path.exists(_ok(spool, name)):
        return 0, ""
    err = _error(spool, name)
    try:
        with open(err, encoding="utf-8", errors="replace") as f:
            text = " ".join(f.read().split())
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        return 1, f"{err}: cannot read: {e.strerror}"
    return 1, f"{text or name + ': refused'} (remove {err} once resolved)"


def daemon_alive(spool: str | os.PathLike) -> bool:
    """True while some process holds the daemon's lock."""
    return lock_held(os.path.join(spool, LOCK))


def lock_held(path: str | os.PathLike) -> bool:
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
