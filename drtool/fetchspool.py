"""The read-ahead folder of `drtool wal fetch` (restore_command): how the thin fetch
(drtool/walget.py) and the read-ahead process (drtool/app/walahead.py) talk. Standard library only,
because the thin fetch runs once per WAL segment while recovery waits.

    <spool>/fetch/<segment>             downloaded, decrypted and checked ahead (fetch_file: tmp + fsync + rename)
    <spool>/fetch/.<segment>.<hex>.tmp  a download in progress
    <spool>/fetch/want                  the segment recovery asked for last (the replay position)
    <spool>/fetch/reader.lock           an exclusive flock held while the read-ahead process lives
    <spool>/fetch/reader.sock           the read-ahead process answers requests here (a warm process:
                                        no interpreter start or imports for a miss or a history file)
    <spool>/read-ahead.log              the read-ahead process's stderr

Only segments are ever read ahead, and only files that exist are served: "not archived" is never
kept here, so a file archived later is found by the next request.
"""

from __future__ import annotations

import errno
import os

from .walspool import fsync_dir, lock_held

# The thin `wal fetch` runs once per segment while recovery waits: os and errno only here (pathlib,
# uuid and contextlib pulled re, enum and urllib in, ~15 ms a call; docs/benchmarks.md).
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from pathlib import Path

FETCH = "fetch"
WANT = "want"
LOCK = "reader.lock"
SOCK = "reader.sock"
LOG = "read-ahead.log"
ASK_TIMEOUT = 600.0  # seconds a request may take (a download); then the caller fetches it itself


def ahead_dir(spool: str | os.PathLike[str]) -> Path:
    from pathlib import Path

    return Path(spool, FETCH)


def write_want(ahead: str | os.PathLike[str], name: str) -> None:
    """Record the replay position (no fsync: it only steers the read-ahead)."""
    tmp = os.path.join(ahead, f".{WANT}.{os.urandom(4).hex()}")
    try:
        with open(tmp, "w") as f:
            f.write(name + "\n")
        os.replace(tmp, os.path.join(ahead, WANT))
    finally:
        _unlink_quietly(tmp)


def _unlink_quietly(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def read_want(ahead: str | os.PathLike[str]) -> str | None:
    try:
        with open(os.path.join(ahead, WANT)) as f:
            return f.read().strip() or None
    except (OSError, ValueError):
        return None


def reader_alive(ahead: str | os.PathLike[str]) -> bool:
    """True while some process holds the read-ahead lock."""
    return lock_held(os.path.join(ahead, LOCK))


def take_reader_lock(ahead: str | os.PathLike[str]) -> int | None:
    """The lock's descriptor (keep it open while reading ahead), or None when another process holds it."""
    import fcntl

    fd = os.open(os.path.join(ahead, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def downloading(ahead: str | os.PathLike[str], name: str) -> bool:
    """Whether a download of `name` into the folder is in progress."""
    prefix = f".{name}."
    try:
        return any(e.startswith(prefix) and e.endswith(".tmp") for e in os.listdir(ahead))
    except OSError:
        return False


def serve(ahead: str | os.PathLike[str], name: str, dest: str | os.PathLike[str]) -> bool:
    """Move the segment read ahead to dest: True when done, False when it is not there (then the
    caller fetches it from the store). A rename on the same file system; across file systems a copy
    to a temporary file beside dest, fsync, rename. The folder of dest is fsynced either way."""
    src = os.path.join(ahead, name)
    try:
        os.replace(src, dest)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        if not _copy_across(src, dest):
            return False
    fsync_dir(os.path.dirname(os.path.abspath(dest)))
    return True


def _copy_across(src: str, dest: str | os.PathLike[str]) -> bool:
    import shutil

    folder, base = os.path.split(os.path.abspath(dest))
    tmp = os.path.join(folder, f".{base}.{os.urandom(4).hex()}.tmp")
    try:
        try:
            fin = open(src, "rb")
        except FileNotFoundError:
            return False  # another request took it meanwhile
        with fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dest)
    finally:
        _unlink_quietly(tmp)
    _unlink_quietly(src)
    return True


def request_line(policy: str, name: str, dest: str | os.PathLike[str]) -> bytes:
    return f"{os.path.abspath(policy)}\t{name}\t{os.path.abspath(dest)}\n".encode()


def parse_request(line: bytes) -> tuple[str, str, Path]:
    from pathlib import Path

    policy, name, dest = line.decode().rstrip("\n").split("\t")
    return policy, name, Path(dest)


def ask(ahead: str | os.PathLike[str], policy: str, name: str, dest: str | os.PathLike[str]) -> tuple[int, str] | None:
    """Ask the read-ahead process to fetch `name` into dest: (0, "") written, (1, "") not archived,
    (200, reason) failed; None when no process answers (not started yet, gone, another policy's),
    and then the caller fetches it itself."""
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(ASK_TIMEOUT)
            s.connect(os.path.join(ahead, SOCK))
            s.sendall(request_line(policy, name, dest))
            reply = b""
            while not reply.endswith(b"\n"):
                piece = s.recv(4096)
                if not piece:
                    return None
                reply += piece
    except (OSError, ValueError):
        return None
    code, _, reason = reply.decode(errors="replace").strip().partition(" ")
    return (int(code), reason) if code in ("0", "1", "200") else None
