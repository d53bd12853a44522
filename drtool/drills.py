"""Restore drills: restore a backup into a scratch database, verify it, measure RPO and RTO.

The flow and its clock. RTO runs from the drill's start to a verified database:
    provision -> restore (fetch + decrypt + decompress, overlapped with pg_restore) -> verify
Teardown is timed too but is not part of the RTO. The restore phase streams, like
`drtool restore`; its wall time is split into the share spent waiting for our pipeline
(fetch_decrypt_decompress) and the rest (pg_restore).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import pgtools, postgres, scratch
from .errors import DatabaseError, DrtoolError, IdentityError, IntegrityError, NotFound, StorageError
from .health import COULD_NOT_RUN, FAILED, PASSED

DRILL_DB = "drtool_drill"


@dataclass
class Target:
    """Where the drill restores: a throwaway local server, or a database on an existing server."""

    kind: str  # "scratch" or "server"
    bin_dir: Path | None = None  # scratch: server binaries of the backup's major version
    version: str = ""
    server: postgres.Conninfo | None = None  # server: maintenance connection to the target server
    profile: str = scratch.DURABLE  # scratch: server settings (durable like production, or fast)


@dataclass
class Outcome:
    phases: dict[str, float] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    rto_seconds: float | None = None
    failure: str | None = None  # the first cause, whether the backup failed or the drill could not run
    could_not_run: bool = False
    target_label: str = ""
    bytes_restored: int = 0

    @property
    def result(self) -> str:
        if self.could_not_run:
            return COULD_NOT_RUN
        return FAILED if self.failure else PASSED

    def check(self, name: str, ok: bool | None, detail: str, **extra: Any) -> bool:
        self.checks.append({"name": name, "ok": ok, "detail": detail, **extra})
        return ok is not False

    def stop(self, step: str, error: DrtoolError, *, at_fault: bool | None = None) -> None:
        """The drill stopped at `step`: the backup could not be restored (a failed drill, with a
        failed check named after the step), or something it needs was unavailable. `at_fault`
        overrides the usual judgement of the error (backup_at_fault)."""
        self.failure = f"{step}: {error}"
        if backup_at_fault(error) if at_fault is None else at_fault:
            self.check(step, False, str(error))
        else:
            self.could_not_run = True


def backup_at_fault(error: DrtoolError) -> bool:
    """Whether an error stopping a drill proves the backup cannot be restored as configured:
    damaged or missing objects, or a configured key that is missing or does not open them.
    Anything else (store, scratch server or tools unavailable) says nothing about the backup."""
    return isinstance(error, (IntegrityError, IdentityError, NotFound))


@contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    t = time.monotonic()
    try:
        yield
    finally:
        phases[name] = round(phases.get(name, 0.0) + time.monotonic() - t, 3)


def run(
    *,
    manifest: dict[str, Any],
    target: Target,
    pieces: Callable[[], Iterator[bytes]],
    pg_restore: pgtools.Tool,
    checks: tuple[str, ...],
    amcheck: bool,
    drill_id: str,
    t0: float,
) -> Outcome:
    """Run one drill. Everything that stops it is recorded in the Outcome: a failure of the
    backup under test, or the reason the drill could not run (scratch server, store)."""
    out = Outcome()
    with ExitStack() as cleanup:
        try:
            try:
                with timed(out.phases, "provision"):
                    conninfo = _provision(target, manifest, drill_id, cleanup, out)
            except DrtoolError as e:
                out.stop("provision", e)
                return out
            _restore(conninfo, pieces, pg_restore, out)
            if out.failure is None:
                try:
                    with timed(out.phases, "verify"):
                        _verify(conninfo, manifest, checks, amcheck, out)
                except DatabaseError as e:  # the server went away under the checks
                    out.stop("verify", e)
                if out.failure is None:
                    out.rto_seconds = round(time.monotonic() - t0, 3)
        finally:
            t = time.monotonic()
            cleanup.close()
            out.phases["teardown"] = round(time.monotonic() - t, 3)
    return out


def _provision(target: Target, manifest: dict, drill_id: str, cleanup: ExitStack, out: Outcome) -> postgres.Conninfo:
    encoding = manifest.get("encoding")
    if target.kind == "scratch":
        assert target.bin_dir is not None
        server = cleanup.enter_context(scratch.scratch_server(target.bin_dir, target.version, profile=target.profile))
        admin = postgres.Conninfo(server.dsn("postgres"))
        postgres.create_database(admin, DRILL_DB, encoding)
        out.target_label = f"scratch PostgreSQL {target.version} ({server.base})"
        return postgres.Conninfo(server.dsn(DRILL_DB))
    assert target.server is not None
    name = f"{DRILL_DB}_{drill_id.lower().replace('-', '_')}"
    admin = target.server
    postgres.create_database(admin, name, encoding)
    cleanup.callback(postgres.drop_database, admin, name)
    out.target_label = admin.with_dbname(name).label
    return admin.with_dbname(name)


def _restore(
    conninfo: postgres.Conninfo, pieces: Callable[[], Iterator[bytes]], tool: pgtools.Tool, out: Outcome
) -> None:
    counted = 0

    def counting() -> Iterator[bytes]:
        nonlocal counted
        for p in pieces():
            counted += len(p)
            yield p

    t = time.monotonic()
    try:
        # A scratch server has none of the source's roles: ownership and grants are not restored.
        producing = pgtools.restore_stream(tool, conninfo, counting(), extra=("--no-owner", "--no-acl"))
        out.check("pg_restore", True, "finished without errors")
    except (IntegrityError, StorageError) as e:  # damaged or missing: failed; unreachable: could not run
        out.stop("fetch", e)
    except IdentityError as e:
        out.stop("identity", e)
    except DatabaseError as e:
        out.failure = f"restore: {e}"
        out.check("pg_restore", False, str(e))
    else:
        wall = time.monotonic() - t
        out.phases["fetch_decrypt_decompress"] = round(producing, 3)
        out.phases["pg_restore"] = round(wall - producing, 3)
    out.bytes_restored = counted
    if out.failure:
        out.phases["restore_failed_after"] = round(time.monotonic() - t, 3)


def _verify(conninfo: postgres.Conninfo, manifest: dict, checks: tuple[str, ...], amcheck: bool, out: Outcome) -> None:
    ok = True
    with postgres.connect(conninfo) as conn:
        actual = postgres.count_rows(conn)
    expected = manifest["tables"]
    mismatched = {t: {"expected": n, "actual": actual.get(t)} for t, n in expected.items() if actual.get(t) != n}
    if mismatched:
        names = ", ".join(
            f"{t} (expected {v['expected']}, found {'no table' if v['actual'] is None else v['actual']})"
            for t, v in mismatched.items()
        )
        ok &= out.check("row_counts", False, f"differ from the manifest: {names}", mismatched=mismatched)
    else:
        out.check("row_counts", True, f"{len(expected)} tables match the manifest (counted in the dump's snapshot)")
    verify_checks(conninfo, checks, amcheck, out, ok, fresh="the restored database accepts a new connection")


def verify_checks(
    conninfo: postgres.Conninfo, checks: tuple[str, ...], amcheck: bool, out: Outcome, ok: bool, *, fresh: str
) -> None:
    """The checks both drill kinds run on the restored copy: the policy's queries, amcheck (None when
    amcheck is not installed) and a new connection; `ok` carries what the caller already found."""
    for i, query in enumerate(checks):
        passed, detail = postgres.run_check(conninfo, query)
        ok &= out.check(f"policy_check[{i}]", passed, detail, query=query)
    if amcheck:
        indexes_ok, detail = postgres.amcheck_indexes(conninfo)
        ok &= out.check("amcheck", indexes_ok, detail)
    try:
        with postgres.connect(conninfo) as conn:
            conn.execute("SELECT 1")
        out.check("fresh_connection", True, fresh)
    except DrtoolError as e:
        ok &= out.check("fresh_connection", False, str(e))
    if not ok:
        failed = [c["name"] for c in out.checks if c["ok"] is False]
        out.failure = "verify: failed checks: " + ", ".join(failed)
