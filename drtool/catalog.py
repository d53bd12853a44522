"""The bucket is the catalog: where objects live, and the manifest that commits a backup.

Layout under the store root (docs/storage-format.md):
    <policy>/backups/<id>/dump.zst.age    age(zstd(pg_dump custom archive))
    <policy>/backups/<id>/manifest.json   written last: a backup without it does not exist
"""

from __future__ import annotations

import json
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .clock import parse_iso
from .errors import DrtoolError, IntegrityError, NotFound, UsageError
from .storage import Store, get_bytes, put_bytes

MANIFEST_FORMAT = "drtool-backup-manifest"
MANIFEST_VERSION = 1
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


def backup_prefix(policy: str, backup_id: str) -> str:
    return f"{policy}/backups/{backup_id}/"


def dump_key(policy: str, backup_id: str) -> str:
    return backup_prefix(policy, backup_id) + DUMP_NAME


def manifest_key(policy: str, backup_id: str) -> str:
    return backup_prefix(policy, backup_id) + MANIFEST_NAME


@dataclass(frozen=True)
class Backup:
    """A committed backup, as its manifest describes it."""

    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def recovery_point(self):
        return parse_iso(self.manifest["recovery_point"])

    @property
    def dump(self) -> dict[str, Any]:
        return next(o for o in self.manifest["objects"] if o["role"] == "dump")

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "id": m["id"],
            "policy": m["policy"],
            "database": m["database"],
            "recovery_point": m["recovery_point"],
            "started_at": m["started_at"],
            "completed_at": m["completed_at"],
            "size_bytes": m["sizes"]["stored_bytes"],
            "plain_bytes": m["sizes"]["plain_bytes"],
            "server_version": m["server_version"],
            "tables": len(m["tables"]),
        }


def write_manifest(store: Store, manifest: dict[str, Any]) -> None:
    data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    store.put(manifest_key(manifest["policy"], manifest["id"]), [data], retain=True)


def read_manifest(store: Store, policy: str, backup_id: str) -> Backup:
    key = manifest_key(policy, backup_id)
    try:
        raw = get_bytes(store, key)
    except NotFound:
        raise UsageError(
            f"{store.url}: backup '{backup_id}' of policy '{policy}' not found (or incomplete: it has no manifest)"
        ) from None
    return Backup(_parse(raw, f"{store.url}/{key}"))


def _parse(raw: bytes, where: str) -> dict[str, Any]:
    try:
        m = json.loads(raw)
    except ValueError:
        raise IntegrityError(f"{where}: manifest is not valid JSON") from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise IntegrityError(f"{where}: not a drtool manifest")
    if m.get("version", 0) > MANIFEST_VERSION:
        raise IntegrityError(f"{where}: manifest version {m.get('version')} is newer than this drtool")
    return m


def list_backups(store: Store, policy: str) -> list[Backup]:
    """Committed backups of a policy, newest recovery point first. Folders without a manifest
    (failed or in-progress backups) are not backups and are not listed."""
    keys = [obj.key for obj in store.list(f"{policy}/backups/") if obj.key.endswith("/" + MANIFEST_NAME)]

    def read(key: str) -> Backup:
        return Backup(_parse(get_bytes(store, key), f"{store.url}/{key}"))

    # One GET per manifest: on a remote bucket each is a round trip (tens of ms), so they run
    # side by side; this is on the path of `drtool restore` during an outage.
    with ThreadPoolExecutor(max_workers=MANIFEST_READERS) as pool:
        out = list(pool.map(read, keys))
    out.sort(key=lambda b: (b.manifest["recovery_point"], b.id), reverse=True)
    return out


def find_backup(store: Store, policy: str, backup_id: str | None) -> Backup:
    """The named backup, or the newest one."""
    if backup_id:
        return read_manifest(store, policy, backup_id)
    backups = list_backups(store, policy)
    if not backups:
        raise DrtoolError(f"{store.url}: policy '{policy}' has no complete backup yet")
    return backups[0]


# -- schedule state: what `drtool run` did, per job ------------------------------------------------

STATE_FORMAT = "drtool-schedule-state"


def state_key(policy: str) -> str:
    return f"{policy}/state/schedule.json"


def read_schedule_state(store: Store, policy: str) -> dict[str, Any]:
    try:
        doc = json.loads(get_bytes(store, state_key(policy)))
        if isinstance(doc, dict) and doc.get("format") == STATE_FORMAT:
            return doc
    except (NotFound, ValueError):
        pass
    return {"format": STATE_FORMAT, "version": 1, "jobs": {}}


def write_schedule_state(store: Store, policy: str, state: dict[str, Any]) -> None:
    put_bytes(store, state_key(policy), json.dumps(state, indent=2, sort_keys=True).encode() + b"\n")


# -- copies still to make ---------------------------------------------------------------------------


def read_copy_state(store: Store, policy: str) -> dict[str, Any]:
    try:
        doc = json.loads(get_bytes(store, f"{policy}/state/copies.json"))
        if isinstance(doc, dict) and isinstance(doc.get("pending"), dict):
            return doc
    except (NotFound, ValueError):
        pass
    return {"format": "drtool-copy-state", "version": 1, "pending": {}}


def write_copy_state(store: Store, policy: str, state: dict[str, Any]) -> None:
    state["pending"] = {k: v for k, v in state["pending"].items() if v}
    put_bytes(store, f"{policy}/state/copies.json", json.dumps(state, indent=2, sort_keys=True).encode() + b"\n")


# -- drill records: append-only evidence, one object per drill --------------------------------

DRILL_FORMAT = "drtool-drill-record"
DRILL_VERSION = 1


def drill_key(policy: str, drill_id: str) -> str:
    return f"{policy}/drills/{drill_id}.json"


def write_drill_record(store: Store, record: dict[str, Any]) -> str:
    """Store a drill record under a new key (never overwrites one); returns the key."""
    key = drill_key(record["policy"], record["drill_id"])
    store.put(key, [json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"], retain=True)
    return key


def list_drill_records(store: Store, policy: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(records newest first, problems): unreadable records are reported, never fatal."""
    records, problems = [], []
    for obj in store.list(f"{policy}/drills/"):
        if not obj.key.endswith(".json"):
            continue
        try:
            doc = json.loads(get_bytes(store, obj.key))
            if not isinstance(doc, dict) or doc.get("format") != DRILL_FORMAT:
                raise ValueError("not a drill record")
            records.append(doc)
        except (ValueError, NotFound) as e:
            problems.append(f"{store.url}/{obj.key}: unreadable drill record ({e})")
    records.sort(key=lambda r: r.get("started_at", ""), reverse=True)
    return records, problems
