"""The WAL archive as list, prune and verify see it: one listing of `<policy>/wal/`, the base
backups' positions from their manifests, and the chain rules of drtool/walchain.py. Nothing here
trusts anything but manifests and the archive listing; history files are read (decrypted) only
when the identity is at hand, and prune then deletes only what is older than every kept start."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import catalog, clock, objectives, walchain, walnames
from ..compress import Decompressor, TruncatedFrame
from ..crypto import age
from ..errors import DrtoolError, IntegrityError, NotFound
from ..storage import ObjectInfo, Store
from ..walnames import Segment

Warn = Callable[[str], None]


# -- base backups, from their manifests -----------------------------------------------------------


def kind(b: catalog.Backup) -> str:
    return b.record.kind


def physical_doc(b: catalog.Backup) -> dict[str, Any] | None:
    """The manifest's `physical` section (docs/storage-format.md), None for a logical backup."""
    return b.record.physical.as_dict() if b.record.physical is not None else None


def base_backup(backup_id: str, doc: dict[str, Any]) -> walchain.BaseBackup:
    return walchain.BaseBackup(backup_id, int(doc["timeline"]), walnames.parse_lsn(doc["start_lsn"]),
                               walnames.parse_lsn(doc["end_lsn"]))  # fmt: skip


# -- the archive --------------------------------------------------------------------------------


@dataclass
class Archive:
    """The archived WAL of one cluster (system identifier) of a policy."""

    policy: str
    sysid: str
    size: int  # wal_segment_size
    files: dict[str, ObjectInfo]  # WAL file name -> its listing entry
    histories: dict[int, tuple[walchain.Switch, ...]] | None = None  # None: not read (no identity)
    inferred: bool = False  # `histories` were guessed from names (never used to delete)
    unreadable: str | None = None  # a history file the identity could not read (damaged, or planted)

    @property
    def segments(self) -> list[Segment]:
        return [walnames.parse_segment(n, self.size) for n in self.files if walnames.SEGMENT.match(n)]

    @property
    def history_timelines(self) -> list[int]:
        return [int(n[:8], 16) for n in self.files if walnames.HISTORY.match(n)]

    def key(self, name: str) -> str:
        return walnames.key_for(self.policy, self.sysid, name)

    def chain_histories(self) -> dict[int, tuple[walchain.Switch, ...]]:
        """Histories to follow chains with: the real ones, or guessed from names."""
        if self.histories is not None:
            return self.histories
        return walchain.infer_histories(self.segments, self.history_timelines)


def list_archives(store: Store, policy: str, foreign: list[str] | None = None) -> dict[str, dict[str, ObjectInfo]]:
    """One listing of `<policy>/wal/`: system identifier -> WAL file name -> entry. Keys that are
    not archived WAL files (the cluster record, anything foreign) are not in it; the foreign ones
    (every key but the cluster record) are appended to `foreign` when given."""
    base = f"{policy}/wal/"
    out: dict[str, dict[str, ObjectInfo]] = {}
    for obj in store.list_objects(base):
        sysid, _, rest = obj.key[len(base) :].partition("/")
        try:
            name = walnames.name_of_key(obj.key) if rest and sysid.isdigit() else None
        except walnames.BadWalName:
            name = None
        if name is not None and walnames.key_for(policy, sysid, name) == obj.key:
            out.setdefault(sysid, {})[name] = obj
        elif foreign is not None and obj.key not in (
            walnames.cluster_key(policy),
            walnames.cluster_key(policy) + ".sig",
        ):
            foreign.append(obj.key)
    return out


def load(store: Store, policy: str, sysid: str, files: dict[str, ObjectInfo], size: int,
         identities: list[age.Identity] | None, warn: Warn) -> Archive:  # fmt: skip
    """The archive with its history files read when the identity is at hand. A history file that
    cannot be read leaves every history unread (prune then deletes only by position)."""
    archive = Archive(policy, sysid, size, files)
    names = sorted(n for n in files if walnames.HISTORY.match(n))
    if identities is None:
        archive.inferred = bool(names)
        return archive
    histories = {}
    for name in names:
        key = archive.key(name)
        try:
            text = read_plain(store, key, identities).decode("utf-8", "replace")
            tli = int(name[:8], 16)
            histories[tli] = walchain.parse_history(text, tli, f"{store.url}/{key}")
        except (DrtoolError, walchain.HistoryInvalid, age.AgeError, TruncatedFrame) as e:
            warn(f"{store.url}/{key}: timeline history cannot be read ({e}); timelines are not followed")
            archive.inferred = True
            archive.unreadable = f"{store.url}/{key}: timeline history cannot be read with the identity: {e}"
            return archive
    archive.histories = histories
    return archive


