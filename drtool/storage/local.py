"""A folder as an object store (file://). Writes are atomic: temp file, fsync, rename."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import NotFound, StorageError
from .base import ObjectInfo

TMP_PREFIX = ".tmp-"


class LocalStore:
    def __init__(self, root: str | Path, url: str | None = None):
        self.root = Path(root)
        self.url = url or f"file://{self.root}"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith(TMP_PREFIX) for p in parts):
            raise StorageError(f"{self.url}: invalid object key '{key}'")
        return self.root.joinpath(*parts)

    def _fail(self, what: str, key: str, e: OSError) -> StorageError:
        if e.errno == errno.ENOENT:
            return NotFound(f"{self.url}: object '{key}' not found")
        return StorageError(
            f"{self.url}: cannot {what} '{key}': {e.strerror}",
            retryable=e.errno in (errno.EAGAIN, errno.EINTR),
        )

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise NotFound(f"{self.url}: store folder does not exist")

    def put(self, key: str, chunks: Iterable[bytes], size_hint: int | None = None) -> ObjectInfo:
        path = self._path(key)
        tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        size = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise self._fail("write", key, e) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return ObjectInfo(key, size)

    def get(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except OSError as e:
            raise self._fail("read", key, e) from None

    def stat(self, key: str) -> ObjectInfo:
        try:
            return ObjectInfo(key, self._path(key).stat().st_size)
        except OSError as e:
            raise self._fail("stat", key, e) from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            raise NotFound(f"{self.url}: store folder does not exist")
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            dirnames[:] = [
                d for d in dirnames if (base + d + "/").startswith(prefix) or prefix.startswith(base + d + "/")
            ]
            for name in filenames:
                key = base + name
                if name.startswith(TMP_PREFIX) or not key.startswith(prefix):
                    continue
                try:
                    found.append(ObjectInfo(key, os.stat(os.path.join(dirpath, name)).st_size))
                except FileNotFoundError:
                    continue
        yield from sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise self._fail("delete", key, e) from None
