"""Use case: PITR drills (`drtool drill --physical`): a base backup and the archived WAL after it
replayed into a throwaway server (drtool.physdrill), the recovery point read from the restored
data, the record kept like a logical drill's (docs/drills.md, "Physical drills")."""

from __future__ import annotations

import datetime as dt
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, catalog, clock, health, pgtools, physdrill, postgres, walarchive, walchain, walnames
from ..errors import DrtoolError, IntegrityError, NotFound, UsageError
from ..policy import Policy
from ..storage import Store
from . import walview
from .context import Context, UseCase
from .drill import DrillJobs
from .physical import PhysicalJobs, newest_archived

ACCURACY_MARGIN = 5.0  # seconds beyond the heartbeat interval a drill to T may stop short of T
FETCH_WORKERS = 4


class WalChainBroken(IntegrityError):
    """The archive lacks WAL the drill must replay (a segment missing mid-chain)."""


class TargetUnreachable(IntegrityError):
    """The target time is later than the newest archived WAL."""


@dataclass
class _PhysAttempt:
    requested: str | None
    to_time: dt.datetime | None
    step: str = "catalog"
    backup: catalog.Backup | None = None
    wal: list[str] = field(default_factory=list)  # the files the drill replays, in order
    chain: dict[str, Any] | None = None
    target: str = ""
    version: str = ""


