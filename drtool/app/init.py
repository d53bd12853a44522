"""Use case: init, the one command that creates a store root (folder or bucket)."""

from __future__ import annotations

from typing import Any

from ..errors import DrtoolError, StorageError
from ..policy import Policy, StorageTarget
from ..storage import BucketAdmin, RootCreator, open_store
from .base import AppBase, _check_region, _require_usable_lock
from .outcome import Outcome


class InitJobs(AppBase):
    def init(self, policy: Policy) -> Outcome:
        """Create the root of the primary store and of every copy target, or check the one that
        is there (idempotent). The result is {policy, ok, targets: [{target, url, created, ok, detail}]};
        a target that fails is reported in its entry (and in the error) and the others are still done."""
        targets = [policy.storage, *policy.copies]
        results = [self._init_target(t, "primary" if t is policy.storage else t.name) for t in targets]
        ok = all(r["ok"] for r in results)
        result = {"policy": policy.name, "ok": ok, "targets": results}
        error = None if ok else StorageError("; ".join(r["detail"] for r in results if not r["ok"]))
        return Outcome(result, error)

    def _init_target(self, spec: StorageTarget, name: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"target": name, "url": spec.url, "created": False}
        try:
            store = open_store(spec)
            if isinstance(store, RootCreator):
                entry["created"] = store.create_root()
                entry["detail"] = f"{store.url}: folder {'created (mode 0700)' if entry['created'] else 'exists'}"
            elif isinstance(store, BucketAdmin):
                entry["created"] = store.create_bucket(spec.region)
                _check_region(store, spec)
                detail = f"{store.url}: bucket '{store.bucket}' {'created' if entry['created'] else 'exists'}"
                if spec.object_lock_days:
                    _require_usable_lock(store)
                    detail += "; Object Lock and versioning enabled"
                entry["detail"] = detail
            else:
                raise StorageError(f"{store.url}: this kind of store has no root drtool can create")
            entry["ok"] = True
        except DrtoolError as e:
            entry.update(ok=False, detail=str(e))
        return entry
