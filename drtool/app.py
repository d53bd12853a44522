"""Use cases: backup, list, restore, verify, check, keygen.

The only layer that wires adapters together: builds stores, reads the clock, loads secrets.
It never prints; results are plain dicts the CLI renders (and --json emits as they are).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import (
    __version__,
    catalog,
    clock,
    drills,
    health,
    locks,
    metrics,
    notify,
    objectives,
    pipeline,
    postgres,
    reports,
    retention,
    scheduler,
    scratch,
)
from .crypto import age
from .dumpscan import BackgroundScanner, DumpScanner, UnsupportedArchive
from .errors import (
    CheckFailed,
    DatabaseError,
    DrtoolError,
    IdentityError,
    IntegrityError,
    NotFound,
    PreconditionFailed,
    RetainedByLock,
    StorageError,
    UsageError,
)
from .policy import Policy, StorageTarget
from .secrets import Secret, dsn_has_password
from .storage import LocalStore, Store, open_store, put_bytes

Progress = Callable[[int], None]
ProgressFactory = Callable[[str, int | None], Progress]  # (label, expected total) -> callback


def _no_progress(label: str, total: int | None) -> Progress:
    return lambda n: None


@dataclass
class App:
    progress: ProgressFactory = _no_progress
    warn: Callable[[str], None] = lambda msg: None
    command_t0: float | None = None  # monotonic time the command began (drill records its duration)
    lock_wait: float = 0  # seconds to wait for a policy lock held by another process
    incomplete_grace: float = 6 * 3600  # an unfinished backup younger than this may still be running

    # -- notifications: never fail the job ------------------------------------------------------
    def _url(self, policy: Policy, env: str | None) -> Secret | None:
        value = os.environ.get(env) if env else None
        if env and not value:
            self.warn(f"{policy.source}: notify: environment variable {env} is not set; not notifying")
        return Secret(value) if value else None

    def notify_start(self, policy: Policy) -> None:
        url = self._url(policy, policy.notify.heartbeat_url_env)
        if url and (err := notify.heartbeat(url, "start", policy.notify.timeout)):
            self.warn(err)

    def notify_outcome(self, policy: Policy, job: str, ok: bool, summary: str, details: dict | None = None) -> None:
        n = policy.notify
        hb = self._url(policy, n.heartbeat_url_env)
        if hb and (err := notify.heartbeat(hb, "ok" if ok else "fail", n.timeout)):
            self.warn(err)
        if not ok or n.on_success:
            hook = self._url(policy, n.webhook_url_env)
            mark = "succeeded" if ok else "FAILED"
            payload = {"text": f"drtool {job} of {policy.name} {mark}: {summary}", "policy": policy.name,
                       "job": job, "ok": ok, "host": socket.gethostname(), "at": clock.iso(clock.utcnow()),
                       "details": details or {}}  # fmt: skip
            if hook and (err := notify.webhook(hook, payload, n.timeout)):
                self.warn(err)

    @contextmanager
    def reported(self, policy: Policy, job: str) -> Iterator[dict]:
        """Heartbeat start, then ok or fail and a webhook for the job's outcome. The block may
        set result["ok"] = False (a drill that ran and failed) and result["summary"]."""
        result: dict[str, Any] = {"ok": True, "summary": "done"}
        self.notify_start(policy)
        try:
            yield result
        except DrtoolError as e:
            self.notify_outcome(policy, job, False, str(e))
            raise
        self.notify_outcome(policy, job, result["ok"], result["summary"], result.get("details"))

    @contextmanager
    def locked(self, policy: Policy, store: Store, job: str) -> Iterator[locks.Lock]:
        """Hold the policy's lock (one job at a time per policy, across hosts) for the block."""
        lock = locks.acquire(store, policy.name, job, wait=self.lock_wait, now=clock.utcnow, on_wait=self.warn)
        if "took_over" in lock.body:
            self.warn(f"took over a stale lock of policy '{policy.name}': {lock.body['took_over']}")
        try:
            yield lock
        finally:
            locks.release(store, lock)

    # -- building blocks -----------------------------------------------------------------------
    def target(self, policy: Policy, name: str | None) -> StorageTarget:
        """The primary storage target, or the copy target with that name."""
        if name in (None, "primary"):
            return policy.storage
        for c in policy.copies:
            if c.name == name:
                return c
        names = ", ".join(["primary", *(c.name for c in policy.copies)])
        raise UsageError(f"{policy.source}: no storage target named '{name}' (known: {names})")

    def store(self, policy: Policy, *, create: bool = False, target: str | None = None) -> Store:
        spec = self.target(policy, target)
        store = open_store(spec)
        if isinstance(store, LocalStore):
            if create:
                try:
                    store.root.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise StorageError(f"{store.url}: cannot create the store folder: {e.strerror}") from None
            else:
                store.check_root()
        else:
            store.check_bucket()  # some servers create missing buckets on write: refuse that
            if spec.object_lock_days:
                usable, detail = store.lock_status()
                if not usable:
                    raise StorageError(f"{store.url}: storage.object_lock_days is set, but {detail}")
        return store

    def source(self, policy: Policy) -> postgres.Conninfo:
        return postgres.Conninfo(policy.dsn, _password_from_env(policy.password_env, "database.password_env"))

    def identities(self, policy: Policy) -> list[age.Identity]:
        path = policy.identity_file
        if not path:
            raise UsageError(
                f"{policy.source}: encryption.identity_file is not set; the private key is "
                "needed to restore or deep-verify"
            )
        try:
            st = os.stat(path)
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise IdentityError(f"identity file {path} does not exist (encryption.identity_file)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise IdentityError(f"identity file {path} cannot be read: {getattr(e, 'strerror', e)}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            self.warn(f"identity file {path} is readable by other users; chmod 600 it")
        try:
            return age.parse_identity_file(text)
        except ValueError as e:
            raise IdentityError(f"identity file {path}: {e}") from None

    # -- keygen ----------------------------------------------------------------------------------
    def keygen(self, output: str) -> dict[str, Any]:
        ident = age.Identity.generate()
        path = Path(output)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise UsageError(f"{path} already exists; refusing to overwrite a key") from None
        except OSError as e:
            raise UsageError(f"cannot create {path}: {e.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(age.keygen_text(ident, clock.utcnow()))
        return {"identity_file": str(path), "recipient": ident.recipient}

    # -- backup ----------------------------------------------------------------------------------
    def backup(self, policy: Policy) -> dict[str, Any]:
        """Take one backup now; returns its manifest. Nothing is listed unless everything worked.

        If a table is dropped between our snapshot and pg_dump's lock on it, pg_dump fails; the
        attempt leaves nothing behind and one more attempt runs with a fresh snapshot.
        """
        with self.reported(policy, "backup") as outcome:
            store = self.store(policy, create=True)
            with self.locked(policy, store, "backup"):
                m = self._backup(policy, store)
            outcome.update(summary=f"backup {m['id']} ({m['sizes']['stored_bytes']} bytes stored)",
                           details={"backup_id": m["id"], "copies": m.get("copies")})  # fmt: skip
            return m

    def _backup(self, policy: Policy, store: Store) -> dict[str, Any]:
        try:
            manifest = self._backup_once(policy, store)
        except postgres.ConcurrentDDL as e:
            self.warn(f"backup {policy.name}: {e}; a table was dropped while the backup started, retrying once")
            manifest = self._backup_once(policy, store)
        if policy.copies:
            manifest = {**manifest, "copies": self._copy_pending(policy, store, new=manifest["id"])}
        return manifest

    # -- copies: each committed backup, replicated to every [[storage.copies]] target ----------------
    def _copy_pending(self, policy: Policy, primary: Store, new: str | None = None) -> dict[str, str]:
        """Copy `new` and every earlier copy that failed to each copy target; a failure is kept
        in the store's state and retried on the next run. Returns {target: "ok" | error}."""
        state = catalog.read_copy_state(primary, policy.name)
        outcome: dict[str, str] = {}
        for target in policy.copies:
            pending = state["pending"].setdefault(target.name, {})
            if new:
                pending.setdefault(new, {"attempts": 0})
            if not pending:
                continue
            try:
                dst = self.store(policy, create=True, target=target.name)
                _check_region(dst, target)
                for bid in sorted(pending):
                    self._copy_one(policy, primary, dst, target, bid)
                    del pending[bid]
                outcome[target.name] = "ok"
            except DrtoolError as e:
                for info in pending.values():
                    info.update(
                        attempts=info.get("attempts", 0) + 1, last_error=str(e), last_attempt=clock.iso(clock.utcnow())
                    )
                outcome[target.name] = f"failed: {e}"
                self.warn(f"copy to '{target.name}' failed, will retry on the next run: {e}")
        catalog.write_copy_state(primary, policy.name, state)
        return outcome

    def _copy_one(self, policy: Policy, src: Store, dst: Store, target: StorageTarget, backup_id: str) -> None:
        """Stream one backup's objects to dst, checking each SHA-256 on the way; manifest last."""
        try:
            backup = catalog.read_manifest(src, policy.name, backup_id)
        except UsageError:
            return  # pruned before it could be copied: nothing to do
        prefix = catalog.backup_prefix(policy.name, backup_id)
        method = "streamed"
        for obj in backup.manifest["objects"]:
            key = prefix + obj["key"]
            copy_from = getattr(dst, "copy_from", None)
            if copy_from is not None and type(src) is type(dst) and copy_from(src, key, obj["size"], retain=True):
                method = "server-side"  # same endpoint: the provider copies; the size is checked
                continue
            with src.get(key) as raw:
                reader = pipeline.HashingReader(raw)
                dst.put(key, iter(lambda r=reader: r.read(1 << 20), b""), size_hint=obj["size"], retain=True)
            if reader.hexdigest() != obj["sha256"]:
                dst.delete(key)
                raise IntegrityError(f"backup {backup_id}, object {src.url}/{key}: SHA-256 expected {obj['sha256']}, "
                                     f"read {reader.hexdigest()} while copying; not copied")  # fmt: skip
        copy = dict(backup.manifest)
        copy["copy"] = {"target": target.name, "source": src.url, "copied_at": clock.iso(clock.utcnow()),
                        "method": method}  # fmt: skip
        catalog.write_manifest(dst, copy)  # the copy's own commit marker, written last

    def _backup_once(self, policy: Policy, store: Store) -> dict[str, Any]:
        started = clock.utcnow()
        backup_id = catalog.new_backup_id(started)
        ci = self.source(policy)
        pg_dump = postgres.find_tool("pg_dump", policy.backup.pg_bin_dir)
        key = catalog.dump_key(policy.name, backup_id)
        with postgres.exported_snapshot(ci) as (conn, snap):
            postgres.require_compatible(pg_dump, snap)
            scanner = BackgroundScanner()
            stats = pipeline.EncodeStats()
            stream = pipeline.encode(
                postgres.pg_dump_stream(pg_dump, ci, snap.snapshot_id),
                recipients=policy.recipients,
                level=policy.backup.zstd_level,
                threads=policy.backup.zstd_threads,
                stats=stats,
                observe=scanner.feed,
                progress=self.progress(f"backup {policy.name}", snap.database_size),
            )
            try:
                stored = store.put(key, stream, size_hint=snap.database_size * 2, retain=True)
            except BaseException:
                scanner.abort()
                raise
            try:
                try:
                    info = scanner.finish()
                    tables, method = info.row_counts(), "dump-stream"
                except UnsupportedArchive as e:
                    self.warn(f"counting rows with count(*) in the dump's snapshot: {e}")
                    tables, method = postgres.count_rows(conn), "count(*)"
                completed = clock.utcnow()
                manifest = {
                    "format": catalog.MANIFEST_FORMAT,
                    "version": catalog.MANIFEST_VERSION,
                    "id": backup_id,
                    "policy": policy.name,
                    "database": snap.database,
                    "encoding": snap.encoding,
                    "source": ci.label,
                    "host": socket.gethostname(),
                    "server_version": snap.server_version,
                    "server_version_num": snap.server_version_num,
                    "pg_dump_version": pg_dump.version,
                    "recovery_point": clock.iso(snap.recovery_point),
                    "started_at": clock.iso(started),
                    "completed_at": clock.iso(completed),
                    "sizes": {
                        "database_bytes": snap.database_size,
                        "plain_bytes": stats.plain_bytes,
                        "compressed_bytes": stats.compressed_bytes,
                        "stored_bytes": stored.size,
                    },
                    "objects": [
                        {
                            "role": "dump",
                            "key": catalog.DUMP_NAME,
                            "size": stored.size,
                            "sha256": stats.sha256,
                        }
                    ],
                    "payload_format": catalog.PAYLOAD_FORMAT,
                    "compression": {"algorithm": "zstd", "level": policy.backup.zstd_level},
                    "encryption": {
                        "scheme": "age-v1-x25519",
                        "recipients": [
                            {"recipient": r, "fingerprint": age.recipient_fingerprint(r)} for r in policy.recipients
                        ],
                    },
                    "tables": tables,
                    "row_count_method": method,
                    "tool": {"name": "drtool", "version": __version__},
                }
                catalog.write_manifest(store, manifest)  # the commit marker, written last
            except BaseException:
                store.delete(key)
                raise
        return manifest

    # -- run: what cron/systemd calls -------------------------------------------------------------
    def run(self, policy: Policy, *, dry_run: bool = False, now: Callable[[], Any] = clock.utcnow) -> dict[str, Any]:
        """Do whatever `[schedule]` says is due for this policy, each job at most once per slot.
        The schedule state lives in the store, read and written under the policy lock, so any
        host can run this and two concurrent runs do each slot once."""
        jobs = {j: getattr(policy.schedule, j) for j in scheduler.JOBS if getattr(policy.schedule, j)}
        result: dict[str, Any] = {"policy": policy.name, "jobs": {}}
        if not jobs and not policy.copies:
            result["note"] = "no [schedule] entries: nothing to run"
            return result
        store = self.store(policy, create=True)
        tz = policy.schedule.timezone
        if dry_run:
            state = catalog.read_schedule_state(store, policy.name)
            t = now()
            for job, expr in jobs.items():
                d = scheduler.due(expr, tz, _last_slot(state, job), t)
                result["jobs"][job] = {
                    "cron": expr,
                    "due": d is not None,
                    "slot": clock.iso(d.slot) if d else None,
                    "missed": d.missed if d else 0,
                    "next": [clock.iso(x) for x in scheduler.next_times(expr, tz, t)],
                }
            return result
        try:
            with self.locked(policy, store, "run"):
                self._run_due(policy, store, jobs, now, result)
        except locks.LockBusy as e:
            result["skipped"] = f"another job holds the lock: {locks.describe(e.holder)}"
        return result

    def _run_due(self, policy: Policy, store: Store, jobs: dict[str, str], now, result: dict) -> None:
        tz = policy.schedule.timezone
        state = catalog.read_schedule_state(store, policy.name)  # read under the lock
        for job, expr in jobs.items():
            t = now()
            d = scheduler.due(expr, tz, _last_slot(state, job), t)
            if d is None:
                result["jobs"][job] = {"due": False}
                continue
            entry = state["jobs"].setdefault(job, {})
            entry.update(last_slot=clock.iso(d.slot), last_attempt=clock.iso(t), last_missed=d.missed)
            entry["missed_total"] = entry.get("missed_total", 0) + d.missed
            outcome: dict[str, Any] = {"due": True, "slot": clock.iso(d.slot), "missed": d.missed}
            self.notify_start(policy)
            try:
                outcome.update(self._run_job(policy, store, job))
            except DrtoolError as e:
                outcome.update(outcome="failed", error=str(e), exit_code=e.exit_code)
            ok = outcome["outcome"] == "ok"
            self.notify_outcome(policy, job, ok, outcome.get("summary") if ok else outcome.get("error", ""),
                                {"slot": outcome["slot"], "missed": d.missed})  # fmt: skip
            entry.update(last_outcome=outcome["outcome"], last_message=outcome.get("error") or outcome.get("summary"))
            if outcome["outcome"] == "ok":
                entry["last_success"] = clock.iso(t)
            catalog.write_schedule_state(store, policy.name, state)
            result["jobs"][job] = outcome
        if policy.copies and catalog.read_copy_state(store, policy.name)["pending"]:
            copies = self._copy_pending(policy, store)
            failed = {k: v for k, v in copies.items() if v != "ok"}
            entry: dict[str, Any] = {"due": True, "slot": None, "missed": 0}
            if failed:
                error = "; ".join(f"{k}: {v}" for k, v in failed.items())
                entry.update(outcome="failed", error=error, exit_code=1)
            else:
                entry.update(outcome="ok", summary=f"copied to {', '.join(copies)}")
            result["jobs"]["copies"] = entry

    def _run_job(self, policy: Policy, store: Store, job: str) -> dict[str, Any]:
        if job == "backup":
            m = self._backup(policy, store)
            return {"outcome": "ok", "summary": f"backup {m['id']}", "backup_id": m["id"]}
        if job == "prune":
            r = self._prune(policy, store, dry_run=False)
            failed = [name for name, x in r.get("copies", {}).items() if "error" in x]
            if failed:
                return {"outcome": "failed", "error": f"prune of copy targets failed: {', '.join(failed)}",
                        "exit_code": 1}  # fmt: skip
            return {"outcome": "ok", "summary": f"kept {r['kept']}, deleted {r['deleted']}"}
        started, t0 = clock.utcnow(), clock.monotonic()
        src = policy.drill.from_copy
        rec = self._drill(policy, store, None, started, t0, source=self.store(policy, target=src) if src else None,
                          source_name=src)  # fmt: skip
        good = rec["passed"] and rec["rpo_met"] is not False
        return {"outcome": "ok" if good else "failed", "summary": f"drill {rec['drill_id']}",
                "error": None if good else rec["failure"] or "RPO objective missed",
                "exit_code": 0 if good else 3, "drill_id": rec["drill_id"]}  # fmt: skip

    # -- prune ---------------------------------------------------------------------------------
    def prune(self, policy: Policy, *, dry_run: bool = False) -> dict[str, Any]:
        """Apply retention (with its safety floors) and clean up failed or interrupted backups
        older than the grace period. Under the policy lock, so no backup runs meanwhile."""
        store = self.store(policy)
        with self.locked(policy, store, "prune"):
            return self._prune(policy, store, dry_run)

    def _prune(self, policy: Policy, store: Store, dry_run: bool) -> dict[str, Any]:
        """Retention on the primary, then on each copy target with the same rules."""
        records, problems = catalog.list_drill_records(store, policy.name)
        for p in problems:
            self.warn(p)
        passed = frozenset(r["backup_id"] for r in records if r.get("passed"))
        result = self._prune_target(policy, store, dry_run, passed)
        if policy.copies:
            result["copies"] = {}
            for c in policy.copies:
                try:
                    result["copies"][c.name] = self._prune_target(
                        policy, self.store(policy, target=c.name), dry_run, passed
                    )
                except DrtoolError as e:
                    result["copies"][c.name] = {"error": str(e)}
                    self.warn(f"prune of copy target '{c.name}' failed, will retry on the next run: {e}")
        return result

    def _prune_target(self, policy: Policy, store: Store, dry_run: bool, passed: frozenset[str]) -> dict[str, Any]:
        now = clock.utcnow()
        backups = catalog.list_backups(store, policy.name)
        decisions = retention.apply(
            [retention.Candidate(b.id, b.recovery_point) for b in backups],
            policy.retention,
            now,
            policy.schedule.timezone,
            passed,
        )
        rows = []
        for d in decisions:
            rows.append({"id": d.backup_id, "recovery_point": clock.iso(d.recovery_point),
                         "action": "keep" if d.keep else "delete", "reasons": d.reasons})  # fmt: skip
            if not d.keep and not dry_run:
                prefix = catalog.backup_prefix(policy.name, d.backup_id)
                try:
                    store.delete(prefix + catalog.MANIFEST_NAME)  # first: from here on it is not a backup
                    for obj in store.list(prefix):
                        store.delete(obj.key)
                except RetainedByLock as e:  # deleted by a later prune, once the lock expires
                    rows[-1]["action"] = "retained-by-lock"
                    rows[-1]["reasons"].append(f"Object Lock retains it until {e.until}; deleted after that")
        incomplete = self._incomplete(policy, store, {b.id for b in backups}, now, dry_run)
        return {
            "policy": policy.name,
            "dry_run": dry_run,
            "rules": {k: v for k, v in vars(policy.retention).items() if v},
            "backups": rows,
            "incomplete": incomplete,
            "kept": sum(r["action"] == "keep" for r in rows),
            "deleted": sum(r["action"] == "delete" for r in rows),
            "retained_by_lock": sum(r["action"] == "retained-by-lock" for r in rows),
        }

    def _incomplete(self, policy: Policy, store: Store, complete: set[str], now, dry_run: bool) -> list[dict]:
        """Folders of backups that never committed (no manifest), and their unfinished uploads."""
        base = f"{policy.name}/backups/"
        groups: dict[str, dict[str, list]] = {}
        for obj in store.list(base):
            bid = obj.key[len(base) :].split("/", 1)[0]
            if bid not in complete:
                groups.setdefault(bid, {"objects": [], "leftovers": []})["objects"].append(obj)
        for left in store.leftovers(base):
            bid = left.key[len(base) :].split("/", 1)[0]
            groups.setdefault(bid, {"objects": [], "leftovers": []})["leftovers"].append(left)
        out = []
        for bid, g in sorted(groups.items()):
            started = catalog.backup_started(bid) or min(
                [o.modified for o in g["objects"] if o.modified] + [x.started for x in g["leftovers"]], default=now
            )
            age = (now - started).total_seconds()
            entry = {"id": bid, "objects": len(g["objects"]), "unfinished_uploads": len(g["leftovers"]),
                     "started": clock.iso(started)}  # fmt: skip
            if age < self.incomplete_grace:
                entry.update(action="keep", reason="unfinished and younger than the grace period: may still be running")
            else:
                entry.update(action="delete", reason="failed or interrupted backup (no manifest)")
                if not dry_run:
                    for obj in g["objects"]:
                        store.delete(obj.key)
                    for left in g["leftovers"]:
                        store.discard(left)
            out.append(entry)
        return out

    # -- list --------------------------------------------------------------------------------------
    def list(self, policy: Policy, target: str | None = None) -> list[dict[str, Any]]:
        """Complete backups in a storage target (default: the primary), newest first, each with
        the outcome of its latest drill and, on the primary, the copies not made yet."""
        store = self.store(policy, target=target)
        primary = store if target in (None, "primary") else self.store(policy)
        records, problems = catalog.list_drill_records(primary, policy.name)
        for p in problems:
            self.warn(p)
        pending = catalog.read_copy_state(primary, policy.name)["pending"]
        out = []
        for b in catalog.list_backups(store, policy.name):
            row = b.summary()
            mine = [r for r in records if r.get("backup_id") == b.id]  # newest first
            row["last_drill"] = (
                {"drill_id": mine[0]["drill_id"], "started_at": mine[0]["started_at"], "passed": mine[0]["passed"]}
                if mine
                else None
            )
            passed = next((r for r in mine if r.get("passed")), None)
            row["last_passed_drill_at"] = passed["completed_at"] if passed else None
            row["target"] = target or "primary"
            if policy.copies:
                row["copies_pending"] = sorted(name for name, ids in pending.items() if b.id in ids)
            out.append(row)
        return out

    # -- drill -----------------------------------------------------------------------------------
    def drill(self, policy: Policy, *, backup_id: str | None = None, from_copy: str | None = None) -> dict[str, Any]:
        """Restore a backup into a scratch database, verify it, measure RPO and RTO, and store the
        record. Returns the record; `passed` and `rpo_met` say how it went. Raises only when the
        drill could not run (no server binaries, no identity, store unreachable)."""
        started = clock.utcnow()
        t0 = clock.monotonic()  # the RTO clock: finding the backup is part of a real recovery
        dr = policy.drill
        if dr.target_dsn and postgres.same_database(dr.target_dsn, policy.dsn):
            raise UsageError(f"{policy.source}: drill.target_dsn names the source database itself; a drill "
                             "must restore somewhere else")  # fmt: skip
        store = self.store(policy)
        from_copy = from_copy or policy.drill.from_copy
        source = self.store(policy, target=from_copy) if from_copy else store
        with self.reported(policy, "drill") as outcome, self.locked(policy, store, "drill"):
            rec = self._drill(policy, store, backup_id, started, t0, source=source, source_name=from_copy)
            outcome.update(ok=rec["passed"] and rec["rpo_met"] is not False,
                           summary=f"drill {rec['drill_id']}: " + (rec["failure"] or "passed"),
                           details={"drill_id": rec["drill_id"], "rto_seconds": rec["rto_seconds"]})  # fmt: skip
            return rec

    def _drill(
        self,
        policy: Policy,
        store: Store,
        backup_id: str | None,
        started,
        t0: float,
        *,
        source: Store | None = None,
        source_name: str | None = None,
    ) -> dict[str, Any]:
        """Drill a backup fetched from `source` (a copy target, or the primary); the record is
        written to the primary `store`, where all evidence of the policy lives."""
        dr = policy.drill
        source = source or store
        backups = catalog.list_backups(source, policy.name)
        if backup_id:
            backup = catalog.read_manifest(source, policy.name, backup_id)
        elif not backups:
            raise DrtoolError(f"{source.url}: policy '{policy.name}' has no complete backup to drill")
        else:
            backup = random.choice(backups) if dr.pick == "random" else backups[0]
        m = backup.manifest
        identities = self.identities(policy)
        drill_id = catalog.new_backup_id(started)
        major = postgres.server_major(int(m["server_version_num"]))
        if dr.target_dsn:
            if dsn_has_password(dr.target_dsn):
                raise UsageError(f"{policy.source}: drill.target_dsn carries a password")
            server = postgres.Conninfo(dr.target_dsn, _password_from_env(dr.target_password_env,
                                                                         "drill.target_password_env"))  # fmt: skip
            target = drills.Target("server", server=server)
            pg_restore = postgres.find_tool("pg_restore", policy.backup.pg_bin_dir)
        else:
            bin_dir, version = scratch.find_server_bin(major, dr.pg_bin_dir)
            target = drills.Target("scratch", bin_dir=bin_dir, version=version)
            pg_restore = postgres.find_tool("pg_restore", str(bin_dir))
        dkey = catalog.backup_prefix(policy.name, backup.id) + backup.dump["key"]
        where = f"backup {backup.id}, object {source.url}/{dkey}"
        outcome = drills.run(
            manifest=m,
            target=target,
            pieces=lambda: self._decoded(source, dkey, backup, identities, where),
            pg_restore=pg_restore,
            checks=dr.checks,
            amcheck=dr.amcheck,
            drill_id=drill_id,
            t0=t0,
        )
        completed = clock.utcnow()
        rpo = (started - backup.recovery_point).total_seconds()
        points = [objectives.Point(b.id, b.recovery_point, clock.parse_iso(b.manifest["completed_at"]))
                  for b in backups]  # fmt: skip
        worst = objectives.worst_rpo(points, started)
        rto = outcome.rto_seconds
        rto_met = None if policy.rto is None or rto is None else rto <= policy.rto
        failure = outcome.failure
        if failure is None and rto_met is False:
            failure = f"RTO {rto:.1f}s exceeds objectives.rto ({policy.rto}s)"
        record = {
            "format": catalog.DRILL_FORMAT,
            "version": catalog.DRILL_VERSION,
            "drill_id": drill_id,
            "policy": policy.name,
            "backup_id": backup.id,
            "storage_target": source_name or "primary",
            "backup_recovery_point": m["recovery_point"],
            "backup_stored_bytes": m["sizes"]["stored_bytes"],
            "bytes_restored": outcome.bytes_restored,
            "source_server_version": m["server_version"],
            "target": {
                "kind": target.kind,
                "label": outcome.target_label,
                "server_version": target.version or None,
            },  # fmt: skip
            "host": socket.gethostname(),
            "tool": {"name": "drtool", "version": __version__},
            "started_at": clock.iso(started),
            "completed_at": clock.iso(completed),
            "phases": outcome.phases,
            "checks": outcome.checks,
            "rpo_seconds": round(rpo, 3),
            "rto_seconds": rto,
            "objectives": {"rpo_seconds": policy.rpo, "rto_seconds": policy.rto},
            "rpo_met": None if policy.rpo is None else rpo <= policy.rpo,
            "rto_met": rto_met,
            "worst_rpo": None
            if worst is None
            else {
                "seconds": round(worst.seconds, 3),
                "from": clock.iso(worst.start),
                "to": clock.iso(worst.end),
                "after_backup": worst.after_backup,
                "backups_considered": len(points),
            },
            "passed": failure is None,
            "failure": failure,
        }
        # the whole command so far (interpreter start-up included), to compare with a stopwatch outside
        age = clock.process_age()
        if age is None and self.command_t0 is not None:
            age = clock.monotonic() - self.command_t0
        record["command_seconds"] = None if age is None else round(age, 3)
        catalog.write_drill_record(store, record)
        return record

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
    ) -> dict[str, Any]:
        if dsn_has_password(target_dsn):
            raise UsageError(
                "--target carries a password, which would show in the process list; use "
                "--target-password-env NAME, PGPASSWORD or a .pgpass file"
            )
        if jobs < 1:
            raise UsageError("--jobs must be 1 or more")
        target = postgres.Conninfo(target_dsn, _password_from_env(target_password_env, "--target-password-env"))
        store = self.store(policy, target=from_copy)
        backup = catalog.find_backup(store, policy.name, backup_id)
        identities = self.identities(policy)
        pg_restore = postgres.find_tool("pg_restore", policy.backup.pg_bin_dir)
        dump_major = int(str(backup.manifest["pg_dump_version"]).split(".")[0])
        if pg_restore.major < dump_major:
            raise DatabaseError(
                f"pg_restore {pg_restore.version} ({pg_restore.path}) cannot read a dump made by "
                f"pg_dump {backup.manifest['pg_dump_version']}"
            )
        with postgres.connect(target) as conn:
            if not clean and postgres.user_object_count(conn) > 0:
                raise DrtoolError(
                    f"target database {target.label} is not empty; restore into an empty "
                    "database, or pass --clean to replace what is there"
                )
        started = clock.utcnow()
        t0 = clock.monotonic()
        dkey = catalog.backup_prefix(policy.name, backup.id) + backup.dump["key"]
        where = f"backup {backup.id}, object {store.url}/{dkey}"
        plain = self._decoded(store, dkey, backup, identities, where)
        if jobs == 1:
            postgres.restore_stream(pg_restore, target, plain, clean=clean)
        else:
            # Tables and their data stream in as with one job; then indexes and constraints
            # (post-data, the part that parallelizes) are built by N jobs. pg_restore --jobs needs
            # a seekable file, but post-data needs no data blocks: the archive's header and table
            # of contents (a few KB, captured on the way) are all it reads.
            with tempfile.NamedTemporaryFile(prefix="drtool-restore-", suffix=".toc") as f:
                postgres.restore_stream(
                    pg_restore, target, _capture_toc(plain, f), clean=clean, sections=("pre-data", "data")
                )
                f.flush()
                postgres.PgRestore(
                    pg_restore, target, jobs=jobs, clean=clean, path=f.name, sections=("post-data",)
                ).finish()
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

    def _decoded(self, store: Store, key: str, backup: catalog.Backup, identities, where: str):
        raw = store.get(key)
        obj = backup.dump
        try:
            yield from pipeline.decode(
                raw,
                identities=identities,
                expected_sha256=obj["sha256"],
                expected_size=obj["size"],
                where=where,
                progress=self.progress(f"restore {backup.id}", obj["size"]),
            )
        finally:
            raw.close()

    # -- verify --------------------------------------------------------------------------------------
    def verify(
        self,
        policy: Policy,
        *,
        backup_id: str | None = None,
        all_backups: bool = False,
        deep: bool | None = None,
    ) -> dict[str, Any]:
        """Re-read stored objects: SHA-256 always; with the identity also age authentication to
        the end and the zstd frame. Raises IntegrityError (exit 3) naming what is damaged."""
        store = self.store(policy)
        if all_backups:
            backups = catalog.list_backups(store, policy.name)
        else:
            backups = [catalog.find_backup(store, policy.name, backup_id)]
        identities = None
        if deep is not False and policy.identity_file:
            identities = self.identities(policy)
        elif deep:
            raise UsageError(f"{policy.source}: encryption.identity_file is needed for a deep verify")
        results, problems = [], []
        for b in backups:
            obj = b.dump
            key = catalog.backup_prefix(policy.name, b.id) + obj["key"]
            where = f"backup {b.id}, object {store.url}/{key}"
            entry = {"id": b.id, "object": key, "sha256": obj["sha256"], "authenticated": bool(identities)}
            try:
                if identities:
                    for _ in self._decoded(store, key, b, identities, where):
                        pass
                else:
                    with store.get(key) as raw:
                        digest, size = pipeline.hash_only(raw, self.progress(f"verify {b.id}", obj["size"]))
                    if digest != obj["sha256"] or size != obj["size"]:
                        raise IntegrityError(
                            f"{where}: SHA-256 expected {obj['sha256']} ({obj['size']} bytes), "
                            f"actual {digest} ({size} bytes)"
                        )
                entry["ok"] = True
            except NotFound:
                entry.update(ok=False, error=f"{where}: object is missing")
                problems.append(entry["error"])
            except IntegrityError as e:
                entry.update(ok=False, error=str(e))
                problems.append(str(e))
            results.append(entry)
        report = {
            "policy": policy.name,
            "verified": len(results),
            "damaged": len(problems),
            "backups": results,
        }
        if problems:
            err = IntegrityError("\n".join(problems))
            err.result = report  # type: ignore[attr-defined]
            raise err
        return report

    # -- status and reports ------------------------------------------------------------------------
    def status(self, policy: Policy) -> dict[str, Any]:
        """Health of one policy from the store's evidence plus live probes of its components."""
        components: dict[str, str] = {}
        try:
            with postgres.connect(self.source(policy), timeout=5) as conn:
                conn.execute("SELECT 1")
            components["database"] = "ok"
        except DrtoolError as e:
            components["database"] = f"unreachable: {e}"
        try:
            store = self.store(policy)
            components["storage"] = "ok"
        except DrtoolError as e:
            components["storage"] = f"unreachable: {e}"
            return health.evaluate(now=clock.utcnow(), rpo=policy.rpo, newest_recovery_point=None, last_drill=None,
                                   copies_pending={}, schedule_state={}, components=components)  # fmt: skip
        for c in policy.copies:
            try:
                self.store(policy, target=c.name)
                components[f"copy:{c.name}"] = "ok"
            except DrtoolError as e:
                components[f"copy:{c.name}"] = f"unreachable: {e}"
        try:
            for r in policy.recipients:
                age.parse_recipient(r)
            components["keys"] = "ok"
        except ValueError as e:
            components["keys"] = f"invalid recipient: {e}"
        backups = catalog.list_backups(store, policy.name)
        records, problems = catalog.list_drill_records(store, policy.name)
        if problems:
            components["drill_records"] = f"{len(problems)} unreadable"
        pending = catalog.read_copy_state(store, policy.name)["pending"]
        result = health.evaluate(
            now=clock.utcnow(),
            rpo=policy.rpo,
            newest_recovery_point=backups[0].recovery_point if backups else None,
            last_drill=records[0] if records else None,
            copies_pending={c.name: len(pending.get(c.name, {})) for c in policy.copies},
            schedule_state=catalog.read_schedule_state(store, policy.name),
            components=components,
        )
        result["backups"] = len(backups)
        return result

    def metrics_rows(self, policies: list[Policy]) -> list[dict[str, Any]]:
        """Per-policy figures for the Prometheus textfile, from the store's evidence."""
        rows = []
        for p in policies:
            row: dict[str, Any] = {"policy": p.name, "rpo_objective_seconds": p.rpo, "rto_objective_seconds": p.rto}
            try:
                st = self.status(p)
                row["healthy"] = 1 if st["status"] == "healthy" else 0
                row["rpo_achieved_seconds"] = st["last_backup_age_seconds"]
                row["copies_pending"] = sum(st["copies_pending"].values())
                store = self.store(p)
                backups = catalog.list_backups(store, p.name)
                records, _ = catalog.list_drill_records(store, p.name)
            except DrtoolError:
                rows.append({**row, "healthy": 0})
                continue
            success = []
            if backups:
                m = backups[0].manifest
                done = clock.parse_iso(m["completed_at"])
                row["last_backup_timestamp_seconds"] = done.timestamp()
                row["last_backup_duration_seconds"] = (done - clock.parse_iso(m["started_at"])).total_seconds()
                row["last_backup_size_bytes"] = m["sizes"]["stored_bytes"]
                success.append(done.timestamp())
            if records:
                r = records[0]
                row["drill_rto_seconds"] = r.get("rto_seconds")
                row["drill_success"] = 1 if r.get("passed") else 0
                row["drill_last_timestamp_seconds"] = clock.parse_iso(r["started_at"]).timestamp()
                success += [clock.parse_iso(x["completed_at"]).timestamp() for x in records if x.get("passed")][:1]
            row["last_success_timestamp_seconds"] = max(success) if success else None
            now = clock.utcnow()
            row["compliant"] = int(self.report([p], start=now - dt.timedelta(days=90), end=now)["compliant"])
            rows.append(row)
        return rows

    def write_metrics(self, path: str, policies: list[Policy]) -> None:
        """Write the textfile; a failure is reported and never fails the job that ran."""
        try:
            metrics.write(path, self.metrics_rows(policies))
        except OSError as e:
            self.warn(f"cannot write metrics file {path}: {e.strerror or e}")

    def report(self, policies: list[Policy], *, start, end) -> dict[str, Any]:
        """The compliance report document for these policies over [start, end]."""
        sections = []
        for p in policies:
            store = self.store(p)
            backups = [b.manifest for b in catalog.list_backups(store, p.name)]
            records, problems = catalog.list_drill_records(store, p.name)
            for problem in problems:
                self.warn(problem)
            pending = catalog.read_copy_state(store, p.name)["pending"]
            lock = (
                f"{p.storage.object_lock_mode} {p.storage.object_lock_days} days"
                if p.storage.object_lock_days
                else None
            )
            info = {
                "name": p.name,
                "rpo_seconds": p.rpo,
                "rto_seconds": p.rto,
                "retention": {k: v for k, v in vars(p.retention).items() if v},
                "copies": [{"name": c.name, "url": c.url, "region": c.region} for c in p.copies],
                "storage": {
                    "url": p.storage.url,
                    "region": p.storage.region,
                    "object_lock": lock,
                    "copies": [{"name": c.name, "url": c.url, "region": c.region} for c in p.copies],
                },  # fmt: skip
                "encryption": {
                    "scheme": "age-v1-x25519",
                    "recipients": [age.recipient_fingerprint(r) for r in p.recipients],
                },  # fmt: skip
            }
            sections.append(reports.build_policy(
                policy=info, backups=backups, drills=records, drill_problems=problems,
                schedule_state=catalog.read_schedule_state(store, p.name),
                copies_pending={k: sorted(v) for k, v in pending.items()}, start=start, end=end,
            ))  # fmt: skip
        return reports.build(sections, start=start, end=end, now=clock.utcnow(), version=__version__)

    # -- check -----------------------------------------------------------------------------------------
    def check(self, policy: Policy) -> dict[str, Any]:
        """Probe every part a backup needs; the result lists each with ok and a detail."""
        checks: list[dict[str, Any]] = []

        def probe(name: str, fn: Callable[[], str]) -> None:
            try:
                checks.append({"check": name, "ok": True, "detail": fn()})
            except DrtoolError as e:
                checks.append({"check": name, "ok": False, "detail": str(e)})

        checks.append({"check": "policy", "ok": True, "detail": f"{policy.source} is valid"})
        for w in policy.warnings:
            checks.append({"check": "policy", "ok": True, "detail": "warning: " + w})
        snap_holder: dict[str, Any] = {}

        def database() -> str:
            ci = self.source(policy)
            with postgres.exported_snapshot(ci) as (_, snap):
                snap_holder["snap"] = snap
                return f"{ci.label}: PostgreSQL {snap.server_version}, {snap.database_size} bytes"

        def pg_dump() -> str:
            tool = postgres.find_tool("pg_dump", policy.backup.pg_bin_dir)
            if "snap" in snap_holder:
                postgres.require_compatible(tool, snap_holder["snap"])
            return f"{tool.path} {tool.version}"

        def store() -> str:
            s = self.store(policy, create=True)
            _check_region(s, policy.storage)
            key = f"{policy.name}/.drtool-check-{os.getpid()}"
            s.put(key, [b"drtool write probe\n"], if_absent=True)
            try:
                s.put(key, [b"second writer\n"], if_absent=True)
                honoured = False
            except PreconditionFailed:
                honoured = True
            s.delete(key)
            if not honoured:
                self.warn(f"{s.url} ignores conditional writes (If-None-Match): policy locks cannot keep two "
                          "hosts apart; run drtool from one host only")  # fmt: skip
                checks.append({"check": "storage", "ok": True, "detail": "warning: conditional writes are ignored"})
            lock = f"; Object Lock {policy.storage.object_lock_mode} for {policy.storage.object_lock_days} days, " \
                "bucket has Object Lock and versioning" if policy.storage.object_lock_days else ""  # fmt: skip
            return f"{s.url} is writable; conditional writes {'honoured' if honoured else 'IGNORED'}{lock}"

        def keys() -> str:
            for r in policy.recipients:
                age.parse_recipient(r)
            detail = f"{len(policy.recipients)} recipient(s)"
            if policy.identity_file:
                ids = self.identities(policy)
                if not {i.recipient for i in ids} & set(policy.recipients):
                    raise IdentityError(
                        f"identity file {policy.identity_file} matches none of "
                        "encryption.recipients: backups could not be restored with it"
                    )
                detail += f"; identity file {policy.identity_file} matches"
            else:
                detail += "; no identity file on this host (restore and deep verify need one)"
            return detail

        probe("database", database)
        probe("pg_dump", pg_dump)
        probe("storage", store)
        for c in policy.copies:

            def copy_target(c: StorageTarget = c) -> str:
                s = self.store(policy, create=True, target=c.name)
                _check_region(s, c)
                key = f"{policy.name}/.drtool-check-{os.getpid()}"
                put_bytes(s, key, b"drtool write probe\n")
                s.delete(key)
                region = f" in region {c.region}" if c.region else ""
                return f"copy target '{c.name}': {s.url} is writable{region}"

            probe(f"copy:{c.name}", copy_target)
        probe("keys", keys)
        ok = all(c["ok"] for c in checks)
        result = {"policy": policy.name, "ok": ok, "checks": checks}
        if not ok:
            err = CheckFailed("; ".join(c["detail"] for c in checks if not c["ok"]))
            err.result = result  # type: ignore[attr-defined]
            raise err
        return result


def _check_region(store: Store, target: StorageTarget) -> None:
    """Fail closed when an S3 bucket is not in the region the policy declares."""
    actual = getattr(store, "bucket_region", lambda: None)()
    if actual is not None and target.region and actual != target.region:
        raise StorageError(f"{store.url}: bucket is in region {actual}, but the policy declares {target.region} "
                           f"(storage target '{target.name}')")  # fmt: skip


def _last_slot(state: dict, job: str):
    value = state["jobs"].get(job, {}).get("last_slot")
    return clock.parse_iso(value) if value else None


def _capture_toc(pieces, f):
    """Pass pieces through; write the archive's header and table of contents to f."""
    scanner, head = DumpScanner(), bytearray()
    for piece in pieces:
        if scanner.info.toc_end is None:
            head += piece
            scanner.feed(piece)
            if scanner.info.toc_end is not None:
                f.write(head[: scanner.info.toc_end])
        yield piece
    if scanner.info.toc_end is None:
        why = scanner._failed or "the archive ended before its table of contents did"
        raise IntegrityError(f"cannot read the archive's table of contents: {why}")


def _password_from_env(name: str | None, where: str) -> Secret | None:
    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise UsageError(f"{where}: environment variable {name} is not set")
    return Secret(value)
