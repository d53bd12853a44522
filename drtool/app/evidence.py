"""Use cases: status, compliance report, metrics, check."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import __version__, catalog, clock, health, metrics, postgres, reports
from ..crypto import age
from ..errors import CheckFailed, DrtoolError, IdentityError, PreconditionFailed
from ..policy import Policy, StorageTarget
from ..storage import Store, put_bytes
from .base import AppBase, _check_region


@dataclass
class Evidence:
    """What the store says about a policy, read once for status, report and metrics."""

    backups: list[dict[str, Any]]  # manifests, newest first
    records: list[dict[str, Any]]  # drill records, newest first
    problems: list[str]  # unreadable drill records
    pending: dict[str, dict]  # copies not yet made: target -> {backup_id: ...}
    schedule: dict[str, Any]


class EvidenceJobs(AppBase):
    # -- status and reports ------------------------------------------------------------------------
    def _evidence(self, policy: Policy, store: Store) -> Evidence:
        records, problems = catalog.list_drill_records(store, policy.name)
        return Evidence(
            backups=[b.manifest for b in catalog.list_backups(store, policy.name)],
            records=records,
            problems=problems,
            pending=catalog.read_copy_state(store, policy.name)["pending"],
            schedule=catalog.read_schedule_state(store, policy.name),
        )

    def status(self, policy: Policy) -> dict[str, Any]:
        """Health of one policy from the store's evidence plus live probes of its components."""
        return self._status(policy)[0]

    def _status(self, policy: Policy) -> tuple[dict[str, Any], Evidence | None]:
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
            result = health.evaluate(now=clock.utcnow(), rpo=policy.rpo, newest_recovery_point=None, last_drill=None,
                                     copies_pending={}, schedule_state={}, components=components)  # fmt: skip
            return result, None
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
        ev = self._evidence(policy, store)
        if ev.problems:
            components["drill_records"] = f"{len(ev.problems)} unreadable"
        result = health.evaluate(
            now=clock.utcnow(),
            rpo=policy.rpo,
            newest_recovery_point=clock.parse_iso(ev.backups[0]["recovery_point"]) if ev.backups else None,
            last_drill=ev.records[0] if ev.records else None,
            copies_pending={c.name: len(ev.pending.get(c.name, {})) for c in policy.copies},
            schedule_state=ev.schedule,
            components=components,
        )
        result["backups"] = len(ev.backups)
        return result, ev

    def metrics_rows(self, policies: list[Policy]) -> list[dict[str, Any]]:
        """Per-policy figures for the Prometheus textfile, from one read of the store's evidence."""
        rows = []
        for p in policies:
            row: dict[str, Any] = {"policy": p.name, "rpo_objective_seconds": p.rpo, "rto_objective_seconds": p.rto}
            try:
                st, ev = self._status(p)
            except DrtoolError:
                ev = None
            if ev is None:
                rows.append({**row, "healthy": 0})
                continue
            row["healthy"] = 1 if st["status"] == "healthy" else 0
            row["rpo_achieved_seconds"] = st["last_backup_age_seconds"]
            row["copies_pending"] = sum(st["copies_pending"].values())
            success = []
            if ev.backups:
                m = ev.backups[0]
                done = clock.parse_iso(m["completed_at"])
                row["last_backup_timestamp_seconds"] = done.timestamp()
                row["last_backup_duration_seconds"] = (done - clock.parse_iso(m["started_at"])).total_seconds()
                row["last_backup_size_bytes"] = m["sizes"]["stored_bytes"]
                success.append(done.timestamp())
            if ev.records:
                r = ev.records[0]
                row["drill_rto_seconds"] = r.get("rto_seconds")
                row["drill_success"] = 1 if r.get("passed") else 0
                row["drill_last_timestamp_seconds"] = clock.parse_iso(r["started_at"]).timestamp()
                success += [clock.parse_iso(x["completed_at"]).timestamp() for x in ev.records if x.get("passed")][:1]
            row["last_success_timestamp_seconds"] = max(success) if success else None
            now = clock.utcnow()
            row["compliant"] = int(self._report_section(p, ev, now - dt.timedelta(days=90), now)["compliant"])
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
            ev = self._evidence(p, self.store(p))
            for problem in ev.problems:
                self.warn(problem)
            sections.append(self._report_section(p, ev, start, end))
        return reports.build(sections, start=start, end=end, now=clock.utcnow(), version=__version__)

    @staticmethod
    def _report_section(p: Policy, ev: Evidence, start, end) -> dict[str, Any]:
        lock = f"{p.storage.object_lock_mode} {p.storage.object_lock_days} days" if p.storage.object_lock_days else None
        copies = [{"name": c.name, "url": c.url, "region": c.region} for c in p.copies]
        info = {
            "name": p.name,
            "rpo_seconds": p.rpo,
            "rto_seconds": p.rto,
            "retention": {k: v for k, v in vars(p.retention).items() if v},
            "copies": copies,
            "storage": {"url": p.storage.url, "region": p.storage.region, "object_lock": lock, "copies": copies},
            "encryption": {
                "scheme": "age-v1-x25519",
                "recipients": [age.recipient_fingerprint(r) for r in p.recipients],
            },
        }
        return reports.build_policy(
            policy=info, backups=ev.backups, drills=ev.records, drill_problems=ev.problems, schedule_state=ev.schedule,
            copies_pending={k: sorted(v) for k, v in ev.pending.items()}, start=start, end=end,
        )  # fmt: skip

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
            s = self.store(policy)
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
                s = self.store(policy, target=c.name)
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
