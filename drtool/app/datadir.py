"""The data directory a physical restore writes: an empty folder made safe, the base backup's tar
extracted into it member by member (no absolute paths, no "..", no links out, also on Pythons
without tarfile's filters), ownership handed to the server's user, and the recovery settings
(restore_command, target, promote) with recovery.signal. Used by app/physical.py."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shlex
import shutil
import sys
import tarfile
from pathlib import Path

from .. import clock
from ..errors import UsageError
from ..policy import Policy

AUTO_CONF_MARK = "# drtool restore"


class PiecesReader:
    """A file-like view of an iterator of byte pieces, for tarfile's stream mode. Holds one piece
    at a time and never copies more than it returns (pieces can be megabytes, reads are 10 KiB)."""

    def __init__(self, pieces):
        self._it = iter(pieces)
        self._cur: bytes = b""
        self._pos = 0
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        out = []
        while n < 0 or n > 0:
            if self._pos >= len(self._cur):
                piece = next(self._it, None)
                if piece is None:
                    break
                self._cur, self._pos = piece, 0
                continue
            end = len(self._cur) if n < 0 else min(len(self._cur), self._pos + n)
            out.append(self._cur[self._pos : end])
            if n > 0:
                n -= end - self._pos
            self._pos = end
        data = b"".join(out)
        self.size += len(data)
        return data


def owner_ids(owner: str | None) -> tuple[int | None, int | None, str]:
    """(uid, gid, name) the restored files belong to: as root, `owner` or postgres; otherwise the
    current user (and --owner must be that user)."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() != 0:
        if owner and owner != me:
            raise UsageError(f"--owner {owner}: only root can restore files for another user")
        return None, None, me
    name = owner or "postgres"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UsageError(f"--owner {name}: no such user (PostgreSQL refuses to run as root)") from None
    if entry.pw_uid == 0:
        raise UsageError("--owner root: PostgreSQL refuses to run as root; name the server's user")
    return entry.pw_uid, entry.pw_gid, name


def prepare_empty_dir(path: Path) -> bool:
    """Make sure `path` is an empty folder, mode 0700; True when this call created it."""
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise UsageError(f"--pgdata {path} exists and is not a folder")
        if any(path.iterdir()):
            raise UsageError(f"--pgdata {path} is not empty; restore into an empty or new folder")
        os.chmod(path, 0o700)
        return False
    try:
        path.mkdir(mode=0o700)
    except FileNotFoundError:
        raise UsageError(f"--pgdata {path}: its parent folder does not exist") from None
    except OSError as e:
        raise UsageError(f"--pgdata {path}: cannot create it: {e.strerror}") from None
    os.chmod(path, 0o700)  # whatever the umask
    return True


def empty_dir(path: Path, *, remove: bool) -> None:
    """After a failed restore: the folder as it was (empty, or gone when this restore made it)."""
    if remove:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def readable_by(path: Path, uid: int, gid: int | None) -> bool:
    """Whether user uid (primary group gid) may read path, by its mode bits and its folders'."""
    try:
        for p in [path, *path.parents]:
            st = p.stat()
            need = 0o4 if p == path else 0o1
            if st.st_uid == uid:
                ok = st.st_mode & (need << 6)
            elif st.st_gid == gid:
                ok = st.st_mode & (need << 3)
            else:
                ok = st.st_mode & need
            if not ok:
                return False
    except OSError:
        return False
    return True


def chown_tree(root: Path, uid: int, gid: int | None) -> None:
    os.chown(root, uid, gid if gid is not None else -1)
    for folder, dirs, files in os.walk(root):
        for n in dirs + files:
            os.chown(os.path.join(folder, n), uid, gid if gid is not None else -1, follow_symlinks=False)


def drtool_for_server(path: str | None) -> str:
    """The shell words that run drtool for PostgreSQL: `path` (--drtool), else the console script
    beside this interpreter, else this interpreter with -m drtool. Always absolute."""
    if path:
        p = Path(os.path.abspath(path))
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise UsageError(f"--drtool {path}: not an executable file")
        return shlex.quote(str(p))
    script = Path(sys.executable).parent / "drtool"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(Path(os.path.abspath(script))))
    return f"{shlex.quote(os.path.abspath(sys.executable))} -m drtool"


def restore_command(drtool: str, policy: Policy, spool: Path | None) -> str:
    parts = [drtool, "wal", "fetch", "--policy", shlex.quote(os.path.abspath(policy.source))]
    if spool is not None:
        parts += ["--spool", shlex.quote(str(spool))]
    return " ".join([*parts, "%f", "%p"])


def _conf_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def write_recovery_config(pgdata: Path, command: str, backup_id: str, to_time: dt.datetime | None) -> None:
    """postgresql.auto.conf gets the recovery settings (later lines win over the backup's own),
    and recovery.signal makes the server replay archived WAL, then promote."""
    lines = [
        f"{AUTO_CONF_MARK} of base backup {backup_id} at {clock.iso(clock.utcnow())}",
        f"restore_command = {_conf_str(command)}",
        "recovery_target_timeline = 'latest'",
        "recovery_target_action = 'promote'",
    ]
    if to_time is not None:
        t = to_time.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        lines.append(f"recovery_target_time = {_conf_str(t)}")
    auto = pgdata / "postgresql.auto.conf"
    with open(auto, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    (pgdata / "recovery.signal").touch(mode=0o600)


class UnsafeMember(Exception):
    """A tar member the 'data' filter refuses, found by _refuse_unsafe."""


# tarfile's extraction filters (PEP 706) came in Python 3.11.4; Debian 12's python3 is 3.11.2, and
# a venv that the postgres user can run is made from it (README, PITR runbook).
HAS_FILTERS = hasattr(tarfile, "data_filter")
UNSAFE_MEMBER: tuple[type[Exception], ...] = (UnsafeMember, *((tarfile.FilterError,) if HAS_FILTERS else ()))


def extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    if HAS_FILTERS:
        tar.extract(member, target, filter="data")
        return
    _refuse_unsafe(member, target)
    # what the 'data' filter does besides refusing: no owner from the archive, no set-id/sticky or
    # group/other write bits (the restore chowns the tree to the server's user afterwards)
    member.uid, member.gid, member.uname, member.gname = os.geteuid(), os.getegid(), "", ""
    if member.isreg() or member.isdir():
        member.mode &= 0o755
    tar.extract(member, target)


def _refuse_unsafe(member: tarfile.TarInfo, target: Path) -> None:
    """The 'data' filter's refusals, for interpreters without it: absolute names, names or links
    that resolve outside `target` (through links extracted before), devices and FIFOs."""
    root = os.path.realpath(target)

    def inside(path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    name = member.name
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeMember(f"{name!r} is a device or FIFO")
    if os.path.isabs(name) or not inside(os.path.join(root, name)):
        raise UnsafeMember(f"{name!r} is outside the destination")
    if member.issym():
        link = os.path.join(root, os.path.dirname(name), member.linkname)
        if os.path.isabs(member.linkname) or not inside(link):
            raise UnsafeMember(f"{name!r} links outside the destination ({member.linkname!r})")
    if member.islnk() and (os.path.isabs(member.linkname) or not inside(os.path.join(root, member.linkname))):
        raise UnsafeMember(f"{name!r} links outside the destination ({member.linkname!r})")
