"""One job at a time per policy, across hosts: a lock object in the store.

Taken with a conditional create (S3 If-None-Match, or an flock-guarded create on a folder
store), so two hosts never both hold it. The object says who holds it (host, pid, job, since)
and until when. A holder that died is detected two ways: on the same host its pid is gone; on
any host its expiry passed. A stale lock is taken over with a conditional replace (If-Match on
the stale version), so of two hosts racing for it one wins.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from .clock import iso, parse_iso
from .errors import DrtoolError, NotFound, PreconditionFailed
from .storage import Store, get_bytes


class LockBusy(DrtoolError):
    """Another live process holds the lock."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


@dataclass
class Lock:
    key: str
    token: str
    etag: str | None
    body: dict


def lock_key(policy: str) -> str:
    return f"{policy}/locks/policy.lock"


def _alive_here(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell from here: trust the expiry
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def describe(holder: dict) -> str:
    return (f"held by {holder.get('host')} pid {holder.get('pid')} for {holder.get('job')} "
            f"since {holder.get('since')} (expires {holder.get('expires')})")  # fmt: skip


def acquire(
    store: Store,
    policy: str,
    job: str,
    *,
    ttl: float = 6 * 3600,
    wait: float = 0,
    now: Callable[[], dt.datetime],
    on_wait: Callable[[str], None] = lambda msg: None,
) -> Lock:
    """Take the policy's lock for `job`, waiting up to `wait` seconds; LockBusy if still held."""
    key = lock_key(policy)
    deadline = time.monotonic() + wait
    announced = False
    while True:
        t = now()
        body = {"host": socket.gethostname(), "pid": os.getpid(), "job": job, "since": iso(t),
                "expires": iso(t + dt.timedelta(seconds=ttl)), "token": secrets.token_hex(8)}  # fmt: skip
        data = json.dumps(body).encode()
        try:
            info = store.put(key, [data], if_absent=True)
            return Lock(key, body["token"], info.etag, body)
        except PreconditionFailed:
            pass
        try:
            current_info = store.stat(key)
            holder = json.loads(get_bytes(store, key))
        except NotFound:
            continue  # released between our two calls: try again
        except ValueError:
            holder = {"host": "?", "pid": 0, "expires": iso(t - dt.timedelta(seconds=1))}  # unreadable: stale
        expired = parse_iso(holder.get("expires", iso(t))) < t
        if expired or not _alive_here(holder):
            try:
                info = store.put(key, [data], if_match=current_info.etag)
                body["took_over"] = {k: holder.get(k) for k in ("host", "pid", "job", "since")}
                return Lock(key, body["token"], info.etag, body)
            except PreconditionFailed:
                continue  # someone else took it over first; look again
        if time.monotonic() >= deadline:
            raise LockBusy(f"policy '{policy}' is locked: {describe(holder)}", holder)
        if not announced:
            on_wait(f"policy '{policy}' is locked ({describe(holder)}); waiting")
            announced = True
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def release(store: Store, lock: Lock) -> None:
    """Remove the lock if it is still ours (a holder that overran its expiry may have lost it)."""
    try:
        current = json.loads(get_bytes(store, lock.key))
    except (NotFound, ValueError):
        return
    if current.get("token") == lock.token:
        store.delete(lock.key)
