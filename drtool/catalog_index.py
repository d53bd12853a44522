"""The catalog index: one small summary object per policy, `<policy>/index.json`, so that list,
status, report, prune and run read one object and one LIST instead of every manifest.

Manifests stay the source of truth. The index is a cache:
- every reader compares it with a LIST of `<policy>/backups/` (no GET): a manifest the index does
  not know, or one whose etag changed, makes it stale, and the reader falls back to the manifests
  (the caller says so once); a backup the index names whose manifest is gone is not listed;
- every writer (commit, prune, drill, verify) re-reads it, merges, and writes it back with a
  conditional write (If-Match on the version it read, If-None-Match when there was none), so two
  writers never lose an entry; a writer that finds it missing, corrupt, untrusted or written with
  other origin checks rebuilds it from the manifests;
- with [signing], it is signed like other evidence (trust.NS_EVIDENCE, `index.json.sig`);
- nothing is ever deleted on its word: prune re-reads each manifest it deletes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from . import catalog, ledger
from .clock import iso, parse_iso, utcnow
from .errors import DrtoolError, IntegrityError, NotFound, PreconditionFailed, StorageError
from .records import CheckRecord, Manifest, ManifestInvalid, manifest_from_doc, manifest_outline, manifest_to_dict
from .storage import ObjectInfo, Store
from .trust import NS_EVIDENCE, SIG_SUFFIX, Signer, Untrusted, Verifier, get_verified, put_signed

INDEX_FORMAT = "drtool-catalog-index"
INDEX_VERSION = 1
INDEX_NAME = "index.json"
WRITE_ATTEMPTS = 5  # conditional writes lost to concurrent writers before giving up (the index stays stale)
# what a drill summary keeps of a drill record: what status, list and metrics read
DRILL_FIELDS = ("drill_id", "backup_id", "started_at", "completed_at", "outcome", "passed", "failure",
                "rto_seconds", "rpo_seconds")  # fmt: skip


class IndexInvalid(IntegrityError):
    """An index object that cannot be parsed."""


class IndexUnusable(DrtoolError):
    """Why a reader cannot use the index now (missing, stale, corrupt, untrusted): read the manifests.
    `missing`: the store answered that no index object exists (no HEAD needed to tell)."""

    def __init__(self, message: str, *, missing: bool = False):
        super().__init__(message)
        self.missing = missing


def index_key(policy: str) -> str:
    return f"{policy}/{INDEX_NAME}"


def entry_kind(m: Manifest) -> str:
    """'logical' (pg_dump) unless the manifest says otherwise (base backups say 'physical')."""
    kind = getattr(m, "kind", None) or m.extra.get("kind")
    return kind if isinstance(kind, str) and kind else "logical"


def _backup_entry(m: Manifest, manifest: ObjectInfo, sig: ObjectInfo | None, signed_by: str | None) -> dict:
    """An index entry: the manifest without its table list (which can be long), the table count,
    and the versions of the manifest and its signature it was read from."""
    doc = manifest_to_dict(m)
    doc.pop("tables")
    return {"kind": entry_kind(m), "manifest": doc, "table_count": len(m.tables), "etag": manifest.etag,
            "sig_etag": sig.etag if sig else None, "signed_by": signed_by, "last_drill": None,
            "last_passed_drill_at": None, "check": None}  # fmt: skip


def drill_summary(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in DRILL_FIELDS}


def _check_summary(c: CheckRecord) -> dict[str, Any]:
    return {"kind": c.kind, "result": c.result, "checked_at": iso(c.checked_at), "reason": c.reason}


@dataclass
class Index:
    """The index document. `backups`: id -> entry; `problems`: id -> an unreadable or untrusted
    manifest ({key, status, reason, etag, sig_etag, claims}); `drills`: the newest drill that ran and
    the newest attempt, with the drill records that could not be read or trusted."""

    policy: str
    origin_checked: bool  # written by a host with [signing].trusted_keys: every entry's origin was checked
    backups: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: dict[str, dict[str, Any]] = field(default_factory=dict)
    drills: dict[str, Any] = field(default_factory=dict)
    checks_problems: list[str] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)  # drills/, checks/ -> digest of their LIST

    def to_bytes(self) -> bytes:
        doc = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "policy": self.policy, "updated_at": iso(utcnow()),
               "origin_checked": self.origin_checked, "backups": self.backups, "problems": self.problems,
               "drills": self.drills, "checks_problems": self.checks_problems,
               "evidence": self.evidence}  # fmt: skip
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    # -- drill and check outcomes ------------------------------------------------------------------
    def add_drill(self, record: dict[str, Any]) -> None:
        """A new drill record: the policy's newest attempt (and newest that ran), and its backup's."""
        s = drill_summary(record)
        newer = lambda cur: cur is None or (cur.get("started_at") or "") <= (s["started_at"] or "")  # noqa: E731
        if newer(self.drills.get("newest_attempt")):
            self.drills["newest_attempt"] = s
        if s["outcome"] != "could-not-run":
            if newer(self.drills.get("newest_ran")):
                self.drills["newest_ran"] = s
            entry = self.backups.get(s["backup_id"] or "")
            if entry is not None:
                if newer(entry.get("last_drill")):
                    entry["last_drill"] = {"drill_id": s["drill_id"], "started_at": s["started_at"],
                                           "passed": s["passed"]}  # fmt: skip
                if s["passed"] and (entry.get("last_passed_drill_at") or "") <= (s["completed_at"] or ""):
                    entry["last_passed_drill_at"] = s["completed_at"]

    def add_check(self, c: CheckRecord) -> None:
        entry = self.backups.get(c.backup_id)
        if entry is not None and (entry.get("check") or {}).get("checked_at", "") <= iso(c.checked_at):
            entry["check"] = _check_summary(c)


def parse_index(raw: bytes, where: str, policy: str) -> Index:
    """IndexInvalid naming `where` for anything that is not an index of this policy."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise IndexInvalid(f"{where}: catalog index is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
        raise IndexInvalid(f"{where}: not a drtool catalog index")
    if doc.get("version") != INDEX_VERSION:
        raise IndexInvalid(f"{where}: catalog index version {doc.get('version')!r} is not one this drtool reads")
    if doc.get("policy") != policy:
        raise IndexInvalid(f"{where}: catalog index is of policy {doc.get('policy')!r}, not of '{policy}'")
    backups, problems, drills = doc.get("backups"), doc.get("problems"), doc.get("drills")
    if not (isinstance(backups, dict) and isinstance(problems, dict) and isinstance(drills, dict)):
        raise IndexInvalid(f"{where}: catalog index lacks backups, problems or drills")
    for bid, e in backups.items():
        if not (isinstance(e, dict) and isinstance(e.get("manifest"), dict) and isinstance(e.get("table_count"), int)):
            raise IndexInvalid(f"{where}: catalog index entry {bid!r} is malformed")
    for bid, p in problems.items():
        if not (isinstance(p, dict) and isinstance(p.get("key"), str) and isinstance(p.get("reason"), str)):
            raise IndexInvalid(f"{where}: catalog index problem entry {bid!r} is malformed")
    evidence: dict[str, str] = doc["evidence"] if isinstance(doc.get("evidence"), dict) else {}
    return Index(policy, doc.get("origin_checked") is True, backups, problems, drills,
                 [p for p in doc.get("checks_problems") or [] if isinstance(p, str)], evidence)  # fmt: skip


