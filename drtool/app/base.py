"""What every use case shares: stores, credentials, keys, the policy lock, notifications."""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import catalog, clock, locks, notify, pipeline, postgres, trust
from ..crypto import age, sshsig
from ..errors import DrtoolError, IdentityError, NotFound, StorageError, UsageError
from ..policy import Policy, StorageTarget
from ..secrets import Secret
from ..storage import LocalStore, RetryingStore, Store, open_store

Progress = Callable[[int], None]
ProgressFactory = Callable[[str, int | None], Progress]  # (label, expected total) -> callback


def _no_progress(label: str, total: int | None) -> Progress:
    return lambda n: None


_LOG = logging.getLogger("drtool.app")


def log_warning(msg: str) -> None:
    """Where use cases' warnings go: stdlib logging (the CLI installs the handler and format)."""
    _LOG.warning(msg)


@dataclass
class AppBase:
    """State and helpers shared by the use cases; App (drtool.app) combines them."""

    progress: ProgressFactory = _no_progress
    # kept as a thin shim over logging: use cases call self.warn(msg) (or pass it as a callback)
    warn: Callable[[str], None] = log_warning
    command_t0: float | None = None  # monotonic time the command began (drill records its duration)
    lock_wait: float = 0  # seconds to wait for a policy lock held by another process
    # how long a lock lasts unrenewed; renewed every third of it (docs/design.md, "Locks and leases")
    lock_lease: float = field(default_factory=locks.lease_seconds)
    # an unfinished backup younger than this may still be running (one whose lock is live is kept
    # whatever its age); longer than the lease, so a dead job's lock expires first
    incomplete_grace: float = 3600
    _held: dict[str, locks.Lock] = field(default_factory=dict, repr=False)  # policy -> lock this process holds
    _signers: dict[str, trust.Signer] = field(default_factory=dict, repr=False)  # key_file -> loaded key

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
        lock = locks.acquire(store, policy.name, job, ttl=self.lock_lease, wait=self.lock_wait, now=clock.utcnow,
                             on_wait=self.warn)  # fmt: skip
        if "took_over" in lock.body:
            self.warn(f"took over a stale lock of policy '{policy.name}': {lock.body['took_over']}")
        lock.keep_alive(self.lock_lease / 3)
        self._held[policy.name] = lock
        try:
            yield lock
        finally:
            self._held.pop(policy.name, None)
            locks.release(store, lock)

    def ensure_lock_held(self, policy: Policy) -> None:
        """Before committing anything: LockLost if this process took the policy's lock and lost it
        (taken over, or not renewable before its lease ran out). No-op outside locked()."""
        lock = self._held.get(policy.name)
        if lock is not None:
            lock.ensure_held()

    def own_lock_token(self, policy: Policy) -> str | None:
        lock = self._held.get(policy.name)
        return lock.token if lock is not None else None

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
        return RetryingStore(store, attempts=spec.max_attempts, on_retry=self.warn)  # reads resume after faults

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

    def optional_identities(self, policy: Policy) -> list[age.Identity] | None:
        """The identities when the policy names a readable identity file, else None (with a
        warning when it is named but cannot be read): for reads that do better with the key but
        must work without it (timeline histories in list and prune)."""
        if not policy.identity_file:
            return None
        try:
            return self.identities(policy)
        except IdentityError as e:
            self.warn(f"{e}; timeline history files are not read")
            return None

    # -- signing keys ------------------------------------------------------------------------------
    def signer(self, policy: Policy) -> trust.Signer | None:
        """The key this host signs what it writes with ([signing].key_file), or None when unset."""
        path = policy.signing.key_file
        if not path:
            return None
        if path not in self._signers:  # loaded (and its mode warned about) once per command
            self._signers[path] = self.load_signer(path, "signing.key_file")
        return self._signers[path]

    def verifier(self, policy: Policy) -> trust.Verifier | None:
        """The keys whose signatures this host accepts ([signing].trusted_keys), or None when unset:
        then nothing is origin-checked (and `check` warns)."""
        keys = policy.signing.trusted_keys
        return trust.Verifier.from_lines(keys, f"{policy.source}: signing.trusted_keys") if keys else None

    def load_signer(self, path: str, where: str, *, allow_pem: bool = False) -> trust.Signer:
        """One IdentityError naming the file when it is missing, unreadable or not an unencrypted
        Ed25519 key; a warning when other users can read it."""
        try:
            st = os.stat(path)
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise IdentityError(f"signing key {path} does not exist ({where})") from None
        except OSError as e:
            raise IdentityError(f"signing key {path} cannot be read: {e.strerror} ({where})") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            self.warn(f"signing key {path} is readable by other users; chmod 600 it")
        return trust.Signer.from_bytes(data, path, allow_pem=allow_pem)

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
