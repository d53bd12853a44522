"""The PostgreSQL programs drtool runs: finding pg_dump, pg_restore and the server binaries (with
their versions), and running pg_dump and pg_restore as streaming processes. Queries are in
postgres.py. Passwords reach the tools through the environment (PGPASSWORD), never argv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import DatabaseError, DrtoolError, IntegrityError, UsageError
from .pipes import read_ahead, set_pipe_size
from .postgres import Conninfo, SnapshotInfo
from .secrets import redact

# -- finding the programs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    path: str
    version: str  # "15.18"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def _bin_dirs(program: str, bin_dir: str | None, *fallbacks: Path) -> list[Path]:
    """Folders that may hold `program`, in order: the configured bin_dir alone, else
    `pg_config --bindir`, the folder of `program` on PATH, then `fallbacks`."""
    if bin_dir:
        return [Path(bin_dir)]
    found: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = _output(Path(pg_config), "--bindir")
        if out is not None:
            found.append(Path(out.strip()))
    on_path = shutil.which(program)
    if on_path:
        found.append(Path(on_path).resolve().parent)
    return found + list(fallbacks)


def _version(program: Path) -> re.Match[str] | None:
    """`program --version` as a match of (major, minor), or None if it does not run or say one."""
    if not (program.is_file() and os.access(program, os.X_OK)):
        return None
    out = _output(program, "--version")
    return re.search(r"(\d+)(?:\.(\d+))?", out) if out is not None else None


_OUTPUTS: dict[tuple[str, str], tuple[tuple[int, int, int], str]] = {}  # (program, arg) -> (its stat, stdout)


def _output(program: Path, arg: str) -> str | None:
    """stdout of `program arg` (--version, --bindir), None when it does not run. Remembered while the
    program file is unchanged (same inode, size, mtime): `status` of 1,000 policies asked the same
    four binaries 4,000 times, ~30 ms a process; a package upgrade under `drtool serve` is seen."""
    try:
        st = os.stat(program)
    except OSError:
        return None
    stamp, key = (st.st_ino, st.st_size, st.st_mtime_ns), (str(program), arg)
    known = _OUTPUTS.get(key)
    if known is not None and known[0] == stamp:
        return known[1]
    try:
        out = subprocess.run([str(program), arg], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    _OUTPUTS[key] = (stamp, out)
    return out


def find_tool(name: str, bin_dir: str | None = None) -> Tool:
    """pg_dump/pg_restore from bin_dir, else `pg_config --bindir`, else PATH. The processes asked
    (`pg_config --bindir`, `<tool> --version`) run once per process while their files are unchanged
    (_output): `run` backs up a fleet in one process, and `serve` sees a package upgrade."""
    for folder in _bin_dirs(name, bin_dir):
        m = _version(folder / name)
        if m:
            return Tool(str(folder / name), f"{m.group(1)}.{m.group(2) or 0}")
    where = bin_dir or "pg_config --bindir or PATH"
    raise UsageError(f"{name} not found in {where} (install the PostgreSQL client, or set backup.pg_bin_dir)")


def find_server_bin(major: int, bin_dir: str | None) -> tuple[Path, str]:
    """(folder, version) of PostgreSQL `major` server binaries (for a scratch server): drill.pg_bin_dir,
    else pg_config --bindir, else PATH, else /usr/lib/postgresql/<major>/bin."""
    seen = []
    for folder in _bin_dirs("postgres", bin_dir, Path(f"/usr/lib/postgresql/{major}/bin")):
        m = _version(folder / "postgres") if (folder / "initdb").exists() else None
        if not m:
            continue
        seen.append(f"{folder} ({m.group(0)})")
        if int(m.group(1)) == major:
            return folder, m.group(0)
    where = ", ".join(seen) if seen else (bin_dir or "pg_config --bindir, PATH, /usr/lib/postgresql")
    raise DrtoolError(
        f"no PostgreSQL {major} server binaries (initdb, postgres) found; looked in: {where}. "
        f"Install the PostgreSQL {major} server (Debian: postgresql-{major}) or set drill.pg_bin_dir"
    )


def server_major(version_num: int) -> int:
    return version_num // 10000 if version_num >= 100000 else version_num // 100


def require_compatible(tool: Tool, snap: SnapshotInfo) -> None:
    """pg_dump can dump servers of its own major version or older, never newer."""
    if tool.major < server_major(snap.server_version_num):
        raise DatabaseError(
            f"{Path(tool.path).name} {tool.version} ({tool.path}) is older than the server "
            f"({snap.server_version}); install PostgreSQL {server_major(snap.server_version_num)} client "
            "tools or point backup.pg_bin_dir at them"
        )


def pg_dump_argv(tool: Tool, conninfo: Conninfo, snapshot_id: str) -> list[str]:
    return [
        tool.path,
        "--format=custom",
        "--compress=0",
        f"--snapshot={snapshot_id}",
        "--no-password",
        f"--dbname={conninfo.dsn}",
    ]


def pg_restore_argv(
    tool: Tool,
    target: Conninfo,
    *,
    jobs: int,
    clean: bool,
    path: str | None,
    sections: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> list[str]:
    argv = [tool.path, "--exit-on-error", "--no-password", f"--dbname={target.dsn}", *extra]
    argv += [f"--section={s}" for s in sections]
    if clean:
        argv += ["--clean", "--if-exists"]
    if jobs > 1:
        argv.append(f"--jobs={jobs}")
    else:
        argv.append("--single-transaction")  # a failed restore leaves the target as it was
    if path:
        argv.append(path)
    return argv


# pg_dump locks each table by name after importing the snapshot; a table dropped in between fails it.
_DROPPED = re.compile(r'relation ".*" does not exist')


class ConcurrentDDL(DatabaseError):
    """pg_dump failed because a table in the snapshot was dropped before pg_dump could lock it."""


class _StderrTail:
    """Collects a subprocess's stderr on a thread (so pipes never deadlock), keeping the tail."""

    def __init__(self, stream):
        import threading

        self._stream = stream
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        for raw in self._stream:
            self.lines.append(redact(raw.decode("utf-8", "replace").rstrip()))
            del self.lines[:-50]

    def join(self) -> None:
        self._t.join(timeout=30)

    def errors(self) -> list[str]:
        return [ln for ln in self.lines if re.search(r"\b(error|fatal|FATAL|ERROR)\b", ln)]

    def summary(self) -> str:
        errs = self.errors() or self.lines
        return errs[-1] if errs else "no message"


