"""PostgreSQL queries: the only importer of psycopg (connect, the exported snapshot, row counts,
drill checks, databases created and dropped, DSN parsing). The client and server programs
(pg_dump, pg_restore, initdb, postgres) live in pgtools.py.

Passwords reach libpq through the connection or the environment (PGPASSWORD), never argv.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

# psycopg is imported by the functions that use it: importing it loads libpq (~150 ms), and the
# commands that never connect (list, report, prune, --help) import this module all the same.

from .errors import DatabaseError
from .secrets import Secret, redact


@dataclass(frozen=True)
class Conninfo:
    """Where and how to connect: a password-free DSN plus an optional password."""

    dsn: str
    password: Secret | None = None

    @property
    def label(self) -> str:
        """host:port/dbname for messages (no credentials)."""
        p = _parse(self.dsn)
        host = p.get("host") or "localhost"
        return f"{host}:{p.get('port') or 5432}/{p.get('dbname') or p.get('user') or ''}"

    @property
    def dbname(self) -> str:
        return str(_parse(self.dsn).get("dbname") or "")

    def with_dbname(self, name: str) -> Conninfo:
        import psycopg

        return Conninfo(psycopg.conninfo.make_conninfo(self.dsn, dbname=name), self.password)

    def env(self) -> dict[str, str]:
        """Environment for a libpq tool: ours, plus PGPASSWORD when a password was given."""
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password.reveal()
        return env


def _parse(dsn: str) -> dict[str, Any]:
    """libpq's reading of a DSN, without defaults from the environment."""
    import psycopg

    return psycopg.conninfo.conninfo_to_dict(dsn)


def connect(conninfo: Conninfo, *, autocommit: bool = True, timeout: int = 10) -> psycopg.Connection:
    import psycopg

    password = conninfo.password.reveal() if conninfo.password else None
    try:
        if password is None:  # libpq then takes it from the DSN, PGPASSWORD or ~/.pgpass
            return psycopg.connect(conninfo.dsn, autocommit=autocommit, connect_timeout=timeout,
                                   application_name="drtool")  # fmt: skip
        return psycopg.connect(conninfo.dsn, autocommit=autocommit, connect_timeout=timeout,
                               application_name="drtool", password=password)  # fmt: skip
    except psycopg.Error as e:
        raise DatabaseError(f"database {conninfo.label}: cannot connect: {_first_line(e)}") from None


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
    recovery_point: dt.datetime  # the server's now() in the snapshot
    server_version: str
    server_version_num: int
    database: str
    database_size: int
    encoding: str


@contextmanager
def exported_snapshot(conninfo: Conninfo) -> Iterator[tuple[psycopg.Connection, SnapshotInfo]]:
    """A REPEATABLE READ transaction whose snapshot is exported for pg_dump --snapshot.

    The recovery point is now() in this transaction: the instant the snapshot reflects.
    The transaction stays open (the snapshot stays importable) until the block ends.
    """
    import psycopg

    conn = connect(conninfo, autocommit=False)
    try:
        # psycopg opens the transaction itself (BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY) at
        # the first statement; a BEGIN of our own came second and logged a WARNING on the server
        # ("there is already a transaction in progress") for every backup
        conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_export_snapshot(), now(), current_setting('server_version'), "
                "current_setting('server_version_num')::int, current_database(), "
                "pg_database_size(current_database()), pg_encoding_to_char(d.encoding) "
                "FROM pg_database d WHERE d.datname = current_database()"
            )
            snap, now, ver, vnum, db, size, enc = _row(cur)
        yield conn, SnapshotInfo(snap, now, ver, vnum, db, size, enc)
    except psycopg.Error as e:
        raise DatabaseError(f"database {conninfo.label}: {_first_line(e)}") from None
    finally:
        try:
            conn.rollback()
        except psycopg.Error:
            pass  # the server may be gone; the error that matters is already propagating
        conn.close()