def read_plain(store: Store, key: str, identities: list[age.Identity]) -> bytes:
    """A small archived file's plaintext (age, then zstd), checked against its recorded SHA-256."""
    expected = getattr(store.stat(key), "metadata", {}).get("sha256")
    with store.get(key) as raw:
        d = Decompressor()
        plain = b"".join(d.decompress(piece) for piece in age.decrypt_stream(raw, identities))
        d.finish()
    if expected and hashlib.sha256(plain).hexdigest() != expected:
        raise IntegrityError(f"{store.url}/{key}: SHA-256 of the plaintext differs from the one recorded at archiving")
    return plain


def end_time(store: Store, archive: Archive, seg: Segment | None) -> str | None:
    """When a segment was completed: its `end` metadata, else the object's time (ISO UTC)."""
    if seg is None or seg.name not in archive.files:
        return None
    try:
        info = store.stat(archive.key(seg.name))
    except NotFound:
        return None
    end = getattr(info, "metadata", {}).get("end")
    return end or (clock.iso(info.modified) if info.modified else None)


# -- what list, verify and prune ask --------------------------------------------------------------


def gap_row(store: Store, archive: Archive, c: walchain.Chain, g: walchain.Gap) -> dict[str, Any]:
    before = walchain.segment_before(g.first, c.spans) if c.consistent else None
    return {
        "backup": c.backup.id,
        "missing": g.first.name,
        "through": g.last.name,
        "segments": g.count,
        "key": f"{store.url}/{archive.key(g.first.name)}",
        "restorable_until": end_time(store, archive, before),
        "breaks": g.breaks,
    }


def window(store: Store, policy: str, backups: Sequence[tuple[str, dict[str, Any]]], identities, warn: Warn,
           archives: dict[str, dict[str, ObjectInfo]] | None = None) -> dict[str, Any] | None:  # fmt: skip
    """The restorable window of a policy from its complete, undamaged physical backups (id,
    physical section), oldest first considered: earliest = the oldest one whose WAL makes it
    consistent, at its end time; latest = the end of the last segment a restore from the newest
    consistent one replays without crossing a gap; every gap on the way, with where it breaks.
    None when the policy has neither physical backups nor archived WAL."""
    archives = list_archives(store, policy) if archives is None else archives
    if not backups and not archives:
        return None
    sysid = str(backups[0][1]["sysid"]) if backups else max(archives, key=lambda s: len(archives[s]))
    files = archives.get(sysid, {})
    size = int(backups[0][1]["wal_segment_size"]) if backups else walnames.DEFAULT_SEGMENT_SIZE
    archive = load(store, policy, sysid, files, size, identities, warn)
    mine = sorted(((bid, doc) for bid, doc in backups if str(doc["sysid"]) == sysid),
                  key=lambda x: (x[1]["end_time"], x[0]))  # fmt: skip
    segments, histories = archive.segments, archive.chain_histories()
    chains = [(doc, walchain.chain(base_backup(bid, doc), segments, histories, size=size)) for bid, doc in mine]
    consistent = [(doc, c) for doc, c in chains if c.consistent]
    newest_seg = max(segments, key=lambda s: (s.number, s.timeline), default=None)
    out: dict[str, Any] = {
        "policy": policy,
        "sysid": sysid,
        "earliest": consistent[0][0]["end_time"] if consistent else None,
        "latest": None,
        "timeline": None,
        "newest_segment": newest_seg.name if newest_seg else None,
        "newest_segment_end": end_time(store, archive, newest_seg),
        "gaps": [],
        "timelines_inferred": archive.inferred,
    }
    if consistent:
        first, last = consistent[0][1], consistent[-1][1]
        out["timeline"] = last.timeline
        out["latest"] = end_time(store, archive, last.restorable_through) or consistent[-1][0]["end_time"]
        out["gaps"] = [gap_row(store, archive, first, g) for g in first.gaps]
    for _, c in chains:
        if not c.consistent:
            reason = c.problems[0] if c.problems else c.gaps[0].breaks
            out.setdefault("unrestorable", []).append({"backup": c.backup.id, "reason": reason})
    return out


