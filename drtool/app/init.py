"""Use cases that set up: init (the one command that creates a store root) and keygen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import clock
from ..crypto import age, sshsig
from ..errors import DrtoolError, StorageError, UsageError
from ..policy import Policy, StorageTarget
from ..storage import BucketAdmin, RootCreator, open_store
from .base import _check_region, _require_usable_lock
from .context import UseCase
from .outcome import Outcome


class InitJobs(UseCase):
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

    # -- keygen ----------------------------------------------------------------------------------
    def keygen(self, output: str) -> dict[str, Any]:
        ident = age.Identity.generate()
        path = Path(output)
        _refuse_existing(path)
        _write_new_file(path, age.keygen_text(ident, clock.utcnow()).encode(), 0o600)
        return {"identity_file": str(path), "recipient": ident.recipient}

    def keygen_signing(self, output: str) -> dict[str, Any]:
        """An Ed25519 signing key in OpenSSH format (0600) and PATH.pub beside it."""
        path, pub_path = Path(output), Path(output + ".pub")
        _refuse_existing(path, pub_path)
        private, public = sshsig.generate("drtool")
        _write_new_file(path, private, 0o600)
        _write_new_file(pub_path, public.line().encode() + b"\n", 0o644)
        return {"key_file": str(path), "public_key_file": str(pub_path), "public_key": public.line(),
                "fingerprint": public.fingerprint}  # fmt: skip


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists() or path.is_symlink():
            raise UsageError(f"{path} already exists; refusing to overwrite a key")


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create path (never overwrite), making missing parent folders 0700 on the way."""
    missing = [p for p in path.parents if not p.exists()]
    try:
        for folder in reversed(missing):
            os.mkdir(folder, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise UsageError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as e:
        raise UsageError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