def count_rows(conn: psycopg.Connection, tables: list[str] | None = None) -> dict[str, int]:
    """Exact row counts ('schema.table' -> n) of ordinary and partitioned-leaf user tables."""
    from psycopg import sql

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
            out[f"{schema}.{table}"] = _row(cur)[0]
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
        return int(_row(cur)[0])


def _row(cur: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row of a query that always returns one (an aggregate, a function call)."""
    row = cur.fetchone()
    if row is None:
        raise DatabaseError("the server returned no row where one is always expected")
    return row


def create_database(conninfo: Conninfo, name: str, encoding: str | None) -> None:
    from psycopg import sql

    enc = sql.SQL(" ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C'").format(sql.Literal(encoding)) if encoding else sql.SQL("")
    with connect(conninfo) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)) + enc)


def database_exists(conninfo: Conninfo, maintenance_db: str = "postgres") -> bool:
    """Whether conninfo's database exists, asked of the server through its maintenance database.
    DatabaseError when the server cannot be asked."""
    with connect(conninfo.with_dbname(maintenance_db)) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (conninfo.dbname,)).fetchone() is not None


def create_target_database(ci: Conninfo, owner: str | None, encoding: str | None,
                           maintenance_db: str = "postgres") -> None:  # fmt: skip
    """CREATE DATABASE for a restore: ci's database, from template0 (the dump brings everything),
    in the dump's encoding and the server's default locale, owned by `owner` when given."""
    import psycopg
    from psycopg import sql

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


def drop_database(conninfo: Conninfo, name: str) -> None:
    from psycopg import sql

    with connect(conninfo) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_check(conninfo: Conninfo, query: str) -> tuple[bool, str]:
    """(passed, detail) of a drill check: one row whose first column is true."""
    import psycopg

    try:
        with connect(conninfo) as conn:
            row = conn.execute(query).fetchone()
    except psycopg.Error as e:
        return False, f"error: {_first_line(e)}"
    except DatabaseError as e:
        return False, str(e)
    if row is None:
        return False, "returned no row"
    return row[0] is True, f"returned {row[0]!r}"


def amcheck_indexes(conninfo: Conninfo) -> tuple[bool | None, str]:
    """bt_index_check on every B-tree index; (None, why) when amcheck is not available."""
    import psycopg

    try:
        with connect(conninfo) as conn:
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
        p = _parse(dsn)
        host = str(p.get("host") or "localhost").lower()
        host = "127.0.0.1" if host in ("localhost", "::1") else host
        return host, str(p.get("port") or 5432), str(p.get("dbname") or p.get("user") or "")

    return norm(a) == norm(b)


_SECRET_PARAMS = ("password", "sslpassword")


def dsn_password_keys(dsn: str) -> list[str]:
    """The keywords of a libpq DSN (URL or key=value) that carry a secret, as libpq itself parses
    it: percent-encoded keywords (`?%70assword=`) and quoted values included, and a `dbname` that
    is itself a connection string. Raises ValueError, without echoing the DSN, when libpq cannot
    parse it: libpq's own message may quote a fragment of it. A plain DSN (plain_dsn) is answered
    without libpq: every command validates its policies, and importing psycopg costs ~150 ms."""
    if plain_dsn(dsn):
        return []
    return libpq_password_keys(dsn)


def libpq_password_keys(dsn: str) -> list[str]:
    """dsn_password_keys as libpq reads the DSN, whatever its form."""
    import psycopg

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


# The DSNs libpq certainly parses, and without a secret: anything else goes to libpq itself. A URI
# with an optional user (no ':' so no password), host, port and dbname of plain characters; no
# query, no percent-encoding, no brackets. Or key=value words of plain values (no quote, backslash,
# '=' or ':', so no nested connection string) with keywords every supported libpq knows, none of
# them a secret or a pointer to one (password, sslpassword, service, passfile).
_PLAIN_URI = re.compile(r"postgres(?:ql)?://(?:[A-Za-z0-9_.-]+@)?[A-Za-z0-9.-]*(?::[0-9]+)?(?:/[A-Za-z0-9_.-]*)?",
                        re.ASCII)  # fmt: skip
_PLAIN_WORD = re.compile(r"([a-z_]+)=[A-Za-z0-9_./,-]+", re.ASCII)
_PLAIN_KEYWORDS = frozenset({
    "host", "hostaddr", "port", "dbname", "user", "connect_timeout", "client_encoding", "application_name",
    "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
    "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "target_session_attrs",
})  # fmt: skip
_LIBPQ_SPACE = re.compile(r"[ \t\n\r\f\v]+")  # C isspace(), what separates libpq's key=value words


def plain_dsn(dsn: str) -> bool:
    """Whether libpq would certainly parse dsn and find no secret in it (tests/test_dsn_fast_path.py
    holds this against libpq on a table of DSNs). False means: ask libpq."""
    if _PLAIN_URI.fullmatch(dsn):
        return True
    words = [w for w in _LIBPQ_SPACE.split(dsn) if w]
    return bool(words) and all((m := _PLAIN_WORD.fullmatch(w)) and m[1] in _PLAIN_KEYWORDS for w in words)


@dataclass(frozen=True)
class ClusterInfo:
    """What a base backup records about the cluster it copies."""

    sysid: int
    wal_segment_size: int
    server_version: str
    server_version_num: int
    extra_tablespaces: tuple[str, ...]  # beyond pg_default and pg_global: base backups refuse them
    size: int = 0  # bytes of all its databases (what a base backup copies, roughly)


def cluster_info(conninfo: Conninfo) -> ClusterInfo:
    import psycopg

    with connect(conninfo) as conn:
        try:
            sysid, seg, version, num = _row(conn.execute(
                "SELECT system_identifier, (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"
                " AND unit = 'B'), current_setting('server_version'), current_setting('server_version_num')::int "
                "FROM pg_control_system()"
            ))  # fmt: skip
            spaces = [r[0] for r in conn.execute(
                "SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1"
            )]  # fmt: skip
            (size,) = _row(conn.execute("SELECT coalesce(sum(pg_database_size(oid)), 0)::bigint FROM pg_database "
                                        "WHERE datallowconn"))  # fmt: skip
        except psycopg.Error as e:
            raise DatabaseError(f"database {conninfo.label}: {_first_line(e)}") from None
    return ClusterInfo(int(sysid), int(seg), version, num, tuple(spaces), int(size))


@dataclass(frozen=True)
class ArchiveSettings:
    """What WAL archiving and base backups need of the server and of the policy's role."""

    wal_level: str
    archive_mode: str
    archive_command: str | None  # None: this role may not read it
    replication: bool  # the role may open a replication connection (REPLICATION or superuser)


def archive_settings(conninfo: Conninfo) -> ArchiveSettings:
    import psycopg

    with connect(conninfo) as conn:
        try:
            level, mode, command, repl = _row(conn.execute(
                "SELECT current_setting('wal_level'), current_setting('archive_mode'), "
                "(SELECT setting FROM pg_settings WHERE name = 'archive_command'), "
                "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)"
            ))  # fmt: skip
        except psycopg.Error as e:
            raise DatabaseError(f"database {conninfo.label}: {_first_line(e)}") from None
    return ArchiveSettings(str(level), str(mode), command, bool(repl))


# -- point-in-time recovery: drills on a restored cluster, heartbeats on the source ----------------

HEARTBEAT_TABLE = "drtool.heartbeat"  # one row, updated every pitr.heartbeat_interval (docs/pitr.md)


def user_of(conninfo: Conninfo) -> str:
    return str(_parse(conninfo.dsn).get("user") or "")


def in_recovery(conninfo: Conninfo) -> bool:
    """pg_is_in_recovery(): True while the server replays WAL, False once promoted. DatabaseError
    while it accepts no connection yet (not consistent)."""
    import psycopg

    try:
        with connect(conninfo, timeout=5) as conn:
            return bool(_row(conn.execute("SELECT pg_is_in_recovery()"))[0])
    except psycopg.Error as e:
        raise DatabaseError(f"database {conninfo.label}: {_first_line(e)}") from None


@dataclass(frozen=True)
class ReplayPoint:
    """What a restored cluster holds of its source's history: the last replayed commit
    (pg_last_xact_replay_timestamp(), read after promotion and before any restart), the newest
    heartbeat row, and the timeline it ended on."""

    last_commit: dt.datetime | None
    heartbeat: dt.datetime | None
    timeline: int


def replay_point(conninfo: Conninfo) -> ReplayPoint:
    import psycopg

    try:
        with connect(conninfo) as conn:
            last, tli, has_beat = _row(conn.execute(
                "SELECT pg_last_xact_replay_timestamp(), (SELECT timeline_id FROM pg_control_checkpoint()), "
                "to_regclass(%s) IS NOT NULL",
                (HEARTBEAT_TABLE,),
            ))  # fmt: skip
            beat = _row(conn.execute(f"SELECT max(ts) FROM {HEARTBEAT_TABLE}"))[0] if has_beat else None
    except psycopg.Error as e:
        raise DatabaseError(f"database {conninfo.label}: {_first_line(e)}") from None
    return ReplayPoint(last, beat, int(tli))


def superuser_of(conninfo: Conninfo) -> str:
    """The bootstrap superuser's name (the role initdb made)."""
    import psycopg

    try:
        with connect(conninfo) as conn:
            return str(_row(conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10"))[0])
    except psycopg.Error as e:
        raise DatabaseError(f"database {conninfo.label}: {_first_line(e)}") from None


def write_probe(conninfo: Conninfo) -> None:
    """The drill's first write on a promoted copy: one committed row in drtool_drill.probe."""
    import psycopg

    try:
        with connect(conninfo) as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS drtool_drill")
            conn.execute("CREATE TABLE IF NOT EXISTS drtool_drill.probe (at timestamptz NOT NULL)")
            conn.execute("INSERT INTO drtool_drill.probe VALUES (clock_timestamp())")
    except psycopg.Error as e:
        raise DatabaseError(f"database {conninfo.label}: the first write failed: {_first_line(e)}") from None


def archiver_stats(conninfo: Conninfo) -> dict[str, object]:
    """pg_stat_archiver of a server (times ISO UTC), and its count of .ready files when the
    connection may read pg_wal (superuser or pg_monitor; else None)."""
    import psycopg

    try:
        with connect(conninfo) as conn:
            cur = conn.execute(
                "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, "
                "last_failed_time, stats_reset FROM pg_stat_archiver"
            )
            names = [d.name for d in cur.description or ()]
            row = dict(zip(names, _row(cur), strict=True))
            try:
                row["ready"] = _row(conn.execute(
                    "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
                ))[0]  # fmt: skip
            except psycopg.Error:
                row["ready"] = None
    except psycopg.Error as e:
        raise DatabaseError(f"database {conninfo.label}: {_first_line(e)}") from None
    return {k: v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if isinstance(v, dt.datetime) else v
            for k, v in row.items()}  # fmt: skip


def write_heartbeat(conninfo: Conninfo) -> None:
    """One heartbeat on the source (`drtool wal daemon` with pitr.heartbeat_interval): the single
    row of drtool.heartbeat set to now, committed. It makes WAL on an idle server (so archive_timeout
    switches segments) and gives drills a recent commit to measure the recovery point from."""
    import psycopg

    try:
        with connect(conninfo) as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS drtool")
            conn.execute("CREATE TABLE IF NOT EXISTS drtool.heartbeat (id int PRIMARY KEY CHECK (id = 1), "
                         "ts timestamptz NOT NULL)")  # fmt: skip
            conn.execute("INSERT INTO drtool.heartbeat VALUES (1, clock_timestamp()) "
                         "ON CONFLICT (id) DO UPDATE SET ts = excluded.ts")  # fmt: skip
    except psycopg.Error as e:
        raise DatabaseError(f"database {conninfo.label}: heartbeat not written: {_first_line(e)}") from None