def pg_dump_stream(tool: Tool, conninfo: Conninfo, snapshot_id: str, read_size: int = 1 << 18) -> Iterator[bytes]:
    """The archive pg_dump writes, piece by piece. Raises DatabaseError (after the last piece)
    if pg_dump exits non-zero, so the caller never commits a failed dump. Success is the exit
    status, not words on stderr (a table or comment named "error" is not a failure); that the
    archive is whole is checked by the caller, which walks it (drtool.dumpscan)."""
    proc = subprocess.Popen(
        pg_dump_argv(tool, conninfo, snapshot_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=conninfo.env(),
    )
    stdout = _piped(proc.stdout)
    set_pipe_size(stdout.fileno())
    err = _StderrTail(proc.stderr)
    ok = False
    try:
        read = stdout.read
        while True:
            piece = read(read_size)
            if not piece:
                break
            yield piece
        rc = proc.wait()
        err.join()
        if rc != 0:
            msg = f"database {conninfo.label}: pg_dump failed (exit {rc}): {err.summary()}"
            if any(_DROPPED.search(line) for line in err.lines):
                raise ConcurrentDDL(msg)
            raise DatabaseError(msg)
        ok = True
    finally:
        if not ok and proc.poll() is None:
            proc.kill()
            proc.wait()
        stdout.close()


def _piped(stream: IO[bytes] | None) -> IO[bytes]:
    """A child's end of a pipe we asked for with subprocess.PIPE (Popen types it as optional)."""
    if stream is None:
        raise RuntimeError("expected a pipe to the child process")
    return stream


class PgRestore:
    """pg_restore reading an archive from our pipe (or from a file when path is given)."""

    def __init__(
        self,
        tool: Tool,
        target: Conninfo,
        *,
        jobs: int = 1,
        clean: bool = False,
        path: str | None = None,
        sections: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
        pass_fds: tuple[int, ...] = (),
    ):
        """pass_fds: our open files pg_restore may read (path "/dev/fd/N" for a file with no name)."""
        self.target = target
        self.proc = subprocess.Popen(
            pg_restore_argv(tool, target, jobs=jobs, clean=clean, path=path, sections=sections, extra=extra),
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL if path else subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=target.env(),
        )
        if not path:
            set_pipe_size(_piped(self.proc.stdin).fileno())
        self._err = _StderrTail(self.proc.stderr)

    def write(self, data: bytes) -> None:
        try:
            _piped(self.proc.stdin).write(data)
        except BrokenPipeError:
            self.finish()  # raises with pg_restore's own message
            raise DatabaseError(f"database {self.target.label}: pg_restore stopped reading") from None

    def finish(self) -> None:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        rc = self.proc.wait()
        self._err.join()
        if rc != 0 or self._err.errors():
            raise DatabaseError(f"database {self.target.label}: pg_restore failed (exit {rc}): {self._err.summary()}")

    def abort(self) -> None:
        """Stop pg_restore without letting it commit (a single-transaction restore rolls back)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.join()


def restore_stream(
    tool: Tool,
    target: Conninfo,
    pieces: Iterable[bytes],
    *,
    clean: bool = False,
    sections: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> float:
    """pg_restore fed from `pieces` in one transaction: any error, ours or pg_restore's, stops it
    and the target is left as it was. Returns the seconds spent waiting for `pieces` (the fetch,
    decrypt and decompress share of the wall time; the rest is pg_restore's)."""
    proc = PgRestore(tool, target, clean=clean, sections=sections, extra=extra)
    producing = 0.0
    it = iter(pieces)
    try:
        while True:
            t = time.monotonic()
            piece = next(it, None)
            producing += time.monotonic() - t
            if piece is None:
                break
            proc.write(piece)
    except BaseException:
        proc.abort()
        raise
    proc.finish()
    return producing


# -- physical: pg_basebackup and pg_verifybackup -------------------------------------------------


def pg_basebackup_argv(tool: Tool, conninfo: Conninfo) -> list[str]:
    """One tar of the data directory on stdout, with backup_label and backup_manifest in it. No
    WAL (-X none): it is archived beside, and the backup's range is checked in the store."""
    return [tool.path, "--format=tar", "--pgdata=-", "--wal-method=none", "--checkpoint=fast",
            "--manifest-checksums=CRC32C", "--no-password", f"--dbname={conninfo.dsn}"]  # fmt: skip


_NO_REPLICATION = re.compile(r"superuser or replication role|no pg_hba.conf entry for replication", re.I)


BASEBACKUP_READ_AHEAD = 16  # pieces of read_size (4 MiB) read ahead of the pipeline


@dataclass
class StartedBaseBackup:
    """pg_basebackup already running: `pieces` as basebackup_stream gives them (close it when it is
    not read to the end) and kill(), callable from any thread: a pipeline that stops early calls it
    so that its threads blocked on the stream can finish."""

    pieces: Generator[bytes, None, None]
    kill: Callable[[], None]


def start_basebackup(tool: Tool, conninfo: Conninfo, read_size: int = 1 << 18) -> StartedBaseBackup:
    """Start pg_basebackup now rather than at the first read: its checkpoint and first pieces
    (up to the pipe and the read-ahead) overlap what the caller does before reading."""
    procs: list[subprocess.Popen] = []
    pieces = _basebackup(tool, conninfo, read_size, procs)
    next(pieces)  # runs up to the start mark: the child is running
    proc = procs[0]

    def kill() -> None:
        if proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass  # exited meanwhile

    return StartedBaseBackup(pieces, kill)


def basebackup_stream(tool: Tool, conninfo: Conninfo, read_size: int = 1 << 18) -> Iterator[bytes]:
    """The tar pg_basebackup writes, piece by piece; DatabaseError (after the last piece) naming
    the database when it exits non-zero, so the caller never commits a failed base backup."""
    return _basebackup(tool, conninfo, read_size, None)


def _basebackup(tool: Tool, conninfo: Conninfo, read_size: int,
                started: list[subprocess.Popen] | None) -> Generator[bytes, None, None]:  # fmt: skip
    """basebackup_stream; with `started`, the child is appended to it and an empty start mark is
    yielded first (start_basebackup consumes it)."""
    proc = subprocess.Popen(
        pg_basebackup_argv(tool, conninfo),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=conninfo.env(),
    )
    stdout = _piped(proc.stdout)
    set_pipe_size(stdout.fileno())
    err = _StderrTail(proc.stderr)
    ok = False
    # a thread of its own reads the pipe, so pg_basebackup (and the server's walsender behind it)
    # keeps streaming while this thread compresses, encrypts and uploads the pieces before
    pieces = read_ahead(iter(lambda: stdout.read(read_size), b""), BASEBACKUP_READ_AHEAD, on_close=proc.kill,
                        name="pg_basebackup-reader")  # fmt: skip
    try:
        if started is not None:
            started.append(proc)
            yield b""
        yield from pieces
        rc = proc.wait()
        err.join()
        if rc != 0:
            hint = ""
            if any(_NO_REPLICATION.search(line) for line in err.lines):
                hint = ("; the backup role needs the REPLICATION attribute (ALTER ROLE ... REPLICATION) and a "
                        "'replication' line in pg_hba.conf")  # fmt: skip
            raise DatabaseError(f"database {conninfo.label}: pg_basebackup failed (exit {rc}): {err.summary()}{hint}")
        ok = True
    finally:
        pieces.close()  # stopped early: kills pg_basebackup, then joins the reader
        if not ok and proc.poll() is None:
            proc.kill()
            proc.wait()
        stdout.close()


def verify_backup(tool: Tool, pgdata: Path) -> None:
    """pg_verifybackup -n: every file of the restored data directory against its backup_manifest
    (WAL is checked by replay, not here). IntegrityError with its first complaint otherwise."""
    try:
        r = subprocess.run([tool.path, "--no-parse-wal", "--quiet", str(pgdata)], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=6 * 3600)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        raise DrtoolError(f"{tool.path}: cannot run: {e}") from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        first = lines[0] if lines else f"exit {r.returncode}"
        raise IntegrityError(f"{pgdata}: pg_verifybackup found a problem: {first}")