class PitrDrillJobs(UseCase):
    """Physical (PITR) drills: a base backup is chosen and extracted as a physical restore does it
    and the record is kept as a logical drill's is: it is given those use cases."""

    def __init__(self, ctx: Context, *, physical: PhysicalJobs, drills: DrillJobs) -> None:
        super().__init__(ctx)
        self.physical, self.drills = physical, drills

    def drill_physical(self, policy: Policy, *, backup_id: str | None = None,
                       to_time: dt.datetime | None = None) -> dict[str, Any]:  # fmt: skip
        """Restore a base backup + archived WAL into a scratch server to the latest point (or
        `to_time`), promote, verify, measure RPO from the replayed data and RTO to promotion, and
        store the record. Like drill(): `outcome` is passed, failed or could-not-run."""
        if not policy.pitr.enabled:
            raise UsageError(f"{policy.source}: drill --physical needs [pitr] enabled = true")
        store = self.ctx.store(policy)
        self.ctx.signer(policy)
        archiver = self.source_archiver(policy)  # the source's archiver at D, the leading indicator
        started, t0 = clock.utcnow(), clock.monotonic()
        with self.ctx.reported(policy, "drill") as outcome, self.ctx.locked(policy, store, "drill"):
            rec = self.drill_physical_locked(policy, store, backup_id, to_time, started, t0, archiver)
            outcome.update(ok=rec["outcome"] == health.PASSED and rec["rpo_met"] is not False,
                           summary=f"physical drill {rec['drill_id']}: " + (rec["failure"] or "passed"),
                           details={"drill_id": rec["drill_id"], "outcome": rec["outcome"],
                                    "rto_seconds": rec["rto_seconds"]})  # fmt: skip
            return rec

    def source_archiver(self, policy: Policy) -> dict[str, Any]:
        try:
            stats = postgres.archiver_stats(self.ctx.source(policy))
        except DrtoolError as e:  # a drill is for the day the source is gone: not a reason to stop
            return {"read_at": clock.iso(clock.utcnow()), "error": str(e)}
        return {"read_at": clock.iso(clock.utcnow()), **stats}

    def drill_physical_locked(self, policy: Policy, store: Store, backup_id: str | None, to_time: dt.datetime | None,
                        started: dt.datetime, t0: float, archiver: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        drill_id = catalog.new_backup_id(started)
        attempt = _PhysAttempt(requested=backup_id, to_time=to_time)
        try:
            out = self._attempt_physical(policy, store, attempt, t0)
        except UsageError:
            raise
        except DrtoolError as e:
            out = physdrill.PhysOutcome()
            at_fault = isinstance(e, IntegrityError) if attempt.step == "catalog" else None
            if isinstance(e, (WalChainBroken, TargetUnreachable)):
                out.failure = f"{attempt.step}: {e}"
                out.check(attempt.step, False, str(e))
            else:
                out.stop(attempt.step, e, at_fault=at_fault)
        record = self._physical_record(policy, drill_id, started, out, attempt, archiver)
        self.drills.keep_drill_record(store, record, self.ctx.signer(policy), policy)  # the index learns of it
        return record

    def _attempt_physical(self, policy: Policy, store: Store, attempt: _PhysAttempt,
                          t0: float) -> physdrill.PhysOutcome:  # fmt: skip
        backup = attempt.backup = self.physical.choose_base(store, policy, attempt.requested, attempt.to_time, None)
        info = backup.record.physical
        assert info is not None
        attempt.step = "identity"
        identities = self.ctx.identities(policy)
        attempt.step = "provision"
        bin_dir, attempt.version = pgtools.find_server_bin(int(info.pg_version), policy.drill.pg_bin_dir)
        verify_tool = pgtools.find_tool("pg_verifybackup", str(bin_dir))
        attempt.step = "wal_chain"
        attempt.wal = self._wal_to_replay(store, policy, backup, identities, attempt)
        key = backup.prefix + backup.dump["key"]
        where = f"backup {backup.id}, object {store.url}/{key}"
        sysid = int(info.sysid)

        def fetch_wal(folder: Path) -> int:
            def one(name: str) -> None:
                if not walarchive.fetch_file(store, policy, identities, name, folder / name, sysid):
                    raise NotFound(f"{store.url}/{walnames.key_for(policy.name, sysid, name)}: archived WAL "
                                   "file vanished during the drill (pruned meanwhile?)")  # fmt: skip

            with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
                list(pool.map(one, attempt.wal))
            return len(attempt.wal)

        source = self.ctx.source(policy)
        plan = physdrill.Plan(
            bin_dir=bin_dir, version=attempt.version,
            extract=lambda folder: self.physical.extract(store, key, backup, identities, where, folder),
            fetch_wal=fetch_wal, verify_tool=verify_tool, dbname=source.dbname or "postgres",
            user=postgres.user_of(source), to_time=attempt.to_time, checks=policy.drill.checks,
            amcheck=policy.drill.amcheck, profile=policy.drill.profile,
        )  # fmt: skip
        attempt.step = "drill"
        return physdrill.run(plan, t0=t0)

    def _wal_to_replay(self, store: Store, policy: Policy, backup: catalog.Backup, identities,
                       attempt: _PhysAttempt) -> list[str]:  # fmt: skip
        """The archived files recovery reads: every history file, then each segment on the
        target timeline's path from the backup's start to the newest (to_time: to the newest too;
        recovery stops at the target). A gap before the target fails the drill, naming it."""
        info = backup.record.physical
        assert info is not None
        doc = info.as_dict()
        size = int(info.wal_segment_size)
        if attempt.to_time is not None:
            newest = newest_archived(store, policy, info.sysid, size)
            end = newest[1] if newest else None
            if end is None or attempt.to_time > end:
                attempt.step = "target"
                latest = f"{clock.iso(end)} (end of {newest[0]})" if newest and end else "none: no WAL is archived"
                raise TargetUnreachable(f"--to-time {clock.iso(attempt.to_time)} is after the newest archived WAL; "
                                        f"the newest restorable time is {latest}")  # fmt: skip
        files = walview.list_archives(store, policy.name).get(str(info.sysid), {})
        archive = walview.load(store, policy.name, str(info.sysid), files, size, identities, self.ctx.warn)
        c = walchain.chain(walview.base_backup(backup.id, doc), archive.segments, archive.chain_histories(), size=size)
        if c.problems:
            raise WalChainBroken(f"{store.url}/{walnames.archive_prefix(policy.name, info.sysid)}: {c.problems[0]}")
        last = c.newest.number if c.newest else c.end.number
        for g in c.gaps:
            row = walview.gap_row(store, archive, c, g)
            until = row["restorable_until"]
            if attempt.to_time is None or until is None or clock.parse_iso(until) < attempt.to_time:
                more = f" (and {g.count - 1} more through {g.last.name})" if g.count > 1 else ""
                when = f"; restorable until {until}" if until else ""
                raise WalChainBroken(f"{row['key']}: WAL segment {g.first.name} is missing from the archive{more}: "
                                     f"{g.breaks}{when}")  # fmt: skip
            last = min(last, g.first.number - 1)  # the gap lies after the target: replay stops before it
        segments = [walnames.Segment(walchain.owner(n, c.spans, size), n, size).name
                    for n in range(c.start.number, last + 1)]  # fmt: skip
        histories = sorted(n for n in files if walnames.HISTORY.match(n))
        attempt.chain = {"timeline": c.timeline, "first": segments[0] if segments else None,
                         "last": segments[-1] if segments else None, "segments": len(segments),
                         "histories": len(histories)}  # fmt: skip
        return histories + segments

    def _physical_record(self, policy: Policy, drill_id: str, started: dt.datetime, out: physdrill.PhysOutcome,
                         attempt: _PhysAttempt, archiver: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        completed = clock.utcnow()
        backup = attempt.backup
        info = backup.record.physical if backup else None
        point, source = _recovery_point(out, info)
        rpo = accuracy = None
        failure, result = out.failure, out.result
        if point is not None and attempt.to_time is None:
            rpo = round((started - point).total_seconds(), 3)
        if point is not None and attempt.to_time is not None and out.replay is not None:
            accuracy = round((attempt.to_time - point).total_seconds(), 3)
            limit = policy.pitr.heartbeat_interval + ACCURACY_MARGIN
            if policy.pitr.heartbeat_interval and accuracy > limit and result == health.PASSED:
                failure, result = (f"recovery to {clock.iso(attempt.to_time)} stopped {accuracy:.1f}s short of it "
                                   f"(more than pitr.heartbeat_interval + {ACCURACY_MARGIN:.0f}s): WAL is missing"), \
                    health.FAILED  # fmt: skip
                out.check("recovery_accuracy", False, failure)
        rto = out.rto_seconds
        rto_met = None if policy.rto is None or rto is None else rto <= policy.rto
        if result == health.PASSED and rto_met is False:
            failure, result = f"RTO {rto:.1f}s exceeds objectives.rto ({policy.rto}s)", health.FAILED
        if attempt.chain and not any(c["name"] == "wal_chain" for c in out.checks):
            ch = attempt.chain
            out.checks.insert(0, {"name": "wal_chain", "ok": True, "detail": (
                f"{ch['segments']} segments {ch['first']} .. {ch['last']} on timeline {ch['timeline']}, no gap"
                + (" up to the target" if attempt.to_time else ""))})  # fmt: skip
        age = clock.process_age()
        if age is None and self.ctx.command_t0 is not None:
            age = clock.monotonic() - self.ctx.command_t0
        return {
            "format": catalog.DRILL_FORMAT,
            "version": catalog.DRILL_VERSION,
            "kind": "physical",
            "drill_id": drill_id,
            "policy": policy.name,
            "backup_id": backup.id if backup else attempt.requested,
            "storage_target": "primary",
            "target_time": clock.iso(attempt.to_time) if attempt.to_time else None,
            "target": "time" if attempt.to_time else "latest",
            "backup_recovery_point": clock.iso(info.end_time) if info else None,
            "backup_stored_bytes": backup.manifest["sizes"]["stored_bytes"] if backup else None,
            "bytes_restored": out.bytes_restored,
            "wal_files_replayed": out.wal_files,
            "wal_chain": attempt.chain,
            "source_server_version": backup.manifest.get("server_version") if backup else None,
            "target_server": {"kind": "scratch", "label": out.target_label, "server_version": attempt.version or None},
            "scratch_profile": policy.drill.profile,
            "host": socket.gethostname(),
            "tool": {"name": "drtool", "version": __version__},
            "started_at": clock.iso(started),
            "completed_at": clock.iso(completed),
            "phases": out.phases,
            "milestones": out.marks,
            "checks": out.checks,
            "recovery_point": clock.iso(point) if point else None,
            "recovery_point_source": source,
            "last_replayed_commit": _iso(out.replay.last_commit) if out.replay else None,
            "newest_heartbeat": _iso(out.replay.heartbeat) if out.replay else None,
            "timeline": out.replay.timeline if out.replay else None,
            "recovery_accuracy_seconds": accuracy,
            "source_archiver": archiver,
            "rpo_seconds": rpo,
            "rto_seconds": rto,
            "rto_first_write_seconds": out.rto_first_write_seconds,
            "objectives": {"rpo_seconds": policy.rpo, "rto_seconds": policy.rto},
            "rpo_met": None if policy.rpo is None or rpo is None else rpo <= policy.rpo,
            "rto_met": rto_met,
            "worst_rpo": None,
            "outcome": result,
            "passed": result == health.PASSED,
            "failure": failure,
            "command_seconds": None if age is None else round(age, 3),
        }


def _iso(t: dt.datetime | None) -> str | None:
    return clock.iso(t.astimezone(dt.UTC)) if t is not None else None


def _recovery_point(out: physdrill.PhysOutcome, info) -> tuple[dt.datetime | None, str | None]:
    """The newest moment the restored copy provably holds: the later of the last replayed commit
    and the newest heartbeat row; the base backup's end when no commit was replayed."""
    if out.replay is None:
        return None, None
    found = [
        (t.astimezone(dt.UTC), what)
        for t, what in (
            (out.replay.last_commit, "last replayed commit"),
            (out.replay.heartbeat, "newest heartbeat row"),
        )
        if t
    ]
    if found:
        return max(found)
    return (info.end_time, "base backup end (no commit replayed)") if info else (None, None)
