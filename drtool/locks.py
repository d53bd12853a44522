"""One job at a time per policy, across hosts: a lock object in the store.

Taken with a conditional create (S3 If-None-Match, or an flock-guarded create on a folder
store), so two hosts never both hold it. The object says who holds it (host, pid, job, since,
a random token) and until when: a lease of LEASE seconds that the holder renews every
RENEW_EVERY seconds while it runs, with a conditional replace on the version it wrote last
(If-Match), so a job may run as long as it needs and a dead one frees the policy soon.

A holder that died is detected two ways: on the same host its pid is gone; on another host its
lease expired. A live pid on this host is never stale, whatever its lease says. A stale lock is
taken over with a conditional replace (If-Match on the stale version), so of two hosts racing
for it one wins. A holder that lost its lease (taken over, or not renewable until it expired)
finds out in `Lock.ensure_held()`, which a job calls before it commits anything. Release
deletes the lock only in the version we wrote (If-Match).

Lease, renewal, prune's grace for unfinished uploads and the systemd unit's timeout are one set:
see docs/design.md, "Locks and leases".
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .clock import iso, parse_iso
from .errors import DrtoolError, NotFound, PreconditionFailed, StorageError
from .storage import Store, get_bytes

LEASE = 15 * 60.0  # seconds a lock stays valid without renewal
RENEW_EVERY = LEASE / 3  # renewal interval: two more tries fit before the lease runs out
RETRY_EVERY = 15.0  # after a failed renewal, try again this soon (capped by the interval)
# For tests only: a short lease (seconds) so tests can outlive it; never set it in production.
TEST_LEASE_ENV = "DRTOOL_TEST_LOCK_LEASE"


class LockBusy(DrtoolError):
    """Another live process holds the lock."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


class LockLost(DrtoolError):
    """This job no longer holds its lock: it must not commit anything."""


def lease_seconds() -> float:
    value = os.environ.get(TEST_LEASE_ENV)
    return float(value) if value else LEASE