def verify_chains(store: Store, policy: str, backups: Sequence[tuple[str, dict[str, Any]]], identities,
                  warn: Warn) -> tuple[list[dict[str, Any]], list[str]]:  # fmt: skip
    """The WAL chain of each physical backup (id, physical section) to the newest archived segment:
    (one entry per backup, one line per gap or broken chain naming the missing object)."""
    foreign: list[str] = []
    archives = list_archives(store, policy, foreign)
    entries: list[dict[str, Any]] = []
    problems = [f"{store.url}/{key}: not a WAL file name drtool archives; not written by drtool wal push"
                for key in foreign]  # fmt: skip
    loaded: dict[str, Archive] = {}
    for bid, doc in backups:
        sysid, size = str(doc["sysid"]), int(doc["wal_segment_size"])
        if sysid not in loaded:
            loaded[sysid] = load(store, policy, sysid, archives.get(sysid, {}), size, identities, warn)
        archive = loaded[sysid]
        c = walchain.chain(base_backup(bid, doc), archive.segments, archive.chain_histories(), size=size)
        gaps = [gap_row(store, archive, c, g) for g in c.gaps]
        entry = {
            "backup": bid, "ok": c.ok, "sysid": sysid, "timeline": c.timeline, "start": c.start.name,
            "newest": c.newest.name if c.newest else None,
            "restorable_through": c.restorable_through.name if c.restorable_through else None,
            "gaps": gaps, "problems": list(c.problems),
            "timelines_inferred": archive.inferred,
        }  # fmt: skip
        entries.append(entry)
        if archive.unreadable and archive.unreadable not in problems:
            problems.append(archive.unreadable)
        for g in gaps:
            more = f" (and {g['segments'] - 1} more through {g['through']})" if g["segments"] > 1 else ""
            problems.append(f"{g['key']}: missing from the WAL archive{more}: {g['breaks']}")
        problems.extend(f"{store.url}/{walnames.archive_prefix(policy, sysid)}: {p}" for p in c.problems)
    return entries, problems


def prune_wal(store: Store, policy: str, kept: Sequence[tuple[str, dict[str, Any]]], *, dry_run: bool,
              identities, warn: Warn, delete: Callable[[str], None]) -> list[dict[str, Any]]:  # fmt: skip
    """Retention of archived WAL, per cluster: a file goes only when no kept physical backup (id,
    physical section) may read it (walchain.wal_retention); nothing goes for a cluster none of the
    kept backups is of. `delete` removes one key (it raises to stop)."""
    out = []
    for sysid, files in sorted(list_archives(store, policy).items()):
        mine = [(bid, doc) for bid, doc in kept if str(doc["sysid"]) == sysid]
        size = int(mine[0][1]["wal_segment_size"]) if mine else walnames.DEFAULT_SEGMENT_SIZE
        archive = load(store, policy, sysid, files, size, identities if mine else None, warn)
        bases = [base_backup(bid, doc) for bid, doc in mine]
        decisions = walchain.wal_retention(files, bases, archive.histories, size)
        gone = [d.name for d in decisions if not d.keep]
        if not dry_run:
            for name in gone:
                delete(archive.key(name))
        reasons: dict[str, int] = {}
        for d in decisions:
            reasons[d.reason] = reasons.get(d.reason, 0) + 1
        out.append({
            "sysid": sysid, "kept": len(decisions) - len(gone), "deleted": len(gone), "delete": gone,
            "reasons": reasons, "timelines_followed": archive.histories is not None,
        })  # fmt: skip
    return out


# -- what the report asks: restorable points over time ---------------------------------------------

LISTING_PRECISION = dt.timedelta(seconds=1)  # object listings' modified times are whole seconds
REFINE_STATS = 8  # `end` metadata read for at most this many segments per report section

