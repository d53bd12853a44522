"""The storage interface: five calls (plus two for leftovers of interrupted uploads).
Retry, logging and the like wrap a Store; they are not in it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None  # changes whenever the object is rewritten (for if_match)
    modified: dt.datetime | None = None


@dataclass(frozen=True)
class Leftover:
    """Data of an upload that never completed (a multipart upload, a temp file): invisible to
    readers, but it takes space until removed."""

    key: str
    started: dt.datetime
    handle: str  # the upload id, or the temp file's path


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
    ) -> ObjectInfo:
        """Store the concatenated chunks under key, atomically: readers see the whole object or none.

        If `chunks` raises, nothing becomes visible (the upload is aborted) and the error propagates.
        `size_hint` (an upper estimate of the total) lets multipart stores size their parts.
        `if_absent` / `if_match` make a small write conditional (create-only, or replace only the
        version with that etag); PreconditionFailed when the condition does not hold.
        `retain` asks for the store's immutability (S3 Object Lock) where it has one.
        """

    def get(self, key: str) -> BinaryIO:
        """A readable stream of the object; raises NotFound. The caller closes it."""

    def stat(self, key: str) -> ObjectInfo:
        """Size of the object; raises NotFound."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every complete object whose key starts with prefix, in key order, across all pages."""

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Remove the object (every version of it); deleting a missing object is not an error.
        RetainedByLock when Object Lock still protects it. `if_match` deletes only the version
        with that etag (PreconditionFailed otherwise), as for put."""

    def leftovers(self, prefix: str) -> list[Leftover]:
        """Uploads under prefix that started but never completed."""

    def discard(self, leftover: Leftover) -> None:
        """Remove a leftover (abort the multipart upload, delete the temp file)."""


def put_bytes(store: Store, key: str, data: bytes) -> ObjectInfo:
    return store.put(key, [data], size_hint=len(data))


def get_bytes(store: Store, key: str) -> bytes:
    with store.get(key) as f:
        return f.read()
