"""Policy files: the only importer of tomllib. See docs/policy.md."""

from .loader import load_fleet, load_policies, load_policy
from .schema import (
    BackupOptions,
    Drill,
    Fleet,
    InvalidPolicy,
    Pitr,
    Policy,
    Retention,
    Schedule,
    Signing,
    StorageTarget,
)

__all__ = [
    "load_fleet",
    "load_policies",
    "load_policy",
    "Fleet",
    "InvalidPolicy",
    "Policy",
    "StorageTarget",
    "Retention",
    "Schedule",
    "BackupOptions",
    "Drill",
    "Pitr",
    "Signing",
]
