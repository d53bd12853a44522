"""What every use case shares: stores, credentials, keys, the policy lock, notifications."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import catalog, clock, locks, notify, pipeline, postgres
from ..crypto import age
from ..errors import DrtoolError, IdentityError, NotFound, StorageError, UsageError
from ..policy import Policy, StorageTarget
from ..secrets import Secret
from ..storage import LocalStore, Store, open_store

Progress = Callable[[int], None]
ProgressFactory = Callable[[str, int | None], Progress]  # (label, expected total) -> callback


def _no_progress(label: str, total: int | None) -> Progress:
    return lambda n: None


@dataclass
class AppBase:
    """State and helpers shared by the use cases; App (drtool.app) combines them."""

    progress: ProgressFactory = _no_progress
    warn: Callable[[str], None] = lambda msg: None
    command_t0: float | None = None  # monotonic time the command began (drill records its duration)
    lock_wait: float = 0  # seconds to wait for a policy lock held by another process
    incomplete_grace: float = 6 * 3600  # an unfinished backup younger than this may still be running

    # -- notifications: never fail the job ------------------------------------------------------
    def _url(self, policy: Policy, env: str | None) -> Secret | None:
        value = os.environ.get(env) if env else None
        if env and not value:
            self.warn(f"{policy.source}: notify: environment variable {env} is not set; not notifying")
        return Secret(value) if value else None

    def notify_start(self, policy: Policy) -> None:
        url = self._url(policy, policy.notify.heartbeat_url_env)
        if url and (err := notify.heartbeat(url, "start", policy.notify.timeout)):
            self.warn(err)

    def notify_outcome(self, policy: Policy, job: str, ok: bool, summary: str, details: dict | None = None) -> None:
        n = policy.notify
        hb = self._url(policy, n.heartbeat_url_env)
        if hb and (err := notify.heartbeat(hb, "ok" if ok else "fail", n.timeout)):
            self.warn(err)
        if not ok or n.on_success:
            hook = self._url(policy, n.webhook_url_env)
            mark = "succeeded" if ok else "FAILED"
            payload = {"text": f"drtool {job} of {policy.name} {mark}: {summary}", "policy": policy.name,
                       "job": job, "ok": ok, "host": socket.gethostname(), "at": clock.iso(clock.utcnow()),
                       "details": details or {}}  # fmt: skip
            if hook and (err := notify.webhook(hook, payload, n.timeout)):
                self.warn(err)

    @contextmanager
    def reported(self, policy: Policy, job: str) -> Iterator[dict]:
        """Heartbeat start, then ok or fail and a webhook for the job's outcome. The block may
        set result["ok"] = False (a drill that ran and failed) and result["summary"]."""
        result: dict[str, Any] = {"ok": True, "summary": "done"}
        self.notify_start(policy)
        try:
            yield result
        except DrtoolError as e:
            self.notify_outcome(policy, job, False, str(e))
            raise
        self.notify_outcome(policy, job, result["ok"], result["summary"], result.get("details"))

    @contextmanager
    def locked(self, policy: Policy, store: Store, job: str) -> Iterator[locks.Lock]:
        """Hold the policy's lock (one job at a time per policy, across hosts) for the block."""
        lock = locks.acquire(store, policy.name, job, wait=self.lock_wait, now=clock.utcnow, on_wait=self.warn)
        if "took_over" in lock.body:
            self.warn(f"took over a stale lock of policy '{policy.name}': {lock.body['took_over']}")
        try:
            yield lock
        finally:
            locks.release(store, lock)

    # -- building blocks -----------------------------------------------------------------------
    def target(self, policy: Policy, name: str | None) -> StorageTarget:
        """The primary storage target, or the copy target with that name."""
        if name in (None, "primary"):
            return policy.storage
        for c in policy.copies:
            if c.name == name:
                return c
        names = ", ".join(["primary", *(c.name for c in policy.copies)])
        raise UsageError(f"{policy.source}: no storage target named '{name}' (known: {names})")

    def store(self, policy: Policy, *, target: str | None = None) -> Store:
        """The storage target's store, refused when its root (folder or bucket) does not exist:
        only `drtool init` creates one, so a typo or an unmounted disk never gets the backups."""
        spec = self.target(policy, target)
        store = open_store(spec)
        try:
            if isinstance(store, LocalStore):
                store.check_root()
            else:
                store.check_bucket()  # some servers create missing buckets on write: refuse that
        except NotFound as e:
            raise StorageError(f"{e}; run `drtool init -p {policy.source}` to create it") from None
        if not isinstance(store, LocalStore) and spec.object_lock_days:
            usable, detail = store.lock_status()
            if not usable:
                raise StorageError(f"{store.url}: storage.object_lock_days is set, but {detail}")
        return store

    def source(self, policy: Policy) -> postgres.Conninfo:
        return postgres.Conninfo(policy.dsn, _password_from_env(policy.password_env, "database.password_env"))

    def identities(self, policy: Policy) -> list[age.Identity]:
        path = policy.identity_file
        if not path:
            raise UsageError(
                f"{policy.source}: encryption.identity_file is not set; the private key is "
                "needed to restore or deep-verify"
            )
        try:
            st = os.stat(path)
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise IdentityError(f"identity file {path} does not exist (encryption.identity_file)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise IdentityError(f"identity file {path} cannot be read: {getattr(e, 'strerror', e)}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            self.warn(f"identity file {path} is readable by other users; chmod 600 it")
        try:
            return age.parse_identity_file(text)
        except ValueError as e:
            raise IdentityError(f"identity file {path}: {e}") from None

    # -- keygen ----------------------------------------------------------------------------------
    def keygen(self, output: str) -> dict[str, Any]:
        ident = age.Identity.generate()
        path = Path(output)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise UsageError(f"{path} already exists; refusing to overwrite a key") from None
        except OSError as e:
            raise UsageError(f"cannot create {path}: {e.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(age.keygen_text(ident, clock.utcnow()))
        return {"identity_file": str(path), "recipient": ident.recipient}

    def _decoded(self, store: Store, key: str, backup: catalog.Backup, identities, where: str):
        raw = store.get(key)
        obj = backup.dump
        try:
            yield from pipeline.decode(
                raw,
                identities=identities,
                expected_sha256=obj["sha256"],
                expected_size=obj["size"],
                where=where,
                progress=self.progress(f"restore {backup.id}", obj["size"]),
            )
        finally:
            raw.close()


def _check_region(store: Store, target: StorageTarget) -> None:
    """Fail closed when an S3 bucket is not in the region the policy declares."""
    actual = getattr(store, "bucket_region", lambda: None)()
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
