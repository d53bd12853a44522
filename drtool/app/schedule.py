"""Use cases for unattended operation: run (what is due), prune (retention)."""

from __future__ import annotations

import ctypes
import datetime as dt
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .. import catalog, catalog_index, clock, ledger, locks, retention, scheduler
from ..errors import DrtoolError, RetainedByLock
from ..policy import Policy
from ..storage import Store
from . import fanout, walview
from .backup import BackupJobs
from .context import Context, UseCase
from .drill import DrillJobs
from .physical import PhysicalJobs
from .pitr_drill import PitrDrillJobs


class ScheduleJobs(UseCase):
    """run and prune. run calls the backup (and copy), base backup and drill (logical and physical) use
    cases: it is given them."""

    def __init__(self, ctx: Context, *, backups: BackupJobs, drills: DrillJobs, physical: PhysicalJobs,
                 pitr_drills: PitrDrillJobs) -> None:  # fmt: skip
        super().__init__(ctx)
        self.backups, self.drills, self.physical, self.pitr_drills = backups, drills, physical, pitr_drills

    # -- run: what cron/systemd calls -------------------------------------------------------------
    def run(
        self,
        policy: Policy,
        *,
        dry_run: bool = False,
        now: Callable[[], Any] = clock.utcnow,
        only: frozenset[str] | None = None,
        found_due: bool = False,
    ) -> dict[str, Any]:
        """Do whatever `[schedule]` says is due for this policy, each job at most once per slot.
        The schedule state lives in the store, read and written under the policy lock, so any
        host can run this and two concurrent runs do each slot once. `only` limits the jobs
        (backup, prune, drill) so they can be split across hosts; pending copies go with backup.
        `found_due`: the caller has just read the state without the lock and found something due."""
        jobs, copies = _jobs_of(policy, only)
        result: dict[str, Any] = {"policy": policy.name, "jobs": {}}
        if not jobs and not copies:
            result["note"] = "no [schedule] entries: nothing to run"
            return result
        store = self.ctx.store(policy)
        tz = policy.schedule.timezone
        if dry_run:
            state = ledger.read_schedule_state(store, policy.name, self.ctx.verifier(policy), self.ctx.warn)
            t = now()
            for job, expr in jobs.items():
                d = scheduler.due(expr, tz, state.last_slot(job), t)
                result["jobs"][job] = {
                    "cron": expr,
                    "due": d is not None,
                    "slot": clock.iso(d.slot) if d else None,
                    "missed": d.missed if d else 0,
                    "next": [clock.iso(x) for x in scheduler.next_times(expr, tz, t)],
                }
                # what the run would find: a backup taken by hand in the slot is its backup
                manual = self._backup_in_slot(policy, store, d.slot)[0] if d and job == "backup" else None
                if manual:
                    result["jobs"][job]["counted_backup"] = manual["backup_id"]
            return result
        if not found_due and not self._anything_due(policy, store, jobs, now, copies):
            return _idle(policy, jobs)  # an idle tick takes no lock and writes nothing
        try:
            with self.ctx.locked(policy, store, "run"):
                self._run_due(policy, store, jobs, now, result, copies)
        except locks.LockBusy as e:
            result["skipped"] = f"another job holds the lock: {locks.describe(e.holder)}"
        return result

    def _anything_due(self, policy: Policy, store: Store, jobs: dict[str, str], now, copies: bool) -> bool:
        """Whether a job is due or a copy is pending, judged from the state read without the lock
        (one GET): only then is the lock taken, and _run_due reads the state again under it."""
        verifier = self.ctx.verifier(policy)
        state = ledger.read_schedule_state(store, policy.name, verifier, self.ctx.warn)
        t = now()
        if any(scheduler.due(expr, policy.schedule.timezone, state.last_slot(job), t) for job, expr in jobs.items()):
            return True
        return copies and bool(ledger.read_copy_state(store, policy.name, verifier, self.ctx.warn).pending)

    def run_fleet(
        self, policies: list[Policy], *, jobs: int = 1, dry_run: bool = False, only: frozenset[str] | None = None
    ) -> Iterator[tuple[Policy, dict[str, Any] | DrtoolError]]:
        """run() for each policy, up to `jobs` at once, yielding (policy, result or the DrtoolError
        it failed with) in the policies' order. Each policy is still done under its own lock, so
        several processes or hosts running the same folder share the work. What is due is read
        first, without the lock, several policies at once (_decisions); a due policy starts as
        soon as it is found due, while the states of the others are still being read."""
        decided = self._decisions(policies, only, jobs) if not dry_run else iter([None] * len(policies))
        if jobs <= 1 or len(policies) <= 1:
            for p, d in zip(policies, decided, strict=True):
                yield p, d if _settled(d) else self._run_or_error(p, dry_run, only, d)
            return
        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="run")
        try:
            futures = [d if _settled(d) else pool.submit(self._run_or_error, p, dry_run, only, d)
                       for p, d in zip(policies, decided, strict=True)]  # fmt: skip
            for p, f in zip(policies, futures, strict=True):
                yield p, f.result() if isinstance(f, Future) else f
        except BaseException:  # Ctrl-C, SIGTERM: start nothing new, and unwind the running jobs too
            pool.shutdown(wait=False, cancel_futures=True)
            _interrupt(pool)
            raise
        finally:
            pool.shutdown(wait=True)

    def _run_or_error(self, policy: Policy, dry_run: bool, only: frozenset[str] | None,
                      decided: object = None) -> dict[str, Any] | DrtoolError:  # fmt: skip
        try:
            return self.run(policy, dry_run=dry_run, only=only, found_due=decided is _DUE)
        except DrtoolError as e:
            return e

    def _decisions(self, policies: list[Policy], only: frozenset[str] | None, jobs: int) -> Iterator[Any]:
        """For each policy, in order: its result when nothing is due, _DUE, or the DrtoolError
        reading its state failed with; the states read without the lock, up to fanout.readers() (or
        `jobs`) at a time: an idle tick of 1,000 policies is 1,000 GETs, and one after another that
        is most of its wall time. Locking and running what is due stays with run()."""
        if len(policies) <= 1:
            return iter([None] * len(policies))
        return fanout.in_order(lambda p: self._decide(p, only), policies, max(jobs, fanout.readers(policies)),
                                "state")  # fmt: skip

    def _decide(self, policy: Policy, only: frozenset[str] | None) -> Any:
        jobs, copies = _jobs_of(policy, only)
        if not jobs and not copies:
            return None  # run() says so, without a request
        try:
            due = self._anything_due(policy, self.ctx.store(policy), jobs, clock.utcnow, copies)
        except DrtoolError as e:
            return e
        return _DUE if due else _idle(policy, jobs)

    def _run_due(self, policy: Policy, store: Store, jobs: dict[str, str], now, result: dict,
                 copies: bool = True) -> None:  # fmt: skip
        tz = policy.schedule.timezone
        verifier, signer = self.ctx.verifier(policy), self.ctx.signer(policy)
        # read under the lock; an untrusted state is ignored (and named): each job is then due once
        state = ledger.read_schedule_state(store, policy.name, verifier, self.ctx.warn)
        for job, expr in jobs.items():
            t = now()
            d = scheduler.due(expr, tz, state.last_slot(job), t)
            if d is None:
                result["jobs"][job] = {"due": False}
                continue
            entry = state.jobs.setdefault(job, {})
            entry.update(last_slot=clock.iso(d.slot), last_attempt=clock.iso(t), last_missed=d.missed)
            entry["missed_total"] = entry.get("missed_total", 0) + d.missed
            outcome: dict[str, Any] = {"due": True, "slot": clock.iso(d.slot), "missed": d.missed}
            self.ctx.notify_start(policy)
            try:
                manual, seen = (self._backup_in_slot(policy, store, d.slot, job) if job in ("backup", "base")
                                else (None, None))  # fmt: skip
                outcome.update(manual or self._run_job(policy, store, job, seen))
            except DrtoolError as e:
                outcome.update(outcome="failed", error=str(e), exit_code=e.exit_code)
            ok = outcome["outcome"] == "ok"
            summary: str = (outcome.get("summary") if ok else outcome.get("error")) or ""
            self.ctx.notify_outcome(policy, job, ok, summary, {"slot": outcome["slot"], "missed": d.missed})
            entry.update(last_outcome=outcome["outcome"], last_message=outcome.get("error") or outcome.get("summary"))
            if outcome["outcome"] == "ok":
                entry["last_success"] = clock.iso(t)
            ledger.write_schedule_state(store, policy.name, state, signer)
            result["jobs"][job] = outcome
        if copies and policy.copies and ledger.read_copy_state(store, policy.name, verifier, self.ctx.warn).pending:
            made = self.backups.copy_pending(policy, store)
            failed = {k: v for k, v in made.items() if v != "ok"}
            copy_entry: dict[str, Any] = {"due": True, "slot": None, "missed": 0}
            if failed:
                error = "; ".join(f"{k}: {v}" for k, v in failed.items())
                copy_entry.update(outcome="failed", error=error, exit_code=1)
            else:
                copy_entry.update(outcome="ok", summary=f"copied to {', '.join(made)}")
            result["jobs"]["copies"] = copy_entry

    def _backup_in_slot(
        self, policy: Policy, store: Store, slot, job: str = "backup"
    ) -> tuple[dict[str, Any] | None, catalog_index.IndexRead | None]:
        """A backup taken by hand counts for the slot it falls in: a committed backup, not known
        to be damaged, whose recovery point is at or after the slot's scheduled time is that
        slot's backup, so the next `run` takes no second one (docs/drills.md, "Schedule"). Job
        "backup" counts logical backups, job "base" physical ones. Returns (that backup's outcome
        or None, the catalog index read to find out, which the job's commit merges into)."""
        physical = job == "base"
        indexed = self.ctx.read_index(policy, store)
        listing = (
            indexed.listing if indexed is not None else catalog.scan(store, policy.name, self.ctx.verifier(policy))
        )
        for b in listing.backups:  # newest first
            if b.record.is_physical != physical:
                continue
            if b.recovery_point < slot:
                break
            if not b.damaged:
                return {"outcome": "ok", "summary": f"backup {b.id} (taken since the slot began) counts for it",
                        "backup_id": b.id, "taken_before": True}, None  # fmt: skip
        return None, indexed

    def _run_job(self, policy: Policy, store: Store, job: str,
                 seen: catalog_index.IndexRead | None = None) -> dict[str, Any]:  # fmt: skip
        if job == "backup":
            m = self.backups.backup_locked(policy, store, seen)
            return {"outcome": "ok", "summary": f"backup {m['id']}", "backup_id": m["id"]}
        if job == "base":
            m = self.physical.base_backup_locked(policy, store)
            return {"outcome": "ok", "summary": f"base backup {m['id']}", "backup_id": m["id"]}
        if job == "prune":
            r = self._prune(policy, store, dry_run=False)
            failed = [name for name, x in r.get("copies", {}).items() if "error" in x]
            if failed:
                return {"outcome": "failed", "error": f"prune of copy targets failed: {', '.join(failed)}",
                        "exit_code": 1}  # fmt: skip
            return {"outcome": "ok", "summary": f"kept {r['kept']}, deleted {r['deleted']}"}
        results = [self._drill_job(policy, store, kind) for kind in _drill_kinds(policy)]
        failed = [r for r in results if r["outcome"] != "ok"]
        if len(results) == 1 or not failed:
            return results[0] if len(results) == 1 else {**results[0], "summary": "; ".join(
                r["summary"] for r in results), "drill_ids": [r["drill_id"] for r in results]}  # fmt: skip
        worst = max(failed, key=lambda r: r["exit_code"])
        return {**worst, "error": "; ".join(r["error"] for r in failed),
                "summary": "; ".join(r["summary"] for r in results),
                "drill_ids": [r["drill_id"] for r in results]}  # fmt: skip

    def _drill_job(self, policy: Policy, store: Store, kind: str) -> dict[str, Any]:
        """One scheduled drill of `kind` (logical: a dump; physical: base backup + WAL)."""
        if kind == "physical":
            archiver = self.pitr_drills.source_archiver(policy)
            started, t0 = clock.utcnow(), clock.monotonic()
            rec = self.pitr_drills.drill_physical_locked(policy, store, None, None, started, t0, archiver)
            label = f"physical drill {rec['drill_id']}"
        else:
            started, t0 = clock.utcnow(), clock.monotonic()
            src = policy.drill.from_copy
            rec = self.drills.drill_locked(policy, store, None, started, t0, source_name=src)
            label = f"drill {rec['drill_id']}"
        if rec["passed"] and rec["rpo_met"] is not False:
            return {"outcome": "ok", "summary": label, "error": None, "exit_code": 0,
                    "drill_id": rec["drill_id"]}  # fmt: skip
        if rec["outcome"] == "could-not-run":  # says nothing about the backup: exit 1, not 3
            error, code = f"could not run: {rec['failure']}", 1
        else:
            error, code = rec["failure"] or "RPO objective missed", 3
        return {"outcome": "failed", "summary": label, "error": error, "exit_code": code,
                "drill_id": rec["drill_id"]}  # fmt: skip

    # -- prune ---------------------------------------------------------------------------------
    def prune(self, policy: Policy, *, dry_run: bool = False) -> dict[str, Any]:
        """Apply retention (with its safety floors) and clean up failed or interrupted backups
        older than the grace period. Under the policy lock, so no backup runs meanwhile."""
        store = self.ctx.store(policy)
        with self.ctx.locked(policy, store, "prune"):
            return self._prune(policy, store, dry_run)

    def prune_fleet(self, policies: list[Policy], *, dry_run: bool = False) -> list[dict[str, Any]]:
        """prune() of each policy, in order. A dry run reads several policies at once; a prune that
        deletes goes one policy after another, so that an error stops it before another policy
        loses anything."""
        return list(fanout.in_order(lambda p: self.prune(p, dry_run=dry_run), policies,
                                    fanout.readers(policies) if dry_run else 1, "prune"))  # fmt: skip

    def _prune(self, policy: Policy, store: Store, dry_run: bool) -> dict[str, Any]:
        """Retention on the primary, then on each copy target with the same rules."""
        verifier = self.ctx.verifier(policy)
        # the index serves a dry run; a prune that deletes reads every manifest, check and drill
        # record: the index is never trusted for deleting (nor for what the kept backups are)
        indexed = self.ctx.read_index(policy, store, catalog_index.EVIDENCE) if dry_run else None
        if indexed is not None:  # which backups passed a drill, and the findings, as the index has them
            problems = list(indexed.index.drills.get("problems") or [])
            passed = frozenset(b for b, e in indexed.index.backups.items() if e.get("last_passed_drill_at"))
            checks = indexed.checks
        else:
            records, problems = ledger.list_drill_records(store, policy.name, verifier, self.ctx.warn)
            passed = frozenset(r["backup_id"] for r in records if r.get("passed"))
            # findings live on the primary, like drill records
            checks = ledger.read_checks(store, policy.name, verifier, self.ctx.warn)
        for p in [*problems, *checks.problems]:
            self.ctx.warn(p)
        result = self._prune_target(policy, store, dry_run, passed, checks, indexed)
        if policy.copies:
            result["copies"] = {}
            for c in policy.copies:
                try:
                    copy = self.ctx.store(policy, target=c.name)
                    result["copies"][c.name] = self._prune_target(
                        policy, copy, dry_run, passed, indexed=self.ctx.read_index(policy, copy) if dry_run else None
                    )
                except DrtoolError as e:
                    result["copies"][c.name] = {"error": str(e)}
                    self.ctx.warn(f"prune of copy target '{c.name}' failed, will retry on the next run: {e}")
        return result

    def _prune_target(
        self,
        policy: Policy,
        store: Store,
        dry_run: bool,
        passed: frozenset[str],
        checks: ledger.CheckStates | None = None,
        indexed: catalog_index.IndexRead | None = None,
    ) -> dict[str, Any]:
        """Retention on one store. A backup known to be damaged (objects missing, or the newest
        check in `checks` found it damaged) counts toward no rule; a folder with an unreadable
        manifest, and whatever such a manifest names, is never deleted; nor is an untrusted one
        (no trusted key signed it): it counts toward no rule and is kept as evidence of tampering.
        `indexed` (the catalog index) serves dry runs only: a prune that deletes reads the manifests."""
        now = clock.utcnow()
        listing = (
            indexed.listing if indexed is not None else catalog.scan(store, policy.name, self.ctx.verifier(policy))
        )
        for u in listing.unreadable:
            self.ctx.warn(f"{u.reason}; not pruned")
        for t in listing.untrusted:
            self.ctx.warn(f"{t.reason}; not pruned: kept as evidence of tampering")
        backups = listing.backups
        damaged = {b.id: b.damaged for b in backups if b.damaged}
        if checks is not None:
            damaged.update({bid: checks.reason(bid) or "" for bid in checks.damaged if bid not in damaged})
            passed = passed | checks.verified
        # each kind on its own: a keep_last of 3 keeps 3 dumps and 3 base backups (they restore
        # differently, and a base backup is no substitute for a dump, nor the reverse)
        kinds = {b.id: walview.kind(b) for b in backups}
        decisions = []
        for kind in sorted(set(kinds.values())):
            decisions += retention.apply(
                [retention.Candidate(b.id, b.recovery_point) for b in backups if kinds[b.id] == kind],
                policy.retention,
                now,
                policy.schedule.timezone,
                passed - set(damaged),
                damaged,
            )
        decisions.sort(key=lambda d: (d.recovery_point, d.backup_id), reverse=True)
        named = {u.claims: u.key for u in listing.unreadable if u.claims}
        for d in decisions:
            if d.backup_id in named and not d.keep:
                d.keep = True
                d.reasons.append(f"an unreadable manifest ({named[d.backup_id]}) names it: kept until that is resolved")
        self.ctx.ensure_lock_held(policy)  # a prune that lost its lock deletes nothing
        rows: list[dict[str, Any]] = []
        prefixes = {b.id: b.prefix for b in backups}
        for d in decisions:
            rows.append({"id": d.backup_id, "kind": kinds[d.backup_id], "recovery_point": clock.iso(d.recovery_point),
                         "action": "keep" if d.keep else "delete", "reasons": d.reasons})  # fmt: skip
            if not d.keep and not dry_run:
                prefix = prefixes[d.backup_id]
                try:
                    store.delete(prefix + catalog.MANIFEST_NAME)  # first: from here on it is not a backup
                    for obj in store.list_objects(prefix):
                        if catalog.in_backup(prefix, obj.key):  # not a folder `<id>.old/` beside it
                            store.delete(obj.key)
                except RetainedByLock as e:  # deleted by a later prune, once the lock expires
                    rows[-1]["action"] = "retained-by-lock"
                    rows[-1]["reasons"].append(f"Object Lock retains it until {e.until}; deleted after that")
        incomplete = self._incomplete(policy, store, listing.protected_ids(), now, dry_run)
        still = {r["id"] for r in rows if r["action"] != "delete"}
        wal = self._prune_wal(policy, store, [b for b in backups if b.id in still], dry_run)
        if not dry_run:
            self.ctx.update_index(policy, store)  # drops what was deleted; makes a missing or stale index anew
        return {
            "policy": policy.name,
            "dry_run": dry_run,
            "rules": {k: v for k, v in vars(policy.retention).items() if v},
            "backups": rows,
            "incomplete": incomplete,
            "unreadable": [{"id": u.backup_id, "key": u.key, "error": u.reason} for u in listing.unreadable],
            "untrusted": [_evidence_row(t) for t in listing.untrusted],
            "kept": sum(r["action"] == "keep" for r in rows),
            "deleted": sum(r["action"] == "delete" for r in rows),
            "retained_by_lock": sum(r["action"] == "retained-by-lock" for r in rows),
            "wal": wal,
        }

    def _prune_wal(self, policy: Policy, store: Store, kept: list[catalog.Backup], dry_run: bool) -> list[dict]:
        """Archived WAL no kept physical backup needs (walview.prune_wal): with the identity the
        timeline histories are read and followed; without it only WAL older than every kept base
        backup's start goes."""
        physical = [(b.id, doc) for b in kept if (doc := walview.physical_doc(b)) is not None]
        if not physical and not policy.pitr.enabled:
            return []  # nothing to prune, and no LIST of an archive that cannot exist
        retained: list[str] = []

        def delete(key: str) -> None:
            try:
                store.delete(key)
            except RetainedByLock as e:
                retained.append(f"{key} until {e.until}")

        out = walview.prune_wal(store, policy.name, physical, dry_run=dry_run, warn=self.ctx.warn, delete=delete,
                                identities=self.ctx.optional_identities(policy) if physical else None)  # fmt: skip
        if retained:
            self.ctx.warn(f"{len(retained)} WAL files are retained by Object Lock (first: {retained[0]}); "
                      "a later prune deletes them")  # fmt: skip
        return out

    def _incomplete(self, policy: Policy, store: Store, complete: set[str], now, dry_run: bool) -> list[dict]:
        """Folders of backups that never committed (no manifest), and their unfinished uploads."""
        base = f"{policy.name}/backups/"
        groups: dict[str, dict[str, list]] = {}
        for obj in store.list_objects(base):
            bid = catalog.backup_of_key(policy.name, obj.key)
            if bid not in complete:
                groups.setdefault(bid, {"objects": [], "leftovers": []})["objects"].append(obj)
        for left in store.leftovers(base):
            bid = catalog.backup_of_key(policy.name, left.key)
            groups.setdefault(bid, {"objects": [], "leftovers": []})["leftovers"].append(left)
        running_since = self._live_foreign_lock_since(policy, store, now) if groups else None
        out = []
        for bid, g in sorted(groups.items()):
            started = catalog.backup_started(bid) or min(
                [o.modified for o in g["objects"] if o.modified] + [x.started for x in g["leftovers"]], default=now
            )
            age = (now - started).total_seconds()
            entry = {"id": bid, "objects": len(g["objects"]), "unfinished_uploads": len(g["leftovers"]),
                     "started": clock.iso(started)}  # fmt: skip
            if running_since is not None and started >= running_since:
                entry.update(action="keep", reason="unfinished and started under a live lock: still being written")
            elif age < self.ctx.incomplete_grace:
                entry.update(action="keep", reason="unfinished and younger than the grace period: may still be running")
            else:
                entry.update(action="delete", reason="failed or interrupted backup (no manifest)")
                if not dry_run:
                    try:
                        for obj in g["objects"]:
                            store.delete(obj.key)
                        for left in g["leftovers"]:
                            store.discard(left)
                    except RetainedByLock as e:  # its dump was written locked: deleted once that passes
                        entry.update(action="retained-by-lock",
                                     reason=f"failed or interrupted backup (no manifest); Object Lock retains "
                                            f"it until {e.until}, deleted after that")  # fmt: skip
            out.append(entry)
        return out

    def _live_foreign_lock_since(self, policy: Policy, store: Store, now) -> Any:
        """When the job holding a live lock of another process began (second precision, as backup
        ids are), or None. One job at a time per policy: a backup started since then is its own,
        still being written, whatever its age."""
        holder = locks.read_holder(store, policy.name)
        if not holder or holder.get("token") == self.ctx.own_lock_token(policy) or not locks.is_live(holder, now):
            return None
        try:
            return clock.parse_iso(holder["since"]).replace(microsecond=0)
        except (KeyError, TypeError, ValueError):
            return now - dt.timedelta(days=36500)  # a live holder of unknown start: keep every unfinished one


