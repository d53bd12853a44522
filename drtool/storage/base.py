"""The storage interface: five calls (plus two for leftovers of interrupted uploads), and the
optional capabilities some stores have (RootCreator, BucketAdmin, LockInspector, ServerCopy):
small protocols the app tests with isinstance(), never by the store's class or by getattr.
Retry, logging and the like wrap a Store (storage/retry.py); they are not in it.

Errors: every call raises StorageError (or a subclass) for an expected failure. Each store
classifies its own faults at the boundary: `retryable` is True for transient ones (S3 5xx,
throttling, connection refused/reset, a read timeout) and False for permanent ones (403, 404,
a precondition that does not hold), so wrappers decide by that flag, never by the message."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None  # changes whenever the object is rewritten (for if_match)
    modified: dt.datetime | None = None
    # user metadata given to put(metadata=...); filled by stat() only (listings do not carry it)
    metadata: dict[str, str] = field(default_factory=dict, compare=False)


# S3 sends metadata as x-amz-meta-<key> headers: lower-case ASCII names, printable ASCII values.
_META_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_META_VALUE = re.compile(r"^[\x20-\x7e]{0,1024}$")


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """The metadata as a plain dict; ValueError (a bug in the caller) for a key or value S3 would
    mangle or refuse."""
    for k, v in (metadata or {}).items():
        if not _META_KEY.match(k) or not isinstance(v, str) or not _META_VALUE.match(v):
            raise ValueError(f"object metadata {k!r}={v!r}: keys are lower-case ASCII, values printable ASCII")
    return dict(metadata or {})


@dataclass(frozen=True)
class Leftover:
    """Data of an upload that never completed (a multipart upload, a temp file): invisible to
    readers, but it takes space until removed."""

    key: str  # the key the write was for (a folder store's temp file of an unknown write: its own)
    started: dt.datetime
    handle: str  # the upload id, or the temp file's path


class Reader(Protocol):
    """An open object stream (from Store.get). Close it; it is also a context manager."""

    @property
    def etag(self) -> str | None:
        """The version being read; pass it as get(..., if_match=) to resume the same one."""

    @property
    def size(self) -> int | None:
        """The whole object's size in bytes (not only the part from the offset on)."""

    def read(self, n: int = -1) -> bytes: ...

    def readline(self, limit: int = -1) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> Reader: ...

    def __exit__(self, *exc) -> None: ...


class Store(Protocol):
    """An object store rooted at a URL. Keys are '/'-separated and relative to that root."""

    url: str  # for messages; never carries credentials

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        size_hint: int | None = None,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        retain: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Store the concatenated chunks under key, atomically: readers see the whole object or none.

        If `chunks` raises, nothing becomes visible (the upload is aborted) and the error propagates.
        `size_hint` (an upper estimate of the total) lets multipart stores size their parts.
        `if_absent` / `if_match` make a small write conditional (create-only, or replace only the
        version with that etag); PreconditionFailed when the condition does not hold.
        `retain` asks for the store's immutability (S3 Object Lock) where it has one.
        `metadata` (lower-case ASCII keys, printable ASCII values; check_metadata) is stored with
        the object, atomically with it, and returned by stat(); a later put without it clears it.
        Conditional writes go up in one request, so they suit objects up to 5 GiB (WAL segments).
        """

    def get(self, key: str, offset: int = 0, *, if_match: str | None = None) -> Reader:
        """A stream of the object from byte `offset` (0 <= offset < size, or 0) to its end; raises
        NotFound. With `if_match`, PreconditionFailed unless the object is still the version with
        that etag, so a read resumed after a fault never stitches two versions together.
        The caller closes the stream."""

    def stat(self, key: str) -> ObjectInfo:
        """Size, etag and metadata of the object; raises NotFound."""

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every complete object whose key starts with prefix, across all pages: in key order on S3 and
        folders, but SeaweedFS lists a folder before a sibling key that sorts lower (`X/a`, `X.b`)."""

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Remove the object (every version of it); deleting a missing object is not an error.
        RetainedByLock when Object Lock still protects it. `if_match` deletes only the version
        with that etag (PreconditionFailed otherwise), as for put."""

    def leftovers(self, prefix: str) -> list[Leftover]:
        """Uploads under prefix that started but never completed."""

    def discard(self, leftover: Leftover) -> None:
        """Remove a leftover (abort the multipart upload, delete the temp file)."""


# -- optional capabilities: a store has each one or not; a wrapper has exactly those of its inner store --


@runtime_checkable
class RootCreator(Protocol):
    """A store rooted at a folder, which only `drtool init` creates (the folder store)."""

    def check_root(self) -> None:
        """NotFound unless the root folder exists (a typo or an unmounted disk gets no backups)."""

    def create_root(self) -> bool:
        """Make the root folder (mode 0700); False when it already exists."""


@runtime_checkable
class BucketAdmin(Protocol):
    """A store rooted in a bucket (S3): it can be missing, be created, and live in a region."""

    bucket: str  # the bucket's name, for messages

    def check_bucket(self) -> None:
        """NotFound unless the bucket exists (some servers create a missing one on write)."""

    def create_bucket(self, region: str | None) -> bool:
        """Create the bucket (with Object Lock when the store retains objects); False when it exists."""

    def bucket_region(self) -> str | None:
        """The region the bucket lives in."""


@runtime_checkable
class LockInspector(Protocol):
    """A store with immutability (S3 Object Lock) that can say whether it is usable."""

    def lock_status(self) -> tuple[bool, str]:
        """(usable, detail): Object Lock enabled and versioning on, or why not."""


@runtime_checkable
class ServerCopy(Protocol):
    """A store that can copy an object from another store without the data passing through here."""

    def copy_from(self, src: Store, key: str, size: int, *, retain: bool = False) -> bool:
        """Copy src's object to the same key here; False when not possible from that store
        (the caller then streams it). The copy's size is checked."""


CAPABILITIES: tuple[type, ...] = (RootCreator, BucketAdmin, LockInspector, ServerCopy)


def put_bytes(store: Store, key: str, data: bytes) -> ObjectInfo:
    return store.put(key, [data], size_hint=len(data))


def get_bytes(store: Store, key: str) -> bytes:
    with store.get(key) as f:
        return f.read()
