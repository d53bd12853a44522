"""PostgreSQL: the only importer of psycopg, and the one place that runs pg_dump/pg_restore.

Passwords reach libpq and the tools through the environment (PGPASSWORD), never argv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from .errors import DatabaseError, UsageError
from .secrets import Secret, redact


@dataclass(frozen=True)
class Conninfo:
    """Where and how to connect: a password-free DSN plus an optional password."""

    dsn: str
    password: Secret | None = None

    @property
    def label(self) -> str:
        """host:port/dbname for messages (no credentials)."""
        p = psycopg.conninfo.conninfo_to_dict(self.dsn)
        host = p.get("host") or "localhost"
        return f"{host}:{p.get('port') or 5432}/{p.get('dbname') or p.get('user') or ''}"

    @property
    def dbname(self) -> str:
        return psycopg.conninfo.conninfo_to_dict(self.dsn).get("dbname") or ""

    def with_dbname(self, name: str) -> Conninfo:
        return Conninfo(psycopg.conninfo.make_conninfo(self.dsn, dbname=name), self.password)

    def env(self) -> dict[str, str]:
        """Environment for a libpq tool: ours, plus PGPASSWORD when a password was given."""
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password.reveal()
        return env


def connect(ci: Conninfo, *, autocommit: bool = True, timeout: int = 10) -> psycopg.Connection:
    kwargs = {"password": ci.password.reveal()} if ci.password else {}
    try:
        return psycopg.connect(
            ci.dsn, autocommit=autocommit, connect_timeout=timeout, application_name="drtool", **kwargs
        )
    except psycopg.Error as e:
        raise DatabaseError(f"database {ci.label}: cannot connect: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    primary = getattr(getattr(e, "diag", None), "message_primary", None)
    if primary:  # a server error: its own one-line message, without the LINE/caret context
        return redact(primary)
    text = redact(str(e)).strip()
    # libpq prefixes 'connection to server at "h" (ip), port p failed:'; keep the reason
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = lines[-1] if lines else type(e).__name__
    return re.sub(r"^connection to server at .*? failed: ", "", reason)


# -- the snapshot a backup is taken in ------------------------------------------------------


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: str
    recovery_point: object  # datetime from the server's now()
    server_version: str
    server_version_num: int
    database: str
    database_size: int
    encoding: str


@contextmanager
def exported_snapshot(ci: Conninfo) -> Iterator[tuple[psycopg.Connection, SnapshotInfo]]:
    """A REPEATABLE READ transaction whose snapshot is exported for pg_dump --snapshot.

    The recovery point is now() in this transaction: the instant the snapshot reflects.
    The transaction stays open (the snapshot stays importable) until the block ends.
    """
    conn = connect(ci, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute(
                "SELECT pg_export_snapshot(), now(), current_setting('server_version'), "
                "current_setting('server_version_num')::int, current_database(), "
                "pg_database_size(current_database()), pg_encoding_to_char(d.encoding) "
                "FROM pg_database d WHERE d.datname = current_database()"
            )
            snap, now, ver, vnum, db, size, enc = cur.fetchone()
        yield conn, SnapshotInfo(snap, now, ver, vnum, db, size, enc)
    except psycopg.Error as e:
        raise DatabaseError(f"database {ci.label}: {_first_line(e)}") from None
    finally:
        try:
            conn.rollback()
        except psycopg.Error:
            pass  # the server may be gone; the error that matters is already propagating
        conn.close()


def count_rows(conn: psycopg.Connection, tables: list[str] | None = None) -> dict[str, int]:
    """Exact row counts ('schema.table' -> n) of ordinary and partitioned-leaf user tables."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1, 2"
        )
        names = [(s, t) for s, t in cur.fetchall() if tables is None or f"{s}.{t}" in tables]
        out = {}
        for schema, table in names:
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
            out[f"{schema}.{table}"] = cur.fetchone()[0]
    return out