@dataclass(eq=False)
class Lock:
    """A lock this process holds; `keep_alive()` renews it in a background thread until release."""

    store: Store
    policy: str
    key: str
    token: str
    etag: str | None
    body: dict
    ttl: float = LEASE
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC), repr=False)
    valid_until: float = 0.0  # monotonic time the lease we last wrote runs out
    lost: str | None = None  # why we no longer hold it
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def keep_alive(self, every: float) -> None:
        """Renew the lease every `every` seconds (sooner after a failure) until stop()."""
        self._thread = threading.Thread(target=self._renew_loop, args=(every,), name="lock-renewal", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _renew_loop(self, every: float) -> None:
        wait = every
        while not self._stop.wait(wait):
            try:
                self.renew()
                wait = every
            except LockLost:
                return
            except StorageError as e:  # transient: try again soon, and give up once the lease ran out
                if time.monotonic() >= self.valid_until:
                    self.lost = f"could not renew its lease before it expired: {e}"
                    return
                wait = min(every, RETRY_EVERY, max(0.1, self.valid_until - time.monotonic()))

    def renew(self) -> None:
        """Extend the lease by rewriting the version we wrote last. LockLost if it is not ours any more."""
        with self._mutex:
            if self.lost:
                raise LockLost(self.lost)
            started, t = time.monotonic(), self.now()
            body = {**self.body, "expires": iso(t + dt.timedelta(seconds=self.ttl)), "renewed": iso(t)}
            for _ in range(3):
                try:
                    self.etag = self.store.put(self.key, [json.dumps(body).encode()], if_match=self.etag).etag
                    break
                except PreconditionFailed:
                    # someone replaced it, or an earlier write of ours landed with its reply lost
                    self.etag = self._own_version()
            else:
                raise StorageError(f"{self.store.url}/{self.key}: the lock keeps changing under us")
            self.body, self.valid_until = body, started + self.ttl

    def _own_version(self) -> str | None:
        """The etag of the lock object if it still carries our token, else LockLost."""
        try:
            info = self.store.stat(self.key)  # etag first: a version read after it cannot be older
            holder = json.loads(get_bytes(self.store, self.key))
        except NotFound:
            self.lost = "the lock object was removed by another process"
            raise LockLost(self.lost) from None
        except ValueError:
            holder = {}
        if holder.get("token") != self.token:
            self.lost = f"it was taken over: now {describe(holder)}"
            raise LockLost(self.lost)
        return info.etag

    def ensure_held(self) -> None:
        """Raise LockLost (one line naming the policy) unless we still hold the lock: checked
        against the store by renewing it now; a transient store error is tolerated while the lease
        we wrote last still runs."""
        try:
            self.renew()
        except LockLost as e:
            raise LockLost(f"lost the lock of policy '{self.policy}': {e}; nothing was committed") from None
        except StorageError as e:
            if time.monotonic() >= self.valid_until:
                self.lost = f"could not renew its lease before it expired: {e}"
                raise LockLost(f"lost the lock of policy '{self.policy}': {self.lost}; nothing was committed") from None


def lock_key(policy: str) -> str:
    return f"{policy}/locks/policy.lock"


def _alive_here(holder: dict) -> bool | None:
    """True/False for a holder on this host (its pid exists or not); None for another host."""
    if holder.get("host") != socket.gethostname():
        return None  # cannot tell from here: trust the expiry
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def is_live(holder: dict, t: dt.datetime) -> bool:
    """Whether a lock body belongs to a job that may still be running: a live pid on this host,
    or (elsewhere) an unexpired lease."""
    here = _alive_here(holder)
    if here is not None:
        return here
    try:
        return parse_iso(holder["expires"]) >= t
    except (KeyError, TypeError, ValueError):
        return False  # unreadable: stale


def read_holder(store: Store, policy: str) -> dict | None:
    """The current lock body of the policy, None if unlocked; {} if unreadable."""
    try:
        holder = json.loads(get_bytes(store, lock_key(policy)))
    except NotFound:
        return None
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def describe(holder: dict) -> str:
    return (f"held by {holder.get('host')} pid {holder.get('pid')} for {holder.get('job')} "
            f"since {holder.get('since')} (expires {holder.get('expires')})")  # fmt: skip


def acquire(
    store: Store,
    policy: str,
    job: str,
    *,
    ttl: float = LEASE,
    wait: float = 0,
    now: Callable[[], dt.datetime],
    on_wait: Callable[[str], None] = lambda msg: None,
) -> Lock:
    """Take the policy's lock for `job`, waiting up to `wait` seconds; LockBusy if still held."""
    key = lock_key(policy)
    deadline = time.monotonic() + wait
    announced = False
    while True:
        t, started = now(), time.monotonic()
        body = {"host": socket.gethostname(), "pid": os.getpid(), "job": job, "since": iso(t),
                "expires": iso(t + dt.timedelta(seconds=ttl)), "token": secrets.token_hex(8)}  # fmt: skip
        data = json.dumps(body).encode()

        def held(etag: str | None, body: dict = body, started: float = started) -> Lock:
            return Lock(store, policy, key, body["token"], etag, body, ttl, now, valid_until=started + ttl)

        try:
            return held(store.put(key, [data], if_absent=True).etag)
        except PreconditionFailed:
            pass
        try:
            current_info = store.stat(key)
            holder = json.loads(get_bytes(store, key))
        except NotFound:
            continue  # released between our two calls: try again
        except ValueError:
            holder = {"host": "?", "pid": 0, "expires": iso(t - dt.timedelta(seconds=1))}  # unreadable: stale
        if holder.get("token") == body["token"]:
            return held(current_info.etag)  # our create landed but its reply was lost
        if not is_live(holder, t):
            try:
                lock = held(store.put(key, [data], if_match=current_info.etag).etag)
                lock.body["took_over"] = {k: holder.get(k) for k in ("host", "pid", "job", "since")}
                return lock
            except PreconditionFailed:
                continue  # someone else took it over first; look again
        if time.monotonic() >= deadline:
            raise LockBusy(f"policy '{policy}' is locked: {describe(holder)}", holder)
        if not announced:
            on_wait(f"policy '{policy}' is locked ({describe(holder)}); waiting")
            announced = True
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def release(store: Store, lock: Lock) -> None:
    """Stop renewing, and remove the lock only in the version we wrote last (If-Match), so a lock
    another process took over from us stays."""
    lock.stop()
    if lock.lost:
        return
    for _ in range(2):
        try:
            # no etag known (a store that returns none): re-read and compare the token
            store.delete(lock.key, if_match=lock.etag or lock._own_version())
            return
        except PreconditionFailed:
            pass  # changed since our last write: still ours only if a reply of ours was lost
        except LockLost:
            return  # taken over or removed: not ours to remove
        try:
            lock.etag = lock._own_version()
        except LockLost:
            return
