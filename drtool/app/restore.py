"""Use cases: list, restore, verify."""

from __future__ import annotations

import itertools
import re
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from .. import catalog, catalog_index, clock, health, ledger, pgtools, pipeline, postgres
from ..dumpscan import DumpScanner
from ..errors import CheckFailed, DatabaseError, DrtoolError, IdentityError, IntegrityError, NotFound, UsageError
from ..policy import Policy
from . import checks, fanout, walview
from .base import _password_from_env
from .context import UseCase
from .outcome import Outcome


class RestoreJobs(UseCase):
    # -- list --------------------------------------------------------------------------------------
    def list_backups(self, policy: Policy, target: str | None = None) -> list[dict[str, Any]]:
        """Backups in a storage target (default: the primary), newest first, each with its
        `status` (ok, or damaged with the reason: objects missing, or a check found it so), the
        outcome of its latest drill and, on the primary, the copies not made yet. A manifest that
        cannot be used is listed with status `unreadable` and its error, after the others; with
        [signing].trusted_keys, one no trusted key signed with status `untrusted` and the reason."""
        store = self.ctx.store(policy, target=target)
        primary = store if target in (None, "primary") else self.ctx.store(policy)
        verifier = self.ctx.verifier(policy)
        indexed = self.ctx.read_index(policy, store, catalog_index.EVIDENCE if primary is store else ())
        listing = indexed.listing if indexed else catalog.scan(store, policy.name, verifier)
        if indexed is not None and primary is store:
            checks: ledger.CheckStates | None = indexed.checks
            problems = list(indexed.index.drills.get("problems") or [])
            drills_of = indexed.backup_drills
        else:
            records, problems = ledger.list_drill_records(primary, policy.name, verifier, self.ctx.warn)
            checks = ledger.read_checks(primary, policy.name, verifier, self.ctx.warn) if primary is store else None
            drills_of = _drills_from_records(records)
        for p in [*problems, *(checks.problems if checks else [])]:
            self.ctx.warn(p)
        # copies pending to the policy's copy targets: without one, there is nothing to read
        pending = ledger.read_copy_state(primary, policy.name, verifier, self.ctx.warn).pending if policy.copies else {}
        out = []
        for b in listing.backups:
            row = b.summary()
            row["kind"] = walview.kind(b)
            if (doc := walview.physical_doc(b)) is not None:
                row["physical"] = doc
            damage = b.damaged or (checks.reason(b.id) if checks else None)
            row["status"] = "damaged" if damage else "ok"
            if damage:
                row["damage"] = damage
            row["last_drill"], row["last_passed_drill_at"] = drills_of(b.id)
            row["target"] = target or "primary"
            if policy.copies:
                row["copies_pending"] = sorted(name for name, ids in pending.items() if b.id in ids)
            out.append(row)
        for u in listing.unreadable:
            self.ctx.warn(u.reason)
            out.append({"id": u.backup_id, "policy": policy.name, "status": "unreadable", "error": u.reason,
                        "target": target or "primary"})  # fmt: skip
        for t in listing.untrusted:
            self.ctx.warn(t.reason)
            out.append({"id": t.backup_id, "policy": policy.name, "status": "untrusted", "error": t.reason,
                        "target": target or "primary"})  # fmt: skip
        return out

    def list_fleet(self, policies: Sequence[Policy], target: str | None = None
                   ) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any] | None]]:  # fmt: skip
        """(list_backups, restorable_window) of each policy, in order, several policies read at once."""

        def one(policy: Policy) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
            rows = self.list_backups(policy, target=target)
            return rows, self.restorable_window(policy, rows, target=target)

        return fanout.in_order(one, policies, fanout.readers(policies), "list")

    def restorable_window(self, policy: Policy, rows: list[dict[str, Any]],
                          target: str | None = None) -> dict[str, Any] | None:  # fmt: skip
        """The restorable window of a policy (walview.window) from the rows list_backups gave:
        None when it has neither physical backups nor archived WAL."""
        backups = [(r["id"], r["physical"]) for r in rows
                   if r.get("kind") == "physical" and r.get("status") == "ok" and r.get("physical")]  # fmt: skip
        if not backups and not policy.pitr.enabled:
            return None  # no LIST of an archive that cannot exist (a fleet lists many policies)
        return walview.window(self.ctx.store(policy, target=target), policy.name, backups,
                              self.ctx.optional_identities(policy), self.ctx.warn)  # fmt: skip

    def _newest(self, store, policy: Policy) -> list[catalog.Backup]:
        """The newest listed (and trusted) backup, damaged or not: verify is how damage is found,
        or cleared."""
        listing = catalog.scan(store, policy.name, self.ctx.verifier(policy))
        backups = listing.backups
        for t in listing.untrusted:
            self.ctx.warn(f"{t.reason}; not verified")
        if not backups:
            raise DrtoolError(f"{store.url}: policy '{policy.name}' has no complete backup yet")
        return backups[:1]

    def find_backup(self, store, policy: Policy, backup_id: str | None, from_copy: str | None,
              kind: str = "logical") -> catalog.Backup:  # fmt: skip
        """The named backup, or the newest one of `kind` not known to be damaged (findings are
        about the primary's objects, so a copy target's newest is taken as listed)."""
        verifier = self.ctx.verifier(policy)
        if backup_id or from_copy:
            return catalog.find_backup(store, policy.name, backup_id, verifier=verifier, kind=kind)
        damaged = ledger.read_checks(store, policy.name, verifier, self.ctx.warn).reasons()

        def skipping(bid: str, why: str) -> None:  # the ones a check found damaged, as before
            if bid in damaged:
                self.ctx.warn(f"skipping backup {bid}: {why}")

        return catalog.find_backup(store, policy.name, None, damaged, verifier, kind, skipping)

    # -- restore -----------------------------------------------------------------------------------
    def restore(
        self,
        policy: Policy,
        target_dsn: str,
        *,
        backup_id: str | None = None,
        clean: bool = False,
        jobs: int = 1,
        target_password_env: str | None = None,
        from_copy: str | None = None,
        role: str | None = None,
        no_owner: bool = False,
        create: bool = False,
    ) -> dict[str, Any]:
        """A dump is SQL (functions, triggers, ownership) and runs with the privileges of whoever
        restores it: `role` (pg_restore --role, implying --no-owner) restores as that role.
        `create` creates the target database (owned by `role` when given) when it does not exist."""
        if _target_password_keys(target_dsn):
            raise UsageError(
                "--target carries a password, which would show in the process list; use "
                "--target-password-env NAME, PGPASSWORD or a .pgpass file"
            )
        if jobs < 1:
            raise UsageError("--jobs must be 1 or more")
        extra = _ownership_options(role, no_owner)
        target = postgres.Conninfo(target_dsn, _password_from_env(target_password_env, "--target-password-env"))
        store = self.ctx.store(policy, target=from_copy)
        backup = self.find_backup(store, policy, backup_id, from_copy)
        identities = self.ctx.identities(policy)
        pg_restore = pgtools.find_tool("pg_restore", policy.backup.pg_bin_dir)
        dump_major = int(str(backup.manifest["pg_dump_version"]).split(".")[0])
        if pg_restore.major < dump_major:
            raise DatabaseError(
                f"pg_restore {pg_restore.version} ({pg_restore.path}) cannot read a dump made by "
                f"pg_dump {backup.manifest['pg_dump_version']}"
            )
        created = self._ensure_target_database(target, create, role, backup.manifest.get("encoding"))
        with postgres.connect(target) as conn:
            if not clean and postgres.user_object_count(conn) > 0:
                raise DrtoolError(
                    f"target database {target.label} is not empty; restore into an empty "
                    "database, or pass --clean to replace what is there"
                )
        started = clock.utcnow()
        t0 = clock.monotonic()
        dkey = backup.prefix + backup.dump["key"]
        where = f"backup {backup.id}, object {store.url}/{dkey}"
        try:
            store.stat(dkey)
        except NotFound:
            raise IntegrityError(f"{where}: object is missing; this backup cannot be restored") from None
        plain = self.ctx.decoded(store, dkey, backup, identities, where)
        try:
            if jobs == 1:
                pgtools.restore_stream(pg_restore, target, plain, clean=clean, extra=extra)
            else:
                self._restore_parallel(pg_restore, target, plain, jobs=jobs, clean=clean, backup_id=backup.id,
                                       extra=extra)  # fmt: skip
        except DatabaseError as e:
            raise _with_ownership_hint(e, extra) from None
        restored = clock.monotonic() - t0
        with postgres.connect(target) as conn:
            actual = postgres.count_rows(conn)
        expected = backup.manifest["tables"]
        mismatched = {t: {"expected": n, "actual": actual.get(t)} for t, n in expected.items() if actual.get(t) != n}
        result = {
            "backup": backup.id,
            "target": target.label,
            "recovery_point": backup.manifest["recovery_point"],
            "started_at": clock.iso(started),
            "completed_at": clock.iso(clock.utcnow()),
            "restore_seconds": round(restored, 3),
            "jobs": jobs,
            "role": role,
            "no_owner": bool(role or no_owner),
            "created_database": created,
            "row_counts": {
                "tables": len(expected),
                "matched": len(expected) - len(mismatched),
                "mismatched": mismatched,
            },
        }
        if mismatched:
            names = ", ".join(f"{t} (expected {v['expected']}, found {v['actual']})" for t, v in mismatched.items())
            raise CheckFailed(f"restored {backup.id} into {target.label}, but row counts differ: {names}")
        return result

    @staticmethod
    def _ensure_target_database(target: postgres.Conninfo, create: bool, role: str | None,
                                encoding: str | None) -> bool:  # fmt: skip
        """True when this restore created the target database. A missing one without `create` is
        one line saying so and how to create it; a server that cannot be reached keeps its own error."""
        try:
            with postgres.connect(target):
                return False
        except DatabaseError as first:
            try:
                missing = not postgres.database_exists(target)
            except DatabaseError:
                raise first from None
            if not missing:
                raise
        if not create:
            owner = f" -O {role}" if role else ""
            raise DatabaseError(
                f"target database {target.label} does not exist; create it first (createdb{owner} "
                f"{target.dbname}, or CREATE DATABASE) or pass --create"
            )
        postgres.create_target_database(target, role, encoding)
        return True

    def _restore_parallel(self, pg_restore, target, plain: Iterator[bytes], *, jobs: int, clean: bool,
                          backup_id: str, extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        """Tables and their data stream in as with one job; then indexes and constraints
        (post-data, the part that parallelizes) are built by N jobs. pg_restore --jobs needs a
        seekable file, but post-data reads no data blocks: the archive's header and table of
        contents (a few KB, read first) are all it needs. When they cannot be found, the whole
        stream is restored with one job instead: slower, never wrong."""
        toc, head, why = _read_toc(plain)
        stream = itertools.chain([head], plain)
        if toc is None:
            self.ctx.warn(f"restore of {backup_id}: cannot read the archive's table of contents ({why}); "
                      f"restoring with one job instead of {jobs}")  # fmt: skip
            pgtools.restore_stream(pg_restore, target, stream, clean=clean, extra=extra)
            return
        # The file has no name (O_TMPFILE, or unlinked at once): however drtool ends, even by
        # SIGKILL, nothing is left behind. pg_restore and its workers open it as /dev/fd/N.
        with tempfile.TemporaryFile(prefix="drtool-restore-", suffix=".toc") as f:
            f.write(toc)
            f.flush()
            pgtools.restore_stream(pg_restore, target, stream, clean=clean, sections=("pre-data", "data"), extra=extra)
            fd = f.fileno()
            pgtools.PgRestore(
                pg_restore, target, jobs=jobs, clean=clean, path=f"/dev/fd/{fd}", pass_fds=(fd,),
                sections=("post-data",), extra=extra,
            ).finish()  # fmt: skip

    # -- verify --------------------------------------------------------------------------------------
    def verify(
        self,
        policy: Policy,
        *,
        backup_id: str | None = None,
        all_backups: bool = False,
        deep: bool | None = None,
    ) -> Outcome:
        """Re-read stored objects: SHA-256 always; with the identity also age authentication to
        the end and the zstd frame. The error is IntegrityError (exit 3) naming what is damaged;
        raises for what stops it before any backup is read (store, key, bad usage)."""
        store = self.ctx.store(policy)
        verifier = self.ctx.verifier(policy)
        self.ctx.signer(policy)  # its findings are signed: a key that does not load stops here
        unreadable: list[catalog.Unreadable | catalog.UntrustedBackup] = []
        if all_backups:
            listing = catalog.scan(store, policy.name, verifier)
            backups, unreadable = listing.backups, [*listing.unreadable, *listing.untrusted]
        else:
            backups = (
                [catalog.read_manifest(store, policy.name, backup_id, verifier)]
                if backup_id
                else self._newest(store, policy)
            )
        identities = None
        if deep is not False and policy.identity_file:
            identities = self.ctx.identities(policy)
        elif deep:
            raise UsageError(f"{policy.source}: encryption.identity_file is needed for a deep verify")
        kind = "deep-verify" if identities else "verify"
        results, problems, found = [], [], []
        for b in backups:
            entry = self._verify_one(store, policy, b, identities)
            if "finding" in entry:
                rec = checks.record_check(store, policy.name, b.id, kind, entry.pop("finding"), self.ctx.warn,
                                          self.ctx.signer(policy))  # fmt: skip
                found += [rec] if rec else []
            if not entry["ok"]:
                problems.append(entry["error"])
            results.append(entry)
        for u in unreadable:
            results.append({"id": u.backup_id, "object": u.key, "ok": False, "integrity": False, "authenticated": False,
                            "origin": None, "proved": "nothing", "error": u.reason,
                            "untrusted": isinstance(u, catalog.UntrustedBackup)})  # fmt: skip
            problems.append(u.reason)
        if found:
            self.ctx.update_index(policy, store, checks=found)
        if all_backups:  # the index is a cache of what was just read: any difference is named
            problems += self._index_differences(policy, store, listing)
        report = {
            "policy": policy.name,
            "verified": len(results),
            "damaged": len(problems),
            "backups": results,
        }
        wal, wal_problems = self._verify_wal(store, policy, backup_id, identities)
        if wal is not None:
            report["wal"] = wal
            problems.extend(wal_problems)
        return Outcome(report, IntegrityError("\n".join(problems)) if problems else None)

    def _index_differences(self, policy: Policy, store, listing: catalog.Listing) -> list[str]:
        """Where the catalog index disagrees with the manifests (a missing index is no problem: the
        next commit, or `drtool catalog rebuild`, makes it)."""
        index, why = catalog_index.read_for_verify(store, policy.name, self.ctx.verifier(policy))
        if index is None:
            if why and "is missing" not in why:
                return [f"{why} (`drtool catalog rebuild -p {policy.source}` makes it anew)"]
            return []
        where = f"{store.url}/{catalog_index.index_key(policy.name)}"
        return [f"{p} (`drtool catalog rebuild -p {policy.source}` makes it anew)"
                for p in catalog_index.compare(index, listing, where)]  # fmt: skip

    def _verify_wal(self, store, policy: Policy, backup_id: str | None,
                    identities) -> tuple[list[dict[str, Any]] | None, list[str]]:  # fmt: skip
        """The WAL chain from each listed physical backup (or the one named) to the newest archived
        segment; (None, []) when the policy has no physical backup."""
        if not policy.pitr.enabled:
            return None, []  # no second scan of a policy without PITR
        listing = catalog.scan(store, policy.name, self.ctx.verifier(policy))
        physical = [(b.id, doc) for b in listing.restorable if (doc := walview.physical_doc(b)) is not None
                    and (backup_id is None or b.id == backup_id)]  # fmt: skip
        if not physical:
            return None, []
        return walview.verify_chains(store, policy.name, physical, identities or self.ctx.optional_identities(policy),
                                     self.ctx.warn)  # fmt: skip

    def _verify_one(self, store, policy: Policy, b: catalog.Backup, identities) -> dict[str, Any]:
        """One backup's verify entry. `finding` (damage, or None for ok) is set when the result
        says something about the backup itself; a store that cannot be read says nothing."""
        obj = b.dump
        key = b.prefix + obj["key"]
        where = f"backup {b.id}, object {store.url}/{key}"
        entry = {"id": b.id, "object": key, "sha256": obj["sha256"], "authenticated": bool(identities),
                 "origin": {"signed_by": b.signed_by} if b.signed_by else None}  # fmt: skip
        try:
            if identities:
                for _ in self.ctx.decoded(store, key, b, identities, where):
                    pass
            else:
                with store.get(key) as raw:
                    digest, size = pipeline.hash_only(raw, self.ctx.progress(f"verify {b.id}", obj["size"]))
                if digest != obj["sha256"] or size != obj["size"]:
                    raise IntegrityError(
                        f"{where}: SHA-256 expected {obj['sha256']} ({obj['size']} bytes), "
                        f"actual {digest} ({size} bytes)"
                    )
            entry.update(ok=True, finding=None, integrity=True, proved=_proved(entry))
        except NotFound:
            entry.update(ok=False, error=f"{where}: object is missing")
            entry["finding"] = entry["error"]
        except IntegrityError as e:
            entry.update(ok=False, error=str(e), finding=str(e))
        except IdentityError:
            raise  # the key at hand, not any one backup: one error for the whole command
        except DrtoolError as e:  # the store failed, not the backup, not the backup: no finding
            entry.update(ok=False, error=f"{where}: could not be verified: {e}")
        if not entry["ok"]:
            entry.update(integrity=False, authenticated=False, proved="nothing")
        return entry


def _drills_from_records(records: list[dict[str, Any]]):
    """backup id -> (its newest drill that ran, completed_at of its newest passed one), from the
    drill records (newest first); a drill that could not run says nothing about the backup."""
    mine: dict[str, list[dict[str, Any]]] = {}
    for r in health.drills_that_ran(records):
        mine.setdefault(r.get("backup_id") or "", []).append(r)

    def of(backup_id: str) -> tuple[dict[str, Any] | None, str | None]:
        ran = mine.get(backup_id, [])
        last = {"drill_id": ran[0]["drill_id"], "started_at": ran[0]["started_at"], "passed": ran[0]["passed"]} \
            if ran else None  # fmt: skip
        passed = next((r for r in ran if r.get("passed")), None)
        return last, passed["completed_at"] if passed else None

    return of


def _proved(entry: dict[str, Any]) -> str:
    """What a verify that passed proved, in words: never origin without a trusted signature."""
    parts = ["integrity (SHA-256 of the stored bytes matches the manifest)"]
    if entry["authenticated"]:
        parts.append("decryptability (age authentication to the end with the identity)")
    if entry["origin"]:
        parts.append(f"origin (manifest signed by trusted key {entry['origin']['signed_by']})")
    else:
        parts.append("origin NOT verified (no [signing].trusted_keys)")
    return "; ".join(parts)


_REFUSED_FOR_OWNERSHIP = re.compile(r"must be member of role|must be owner of|permission denied for schema")


def _with_ownership_hint(e: DatabaseError, ownership_options: tuple[str, ...]) -> DatabaseError:
    """pg_restore keeps the dump's owners by default, which only a superuser (or a member of every
    owner role, with CREATE on their schemas) may do: say how a non-superuser restores."""
    if ownership_options or not _REFUSED_FOR_OWNERSHIP.search(str(e)):
        return e
    return DatabaseError(f"{e}; restoring as a non-superuser: pass --role ROLE (objects owned by ROLE) or "
                         "--no-owner (owned by the connecting user)")  # fmt: skip


def _ownership_options(role: str | None, no_owner: bool) -> tuple[str, ...]:
    """pg_restore options: --role restores as that role (SET ROLE), and implies --no-owner, since
    ALTER ... OWNER TO the dump's owners needs membership in those roles."""
    if role is not None and (not role.strip() or "\0" in role):
        raise UsageError("--role needs a role name")
    if role:
        return ("--no-owner", f"--role={role}")
    return ("--no-owner",) if no_owner else ()


TOC_CAPTURE_LIMIT = 16 << 20  # the header and table of contents are a few KB, even large schemas a few MB


def _read_toc(pieces: Iterator[bytes]) -> tuple[bytes | None, bytes, str]:
    """Read the archive's start until its table of contents ends: (toc, head, why). toc is the
    archive's header and table of contents, or None when they cannot be found (the scanner does
    not know the archive, or TOC_CAPTURE_LIMIT bytes passed first; why says which). head is every
    byte read so far, to be restored before the rest of `pieces`; memory stays bounded."""
    scanner, head = DumpScanner(), bytearray()
    for piece in pieces:
        head += piece
        scanner.feed(piece)
        if scanner.info.toc_end is not None:
            return bytes(head[: scanner.info.toc_end]), bytes(head), ""
        if scanner.failure:
            return None, bytes(head), str(scanner.failure)
        if len(head) > TOC_CAPTURE_LIMIT:
            return None, bytes(head), f"no table of contents in the first {TOC_CAPTURE_LIMIT >> 20} MiB"
    return None, bytes(head), "the archive ended before its table of contents did"


def _target_password_keys(dsn: str) -> list[str]:
    """The keywords of --target that carry a password, as libpq parses it (?%70assword= included)."""
    try:
        return postgres.dsn_password_keys(dsn)
    except ValueError as e:
        raise UsageError(f"--target {e}") from None
