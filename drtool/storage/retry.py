"""RetryingStore: reads that survive transient faults, around any Store (as restic wraps backends).

- get() returns a stream that, when the connection breaks or stalls mid-body, reopens the object
  with get(key, offset=<bytes already read>, if_match=<etag of the first answer>) and goes on. The
  caller sees one unbroken stream; the SHA-256 and age authentication downstream still cover
  every byte. An object replaced between two attempts fails the read: it is never stitched.
- stat(), list() (resumed after the last key it yielded) and leftovers() are retried.
- Writes (with their metadata) and deletes pass through unchanged: botocore retries single requests, and what a lost
  reply on a write means is for the caller to decide.
- The optional capabilities (storage/base.py) are the inner store's, and only those it has:
  isinstance(wrapper, BucketAdmin) is true exactly when it is for the store underneath.
  bucket_region() is retried; copy_from() unwraps its source.

A fault is retried only when the store marked it `retryable` (storage/base.py). At most
`attempts` tries in a row without progress, with exponential backoff, then the last error is
raised with the number of attempts added.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from ..errors import PreconditionFailed, StorageError
from .base import Leftover, ObjectInfo, Reader, Store

T = TypeVar("T")
FIRST_BACKOFF = 0.5  # seconds before the second attempt; doubles after each failure
MAX_BACKOFF = 8.0
PIECE = 64 * 1024  # the most a broken connection can cost a resumed read


class RetryingStore:
    def __init__(
        self,
        inner: Store,
        *,
        attempts: int = 5,
        on_retry: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.inner = inner
        self.url = inner.url
        self.attempts = max(1, attempts)
        self._on_retry = on_retry or (lambda msg: None)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"RetryingStore({self.inner!r})"

    # -- retry policy -------------------------------------------------------------------------------
    def _give_up_or_wait(self, err: StorageError, failures: int, doing: str) -> None:
        """After the `failures`-th failure in a row: raise when it is permanent or the attempts are
        spent, else say so and back off."""
        if not err.retryable:
            raise err
        if failures >= self.attempts:
            raise StorageError(f"{err} (gave up after {failures} attempts)") from None
        self._on_retry(f"{err}; {doing} (attempt {failures + 1} of {self.attempts})")
        self._sleep(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (failures - 1)))

    def _retried(self, call: Callable[[], T]) -> T:
        failures = 0
        while True:
            try:
                return call()
            except StorageError as e:
                failures += 1
                self._give_up_or_wait(e, failures, "retrying")

    # -- reads ----------------------------------------------------------------------------------------
    def get(self, key: str, offset: int = 0, *, if_match: str | None = None) -> Reader:
        first = self._retried(lambda: self.inner.get(key, offset, if_match=if_match))
        return _ResumingReader(self, key, first, offset)

    def stat(self, key: str) -> ObjectInfo:
        return self._retried(lambda: self.inner.stat(key))

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """A listing that broke on page n starts again and skips the keys it already yielded. Not
        by key order: SeaweedFS lists a folder's keys before a sibling's that sort lower
        (`X/a` before `X.b`), and a filter on order dropped the sibling."""
        seen: set[str] = set()
        failures = 0
        while True:
            try:
                for info in self.inner.list_objects(prefix):
                    if info.key in seen:
                        continue
                    seen.add(info.key)
                    yield info
                    failures = 0
                return
            except StorageError as e:
                failures += 1
                self._give_up_or_wait(e, failures, "listing again")

    def leftovers(self, prefix: str) -> list[Leftover]:
        return self._retried(lambda: self.inner.leftovers(prefix))

    # -- writes: unchanged ----------------------------------------------------------------------------
    def put(self, key: str, chunks: Iterable[bytes], size_hint: int | None = None, **kw: Any) -> ObjectInfo:
        return self.inner.put(key, chunks, size_hint, **kw)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self.inner.delete(key, if_match=if_match)

    def discard(self, leftover: Leftover) -> None:
        self.inner.discard(leftover)

    # -- optional capabilities of the store underneath ------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        """Only the members of the capability protocols the inner store has; anything else (its
        internals included) is an AttributeError, so isinstance() on a protocol tells the truth."""
        if name not in _FORWARDED:
            raise AttributeError(name)
        member = getattr(self.inner, name)  # AttributeError when the inner store lacks it
        if name == "bucket_region":
            return lambda: self._retried(member)
        if name == "copy_from":
            return lambda src, key, size, *, retain=False: member(unwrap(src), key, size, retain=retain)
        return member


# What a wrapper forwards: every member of the capability protocols (test_storage_contract checks
# the list against storage.base.CAPABILITIES).
_FORWARDED = frozenset(
    {"check_root", "create_root", "bucket", "check_bucket", "create_bucket", "bucket_region", "lock_status",
     "copy_from"}
)  # fmt: skip


def unwrap(store: Store) -> Store:
    """The store underneath any wrappers."""
    while isinstance(store, RetryingStore):
        store = store.inner
    return store


class _ResumingReader:
    """One object's stream; a broken or stalled body is reopened from the last good byte."""

    def __init__(self, owner: RetryingStore, key: str, first: Reader, offset: int):
        self._owner, self._key, self._body = owner, key, first
        self._pos = offset  # bytes of the object delivered to the caller so far
        self.etag, self.size = first.etag, first.size

    def read(self, n: int = -1) -> bytes:
        """n bytes (all to the end when n < 0), fewer only at the end of the object. Taken from the
        store in pieces, so a fault loses at most one piece and resuming starts close to it."""
        out = bytearray()
        while n < 0 or len(out) < n:
            want = PIECE if n < 0 else min(PIECE, n - len(out))
            piece = self._resumed(operator.methodcaller("read", want))
            if not piece:
                break
            if not out and len(piece) == n:
                return piece
            out += piece
        return bytes(out)

    def readline(self, limit: int = -1) -> bytes:
        return self._resumed(lambda body: body.readline(limit))

    def _resumed(self, call: Callable[[Reader], bytes]) -> bytes:
        failures = 0
        while True:
            try:
                data = call(self._body)
            except StorageError as e:
                if self.size is not None and self._pos >= self.size:
                    return b""  # every byte arrived; only the end of the connection was lost
                failures += 1
                self._owner._give_up_or_wait(e, failures, f"resuming at byte {self._pos}")
                self._reopen(failures)
                continue
            self._pos += len(data)
            return data

    def _reopen(self, failures: int) -> None:
        """A new stream from self._pos of the same version; failures to reopen count as attempts."""
        self._body.close()
        owner = self._owner
        while True:
            try:
                self._body = owner.inner.get(self._key, self._pos, if_match=self.etag)
                return
            except PreconditionFailed:
                raise StorageError(
                    f"{owner.url}/{self._key}: the object was replaced while it was being read "
                    f"(after {self._pos} bytes); not joining two versions, read it again"
                ) from None
            except StorageError as e:
                failures += 1
                owner._give_up_or_wait(e, failures, f"resuming at byte {self._pos}")

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> _ResumingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
