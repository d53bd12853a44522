"""The storage interface: five calls. Retry, logging and the like wrap a Store; they are not in it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class Store(Protocol):
    """An object store rooted at a URL. Keys are '/'-separated and relative to that root."""

    url: str  # for messages; never carries credentials

    def put(self, key: str, chunks: Iterable[bytes], size_hint: int | None = None) -> ObjectInfo:
        """Store the concatenated chunks under key, atomically: readers see the whole object or none.

        If `chunks` raises, nothing becomes visible (the upload is aborted) and the error propagates.
        `size_hint` (an upper estimate of the total) lets multipart stores size their parts.
        """

    def get(self, key: str) -> BinaryIO:
        """A readable stream of the object; raises NotFound. The caller closes it."""

    def stat(self, key: str) -> ObjectInfo:
        """Size of the object; raises NotFound."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every complete object whose key starts with prefix, in key order, across all pages."""

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""


def put_bytes(store: Store, key: str, data: bytes) -> ObjectInfo:
    return store.put(key, [data], size_hint=len(data))


def get_bytes(store: Store, key: str) -> bytes:
    with store.get(key) as f:
        return f.read()