COVERAGE_BOUND = (
    "intervals between archive uploads (the listing's modified times), each ending when a segment "
    "or base backup reached the store; the worst one starts at its segment's `end` metadata (exact) "
    "when `worst_exact`, the others can only understate the loss by a segment's upload delay"
)


def coverage(store: Store, policy: str, manifests: Sequence[dict[str, Any]], *, since, until,
             warn: Warn) -> dict[str, Any] | None:  # fmt: skip
    """What the report says of a policy's PITR archive: its restorable window (window()) and the
    points a restore could reach over time, from archive continuity: each complete base backup
    (restorable to its end time once it completed) and each archived segment a consistent base
    backup reaches without crossing a gap (restorable to its completion once both were stored).
    Times come from the one listing (upload times, an upper bound of each segment's content time);
    the segment starting the worst interval is read for its `end` metadata, a few times over.
    None when the policy has neither physical backups nor archived WAL."""
    physical = [m for m in manifests if m.get("kind") == "physical" and m.get("physical")]
    archives = list_archives(store, policy)
    win = window(store, policy, [(m["id"], m["physical"]) for m in physical], None, warn, archives)
    if win is None:
        return None
    sysid = win["sysid"]
    files = archives.get(sysid, {})
    mine = sorted((m for m in physical if str(m["physical"]["sysid"]) == sysid), key=lambda m: m["completed_at"])
    size = int(mine[0]["physical"]["wal_segment_size"]) if mine else walnames.DEFAULT_SEGMENT_SIZE
    archive = load(store, policy, sysid, files, size, None, warn)
    points = _points(archive, mine)
    exact: set[str] = set()
    for _ in range(REFINE_STATS):
        worst = _worst(points, since, until)
        name = worst.after_backup if worst is not None else None
        if name is None or not walnames.SEGMENT.match(name) or name in exact:
            break
        exact.add(name)
        points[name] = refined(points[name], end_time(store, archive, walnames.parse_segment(name, size)))
    worst = _worst(points, since, until)
    return {
        "window": win,
        "points": list(points.values()),
        "worst_exact": worst is not None and worst.after_backup in exact,
        "bound": COVERAGE_BOUND,
    }


def refined(point: objectives.Point, end: str | None) -> objectives.Point:
    """A segment's point moved back to its `end` metadata (when its content was complete), unless
    that is later than the listing's upload time allows. Listings give whole seconds (S3's
    LastModified), so a segment completed at .067 s may show as uploaded up to a second before
    its `end`: that `end` is still the exact one. A later `end` (a skewed clock) is not trusted."""
    if end is None or clock.parse_iso(end) >= point.recovery_point + LISTING_PRECISION:
        return point
    return objectives.Point(point.backup_id, clock.parse_iso(end), point.completed_at)


def _points(archive: Archive, mine: Sequence[dict[str, Any]]) -> dict[str, objectives.Point]:
    """Segment name -> (restorable to its upload time, from when it and a base backup reaching it
    were both stored); "base backup ID" -> (its end time, its completion) for each consistent one.
    Base backups in completion order: a segment takes the first that reaches it."""
    segments, histories, size = archive.segments, archive.chain_histories(), archive.size
    out: dict[str, objectives.Point] = {}
    covered = -1  # segment numbers up to here are reached by an earlier-completed base backup
    for m in mine:
        c = walchain.chain(base_backup(m["id"], m["physical"]), segments, histories, size=size)
        through = c.restorable_through
        if through is None:
            continue
        done = clock.parse_iso(m["completed_at"])
        bid = f"base backup {m['id']}"
        out[bid] = objectives.Point(bid, clock.parse_iso(m["physical"]["end_time"]), done)
        for n in range(max(c.start.number, covered + 1), through.number + 1):
            name = walnames.Segment(walchain.owner(n, c.spans, size), n, size).name
            info = archive.files.get(name)
            if info is None or info.modified is None:
                continue
            at = max(info.modified, done)
            out[name] = objectives.Point(name, info.modified, at)
        covered = max(covered, through.number)
    return out


def _worst(points: dict[str, objectives.Point], since, until) -> objectives.Gap | None:
    gaps = [g for g in objectives.gaps(list(points.values()), until, since=since) if g.end > since]
    return max(gaps, key=lambda g: g.seconds, default=None)
