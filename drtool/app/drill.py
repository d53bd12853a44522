"""Use case: restore drills (the flow itself is drtool.drills)."""

from __future__ import annotations

import random
import socket
from typing import Any

from .. import __version__, catalog, clock, drills, objectives, postgres, scratch
from ..errors import DrtoolError, UsageError
from ..policy import Policy
from ..storage import Store
from . import checks
from .base import AppBase, _password_from_env


class DrillJobs(AppBase):
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
        if source is store:  # findings are about the primary's objects
            damaged = catalog.read_checks(store, policy.name).damaged
            backups = [b for b in backups if b.id not in damaged]
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
            if postgres.dsn_password_keys(dr.target_dsn):  # validated at load; never in argv
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
        checks.record_drill(store, record, self.warn)  # what it found about the backup, for prune
        return record
