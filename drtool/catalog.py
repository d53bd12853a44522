"""The bucket is the catalog: where objects live, and the manifest that commits a backup.

Layout under the store root (docs/storage-format.md):
    <policy>/backups/<id>.dump.zst.age    age(zstd(pg_dump custom archive))
    <policy>/backups/<id>.manifest.json   written last: a backup without it does not exist
A store written by drtool before 0.2 holds each backup in a folder of its own (<id>/dump.zst.age,
<id>/manifest.json, the "nested" layout): it is read, restored, copied and pruned as it stands.
Evidence about backups (check and drill records, the run's state) is in ledger.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import secrets
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .clock import iso
from .errors import DrtoolError, IntegrityError, NotFound, StorageError, UsageError
from .records import (
    DRILL_FORMAT,  # noqa: F401  (re-exported: the drill use case names the format through the catalog)
    DRILL_VERSION,  # noqa: F401
    MANIFEST_FORMAT,  # noqa: F401  (re-exported: writers name the format through the catalog)
    MANIFEST_VERSION,  # noqa: F401
    Manifest,
    ManifestInvalid,
    ManifestObject,
    manifest_to_dict,
    parse_manifest,
    serialise_manifest,
)
from .storage import ObjectInfo, Store, get_bytes
from .trust import NS_MANIFEST, SIG_SUFFIX, Signer, Untrusted, Verifier, get_verified, put_signed, verify_stored

DUMP_NAME = "dump.zst.age"
MANIFEST_NAME = "manifest.json"
PAYLOAD_FORMAT = "age-v1(zstd(pg_dump --format=custom --compress=0))"
MANIFEST_READERS = 8  # manifests fetched at once when listing backups


def new_backup_id(started_at) -> str:
    """Sortable by time, unique across hosts: 20261126T192000Z-3f9a1c."""
    return started_at.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


_BACKUP_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6,32}")


def check_backup_id(value: str) -> str:
    """The value, if it has the shape of a backup id (as new_backup_id makes them); else a
    UsageError naming it. Ids become object keys, so nothing else may get that far."""
    if _BACKUP_ID.fullmatch(value):
        return value
    shown = value if len(value) <= 64 else value[:64] + "..."
    raise UsageError(f"backup id {shown!r} is not a backup id (they look like 20261126T192000Z-3f9a1c)")


def backup_started(backup_id: str):
    """The start time encoded in a backup id, or None if it is not one of ours."""
    import datetime as dt

    try:
        return dt.datetime.strptime(backup_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


# What follows a backup's id in its objects' keys. FLAT (what drtool writes): the objects of all
# of a policy's backups sit side by side in <policy>/backups/, so the LIST every read makes walks
# one folder; a server that keeps folders (SeaweedFS, MinIO) spent 3.5 times the CPU listing the
# same keys spread over one folder per backup. NESTED: a folder per backup, as drtool wrote them
# before 0.2; such backups are still read and pruned where they are.
FLAT, NESTED = ".", "/"


def backup_prefix(policy: str, backup_id: str, layout: str = FLAT) -> str:
    """What a backup's object names are appended to (its manifest's objects' `key`)."""
    return f"{policy}/backups/{backup_id}{layout}"


def dump_key(policy: str, backup_id: str) -> str:
    return backup_prefix(policy, backup_id) + DUMP_NAME


def manifest_key(policy: str, backup_id: str, layout: str = FLAT) -> str:
    return backup_prefix(policy, backup_id, layout) + MANIFEST_NAME


def prefix_of(manifest_object_key: str) -> str:
    """The backup prefix of a manifest's key, in whichever layout it was found."""
    return manifest_object_key[: -len(MANIFEST_NAME)]


def backup_of_key(policy: str, key: str) -> str:
    """The backup (or, for a stray object, the first name) a key under <policy>/backups/ belongs
    to: `<id>.<name>` (no `/` in it) for an id of drtool's shape, else the folder `<folder>/...`
    as before 0.2, whatever its name (as manifest_ids finds them: `<id>.old/manifest.json` is
    backup `<id>.old`, not `<id>`)."""
    rest = key[len(f"{policy}/backups/") :]
    flat = _FLAT_KEY.match(rest)
    return flat.group(1) if flat and "/" not in rest else rest.split("/", 1)[0]


