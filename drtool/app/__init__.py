"""Use cases: backup, restore, drill, prune, run, report, ... (one module each).

The only layer that wires adapters together: builds stores, reads the clock, loads secrets.
It never prints; results are plain dicts the CLI renders (and --json emits as they are).
"""

from __future__ import annotations

from dataclasses import dataclass

from .backup import BackupJobs
from .base import Progress, ProgressFactory
from .drill import DrillJobs
from .evidence import EvidenceJobs
from .init import InitJobs
from .physical import PhysicalJobs
from .pitr_drill import PitrDrillJobs
from .restore import RestoreJobs
from .schedule import ScheduleJobs


@dataclass
class App(PitrDrillJobs, PhysicalJobs, BackupJobs, RestoreJobs, DrillJobs, ScheduleJobs, EvidenceJobs, InitJobs):
    """The application object the CLI holds (STYLE.md: one object passed as ctx.obj)."""


__all__ = ["App", "Progress", "ProgressFactory"]
