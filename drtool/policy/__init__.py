"""Policy files: the only importer of tomllib. See docs/policy.md."""

from .loader import load_policies, load_policy
from .schema import BackupOptions, Drill, Policy, Retention, Schedule, Signing, StorageTarget

__all__ = [
    "load_policies",
    "load_policy",
    "Policy",
    "StorageTarget",
    "Retention",
    "Schedule",
    "BackupOptions",
    "Drill",
    "Signing",
]