def in_backup(prefix: str, key: str) -> bool:
    """`key` (which starts with `prefix`) is one of that backup's objects: under a flat prefix
    `<id>.`, a key with a `/` after it is in another backup's folder (`<id>.old/`)."""
    return prefix.endswith(NESTED) or "/" not in key[len(prefix) :]


def twin_key(manifest_object_key: str) -> str | None:
    """The manifest key of the same backup id in the other layout, for an id of drtool's shape."""
    base, _, name = manifest_object_key.rpartition("/")
    if name == MANIFEST_NAME:  # <base>/<id>/manifest.json
        folder, _, bid = base.rpartition("/")
        return f"{folder}/{bid}{FLAT}{MANIFEST_NAME}" if _BACKUP_ID.fullmatch(bid) else None
    bid = name[: -len(MANIFEST_NAME) - 1]
    return f"{base}/{bid}{NESTED}{MANIFEST_NAME}" if _BACKUP_ID.fullmatch(bid) else None


def _twin_problem(store: Store, key: str, twin: str) -> str:
    return (f"{store.url}/{key}: backup has a second manifest, {twin} (one layout each): neither is used, "
            "restored or pruned until the one drtool did not write is removed")  # fmt: skip


def listed_twin(store: Store, backup_id: str, key: str, objects: dict[str, ObjectInfo]) -> Unreadable | None:
    """The backup as unreadable when the listing also shows its manifest in the other layout."""
    twin = twin_key(key)
    if twin is None or twin not in objects:
        return None
    return Unreadable(backup_id, key, _twin_problem(store, key, twin))


_FLAT_KEY = re.compile(f"({_BACKUP_ID.pattern})\\.")  # <id>. at the start of a key's name


