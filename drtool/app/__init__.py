"""Use cases: backup, restore, drill, prune, run, report, ... (one module each).

The only layer that wires adapters together: builds stores, reads the clock, loads secrets.
It never prints; results are plain dicts the CLI renders (and --json emits as they are).
Each use case is a class built on the command's one Context (app/context.py); App is the thin
facade the CLI holds, which builds them and passes each the use cases it calls.
"""

from __future__ import annotations

from ..policy import Policy
from ..storage import Store
from .backup import BackupJobs
from .context import Context, Progress, ProgressFactory
from .drill import DrillJobs
from .evidence import EvidenceJobs
from .index import IndexJobs
from .init import InitJobs
from .outcome import Outcome
from .physical import PhysicalJobs
from .pitr_drill import PitrDrillJobs
from .restore import RestoreJobs
from .schedule import ScheduleJobs
from .wal import WalJobs


class App:
    """The application object the CLI holds (STYLE.md: one object passed as ctx.obj): the
    command's Context and each use case built on it. Its methods are the commands' entry points;
    the work is in the use case modules."""

    def __init__(self, ctx: Context | None = None) -> None:
        self.ctx = ctx or Context()
        self.backups = BackupJobs(self.ctx)
        self.restores = RestoreJobs(self.ctx)
        self.drills = DrillJobs(self.ctx)
        self.physical = PhysicalJobs(self.ctx, backups=self.backups, restores=self.restores)
        self.pitr_drills = PitrDrillJobs(self.ctx, physical=self.physical, drills=self.drills)
        self.schedule = ScheduleJobs(self.ctx, backups=self.backups, drills=self.drills, physical=self.physical,
                                     pitr_drills=self.pitr_drills)  # fmt: skip
        self.evidence = EvidenceJobs(self.ctx)
        self.setup = InitJobs(self.ctx)
        self.index = IndexJobs(self.ctx)
        self.wal = WalJobs(self.ctx)
        # the commands' entry points, one per use case method the CLI calls
        self.backup = self.backups.backup
        self.backup_physical = self.physical.backup_physical
        self.list_backups = self.restores.list_backups
        self.restorable_window = self.restores.restorable_window
        self.list_fleet = self.restores.list_fleet
        self.restore = self.restores.restore
        self.restore_physical = self.physical.restore_physical
        self.wal_fetch = self.physical.wal_fetch
        self.verify = self.restores.verify
        self.drill = self.drills.drill
        self.drill_physical = self.pitr_drills.drill_physical
        self.run = self.schedule.run
        self.run_fleet = self.schedule.run_fleet
        self.prune = self.schedule.prune
        self.prune_fleet = self.schedule.prune_fleet
        self.status = self.evidence.status
        self.check = self.evidence.check
        self.report = self.evidence.report
        self.report_sections = self.evidence.report_sections
        self.report_signer = self.evidence.report_signer
        self.verify_report = self.evidence.verify_report
        self.write_metrics = self.evidence.write_metrics
        self.metrics_rows = self.evidence.metrics_rows
        self.init = self.setup.init
        self.keygen = self.setup.keygen
        self.keygen_signing = self.setup.keygen_signing
        self.rebuild_index = self.index.rebuild_index
        self.wal_daemon = self.wal.run_daemon
        self.wal_status = self.wal.status
        self.wal_heartbeat = self.wal.heartbeat

    def store(self, policy: Policy, *, target: str | None = None) -> Store:
        return self.ctx.store(policy, target=target)


__all__ = ["App", "Context", "Outcome", "Progress", "ProgressFactory"]
