"""The one explicit context each use case is given (docs/design.md, "Layers")."""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import catalog, catalog_index, clock, locks, notify, pipeline, postgres, trust
from ..crypto import age
from ..errors import DrtoolError, IdentityError, NotFound, StorageError, UsageError
from ..policy import Policy, StorageTarget
from ..secrets import Secret
from ..storage import BucketAdmin, RetryingStore, RootCreator, Store, open_store
from .base import _password_from_env, _require_usable_lock

Progress = Callable[[int], None]


class ProgressFactory(Protocol):
    """(label, expected total, whether that total is only an estimate) -> a callback told of each
    piece's size."""

    def __call__(self, label: str, total: int | None, estimate: bool = False) -> Progress: ...


def _no_progress(label: str, total: int | None, estimate: bool = False) -> Progress:
    return lambda n: None


_LOG = logging.getLogger("drtool.app")


def log_warning(msg: str) -> None:
    """Where use cases' warnings go: stdlib logging (the CLI installs the handler and format)."""
    _LOG.warning(msg)


@dataclass
class Context:
    """What every use case is given: settings of this command, the store factory and clock, and
    the helpers built on them (stores, keys, the policy lock, notifications). Use cases share
    nothing else; one that needs another is given it explicitly (ScheduleJobs)."""

    progress: ProgressFactory = _no_progress
    open_store: Callable[[StorageTarget], Store] = open_store  # the store factory (tests may wrap it)
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
    # identity_file -> (its stat, its identities): a fleet's status parsed the same file per policy
    _identities: dict[str, tuple[tuple, list[age.Identity]]] = field(default_factory=dict, repr=False)

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

    def progress_shown(self) -> bool:
        """Whether progress is shown at all: only then is an estimate of its total worth a request."""
        return self.progress is not _no_progress and getattr(self.progress, "enabled", True) is not False

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
        store = self.open_store(spec)
        try:
            if isinstance(store, RootCreator):
                store.check_root()
            if isinstance(store, BucketAdmin):
                store.check_bucket()  # some servers create missing buckets on write: refuse that
        except NotFound as e:
            raise StorageError(f"{e}; run `drtool init -p {policy.source}` to create it") from None
        if spec.object_lock_days:
            _require_usable_lock(store)
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
            # read again when the file changes (or its mode, owner: ctime); else parsed once per process
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
            known = self._identities.get(path)
            if known is not None and known[0] == stamp:
                return known[1]
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise IdentityError(f"identity file {path} does not exist (encryption.identity_file)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise IdentityError(f"identity file {path} cannot be read: {getattr(e, 'strerror', e)}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            self.warn(f"identity file {path} is readable by other users; chmod 600 it")
        try:
            identities = age.parse_identity_file(text)
        except ValueError as e:
            raise IdentityError(f"identity file {path}: {e}") from None
        self._identities[path] = (stamp, identities)
        return identities

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

    # -- the catalog index: read when it is usable, kept up to date by every writer ------------------
    def read_index(
        self, policy: Policy, store: Store, evidence: tuple[str, ...] = (), *, deferred: bool = False
    ) -> catalog_index.IndexRead | None:
        """The policy's catalog from its index (one GET and one LIST, and one LIST per folder of
        `evidence` whose summaries the caller uses), or None after one warning saying why it
        cannot be used: then the caller reads the manifests. `deferred`: the caller parses only the
        newest backup's manifest whole, and of the others what a report publishes (catalog_index.read)."""
        try:
            return catalog_index.read(store, policy.name, self.verifier(policy), evidence, deferred)
        except catalog_index.IndexUnusable as e:
            self.warn(f"{e}; reading the manifests instead (`drtool catalog rebuild -p {policy.source}` "
                      "makes it anew)")  # fmt: skip
            return None

    def update_index(self, policy: Policy, store: Store, **changes: Any) -> None:
        """Merge changes (written=manifests, drills=records, checks=check records) into the index;
        a failure is a warning, never the job's: the index is a cache readers check."""
        try:
            catalog_index.update(store, policy.name, verifier=self.verifier(policy), signer=self.signer(policy),
                                 on_untrusted=self.warn, **changes)  # fmt: skip
        except DrtoolError as e:
            self.warn(f"catalog index of policy '{policy.name}' not updated ({e}); readers fall back to the manifests")

    # -- reading a backup's dump ------------------------------------------------------------------
    def decoded(self, store: Store, key: str, backup: catalog.Backup, identities: list[age.Identity],
                where: str) -> Iterator[bytes]:  # fmt: skip
        """The plain dump of `backup` (object `key` in `store`), authenticated and hash-checked."""
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


class UseCase:
    """A use case: built on the command's one Context (self.ctx). Use cases share nothing through
    self; one that calls another is given it in its constructor."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