class Backup:
    """A backup whose manifest is valid and stored under its own key. `missing` names the
    objects it lists that the store does not hold (or holds at another size): such a backup is
    damaged and cannot be restored.

    A backup read from the catalog index may be deferred (Backup.deferred): its id, recovery
    point and `missing` are known, and its manifest is parsed from the entry, and checked, when
    `record` or `manifest` is first used. A fleet's status uses only the newest backup of each
    policy, and parsing 100 manifests a policy was a fifth of its CPU."""

    def __init__(self, record: Manifest, missing: tuple[str, ...] = (), signed_by: str | None = None,
                 table_count: int | None = None, doc: dict[str, Any] | None = None,
                 prefix: str | None = None):  # fmt: skip
        self._record: Manifest | None = record
        self._parse: Callable[[], Manifest] | None = None
        self._id, self._recovery_point = record.id, record.recovery_point
        # where its objects are (backup_prefix): the layout its manifest was found in
        self.prefix = prefix if prefix is not None else backup_prefix(record.policy, record.id)
        self.missing = missing
        self.signed_by = signed_by  # fingerprint of the trusted key that signed the manifest, when checked
        self.table_count = table_count  # read from the catalog index, whose record carries no table list
        # the manifest's document when the reader already holds it (an index entry, which is
        # manifest_to_dict of a parsed manifest): `manifest` then needs no second conversion
        self.doc = doc

    @classmethod
    def deferred(cls, backup_id: str, recovery_point: dt.datetime, parse: Callable[[], Manifest], doc: dict[str, Any],
                 missing: tuple[str, ...], signed_by: str | None, table_count: int | None,
                 prefix: str) -> Backup:  # fmt: skip
        """A backup whose manifest `parse` makes (from `doc`) on first use; ManifestInvalid then
        if the entry is not a valid manifest of `backup_id`."""
        b = cls.__new__(cls)
        b._record, b._parse, b._id, b._recovery_point = None, parse, backup_id, recovery_point
        b.prefix = prefix
        b.missing, b.signed_by, b.table_count, b.doc = missing, signed_by, table_count, doc
        return b

    @property
    def record(self) -> Manifest:
        if self._record is None:
            assert self._parse is not None
            m = self._parse()
            if m.id != self._id or m.recovery_point != self._recovery_point:
                raise ManifestInvalid(f"backup {self._id}: its index entry does not match itself")
            self._record, self._parse = m, None
        return self._record

    @property
    def id(self) -> str:
        return self._id

    @property
    def recovery_point(self) -> dt.datetime:
        return self._recovery_point

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Backup):
            return NotImplemented
        return (self.record, self.missing, self.signed_by, self.table_count) == (
            other.record, other.missing, other.signed_by, other.table_count)  # fmt: skip

    __hash__ = None  # type: ignore[assignment]  # mutable when deferred, like the manifest it holds

    def __repr__(self) -> str:
        return f"Backup({self._id!r}, missing={self.missing!r}, signed_by={self.signed_by!r})"

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The manifest as its JSON document, for readers not yet moved to `record` (checked
        first: a deferred backup's document is only trusted once parsed)."""
        record = self.record
        return self.doc if self.doc is not None else manifest_to_dict(record)

    @property
    def published(self) -> dict[str, Any]:
        """The manifest's document with at least what a listing or a report publishes checked
        (records.manifest_outline): of a deferred backup nothing else is parsed for it (a fleet's
        report publishes 100,000 backups and parsing each in full was a fifth of its CPU); of
        any other, the checked `manifest`."""
        if self._record is None and self.doc is not None:
            return self.doc
        return self.manifest

    @property
    def dump(self) -> dict[str, Any]:
        return self.record.dump.as_dict()

    @property
    def damaged(self) -> str | None:
        """Why this backup cannot be restored, from the listing alone; None if nothing is known."""
        return f"missing object: {', '.join(self.missing)}" if self.missing else None

    def summary(self) -> dict[str, Any]:
        m = self.record
        return {
            "id": m.id,
            "policy": m.policy,
            "database": m.database,
            "recovery_point": iso(m.recovery_point),
            "started_at": iso(m.started_at),
            "completed_at": iso(m.completed_at),
            "size_bytes": m.sizes.stored_bytes,
            "plain_bytes": m.sizes.plain_bytes,
            "server_version": m.server_version,
            "tables": len(m.tables) if self.table_count is None else self.table_count,
        }


@dataclass(frozen=True)
class Unreadable:
    """A manifest that is there but cannot be used: malformed, not its key's, or unreadable."""

    backup_id: str  # the backup its key names
    key: str
    reason: str  # one line naming the object
    claims: str | None = None  # the id it claims, when that differs from its key's


@dataclass(frozen=True)
class UntrustedBackup:
    """A manifest whose origin is not proven: no signature, a bad one, or one by a key that is not
    (or no longer) trusted. Never restored, never counted, and never deleted: it is evidence."""

    backup_id: str  # the backup its key names
    key: str
    reason: str  # one line naming the object
    claims: Manifest | None = None  # what it says, when it parses (not to be believed)


@dataclass(frozen=True)
class Listing:
    """Everything under <policy>/backups/ that has a manifest, newest recovery point first."""

    backups: list[Backup]  # valid (and, with a verifier, trusted) manifests, damaged ones included
    unreadable: list[Unreadable]
    untrusted: list[UntrustedBackup] = field(default_factory=list)  # only with a verifier
    claimed: set[str] = field(default_factory=set)  # ids untrusted manifests claim (from the index)

    @property
    def restorable(self) -> list[Backup]:
        return [b for b in self.backups if not b.missing]

    def protected_ids(self) -> set[str]:
        """Folders prune must leave alone: every listed backup, whatever an unreadable manifest
        sits in or names, and every untrusted one (evidence of tampering)."""
        ids = {b.id for b in self.backups} | {u.backup_id for u in self.unreadable}
        ids |= {u.backup_id for u in self.untrusted} | {u.claims.id for u in self.untrusted if u.claims}
        return ids | {u.claims for u in self.unreadable if u.claims} | self.claimed


# -- origin: with [signing], what drtool writes is signed and what it reads is checked (trust.py) ---


def put_record(store: Store, key: str, data: bytes, namespace: str, signer: Signer | None,
               **conditions: Any) -> list[ObjectInfo]:  # fmt: skip
    """Write an object; with a signer, `<key>.sig` first (the object stays the commit marker).
    Returns what was written, in that order."""
    if signer is None:
        return [store.put(key, [data], size_hint=len(data), **conditions)]
    return put_signed(store, key, data, namespace, signer, **conditions)


def get_record(store: Store, key: str, namespace: str, verifier: Verifier | None) -> bytes:
    """An object's bytes; with a verifier only when a trusted key signed them (else Untrusted)."""
    return get_bytes(store, key) if verifier is None else get_verified(store, key, verifier, namespace)


def write_manifest(store: Store, manifest: Manifest, signer: Signer | None = None,
                   prefix: str | None = None) -> list[ObjectInfo]:  # fmt: skip
    """The commit marker (and its signature first), beside the objects at `prefix` (a new
    backup's: the flat layout); returns what was written."""
    key = (prefix or backup_prefix(manifest.policy, manifest.id)) + MANIFEST_NAME
    return put_record(store, key, serialise_manifest(manifest), NS_MANIFEST, signer, retain=True)


def stored_manifest(store: Store, policy: str, backup_id: str) -> bytes | None:
    """The stored manifest's bytes, None if there is none; StorageError when the store cannot tell."""
    try:
        return get_bytes(store, manifest_key(policy, backup_id))
    except NotFound:
        return None


def read_manifest(store: Store, policy: str, backup_id: str, verifier: Verifier | None = None) -> Backup:
    """The named backup. UsageError if it has no manifest; ManifestInvalid if its manifest is
    malformed or not its own; with a verifier, Untrusted (exit 3) unless a trusted key signed it.
    Objects are not checked here (restore and verify read them)."""
    for layout in (FLAT, NESTED):  # a backup written before 0.2 is in a folder of its own
        key = manifest_key(policy, backup_id, layout)
        try:
            raw = get_bytes(store, key)
            break
        except NotFound:
            continue
    else:
        raise UsageError(
            f"{store.url}: backup '{backup_id}' of policy '{policy}' not found (or incomplete: it has no manifest)"
        )
    if layout == FLAT and (twin := twin_key(key)) is not None and _exists(store, twin):
        raise ManifestInvalid(_twin_problem(store, key, twin))
    signed_by = None if verifier is None else verify_stored(store, key, raw, verifier, NS_MANIFEST)
    m = _bound(parse_manifest(raw, f"{store.url}/{key}"), policy, backup_id, f"{store.url}/{key}", prefix_of(key))
    return Backup(m, signed_by=signed_by, prefix=prefix_of(key))


def _exists(store: Store, key: str) -> bool:
    try:
        store.stat(key)
        return True
    except NotFound:
        return False


def newest_manifest(store: Store, policy: str, verifier: Verifier | None = None) -> Manifest | None:
    """The manifest of the policy's newest committed backup (ids sort by time), or None when there
    is none or it cannot be read: one LIST and one GET, for hints such as a progress total."""
    try:
        ids = manifest_ids(policy, (o.key for o in store.list_objects(f"{policy}/backups/")))
        return read_manifest(store, policy, max(ids), verifier).record if ids else None
    except DrtoolError:  # a hint only: what is wrong with the store, the job itself or list reports
        return None


def _bound(m: Manifest, policy: str, backup_id: str, where: str, prefix: str) -> Manifest:
    """A manifest is only valid under its own key: a copy placed under another backup's key would
    list one backup twice and restore the wrong one. Under a flat prefix its objects' keys hold no
    `/`: `<id>.` + `old/dump` would be another backup's object (folder `<id>.old/`)."""
    if m.id != backup_id or m.policy != policy:
        raise ManifestInvalid(f"{where}: manifest is of backup '{m.id}' of policy '{m.policy}', "
                              f"not of the backup its key names ('{backup_id}' of '{policy}')")  # fmt: skip
    for o in m.objects:
        if not in_backup(prefix, prefix + o.key):
            raise ManifestInvalid(f"{where}: object key {o.key!r} names another backup's folder")
    return m


def scan(store: Store, policy: str, verifier: Verifier | None = None) -> Listing:
    """Every manifest of a policy, each parsed on its own: one bad manifest is reported in
    `unreadable` and never stops the others. With a verifier, a manifest no trusted key signed is
    in `untrusted` instead (whatever it holds). Objects a manifest lists are checked against the
    same listing (no extra request)."""
    objects = {obj.key: obj for obj in store.list_objects(f"{policy}/backups/")}
    return scan_ids(store, policy, manifest_ids(policy, objects), objects, verifier)


def manifest_ids(policy: str, keys: Iterable[str]) -> dict[str, str]:
    """Backup id -> manifest key, for every key of a listing that is a backup's manifest: flat
    (`<id>.manifest.json`, an id of drtool's shape: its prefix `<id>.` can then name no other
    backup's objects) or nested (`<id>/manifest.json`). An id found in both layouts maps to its flat
    key, and readers take it as unreadable (listed_twin)."""
    base = f"{policy}/backups/"
    ids: dict[str, str] = {}
    for k in keys:
        if not k.endswith(MANIFEST_NAME) or not k.startswith(base):
            continue
        bid, layout = k[len(base) : -len(MANIFEST_NAME) - 1], k[-len(MANIFEST_NAME) - 1]
        if layout == FLAT and _BACKUP_ID.fullmatch(bid):
            ids[bid] = k
        elif layout == NESTED and bid and "/" not in bid and bid not in ids:
            ids[bid] = k
    return ids


def missing_objects(store: Store, prefix: str, m: Manifest, sizes: dict[str, int]) -> tuple[str, ...]:
    """The objects a manifest lists that the listing (key -> size) lacks or holds at another size."""
    return missing_listed(store, prefix, m.objects, sizes)


def missing_listed(
    store: Store, prefix: str, objects: Iterable[ManifestObject], sizes: dict[str, int]
) -> tuple[str, ...]:
    """missing_objects of a manifest's objects (a deferred backup has no Manifest yet)."""
    return tuple(
        f"{store.url}/{prefix}{o.key}" + ("" if sizes.get(prefix + o.key) is None else
                                          f" (size {sizes[prefix + o.key]}, manifest says {o.size})")
        for o in objects
        if sizes.get(prefix + o.key) != o.size
    )  # fmt: skip


def scan_ids(store: Store, policy: str, ids: dict[str, str], objects: dict[str, ObjectInfo],
             verifier: Verifier | None = None) -> Listing:  # fmt: skip
    """scan() of the named backups only (id -> manifest key, as manifest_ids finds them), against
    a listing already made (key -> info)."""
    sizes = {k: o.size for k, o in objects.items()}

    def read(item: tuple[str, str]) -> Backup | Unreadable | UntrustedBackup:
        bid, key = item
        where = f"{store.url}/{key}"
        signed_by = None
        if (twin := listed_twin(store, bid, key, objects)) is not None:
            return twin
        try:
            raw = get_bytes(store, key)
            if verifier is not None:
                signed_by = _origin(store, key, raw, verifier, NS_MANIFEST, signed=key + SIG_SUFFIX in objects)
        except NotFound:
            return Unreadable(bid, key, f"{where}: manifest vanished after it was listed (deleted meanwhile?)")
        except StorageError as e:
            return Unreadable(bid, key, f"{where}: manifest cannot be read: {e}")
        except Untrusted as e:
            return UntrustedBackup(bid, key, str(e), _claims(raw, where))
        try:
            m = parse_manifest(raw, where)
        except ManifestInvalid as e:
            return Unreadable(bid, key, str(e))
        prefix = prefix_of(key)
        try:
            _bound(m, policy, bid, where, prefix)
        except ManifestInvalid as e:
            return Unreadable(bid, key, str(e), claims=m.id if m.policy == policy and m.id != bid else None)
        return Backup(m, missing_objects(store, prefix, m, sizes), signed_by, prefix=prefix)

    # One GET per manifest: on a remote bucket each is a round trip (tens of ms), so they run
    # side by side; this is on the path of `drtool restore` during an outage.
    with ThreadPoolExecutor(max_workers=MANIFEST_READERS) as pool:
        found = list(pool.map(read, ids.items()))
    backups = [b for b in found if isinstance(b, Backup)]
    backups.sort(key=lambda b: (b.recovery_point, b.id), reverse=True)
    unreadable = sorted((u for u in found if isinstance(u, Unreadable)), key=lambda u: u.key)
    untrusted = sorted((u for u in found if isinstance(u, UntrustedBackup)), key=lambda u: u.key)
    return Listing(backups, unreadable, untrusted)


def _origin(store: Store, key: str, data: bytes, verifier: Verifier, namespace: str, *, signed: bool = True) -> str:
    """The fingerprint of the trusted key that signed `data` (stored at key); Untrusted naming the
    object otherwise. `signed` False: the listing shows no signature (no request needed)."""
    if not signed:
        raise Untrusted(f"{store.url}/{key}", f"its signature {key.rsplit('/', 1)[-1]}{SIG_SUFFIX} is missing")
    return verify_stored(store, key, data, verifier, namespace)


OnUntrusted = Callable[[str], None]  # told of each untrusted object a read ignored (one line naming it)


def note_untrusted(e: Untrusted, problems: list[str], on_untrusted: OnUntrusted | None) -> None:
    message = f"{e}; ignored as evidence"
    if on_untrusted is None:
        problems.append(message)
    else:
        on_untrusted(message)


def _claims(raw: bytes, where: str) -> Manifest | None:
    try:
        return parse_manifest(raw, where)
    except ManifestInvalid:
        return None


def list_backups(store: Store, policy: str, verifier: Verifier | None = None) -> list[Backup]:
    """Restorable backups of a policy as far as the listing shows, newest recovery point first.
    Folders without a manifest, unreadable or untrusted manifests and backups with missing objects
    are not listed here (scan() has them all)."""
    return scan(store, policy, verifier).restorable


def find_backup(store: Store, policy: str, backup_id: str | None, damaged: dict[str, str] | None = None,
                verifier: Verifier | None = None, kind: str | None = None,
                skipped: Callable[[str, str], None] | None = None) -> Backup:  # fmt: skip
    """The named backup, or the newest one that is neither missing objects nor in `damaged`
    (backup id -> why a check found it damaged); IntegrityError if every listed one is damaged.
    With a verifier, only a trusted one (Untrusted for a named one that is not). With `kind`
    ("logical" or "physical"), only backups of that kind (UsageError for a named one of the other).
    `skipped(id, why)` is told of each damaged backup newer than the one chosen, newest first
    (newer as listed: by recovery point, not by id, which two backups in one second do not order)."""
    if backup_id:
        found = read_manifest(store, policy, backup_id, verifier)
        if kind and found.record.kind != kind:
            raise UsageError(f"backup {backup_id} is a {found.record.kind} backup, not a {kind} one"
                             + (" (restore it with --pgdata DIR)" if found.record.is_physical else ""))  # fmt: skip
        return found
    listing = scan(store, policy, verifier)
    listed = [b for b in listing.backups if not kind or b.record.kind == kind]
    damaged = {**(damaged or {}), **{b.id: b.damaged for b in listed if b.damaged}}
    backups = [b for b in listed if b.id not in damaged]
    untrusted = listing.untrusted
    if not listed and untrusted:
        raise IntegrityError(f"{store.url}: policy '{policy}' has no trusted backup; the newest untrusted one: "
                             f"{untrusted[-1].reason}")  # fmt: skip
    if not backups and listed:
        raise IntegrityError(f"{store.url}: every backup of policy '{policy}' is known to be damaged; the newest, "
                             f"{listed[0].id}: {damaged[listed[0].id]}")  # fmt: skip
    if not backups:
        what = f"complete {kind} backup" if kind == "physical" else "complete backup"
        raise DrtoolError(f"{store.url}: policy '{policy}' has no {what} yet")
    if skipped is not None:
        for b in itertools.takewhile(lambda b: b is not backups[0], listed):
            skipped(b.id, damaged[b.id])
    return backups[0]
