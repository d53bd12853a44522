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

import contextlib
import errno
import os
import uuid
from pathlib import Path

from .walspool import fsync_dir, lock_held

FETCH = "fetch"
WANT = "want"
LOCK = "reader.lock"
SOCK = "reader.sock"
LOG = "read-ahead.log"
ASK_TIMEOUT = 600.0  # seconds a request may take (a download); then the caller fetches it itself


def ahead_dir(spool: Path) -> Path:
    return spool / FETCH


def write_want(ahead: Path, name: str) -> None:
    """Record the replay position (no fsync: it only steers the read-ahead)."""
    tmp = ahead / f".{WANT}.{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(name + "\n")
        os.replace(tmp, ahead / WANT)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def read_want(ahead: Path) -> str | None:
    try:
        return (ahead / WANT).read_text().strip() or None
    except OSError:
        return None


def reader_alive(ahead: Path) -> bool:
    """True while some process holds the read-ahead lock."""
    return lock_held(ahead / LOCK)


def take_reader_lock(ahead: Path) -> int | None:
    """The lock's descriptor (keep it open while reading ahead), or None when another process holds it."""
    import fcntl

    fd = os.open(ahead / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def downloading(ahead: Path, name: str) -> bool:
    """Whether a download of `name` into the folder is in progress."""
    prefix = f".{name}."
    try:
        return any(e.startswith(prefix) and e.endswith(".tmp") for e in os.listdir(ahead))
    except OSError:
        return False


def serve(ahead: Path, name: str, dest: Path) -> bool:
    """Move the segment read ahead to dest: True when done, False when it is not there (then the
    caller fetches it from the store). A rename on the same file system; across file systems a copy
    to a temporary file beside dest, fsync, rename. The folder of dest is fsynced either way."""
    src = ahead / name
    try:
        os.replace(src, dest)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        if not _copy_across(src, dest):
            return False
    fsync_dir(dest.parent)
    return True


def _copy_across(src: Path, dest: Path) -> bool:
    import shutil

    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
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
        with contextlib.suppress(OSError):
            tmp.unlink()
    with contextlib.suppress(OSError):
        src.unlink()
    return True


def request_line(policy: str, name: str, dest: Path) -> bytes:
    return f"{os.path.abspath(policy)}\t{name}\t{os.path.abspath(dest)}\n".encode()


def parse_request(line: bytes) -> tuple[str, str, Path]:
    policy, name, dest = line.decode().rstrip("\n").split("\t")
    return policy, name, Path(dest)


def ask(ahead: Path, policy: str, name: str, dest: Path) -> tuple[int, str] | None:
    """Ask the read-ahead process to fetch `name` into dest: (0, "") written, (1, "") not archived,
    (200, reason) failed; None when no process answers (not started yet, gone, another policy's),
    and then the caller fetches it itself."""
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(ASK_TIMEOUT)
            s.connect(str(ahead / SOCK))
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