_DUE = object()  # _decisions: something is due, run() takes the lock


def _settled(decided: Any) -> bool:
    """_decisions' answer is the policy's result (nothing due) or the error reading its state
    failed with, rather than None (not decided) or _DUE: nothing to run."""
    return decided is not None and decided is not _DUE


def _jobs_of(policy: Policy, only: frozenset[str] | None) -> tuple[dict[str, str], bool]:
    """The scheduled jobs ({job: cron}) `only` leaves, and whether pending copies go with them."""
    jobs = {j: getattr(policy.schedule, j) for j in scheduler.JOBS if getattr(policy.schedule, j)}
    if only is not None:
        jobs = {j: e for j, e in jobs.items() if j in only}
    return jobs, bool(policy.copies) and (only is None or "backup" in only)


def _idle(policy: Policy, jobs: dict[str, str]) -> dict[str, Any]:
    return {"policy": policy.name, "jobs": {job: {"due": False} for job in jobs}}


def _evidence_row(t: catalog.UntrustedBackup) -> dict[str, Any]:
    return {"id": t.backup_id, "key": t.key, "error": t.reason, "action": "keep",
            "reason": "evidence of tampering: never pruned"}  # fmt: skip


def _interrupt(pool: ThreadPoolExecutor) -> None:
    """Raise KeyboardInterrupt in the pool's running threads, as a signal does in the main thread:
    each job unwinds (scratch servers stopped, uploads aborted, its lock released) instead of
    running on until the process is killed."""
    for t in list(getattr(pool, "_threads", ())):
        if t.is_alive() and t.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(t.ident), ctypes.py_object(KeyboardInterrupt))


def _drill_kinds(policy: Policy) -> tuple[str, ...]:
    """What a scheduled drill restores ([drill] kind): a dump, a base backup + WAL, or both."""
    return {"logical": ("logical",), "physical": ("physical",), "both": ("logical", "physical")}[policy.drill.kind]
