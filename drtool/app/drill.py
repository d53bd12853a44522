"""Use case: restore drills (the flow itself is drtool.drills)."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field
from typing import Any

from .. import __version__, catalog, clock, drills, health, ledger, objectives, pgtools, postgres, trust
from ..errors import DrtoolError, IntegrityError, UsageError
from ..policy import Policy
from ..storage import Store
from . import checks
from .base import _password_from_env
from .context import UseCase


class DrillJobs(UseCase):
    # -- drill -----------------------------------------------------------------------------------
    def drill(self, policy: Policy, *, backup_id: str | None = None, from_copy: str | None = None) -> dict[str, Any]:
        """Restore a backup into a scratch database, verify it, measure RPO and RTO, and store the
        record. Returns the record; `outcome` says how it went: "passed", "failed" (the backup
        could not be restored or verified) or "could-not-run" (store, scratch server or tools
        unavailable). Raises only for bad usage, or when the primary store cannot be opened (then
        there is nowhere to record anything)."""
        started = clock.utcnow()
        t0 = clock.monotonic()  # the RTO clock: finding the backup is part of a real recovery
        opts = policy.drill
        if opts.target_dsn and postgres.same_database(opts.target_dsn, policy.dsn):
            raise UsageError(f"{policy.source}: drill.target_dsn names the source database itself; a drill "
                             "must restore somewhere else")  # fmt: skip
        store = self.ctx.store(policy)
        self.ctx.signer(policy)  # the record must be signed: a key that does not load stops here
        from_copy = from_copy or policy.drill.from_copy
        with self.ctx.reported(policy, "drill") as outcome, self.ctx.locked(policy, store, "drill"):
            rec = self.drill_locked(policy, store, backup_id, started, t0, source_name=from_copy)
            outcome.update(ok=rec["outcome"] == health.PASSED and rec["rpo_met"] is not False,
                           summary=f"drill {rec['drill_id']}: " + _summary(rec),
                           details={"drill_id": rec["drill_id"], "outcome": rec["outcome"],
                                    "rto_seconds": rec["rto_seconds"]})  # fmt: skip
            return rec

    def drill_locked(
        self,
        policy: Policy,
        store: Store,
        backup_id: str | None,
        started,
        t0: float,
        *,
        source_name: str | None = None,
    ) -> dict[str, Any]:
        """(Under the policy's lock.) Drill a backup fetched from the copy target `source_name` (or
        the primary); the record is written to the primary `store`, where all evidence of the
        policy lives. Every attempt leaves a record, whatever stopped it (bad usage aside)."""
        drill_id = catalog.new_backup_id(started)
        attempt = _Attempt(requested=backup_id)
        try:
            outcome = self._attempt(policy, store, drill_id, t0, source_name, attempt)
        except UsageError:
            raise
        except DrtoolError as e:  # stopped before the restore began (store, identity, binaries)
            outcome = drills.Outcome()
            # while reading the catalog only a damaged manifest is the backup's fault
            at_fault = isinstance(e, IntegrityError) if attempt.step == "catalog" else None
            outcome.stop(attempt.step, e, at_fault=at_fault)
        record = self._drill_record(policy, drill_id, started, outcome, attempt, source_name)
        self.keep_drill_record(store, record, self.ctx.signer(policy), policy)
        return record

    def _attempt(self, policy: Policy, store: Store, drill_id: str, t0: float, source_name: str | None,
                 attempt: _Attempt) -> drills.Outcome:  # fmt: skip
        """Find the backup, the key and the target, then run the drill; `attempt` keeps what was
        found so far (and the step under way) for the record, should a step fail."""
        opts = policy.drill
        if opts.target_dsn and postgres.dsn_password_keys(opts.target_dsn):  # validated at load; never in argv
            raise UsageError(f"{policy.source}: drill.target_dsn carries a password")
        attempt.step = "catalog"
        source = self.ctx.store(policy, target=source_name) if source_name else store
        verifier = self.ctx.verifier(policy)
        backups = catalog.list_backups(source, policy.name, verifier)  # an untrusted one is no candidate
        backups = [b for b in backups if not b.record.is_physical]  # physical drills are issue 13
        if source is store:  # findings are about the primary's objects: a damaged one is no candidate
            damaged = ledger.read_checks(store, policy.name, verifier, self.ctx.warn).damaged
            backups = [b for b in backups if b.id not in damaged]
        attempt.backups = backups
        if attempt.requested:
            attempt.backup = catalog.read_manifest(source, policy.name, attempt.requested, verifier)
        elif not attempt.backups:
            raise DrtoolError(f"{source.url}: policy '{policy.name}' has no complete backup to drill")
        else:
            attempt.backup = random.choice(attempt.backups) if opts.pick == "random" else attempt.backups[0]
        backup = attempt.backup
        m = backup.manifest
        attempt.step = "identity"
        identities = self.ctx.identities(policy)
        attempt.step = "provision"
        major = pgtools.server_major(int(m["server_version_num"]))
        if opts.target_dsn:
            server = postgres.Conninfo(opts.target_dsn, _password_from_env(opts.target_password_env,
                                                                         "drill.target_password_env"))  # fmt: skip
            attempt.target = drills.Target("server", server=server)
            pg_restore = pgtools.find_tool("pg_restore", policy.backup.pg_bin_dir)
        else:
            bin_dir, version = pgtools.find_server_bin(major, opts.pg_bin_dir)
            attempt.target = drills.Target("scratch", bin_dir=bin_dir, version=version, profile=opts.profile)
            pg_restore = pgtools.find_tool("pg_restore", str(bin_dir))
        dkey = backup.prefix + backup.dump["key"]
        where = f"backup {backup.id}, object {source.url}/{dkey}"
        return drills.run(
            manifest=m,
            target=attempt.target,
            pieces=lambda: self.ctx.decoded(source, dkey, backup, identities, where),
            pg_restore=pg_restore,
            checks=opts.checks,
            amcheck=opts.amcheck,
            drill_id=drill_id,
            t0=t0,
        )

    def _drill_record(self, policy: Policy, drill_id: str, started, outcome: drills.Outcome, attempt: _Attempt,
                      source_name: str | None) -> dict[str, Any]:  # fmt: skip
        completed = clock.utcnow()
        backup, target = attempt.backup, attempt.target
        m = backup.manifest if backup else {}
        rpo = None if backup is None else (started - backup.recovery_point).total_seconds()
        points = [objectives.Point(b.id, b.recovery_point, clock.parse_iso(b.manifest["completed_at"]))
                  for b in attempt.backups]  # fmt: skip
        worst = objectives.worst_rpo(points, started)
        rto = outcome.rto_seconds
        rto_met = None if policy.rto is None or rto is None else rto <= policy.rto
        failure, result = outcome.failure, outcome.result
        if result == health.PASSED and rto_met is False:
            failure, result = f"RTO {rto:.1f}s exceeds objectives.rto ({policy.rto}s)", health.FAILED
        record = {
            "format": catalog.DRILL_FORMAT,
            "version": catalog.DRILL_VERSION,
            "drill_id": drill_id,
            "policy": policy.name,
            "backup_id": backup.id if backup else attempt.requested,
            "storage_target": source_name or "primary",
            "backup_recovery_point": m.get("recovery_point"),
            "backup_stored_bytes": m["sizes"]["stored_bytes"] if m else None,
            "bytes_restored": outcome.bytes_restored,
            "source_server_version": m.get("server_version"),
            "target": None
            if target is None
            else {
                "kind": target.kind,
                "label": outcome.target_label,
                "server_version": target.version or None,
            },  # fmt: skip
            # the settings the scratch server ran with; None on an existing server (not ours to set)
            "scratch_profile": target.profile if target is not None and target.kind == "scratch" else None,
            "host": socket.gethostname(),
            "tool": {"name": "drtool", "version": __version__},
            "started_at": clock.iso(started),
            "completed_at": clock.iso(completed),
            "phases": outcome.phases,
            "checks": outcome.checks,
            "rpo_seconds": None if rpo is None else round(rpo, 3),
            "rto_seconds": rto,
            "objectives": {"rpo_seconds": policy.rpo, "rto_seconds": policy.rto},
            "rpo_met": None if policy.rpo is None or rpo is None else rpo <= policy.rpo,
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
            "outcome": result,
            "passed": result == health.PASSED,
            "failure": failure,
        }
        # the whole command so far (interpreter start-up included), to compare with a stopwatch outside
        age = clock.process_age()
        if age is None and self.ctx.command_t0 is not None:
            age = clock.monotonic() - self.ctx.command_t0
        record["command_seconds"] = None if age is None else round(age, 3)
        return record

    def keep_drill_record(self, store: Store, record: dict[str, Any], signer: trust.Signer | None = None,
                          policy: Policy | None = None) -> None:  # fmt: skip
        """Store a drill record (signed, with a signer): the one place drill evidence is written.
        A drill that could not run is recorded best-effort: the store may be what was down, so a failed write is only
        logged; the record of a drill that ran must be kept, or the command fails."""
        try:
            ledger.write_drill_record(store, record, signer)
        except DrtoolError as e:
            if record["outcome"] != health.COULD_NOT_RUN:
                raise
            self.ctx.warn(f"drill {record['drill_id']} could not run, and its record could not be stored either: {e}")
            return
        check = checks.record_drill(store, record, self.ctx.warn, signer)  # what it found about the backup, for prune
        if policy is not None:  # the index learns of the drill (and of what it found)
            self.ctx.update_index(policy, store, drills=[record], checks=[check] if check else [])


@dataclass
class _Attempt:
    """What a drill attempt found before it stopped: the step under way, backups, target."""

    requested: str | None  # --backup ID, if one was asked for
    step: str = "catalog"
    backups: list[catalog.Backup] = field(default_factory=list)
    backup: catalog.Backup | None = None
    target: drills.Target | None = None


def _summary(rec: dict[str, Any]) -> str:
    if rec["outcome"] == health.COULD_NOT_RUN:
        return f"could not run: {rec['failure']}"
    return rec["failure"] or "passed"
