"""A folder as an object store (file://). Writes are atomic: temp file, fsync, rename.

Object metadata lives in a sidecar `.meta-<name>` beside the object (JSON: the etag of the object
it belongs to, and the metadata). It is written before the object is renamed into place and read
only when its etag is the object's, so a crash between the two never pairs an object with another
version's metadata. Sidecars and temp files are not objects: listings skip them, keys cannot name them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import NotFound, PreconditionFailed, StorageError
from .base import Leftover, ObjectInfo, check_metadata

TMP_PREFIX = ".tmp-"
META_PREFIX = ".meta-"


class LocalStore:
    def __init__(self, root: str | Path, url: str | None = None):
        self.root = Path(root)
        self.url = url or f"file://{self.root}"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith((TMP_PREFIX, META_PREFIX)) for p in parts):
            raise StorageError(f"{self.url}: invalid object key '{key}'")
        return self.root.joinpath(*parts)

    def _fail(self, what: str, key: str, e: OSError) -> StorageError:
        if e.errno == errno.ENOENT:
            return NotFound(f"{self.url}: object '{key}' not found")
        hint = "; the store folder is read-only" if e.errno == errno.EROFS else ""
        return StorageError(
            f"{self.url}: cannot {what} '{key}': {e.strerror}{hint}",
            retryable=e.errno in (errno.EAGAIN, errno.EINTR),
        )

    def check_root(self) -> None:
        """NotFound unless the store folder exists: nothing but `drtool init` creates it, so a
        typo or an unmounted disk is refused instead of quietly receiving backups."""
        if not self.root.is_dir():
            raise NotFound(f"{self.url}: store folder does not exist")

    def create_root(self) -> bool:
        """Make the store folder (mode 0700, parents as needed); False when it already exists."""
        if self.root.is_dir():
            return False
        try:
            self.root.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            if not self.root.is_dir():
                raise StorageError(f"{self.url}: {self.root} exists and is not a folder") from None
            return False
        except OSError as e:
            raise StorageError(f"{self.url}: cannot create the store folder: {e.strerror}") from None
        return True

    def _make_parent(self, path: Path) -> None:
        """Create the folders between the store root and path; never the root itself."""
        if not self.root.is_dir():
            raise StorageError(f"{self.url}: store folder does not exist (was it unmounted?)")
        path.parent.mkdir(parents=True, exist_ok=True)

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        size_hint: int | None = None,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        retain: bool = False,  # a folder has no immutability; policy validation refuses object_lock_days here
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        meta = check_metadata(metadata)
        if if_absent or if_match:
            return self._put_conditional(key, b"".join(chunks), if_absent, if_match, meta)
        path = self._path(key)
        tmp = _temp_for(path)
        size = 0
        try:
            self._make_parent(path)
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
                etag = _info(key, os.fstat(f.fileno())).etag  # rename keeps inode, size and mtime
            self._write_meta(path, etag, meta)
            os.replace(tmp, path)
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            _remove_quietly(tmp)
            raise self._fail("write", key, e) from None
        except BaseException:
            _remove_quietly(tmp)
            raise
        return self.stat(key)

    def _meta_path(self, path: Path) -> Path:
        return path.parent / f"{META_PREFIX}{path.name}"

    def _write_meta(self, path: Path, etag: str | None, meta: dict[str, str]) -> None:
        """The sidecar of the version with `etag` (tmp, fsync, rename); none when meta is empty."""
        side = self._meta_path(path)
        if not meta:
            _remove_quietly(side)
            return
        tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with open(tmp, "w") as f:
                json.dump({"etag": etag, "metadata": meta}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, side)
        except BaseException:
            _remove_quietly(tmp)
            raise

    def _read_meta(self, path: Path, etag: str | None) -> dict[str, str]:
        """The metadata of the version with `etag`; {} when it has none (or the sidecar is another's)."""
        try:
            doc = json.loads(self._meta_path(path).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict) or doc.get("etag") != etag or not isinstance(doc.get("metadata"), dict):
            return {}
        return {str(k): str(v) for k, v in doc["metadata"].items()}

    def _put_conditional(
        self, key: str, data: bytes, if_absent: bool, if_match: str | None, meta: dict[str, str]
    ) -> ObjectInfo:
        """Check and write under an exclusive flock on the store, so concurrent drtool processes
        on this host (or sharing this file system with working locks) see one winner."""
        import fcntl

        try:
            self._make_parent(self.root / ".drtool-cas.lock")
            guard = open(self.root / ".drtool-cas.lock", "a")
        except OSError as e:
            raise self._fail("write", key, e) from None
        with guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                current = self.stat(key)
            except NotFound:
                current = None
            if if_absent and current is not None:
                raise PreconditionFailed(f"{self.url}/{key}: already exists")
            if if_match and (current is None or current.etag != if_match):
                raise PreconditionFailed(f"{self.url}/{key}: changed since it was read")
            return self.put(key, [data], metadata=meta)

    def get(self, key: str, offset: int = 0, *, if_match: str | None = None) -> _FileReader:
        try:
            f = open(self._path(key), "rb")
        except OSError as e:
            raise self._fail("read", key, e) from None
        try:
            # the etag of the open file, not of the path: a rename that replaces it later does not
            # change what this stream reads
            st = os.fstat(f.fileno())
            etag = _info(key, st).etag
            if if_match is not None and etag != if_match:
                raise PreconditionFailed(f"{self.url}/{key}: changed since it was first read")
            if offset:
                f.seek(offset)
        except OSError as e:
            f.close()
            raise self._fail("read", key, e) from None
        except BaseException:
            f.close()
            raise
        return _FileReader(f, etag, st.st_size, lambda e: self._fail("read", key, e))

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            info = _info(key, path.stat())
        except OSError as e:
            raise self._fail("stat", key, e) from None
        meta = self._read_meta(path, info.etag)
        return dataclasses.replace(info, metadata=meta) if meta else info

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            raise NotFound(f"{self.url}: store folder does not exist")
        found = []
        for key, path in self._files(prefix):
            if not key.rpartition("/")[2].startswith((TMP_PREFIX, META_PREFIX)):
                try:
                    found.append(_info(key, os.stat(path)))
                except FileNotFoundError:
                    continue
        found.sort(key=lambda o: o.key)
        yield from found

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        if if_match:
            return self._delete_conditional(key, if_match)
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise self._fail("delete", key, e) from None
        _remove_quietly(self._meta_path(path))

    def _delete_conditional(self, key: str, if_match: str) -> None:
        """Check and unlink under the same flock as conditional writes."""
        import fcntl

        with open(self.root / ".drtool-cas.lock", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                current = self.stat(key)
            except NotFound:
                return
            if current.etag != if_match:
                raise PreconditionFailed(f"{self.url}/{key}: changed since it was read")
            self.delete(key)

    def _files(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, path) of every file whose key starts with prefix, temp files and sidecars too. The
        walk starts at the deepest folder that holds them all, so one policy's scan never visits the
        folders of the rest of the fleet; keys are built as it descends (no path arithmetic per
        file: a fleet's list walks a few hundred thousand). Symlinked folders are not followed and
        unreadable folders are skipped, as os.walk does."""
        folders = [p for p in prefix.split("/")[:-1] if p not in ("", ".", "..")]
        stack = [("".join(f + "/" for f in folders), os.path.join(self.root, *folders))]
        while stack:
            base, folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError:
                continue
            for e in entries:
                key = base + e.name
                if e.is_dir(follow_symlinks=False):
                    if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                        stack.append((key + "/", e.path))
                elif key.startswith(prefix) and not e.is_dir():
                    yield key, e.path

    def leftovers(self, prefix: str) -> list[Leftover]:
        out = []
        for key, path in self._files(prefix):
            folder, _, name = key.rpartition("/")
            if name.startswith(TMP_PREFIX):
                try:
                    started = dt.datetime.fromtimestamp(os.stat(path).st_mtime, dt.UTC)
                except FileNotFoundError:
                    continue
                out.append(Leftover(_temp_target(folder, name) or key, started, path))
        return out

    def discard(self, leftover: Leftover) -> None:
        try:
            os.unlink(leftover.handle)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self._fail("delete", leftover.key, e) from None


def _remove_quietly(tmp: Path) -> None:
    """Remove an unfinished temp file; on a read-only folder there is none and unlink fails
    with EROFS (not ENOENT), which must not hide the write error being reported."""
    try:
        tmp.unlink()
    except OSError:
        pass


class _FileReader:
    """An open file with the etag and size of the version it reads (the Reader contract)."""

    def __init__(self, f: BinaryIO, etag: str | None, size: int, fail: Callable[[OSError], StorageError]):
        self._f, self.etag, self.size, self._fail = f, etag, size, fail

    def read(self, n: int = -1) -> bytes:
        try:
            return self._f.read(n)
        except OSError as e:  # EIO on a failing disk: name the object, no traceback
            raise self._fail(e) from None

    def readline(self, limit: int = -1) -> bytes:
        try:
            return self._f.readline(limit)
        except OSError as e:
            raise self._fail(e) from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _FileReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    modified = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)
    return ObjectInfo(key, st.st_size, etag=f"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}", modified=modified)


_NAMED_TEMP = 160  # longest object name a temp file carries (a file name is at most 255 bytes)


def _temp_for(path: Path) -> Path:
    """The temp file a put writes before renaming it to `path`: `.tmp-<uuid>-<name>`, so that
    leftovers() can say which key an interrupted write was for (prune then counts it with its
    backup, as it does an S3 multipart upload), or `.tmp-<uuid>` for a very long name."""
    suffix = f"-{path.name}" if len(path.name.encode()) <= _NAMED_TEMP else ""
    return path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}{suffix}"


def _temp_target(folder: str, name: str) -> str | None:
    """The key a temp file named by _temp_for was to become; None for another temp file."""
    rest = name[len(TMP_PREFIX) :]
    if len(rest) > 33 and rest[32] == "-" and all(c in "0123456789abcdef" for c in rest[:32]):
        return f"{folder}/{rest[33:]}" if folder else rest[33:]
    return None
