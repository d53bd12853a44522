"""Plain helpers the use cases share (no state: that is the Context, app/context.py)."""

from __future__ import annotations

import os

from ..errors import StorageError, UsageError
from ..policy import StorageTarget
from ..secrets import Secret
from ..storage import BucketAdmin, LockInspector, Store


def _require_usable_lock(store: Store) -> None:
    """storage.object_lock_days is set: the store must have immutability, and it must be usable.
    (A folder store has none; the policy loader refuses object_lock_days on a file:// target.)"""
    if not isinstance(store, LockInspector):
        return
    usable, detail = store.lock_status()
    if not usable:
        raise StorageError(f"{store.url}: storage.object_lock_days is set, but {detail}")


def _check_region(store: Store, target: StorageTarget) -> None:
    """Fail closed when an S3 bucket is not in the region the policy declares."""
    actual = store.bucket_region() if isinstance(store, BucketAdmin) else None
    if actual is not None and target.region and actual != target.region:
        raise StorageError(f"{store.url}: bucket is in region {actual}, but the policy declares {target.region} "
                           f"(storage target '{target.name}')")  # fmt: skip


def _password_from_env(name: str | None, where: str) -> Secret | None:
    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise UsageError(f"{where}: environment variable {name} is not set")
    return Secret(value)