def user_object_count(conn: psycopg.Connection) -> int:
    """Relations and functions outside the system schemas: 0 means an empty database."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "        WHERE n.nspname NOT IN ('pg_catalog','information_schema') "
            "        AND n.nspname NOT LIKE 'pg_toast%' "
            "        AND n.nspname NOT LIKE 'pg_temp%') "
            "     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "        WHERE n.nspname NOT IN ('pg_catalog','information_schema'))"
        )
        return cur.fetchone()[0]


# -- the client tools -------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    path: str
    version: str  # "15.18"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def find_tool(name: str, bin_dir: str | None = None) -> Tool:
    """pg_dump/pg_restore from bin_dir, else `pg_config --bindir`, else PATH."""
    candidates = []
    if bin_dir:
        candidates.append(Path(bin_dir) / name)
    else:
        pg_config = shutil.which("pg_config")
        if pg_config:
            try:
                out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
                candidates.append(Path(out.stdout.strip()) / name)
            except (OSError, subprocess.SubprocessError):
                pass
        found = shutil.which(name)
        if found:
            candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            try:
                out = subprocess.run([str(c), "--version"], capture_output=True, text=True, timeout=10).stdout
            except OSError:
                continue
            m = re.search(r"(\d+)(?:\.(\d+))?", out)
            if m:
                return Tool(str(c), f"{m.group(1)}.{m.group(2) or 0}")
    where = bin_dir or "pg_config --bindir or PATH"
    raise UsageError(f"{name} not found in {where} (install the PostgreSQL client, or set backup.pg_bin_dir)")


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


def pg_dump_argv(tool: Tool, ci: Conninfo, snapshot_id: str) -> list[str]:
    return [
        tool.path,
        "--format=custom",
        "--compress=0",
        f"--snapshot={snapshot_id}",
        "--no-password",
        f"--dbname={ci.dsn}",
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


def _set_pipe_size(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer context switches between the tools and us
    except (OSError, ImportError, AttributeError):
        pass


def pg_dump_stream(tool: Tool, ci: Conninfo, snapshot_id: str, read_size: int = 1 << 18) -> Iterator[bytes]:
    """The archive pg_dump writes, piece by piece. Raises DatabaseError (after the last piece)
    if pg_dump exits non-zero, so the caller never commits a failed dump. Success is the exit
    status, not words on stderr (a table or comment named "error" is not a failure); that the
    archive is whole is checked by the caller, which walks it (drtool.dumpscan)."""
    proc = subprocess.Popen(
        pg_dump_argv(tool, ci, snapshot_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=ci.env(),
    )
    _set_pipe_size(proc.stdout.fileno())
    err = _StderrTail(proc.stderr)
    ok = False
    try:
        read = proc.stdout.read
        while True:
            piece = read(read_size)
            if not piece:
                break
            yield piece
        rc = proc.wait()
        err.join()
        if rc != 0:
            msg = f"database {ci.label}: pg_dump failed (exit {rc}): {err.summary()}"
            if any(_DROPPED.search(line) for line in err.lines):
                raise ConcurrentDDL(msg)
            raise DatabaseError(msg)
        ok = True
    finally:
        if not ok and proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


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
            _set_pipe_size(self.proc.stdin.fileno())
        self._err = _StderrTail(self.proc.stderr)

    def write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
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


def create_database(ci: Conninfo, name: str, encoding: str | None) -> None:
    enc = sql.SQL(" ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C'").format(sql.Literal(encoding)) if encoding else sql.SQL("")
    with connect(ci) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)) + enc)


def database_exists(ci: Conninfo, maintenance_db: str = "postgres") -> bool:
    """Whether ci's database exists, asked of the server through its maintenance database.
    DatabaseError when the server cannot be asked."""
    with connect(ci.with_dbname(maintenance_db)) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (ci.dbname,)).fetchone() is not None


def create_target_database(ci: Conninfo, owner: str | None, encoding: str | None,
                           maintenance_db: str = "postgres") -> None:  # fmt: skip
    """CREATE DATABASE for a restore: ci's database, from template0 (the dump brings everything),
    in the dump's encoding and the server's default locale, owned by `owner` when given."""
    stmt = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(ci.dbname))
    if owner:
        stmt += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    if encoding:
        stmt += sql.SQL(" ENCODING {}").format(sql.Literal(encoding))
    with connect(ci.with_dbname(maintenance_db)) as conn:
        try:
            conn.execute(stmt)
        except psycopg.Error as e:
            raise DatabaseError(f"database {ci.label}: cannot create it: {_first_line(e)}") from None


def drop_database(ci: Conninfo, name: str) -> None:
    with connect(ci) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_check(ci: Conninfo, query: str) -> tuple[bool, str]:
    """(passed, detail) of a drill check: one row whose first column is true."""
    try:
        with connect(ci) as conn:
            row = conn.execute(query).fetchone()
    except psycopg.Error as e:
        return False, f"error: {_first_line(e)}"
    except DatabaseError as e:
        return False, str(e)
    if row is None:
        return False, "returned no row"
    return row[0] is True, f"returned {row[0]!r}"


def amcheck_indexes(ci: Conninfo) -> tuple[bool | None, str]:
    """bt_index_check on every B-tree index; (None, why) when amcheck is not available."""
    try:
        with connect(ci) as conn:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            except psycopg.Error as e:
                return None, f"amcheck not available: {_first_line(e)}"
            rows = conn.execute(
                "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE a.amname = 'btree' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%'"
            ).fetchall()
            for (name,) in rows:
                try:
                    conn.execute("SELECT bt_index_check(%s::regclass)", (name,))
                except psycopg.Error as e:
                    return False, f"index {name}: {_first_line(e)}"
            conn.execute("DROP EXTENSION amcheck")
            return True, f"{len(rows)} B-tree indexes checked"
    except psycopg.Error as e:
        return False, f"error: {_first_line(e)}"


def same_database(a: str, b: str) -> bool:
    """Whether two DSNs name the same database on the same server (host, port, dbname)."""

    def norm(dsn: str) -> tuple[str, str, str]:
        p = psycopg.conninfo.conninfo_to_dict(dsn)
        host = (p.get("host") or "localhost").lower()
        host = "127.0.0.1" if host in ("localhost", "::1") else host
        return host, str(p.get("port") or 5432), p.get("dbname") or p.get("user") or ""

    return norm(a) == norm(b)


_SECRET_PARAMS = ("password", "sslpassword")


def dsn_password_keys(dsn: str) -> list[str]:
    """The keywords of a libpq DSN (URL or key=value) that carry a secret, as libpq itself parses
    it: percent-encoded keywords (`?%70assword=`) and quoted values included, and a `dbname` that
    is itself a connection string. Raises ValueError, without echoing the DSN, when libpq cannot
    parse it: libpq's own message may quote a fragment of it."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        raise ValueError("is not a libpq connection string (postgresql://... or key=value ...)") from None
    found = [k for k in _SECRET_PARAMS if params.get(k)]
    inner = str(params.get("dbname") or "")
    if "=" in inner or inner.startswith(("postgresql:", "postgres:")):
        try:
            found += [f"dbname.{k}" for k in dsn_password_keys(inner)]
        except ValueError:
            pass  # a plain database name that happens to hold '='
    return found
