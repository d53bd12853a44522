"""The WAL archive: push a file from pg_wal into the store, fetch it back (domain level, no printing).

Rules (issue 12, docs/storage-format.md "WAL archive"):
- every file is zstd (level 1) then age to the policy's recipients, under walnames.key_for(), written
  create-only with its plaintext SHA-256, size, completion time and system identifier as object
  metadata (the ciphertext is randomized, so only the plaintext digest can say "same content");
- a name that is already archived with the same digest is success ("present": a re-push after a
  crash between the upload and the acknowledgement); a different digest is refused forever
  (WalConflict), never overwritten;
- the policy's archive belongs to one cluster, named by `<policy>/wal/cluster.json` (create-only,
  written by the first push); WAL of another cluster is refused (ForeignWal).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import clock, trust, walnames
from .compress import Compressor, Decompressor, TruncatedFrame, compress_whole
from .crypto import age
from .errors import DrtoolError, IntegrityError, NotFound, PreconditionFailed, StorageError
from .policy import Policy
from .storage import ObjectInfo, Store, get_bytes
from .walspool import fsync_dir

ZSTD_LEVEL = 1  # WAL is written once and read rarely: speed first (a forced switch still shrinks ~8000x)
PIECE = 1024 * 1024
IN_MEMORY = 64 * 1024 * 1024  # files up to this size (16 MiB segments) are read and hashed once per push
NS_CLUSTER = trust.NS_EVIDENCE  # the cluster record is a state object others rely on


class WalError(DrtoolError):
    """A WAL file cannot be archived or fetched (exit 1)."""


class WalConflict(WalError):
    """Different content is already archived under this name: never overwritten (split brain,
    a restored copy still archiving, or corruption). Refused on every retry until a person looks."""


class ForeignWal(WalError):
    """The file belongs to another cluster than the one this policy archives."""


@dataclass(frozen=True)
class ClusterRecord:
    sysid: int
    wal_segment_size: int
    pg_version: str
    created: str
    version: int = 1

    def to_json(self) -> bytes:
        doc = {"version": self.version, "sysid": str(self.sysid), "wal_segment_size": self.wal_segment_size,
               "pg_version": self.pg_version, "created": self.created}  # fmt: skip
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> ClusterRecord:
        try:
            doc = json.loads(data)
            return cls(int(doc["sysid"]), int(doc["wal_segment_size"]), str(doc.get("pg_version", "")),
                       str(doc.get("created", "")), int(doc.get("version", 1)))  # fmt: skip
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"{where}: not a cluster record ({e})") from None


# The cluster record never changes once written: one read per store and policy per process (the
# daemon pushes thousands of files).
_CLUSTERS: dict[tuple[str, str], ClusterRecord] = {}
_CLUSTERS_LOCK = threading.Lock()


def read_cluster(store: Store, policy: Policy, verifier: trust.Verifier | None = None) -> ClusterRecord | None:
    """The cluster whose WAL the policy archives, or None before the first push. With a verifier,
    an unsigned or untrusted record is refused (trust.Untrusted)."""
    cached = _CLUSTERS.get((store.url, policy.name))
    if cached is not None:
        return cached
    key = walnames.cluster_key(policy.name)
    try:
        data = trust.get_verified(store, key, verifier, NS_CLUSTER) if verifier else get_bytes(store, key)
    except NotFound:
        return None
    record = ClusterRecord.from_json(data, f"{store.url}/{key}")
    with _CLUSTERS_LOCK:
        _CLUSTERS[(store.url, policy.name)] = record
    return record


def ensure_cluster(
    store: Store, policy: Policy, sysid: int, segment_size: int, pg_version: str, signer: trust.Signer | None = None
) -> ClusterRecord:
    """The policy's cluster record, created (create-only, signed when a signer is given) when there
    is none yet; ForeignWal when it names another system identifier."""
    record = read_cluster(store, policy)
    if record is None:
        new = ClusterRecord(sysid, segment_size, pg_version, clock.iso(clock.utcnow()))
        key = walnames.cluster_key(policy.name)
        try:
            if signer:
                trust.put_signed(store, key, new.to_json(), NS_CLUSTER, signer, if_absent=True)
            else:
                store.put(key, [new.to_json()], if_absent=True)
        except PreconditionFailed:
            pass  # another push created it first: read theirs
        record = read_cluster(store, policy)
        if record is None:
            raise StorageError(f"{store.url}/{key}: written but not readable")
    if record.sysid != sysid:
        raise ForeignWal(
            f"{store.url}/{walnames.cluster_key(policy.name)}: policy '{policy.name}' archives the WAL of "
            f"cluster {record.sysid}, this file is from cluster {sysid}; refusing to mix them"
        )
    return record


def forget_cluster_cache() -> None:
    """For tests that reuse a store name with a new cluster in one process."""
    with _CLUSTERS_LOCK:
        _CLUSTERS.clear()


# -- push ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalWal:
    """What push needs to know about a file in pg_wal before uploading it."""

    name: str
    kind: str
    sha256: str
    size: int
    end: str  # ISO UTC: the file's mtime, when PostgreSQL completed it
    sysid: int | None  # from the segment header (None for history and backup files)
    segment_size: int | None


def inspect(path: Path, name: str) -> LocalWal:
    """Validate the name and read the file once: digest, size, header. WalError when unreadable."""
    return _inspect(path, name, keep=False)[0]


def _inspect(path: Path, name: str, *, keep: bool) -> tuple[LocalWal, bytes | None]:
    """inspect(); with keep, also the content of a file up to IN_MEMORY bytes, read in one go (the
    push then uploads exactly what was hashed, without reading and hashing the file a second time)."""
    try:
        kind = walnames.kind_of(name)
    except walnames.BadWalName as e:
        raise WalError(f"{path}: {e}; not archived") from None
    h = hashlib.sha256()
    size = 0
    data = None
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            mtime = st.st_mtime
            if keep and st.st_size <= IN_MEMORY:
                data = f.read()
                h.update(data)
                size, first = len(data), data[:PIECE]
            else:
                head = f.read(PIECE)
                while head:
                    if size == 0:
                        first = head
                    h.update(head)
                    size += len(head)
                    head = f.read(PIECE)
    except OSError as e:
        raise WalError(f"{path}: cannot read: {e.strerror}") from None
    sysid = seg_size = None
    if kind in ("segment", "partial"):
        if size < 40:
            raise WalError(f"{path}: {size} bytes is too short for a WAL segment; not archived")
        sysid, seg_size = walnames.sysid_of_segment(first), walnames.segment_size_of(first)
    end = clock.iso(dt.datetime.fromtimestamp(mtime, dt.UTC))
    return LocalWal(name, kind, h.hexdigest(), size, end, sysid, seg_size), data


def _pg_version(pgdata: Path | None) -> str:
    if pgdata is None:
        return ""
    try:
        return (pgdata / "PG_VERSION").read_text().strip()
    except OSError:
        return ""


def _pgdata_of(path: Path, policy: Policy) -> Path | None:
    """The data directory: [pitr].pgdata, else the folder above pg_wal (archive_command's %p is
    pg_wal/NAME relative to it)."""
    if policy.pitr.pgdata:
        return Path(policy.pitr.pgdata)
    parent = path.absolute().parent
    return parent.parent if parent.name == "pg_wal" else None


def sysid_of_cluster(pgdata: Path | None) -> int | None:
    if pgdata is None:
        return None
    try:
        with open(pgdata / "global" / "pg_control", "rb") as f:
            return walnames.sysid_of_pg_control(f.read(8))
    except OSError:
        return None


def push_file(
    store: Store,
    policy: Policy,
    path: Path,
    name: str,
    sysid: int | None = None,
    *,
    recipients: tuple[str, ...] | None = None,
    signer: trust.Signer | None = None,
) -> str:
    """Archive one file of pg_wal: "stored", or "present" when the same content is archived
    already. WalConflict when other content is archived under the name, ForeignWal for another
    cluster's file, WalError for a bad name or an unreadable file, StorageError when the store fails.
    Returns only once the object is durable in the store (the PUT returned)."""
    local, data = _inspect(path, name, keep=True)
    pgdata = _pgdata_of(path, policy)
    if local.sysid is not None:
        if sysid is not None and sysid != local.sysid:
            raise ForeignWal(f"{path}: segment header says cluster {local.sysid}, the data directory {sysid}")
        sysid = local.sysid
    if sysid is None:
        sysid = sysid_of_cluster(pgdata)
    if sysid is None:
        known = read_cluster(store, policy)
        if known is None:
            raise WalError(f"{path}: cannot tell which cluster wrote it (set pitr.pgdata); not archived")
        sysid = known.sysid
    cluster = ensure_cluster(store, policy, sysid, local.segment_size or walnames.DEFAULT_SEGMENT_SIZE,
                             _pg_version(pgdata), signer)  # fmt: skip
    if local.segment_size is not None and local.segment_size != cluster.wal_segment_size:
        raise ForeignWal(f"{path}: {local.segment_size} byte segments, the archive holds "
                         f"{cluster.wal_segment_size} byte segments")  # fmt: skip
    key = walnames.key_for(policy.name, sysid, name)
    meta = {"sha256": local.sha256, "size": str(local.size), "end": local.end, "sysid": str(sysid)}
    try:
        to = recipients or policy.recipients
        body = _encoded(path, local, to) if data is None else _encoded_bytes(data, to)
        store.put(key, body, size_hint=local.size, if_absent=True, metadata=meta)
        return "stored"
    except PreconditionFailed:
        return _already_archived(store, key, local)


def _already_archived(store: Store, key: str, local: LocalWal) -> str:
    """After a create-only write found the key taken: "present" when it holds the same plaintext."""
    there = store.stat(key).metadata
    if there.get("sha256") == local.sha256 and there.get("size") == str(local.size):
        return "present"
    theirs = f"SHA-256 {there['sha256']}" if there.get("sha256") else "no recorded SHA-256"
    raise WalConflict(
        f"{store.url}/{key}: already archived with different content ({theirs}, this file {local.sha256}); "
        "refusing to overwrite (split brain, or a restored copy still archiving?)"
    )


def _encoded(path: Path, local: LocalWal, recipients: tuple[str, ...]) -> Iterator[bytes]:
    """age(zstd(file)); raises (so the upload is aborted) when the file changed since inspect()."""
    comp = Compressor(ZSTD_LEVEL, 1)
    enc = age.Encryptor(recipients)
    h = hashlib.sha256()
    yield enc.header()
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            h.update(piece)
            if z := comp.compress(piece):
                yield enc.update(z)
    if h.hexdigest() != local.sha256:
        raise WalError(f"{path}: changed while it was being archived; not archived")
    yield enc.update(comp.flush()) + enc.finalize()


def _encoded_bytes(data: bytes, recipients: tuple[str, ...]) -> Iterator[bytes]:
    """age(zstd(data)) of a file read whole by _inspect: the bytes hashed are the bytes sent,
    compressed in one call (about a third less CPU than streaming)."""
    enc = age.Encryptor(recipients)
    yield enc.header()
    yield enc.update(compress_whole(data, ZSTD_LEVEL))  # a few MiB: put() buffers a conditional write whole anyway
    yield enc.finalize()


# -- fetch --------------------------------------------------------------------------------------


def fetch_file(store: Store, policy: Policy, identities: list[age.Identity], name: str, dest: Path,
               sysid: int | None = None) -> bool:  # fmt: skip
    """Download, decrypt and check one archived file into dest (tmp, fsync, rename). False when it
    is not archived (answered by one request: recovery probes history files that do not exist).
    IntegrityError when it does not decrypt or its digest differs; StorageError when the store fails."""
    try:
        walnames.kind_of(name)
    except walnames.BadWalName as e:
        raise WalError(str(e)) from None
    if sysid is None:
        cluster = read_cluster(store, policy)
        if cluster is None:
            return False
        sysid = cluster.sysid
    key = walnames.key_for(policy.name, sysid, name)
    try:
        info = store.stat(key)
    except NotFound:
        return False
    where = f"{store.url}/{key}"
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with store.get(key, if_match=info.etag) as raw, open(tmp, "wb") as out:
            digest, size, head = _decode_into(raw, out, identities, where)
            out.flush()
            os.fsync(out.fileno())
        _check_digest(info, digest, size, where)
        _check_segment_header(name, head, sysid, where)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except OSError as e:
        raise WalError(f"{dest}: cannot write: {e.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return True


def _decode_into(raw, out, identities: list[age.Identity], where: str) -> tuple[str, int, bytes]:
    """(SHA-256, size, first bytes) of the plaintext written to out."""
    dec = Decompressor()
    h = hashlib.sha256()
    size = 0
    head = b""
    try:
        for piece in age.decrypt_stream(raw, identities):
            if piece and (plain := dec.decompress(piece)):
                h.update(plain)
                size += len(plain)
                out.write(plain)
                if len(head) < _HEADER_BYTES:
                    head += plain[: _HEADER_BYTES - len(head)]
        dec.finish()
    except age.NoMatch as e:
        raise IntegrityError(f"{where}: {e}; is encryption.identity_file the key of this archive?") from None
    except (age.AgeError, TruncatedFrame) as e:
        raise IntegrityError(f"{where}: {e}") from None
    return h.hexdigest(), size, head


_HEADER_BYTES = 40  # a segment's long page header: magic, info, timeline, page address, ..., system identifier


def _check_digest(info: ObjectInfo, digest: str, size: int, where: str) -> None:
    want = info.metadata.get("sha256")
    if not want:  # every push records it: an object without it was not written by drtool
        raise IntegrityError(f"{where}: no sha256 in its metadata; not archived by drtool wal push, refusing it")
    if want != digest or info.metadata.get("size") != str(size):
        raise IntegrityError(f"{where}: decrypted content has SHA-256 {digest} ({size} bytes), "
                             f"archived as {want} ({info.metadata.get('size')} bytes)")  # fmt: skip


# -- listing ------------------------------------------------------------------------------------


def archived(store: Store, policy: Policy, sysid: int | str) -> list[ObjectInfo]:
    """Every archived WAL file of the cluster (segments, partials, backup and history files), in
    key order. Listings carry no metadata: stat() a key for its digest and end time."""
    listed = store.list_objects(walnames.archive_prefix(policy.name, sysid))
    return sorted((o for o in listed if _is_wal_key(o.key)), key=lambda o: o.key)  # not every server lists in order


def _is_wal_key(key: str) -> bool:
    try:
        walnames.name_of_key(key)
    except walnames.BadWalName:
        return False
    return True


def _check_segment_header(name: str, head: bytes, sysid: int, where: str) -> None:
    """A segment (or .partial) must be of this archive's cluster and hold the WAL its name says:
    PostgreSQL would end recovery at a segment it rejects, and promote there (at the wrong point)."""
    if walnames.kind_of(name) not in ("segment", "partial"):
        return
    try:
        found, size = walnames.sysid_of_segment(head), walnames.segment_size_of(head)
        if not (1 << 20 <= size <= 1 << 30) or size & (size - 1):
            raise walnames.BadWalName(f"its header gives a segment size of {size} bytes")
        seg = walnames.parse_segment(name[:24], size)
    except walnames.BadWalName as e:
        raise IntegrityError(f"{where}: not a WAL segment: {e}") from None
    if found != sysid:
        raise IntegrityError(f"{where}: segment header says cluster {found}, the archive is of cluster {sysid}; "
                             "refusing it")  # fmt: skip
    pageaddr = int.from_bytes(head[8:16], "little")
    if pageaddr != seg.start_lsn:
        raise IntegrityError(f"{where}: holds the WAL at {walnames.format_lsn(pageaddr)}, its name says "
                             f"{walnames.format_lsn(seg.start_lsn)}; refusing it")  # fmt: skip