EVIDENCE = ("drills", "checks")  # folders of evidence whose records the index summarises


def evidence_digest(store: Store, policy: str, folder: str) -> str:
    """A digest of the LIST of <policy>/<folder>/ (keys and etags, signatures included): a record
    added, edited or replaced behind the index's back changes it."""
    h = hashlib.sha256()
    for o in store.list_objects(f"{policy}/{folder}/"):
        h.update(f"{o.key}\0{o.etag}\0{o.size}\n".encode())
    return h.hexdigest()


EMPTY_DIGEST = hashlib.sha256().hexdigest()  # evidence_digest of an empty folder


# -- reading ------------------------------------------------------------------------------------------


@dataclass
class IndexRead:
    """What a reader gets from a usable index: the listing (as catalog.scan makes it), the newest
    check of each backup, and the index itself (drill summaries). `objects` (the LIST of the
    backups) and `etag` (the index's version; None: there was none) let a writer that holds the
    policy's lock merge its own commit into this read instead of reading both again (update(seen=))."""

    listing: catalog.Listing
    checks: ledger.CheckStates
    index: Index
    objects: dict[str, ObjectInfo] = field(default_factory=dict)
    etag: str | None = None

    def drill_records(self) -> list[dict[str, Any]]:
        """The newest attempt and the newest drill that ran, newest first (what status reads)."""
        attempt, ran = self.index.drills.get("newest_attempt"), self.index.drills.get("newest_ran")
        out = [attempt] if attempt else []
        if ran and ran != attempt:
            out.append(ran)
        return out

    def backup_drills(self, backup_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(last drill that ran, completed_at of the last passed one) of a backup."""
        e = self.index.backups.get(backup_id) or {}
        return e.get("last_drill"), e.get("last_passed_drill_at")


def _read(store: Store, policy: str, verifier: Verifier | None) -> tuple[bytes, str | None]:
    """The index's bytes and etag; NotFound, Untrusted or StorageError otherwise."""
    key = index_key(policy)
    if verifier is None:
        with store.get(key) as f:
            return f.read(), f.etag
    info = store.stat(key)  # the etag the If-Match of a writer needs; the signed bytes follow
    return get_verified(store, key, verifier, NS_EVIDENCE), info.etag


def _usable(store: Store, policy: str, verifier: Verifier | None) -> tuple[Index, str | None]:
    """The index, trusted as this reader needs it; IndexUnusable naming the object otherwise."""
    where = f"{store.url}/{index_key(policy)}"
    try:
        raw, etag = _read(store, policy, verifier)
    except NotFound:
        raise IndexUnusable(f"{where}: catalog index is missing", missing=True) from None
    except Untrusted as e:
        raise IndexUnusable(str(e)) from None
    except StorageError as e:
        raise IndexUnusable(f"{where}: catalog index cannot be read: {e}") from None
    try:
        index = parse_index(raw, where, policy)
    except IndexInvalid as e:
        raise IndexUnusable(str(e)) from None
    if index.origin_checked != (verifier is not None):
        how = "with" if index.origin_checked else "without"
        raise IndexUnusable(f"{where}: catalog index was written {how} [signing].trusted_keys, unlike this host's "
                            "policy")  # fmt: skip
    if verifier is not None:  # a key that left trusted_keys takes the backups it signed with it
        gone = sorted(b for b, e in index.backups.items() if e.get("signed_by") not in verifier.fingerprints)
        if gone:
            raise IndexUnusable(f"{where}: catalog index has backups signed by a key that is no longer trusted "
                                f"({', '.join(gone[:3])})")  # fmt: skip
    return index, etag


def _manifest_objects(policy: str, objects: dict[str, ObjectInfo]) -> dict[str, ObjectInfo]:
    """Backup id -> its manifest's listing entry."""
    return {bid: objects[k] for bid, k in catalog.manifest_ids(policy, objects).items()}


def _sig(objects: dict[str, ObjectInfo], key: str) -> ObjectInfo | None:
    return objects.get(key + SIG_SUFFIX)


def _fresh(entry: dict[str, Any], obj: ObjectInfo, sig: ObjectInfo | None) -> bool:
    """The entry was made from this version of the manifest (and of its signature)."""
    return entry.get("etag") == obj.etag and entry.get("sig_etag") == (sig.etag if sig else None)


def read(store: Store, policy: str, verifier: Verifier | None = None, evidence: Iterable[str] = (),
         deferred: bool = False) -> IndexRead:  # fmt: skip
    """The policy's catalog from its index and one LIST of its backups (no manifest read).
    IndexUnusable naming the object and why when the index is missing, unreadable, untrusted or
    stale: the caller reads the manifests instead. No index and no backup: an empty catalog.
    `evidence` names the folders (drills, checks) whose summaries the caller uses: one LIST each
    shows whether a record was added or changed since the index was written. `deferred`: for a
    reader that parses the newest backup whole and publishes only the outline of the others
    (status, report, metrics), see _listing."""
    objects = {o.key: o for o in store.list_objects(f"{policy}/backups/")}
    manifests = _manifest_objects(policy, objects)
    try:
        index, etag = _usable(store, policy, verifier)
    except IndexUnusable as e:
        if manifests or not e.missing:
            raise
        index, etag = Index(policy, verifier is not None), None  # a policy with no backup yet needs no index
    for bid, obj in manifests.items():
        entry = index.backups.get(bid) or index.problems.get(bid)
        if entry is None:
            raise IndexUnusable(f"{store.url}/{index_key(policy)}: catalog index is stale: backup {bid} is not in "
                                "it (committed by an older drtool?)")  # fmt: skip
        if not _fresh(entry, obj, _sig(objects, obj.key)):
            raise IndexUnusable(f"{store.url}/{index_key(policy)}: catalog index is stale: the manifest of backup "
                                f"{bid} changed since it was indexed")  # fmt: skip
    for folder in evidence:
        if index.evidence.get(folder) != evidence_digest(store, policy, folder):
            raise IndexUnusable(f"{store.url}/{index_key(policy)}: catalog index is stale: {policy}/{folder}/ "
                                "changed since it was written")  # fmt: skip
    return IndexRead(_listing(store, policy, index, objects, manifests, deferred), _checks(index), index, objects,
                     etag)  # fmt: skip


def store_has_index(store: Store, policy: str) -> bool:
    try:
        store.stat(index_key(policy))
        return True
    except NotFound:
        return False


def _listing(store: Store, policy: str, index: Index, objects: dict[str, ObjectInfo],
             manifests: dict[str, ObjectInfo], deferred: bool = False) -> catalog.Listing:  # fmt: skip
    """The listing catalog.scan would make, from the index; a backup whose manifest the LIST does
    not show (deleted behind the index's back) is left out. `deferred`: parse and check only the
    newest restorable backup's manifest now, the others when first used (catalog.Backup.deferred);
    what a listing or report publishes of them is checked now (records.manifest_outline)."""
    backups: list[catalog.Backup] = []
    twins: list[catalog.Unreadable] = []
    sizes = {k: o.size for k, o in objects.items()}
    for bid, e in index.backups.items():
        shown = manifests.get(bid)  # the LIST shows its manifest, in either layout
        if shown is None:
            continue
        key = shown.key
        if (twin := catalog.listed_twin(store, bid, key, objects)) is not None:  # planted since it was indexed
            twins.append(twin)
            continue
        where = f"{store.url}/{key}"
        doc = {**e["manifest"], "tables": {}}
        prefix = catalog.prefix_of(key)
        try:  # the entry as decoded with the index: no JSON round trip per entry
            if deferred:
                mid, point, listed = manifest_outline(doc, where)
                if mid != bid:
                    raise ManifestInvalid(f"{where}: invalid manifest: it is of backup {mid[:40]!r}")
                missing = catalog.missing_listed(store, prefix, listed, sizes)
                backups.append(catalog.Backup.deferred(bid, point, partial(manifest_from_doc, doc, where), doc, missing,
                                                       e.get("signed_by"), e["table_count"], prefix))  # fmt: skip
                continue
            m = manifest_from_doc(doc, where)
            if m.id != bid:
                raise ManifestInvalid(f"{where}: invalid manifest: it is of backup {m.id[:40]!r}")
        except ManifestInvalid as err:
            raise IndexUnusable(f"{store.url}/{index_key(policy)}: catalog index entry {bid}: {err}") from None
        missing = catalog.missing_objects(store, prefix, m, sizes)
        backups.append(catalog.Backup(m, missing, e.get("signed_by"), table_count=e["table_count"], doc=doc,
                                      prefix=prefix))  # fmt: skip
    backups.sort(key=lambda b: (b.recovery_point, b.id), reverse=True)
    newest = next((b for b in backups if not b.missing), None)
    if deferred and newest is not None:  # the one a reader of the newest uses: checked now, like all in full
        try:
            _ = newest.record  # parsed and checked now
        except ManifestInvalid as err:
            raise IndexUnusable(f"{store.url}/{index_key(policy)}: catalog index entry {newest.id}: {err}") from None
    unreadable: list[catalog.Unreadable] = twins
    untrusted, protected = [], set()
    for bid, p in sorted(index.problems.items(), key=lambda item: item[1]["key"]):
        if p["key"] not in objects:
            continue
        if p.get("claims"):
            protected.add(p["claims"])
        if p.get("status") == "untrusted":
            untrusted.append(catalog.UntrustedBackup(bid, p["key"], p["reason"]))
        else:
            unreadable.append(catalog.Unreadable(bid, p["key"], p["reason"], p.get("claims")))
    return catalog.Listing(backups, sorted(unreadable, key=lambda u: u.key), untrusted, claimed=protected)


def _checks(index: Index) -> ledger.CheckStates:
    newest = {}
    for bid, e in index.backups.items():
        c = e.get("check")
        if c:
            newest[bid] = CheckRecord(index.policy, bid, c["kind"], c["result"], parse_iso(c["checked_at"]),
                                      c.get("reason"))  # fmt: skip
    return ledger.CheckStates(newest, list(index.checks_problems))


# -- writing ------------------------------------------------------------------------------------------


def _problem(u: catalog.Unreadable | catalog.UntrustedBackup, objects: dict[str, ObjectInfo]) -> dict[str, Any]:
    obj, sig = objects.get(u.key), _sig(objects, u.key)
    claims = u.claims if isinstance(u, catalog.Unreadable) else (u.claims.id if u.claims else None)
    return {"key": u.key, "status": "untrusted" if isinstance(u, catalog.UntrustedBackup) else "unreadable",
            "reason": u.reason, "claims": claims, "etag": obj.etag if obj else None,
            "sig_etag": sig.etag if sig else None}  # fmt: skip


def rebuild(
    store: Store,
    policy: str,
    verifier: Verifier | None = None,
    on_untrusted: catalog.OnUntrusted | None = None,
    *,
    objects: dict[str, ObjectInfo] | None = None,
    known: Iterable[str] = (),
) -> Index:
    """The index made afresh from every manifest, check record and drill record of the policy, and
    stamped with the digests of its evidence folders. `objects`: a LIST of the backups the caller
    just made (not made again); `known`: backups whose manifests the caller holds and merges itself
    (a commit's own manifest is not read back). The digests are taken before the records are read,
    so a record added meanwhile makes the index stale, never silently missing from it; an empty
    folder is not listed a second time."""
    if objects is None:
        objects = {o.key: o for o in store.list_objects(f"{policy}/backups/")}
    index = Index(policy, verifier is not None)
    skip = set(known)
    ids = {bid: k for bid, k in catalog.manifest_ids(policy, objects).items() if bid not in skip}
    _merge_listing(index, catalog.scan_ids(store, policy, ids, objects, verifier), objects)
    _stamp(store, index)
    untrusted: list[str] = []
    records, problems = (
        ([], [])
        if index.evidence["drills"] == EMPTY_DIGEST
        else ledger.list_drill_records(store, policy, verifier, untrusted.append)
    )
    for r in reversed(records):  # oldest first: the newest ends up on top
        index.add_drill(r)
    index.drills["problems"] = problems
    index.drills["untrusted"] = untrusted
    if index.evidence["checks"] != EMPTY_DIGEST:
        checks = ledger.read_checks(store, policy, verifier, on_untrusted)
        for c in checks.newest.values():
            index.add_check(c)
        index.checks_problems = checks.problems
    return index


def _stamp(store: Store, index: Index) -> None:
    index.evidence = {folder: evidence_digest(store, index.policy, folder) for folder in EVIDENCE}


def _merge_listing(index: Index, listing: catalog.Listing, objects: dict[str, ObjectInfo]) -> None:
    for b in listing.backups:
        key = b.prefix + catalog.MANIFEST_NAME
        index.backups[b.id] = _backup_entry(b.record, objects[key], _sig(objects, key), b.signed_by)
    problems: list[catalog.Unreadable | catalog.UntrustedBackup] = [*listing.unreadable, *listing.untrusted]
    for u in problems:
        index.problems[u.backup_id] = _problem(u, objects)


def _refresh(store: Store, index: Index, objects: dict[str, ObjectInfo], verifier: Verifier | None,
             written: dict[str, Manifest], signed_by: str | None = None) -> None:  # fmt: skip
    """Bring the index in line with the LIST: drop what is gone, add what this process just wrote
    (`written`, no read needed: the caller passes only manifests it knows to be as trusted as
    `signed_by` says), and read the manifests of any other backup it does not know."""
    manifests = _manifest_objects(index.policy, objects)
    for table in (index.backups, index.problems):
        for bid in [b for b in table if b not in manifests]:
            del table[bid]
    unknown: dict[str, str] = {}
    for bid, obj in manifests.items():
        sig = _sig(objects, obj.key)
        if bid in written:
            old = index.backups.get(bid) or {}
            entry = _backup_entry(written[bid], obj, sig, signed_by)
            entry.update({k: old[k] for k in ("last_drill", "last_passed_drill_at", "check") if old.get(k)})
            index.backups[bid] = entry
            index.problems.pop(bid, None)
        elif not _fresh(index.backups.get(bid) or index.problems.get(bid) or {}, obj, sig):
            unknown[bid] = obj.key
    if unknown:  # only these manifests are read: the rest of the index stands
        listing = catalog.scan_ids(store, index.policy, unknown, objects, verifier)
        for bid in unknown:
            index.backups.pop(bid, None)
            index.problems.pop(bid, None)
        _merge_listing(index, listing, objects)


def update(
    store: Store,
    policy: str,
    *,
    verifier: Verifier | None,
    signer: Signer | None,
    written: Iterable[Manifest] = (),
    drills: Iterable[dict[str, Any]] = (),
    checks: Iterable[CheckRecord] = (),
    on_untrusted: catalog.OnUntrusted | None = None,
    seen: IndexRead | None = None,
    added: Iterable[ObjectInfo] = (),
) -> Index:
    """Re-read, merge and write back the index with a conditional write, retried when another
    writer won; StorageError when it could not be written (the caller warns: the index is a cache).

    `seen`: the index and LIST read (read()) by a caller that holds the policy's lock, before it
    wrote `written`, whose objects (manifest and signature) it passes as `added`. The first attempt
    merges into that read instead of a new LIST and GET; `seen` is consumed. The write is still
    conditional on the version read, so a writer that won meanwhile makes this one read both again.
    A backup committed meanwhile without an index update (by an older drtool) is missing from the
    result: readers see the index as stale and read the manifests, until the next full update."""
    # what this process wrote is merged without a read when no origin is checked, or when it signed
    # it with a key the verifier trusts (the entry then names that key); else it is read back
    own = signer.fingerprint if signer is not None and verifier is not None else None
    trusted = verifier is None or (own is not None and own in verifier.fingerprints)
    written, drills, checks = list(written), list(drills), list(checks)
    by_id = {m.id: m for m in written} if trusted else {}
    records = bool(drills or checks)
    for attempt in range(WRITE_ATTEMPTS):
        merged = (_merge_seen(store, seen, added, verifier, [m.id for m in written], by_id, own, records)
                  if attempt == 0 and seen else None)  # fmt: skip
        index, etag, restamp = merged or _read_merged(store, policy, verifier, on_untrusted, by_id, own, records)
        for d in drills:  # idempotent: a rebuild that already read them changes nothing
            index.add_drill(d)
        for c in checks:
            index.add_check(c)
        if restamp:
            _stamp(store, index)
        try:
            _write(store, policy, index, etag, signer)
            return index
        except PreconditionFailed:
            continue  # another writer won: read its version and merge again
    raise StorageError(f"{store.url}/{index_key(policy)}: catalog index not updated: {WRITE_ATTEMPTS} concurrent "
                       "writes won over this one")  # fmt: skip


def _read_merged(store: Store, policy: str, verifier: Verifier | None, on_untrusted: catalog.OnUntrusted | None,
                 written: dict[str, Manifest], own: str | None,
                 records: bool) -> tuple[Index, str | None, bool]:  # fmt: skip
    """The index as stored now, brought in line with a new LIST and `written`: (index, the etag
    to write it over, whether its evidence digests must be taken again). `records`: the caller
    merges drill or check records."""
    objects = {o.key: o for o in store.list_objects(f"{policy}/backups/")}
    try:
        index, etag = _usable(store, policy, verifier)
    except IndexUnusable as e:
        # missing (the GET said so: no HEAD), corrupt or untrusted: replaced by a rebuild, stamped
        # as it reads the records (the caller's drill or check record is among them)
        etag = None if e.missing else _current_etag(store, policy)
        index = rebuild(store, policy, verifier, on_untrusted, objects=objects, known=written)
        _refresh(store, index, objects, verifier, written, own)
        return index, etag, False
    _refresh(store, index, objects, verifier, written, own)
    # the evidence digests stand while no record is merged: a record written behind the index's
    # back still shows as a changed folder to readers (stale), as before this write
    return index, etag, records or set(index.evidence) != set(EVIDENCE)


def _merge_seen(store: Store, seen: IndexRead, added: Iterable[ObjectInfo], verifier: Verifier | None,
                ids: list[str], written: dict[str, Manifest], own: str | None,
                records: bool) -> tuple[Index, str | None, bool] | None:  # fmt: skip
    """update()'s first attempt from the caller's earlier read (see update); None when it cannot
    serve: the manifest of a backup written (`ids`) is not among `added`, or there was no index and
    the policy has drill or check records, which only a rebuild reads."""
    new = {o.key: o for o in added}
    if not set(ids) <= set(catalog.manifest_ids(seen.index.policy, new)):
        return None
    objects = {**seen.objects, **new}
    index = seen.index
    restamp = records or set(index.evidence) != set(EVIDENCE)
    if seen.etag is None:  # no index yet (and no backup before this one)
        _stamp(store, index)
        if any(d != EMPTY_DIGEST for d in index.evidence.values()):
            return None
        restamp = records
    _refresh(store, index, objects, verifier, written, own)
    return index, seen.etag, restamp


def _current_etag(store: Store, policy: str) -> str | None:
    try:
        return store.stat(index_key(policy)).etag
    except NotFound:
        return None


def _write(store: Store, policy: str, index: Index, etag: str | None, signer: Signer | None) -> None:
    data = index.to_bytes()
    cond: dict[str, Any] = {"if_match": etag} if etag else {"if_absent": True}
    if signer is None:
        store.put(index_key(policy), [data], size_hint=len(data), **cond)
    else:
        put_signed(store, index_key(policy), data, NS_EVIDENCE, signer, **cond)


def rebuild_and_write(store: Store, policy: str, verifier: Verifier | None, signer: Signer | None,
                      on_untrusted: catalog.OnUntrusted | None = None) -> Index:  # fmt: skip
    """Make the index afresh from the manifests and replace whatever is there (drtool catalog
    rebuild). The write is conditional on the version seen before the rebuild began, so an entry a
    commit added meanwhile is never overwritten: the rebuild starts again instead."""
    for _ in range(WRITE_ATTEMPTS):
        etag = _current_etag(store, policy)
        index = rebuild(store, policy, verifier, on_untrusted)
        try:
            _write(store, policy, index, etag, signer)
            return index
        except PreconditionFailed:
            continue
    raise StorageError(f"{store.url}/{index_key(policy)}: catalog index not written: other writers kept winning")


# -- verify: the index against the manifests ------------------------------------------------------------


def compare(index: Index | None, listing: catalog.Listing, where: str) -> list[str]:
    """One line per difference between the index and the manifests (what verify reports)."""
    if index is None:
        return []
    problems = []
    by_id = {b.id: b for b in listing.backups}
    for bid, b in by_id.items():
        e = index.backups.get(bid)
        if e is None:
            problems.append(f"{where}: backup {bid} is not in the catalog index")
            continue
        doc = manifest_to_dict(b.record)
        doc.pop("tables")
        if e["manifest"] != doc or e["table_count"] != len(b.record.tables):
            diff = sorted(k for k in set(doc) | set(e["manifest"]) if doc.get(k) != e["manifest"].get(k))
            problems.append(f"{where}: entry of backup {bid} differs from its manifest ({', '.join(diff) or 'tables'})")
    for bid in sorted(set(index.backups) - set(by_id)):
        problems.append(f"{where}: lists backup {bid}, which has no valid manifest")
    return problems


def read_for_verify(store: Store, policy: str, verifier: Verifier | None) -> tuple[Index | None, str | None]:
    """(the index, None), or (None, why it cannot be compared) when it is missing or unusable."""
    try:
        return _usable(store, policy, verifier)[0], None
    except IndexUnusable as e:
        return None, str(e)


OnFallback = Callable[[str], None]
