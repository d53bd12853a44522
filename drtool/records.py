"""Typed records kept in the store, each with one function that serialises it and one that
parses and validates it (docs/storage-format.md). Pure: no I/O.

A malformed record becomes one error naming the object (ManifestInvalid, CheckRecordInvalid),
never a KeyError or TypeError deep in a reader.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .clock import iso, parse_iso
from .errors import IntegrityError

MANIFEST_FORMAT = "drtool-backup-manifest"
MANIFEST_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestInvalid(IntegrityError):
    """A manifest that cannot be trusted: unparsable, missing fields, wrong types, or stored
    under a key that is not its own."""


@dataclass(frozen=True)
class ManifestObject:
    role: str  # "dump"
    key: str  # relative to the backup's folder
    size: int  # of the stored (encrypted) bytes
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "key": self.key, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Sizes:
    stored_bytes: int
    plain_bytes: int
    database_bytes: int | None = None
    compressed_bytes: int | None = None


@dataclass(frozen=True)
class Manifest:
    """The commit marker of one backup (version 1). Unknown fields are kept in `extra` so a
    manifest read and written again (a copy) loses nothing."""

    id: str
    policy: str
    database: str
    server_version: str
    server_version_num: int
    pg_dump_version: str
    recovery_point: dt.datetime
    started_at: dt.datetime
    completed_at: dt.datetime
    sizes: Sizes
    objects: tuple[ManifestObject, ...]
    tables: dict[str, int]
    encoding: str | None = None
    source: str | None = None
    host: str | None = None
    payload_format: str | None = None
    compression: dict[str, Any] | None = None
    encryption: dict[str, Any] | None = None
    row_count_method: str | None = None
    tool: dict[str, Any] | None = None
    copy: dict[str, Any] | None = None  # set on a copy target's manifest
    version: int = MANIFEST_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dump(self) -> ManifestObject:
        return next(o for o in self.objects if o.role == "dump")  # parse guarantees one

    def with_copy(self, copy: dict[str, Any]) -> Manifest:
        return replace(self, copy=copy)


_TIMES = ("recovery_point", "started_at", "completed_at")
_OPTIONAL_STR = ("encoding", "source", "host", "payload_format", "row_count_method")
_OPTIONAL_DICT = ("compression", "encryption", "tool", "copy")
_KNOWN = {f.name for f in fields(Manifest)} - {"extra"} | {"format"}


def manifest_to_dict(m: Manifest) -> dict[str, Any]:
    """The JSON document of a manifest, exactly as docs/storage-format.md shows it."""
    doc: dict[str, Any] = dict(m.extra)
    doc.update(
        format=MANIFEST_FORMAT, version=m.version, id=m.id, policy=m.policy, database=m.database,
        server_version=m.server_version, server_version_num=m.server_version_num, pg_dump_version=m.pg_dump_version,
        recovery_point=iso(m.recovery_point), started_at=iso(m.started_at), completed_at=iso(m.completed_at),
        sizes={k: v for k, v in vars(m.sizes).items() if v is not None},
        objects=[o.as_dict() for o in m.objects], tables=dict(m.tables),
    )  # fmt: skip
    for name in (*_OPTIONAL_STR, *_OPTIONAL_DICT):
        value = getattr(m, name)
        if value is not None:
            doc[name] = value
    return doc


def serialise_manifest(m: Manifest) -> bytes:
    """The one serialisation of a manifest (a signature, when added, covers these bytes)."""
    return json.dumps(manifest_to_dict(m), indent=2, sort_keys=True).encode() + b"\n"


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """Parse and validate a manifest; ManifestInvalid naming `where` for anything malformed."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ManifestInvalid(f"{where}: manifest is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ManifestInvalid(f"{where}: not a drtool manifest")
    return _Reader(doc, where).manifest()


class _Reader:
    def __init__(self, doc: dict[str, Any], where: str):
        self.doc, self.where = doc, where

    def fail(self, what: str) -> ManifestInvalid:
        return ManifestInvalid(f"{self.where}: invalid manifest: {what}")

    def get(self, name: str, kind: type | tuple[type, ...], *, doc: dict | None = None, required: bool = True) -> Any:
        doc = self.doc if doc is None else doc
        if name not in doc or doc[name] is None:
            if required:
                raise self.fail(f"'{name}' is missing")
            return None
        value = doc[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int,))):
            raise self.fail(f"'{name}' has the wrong type ({type(value).__name__})")
        return value

    def count(self, name: str, *, doc: dict | None = None, required: bool = True) -> int | None:
        value = self.get(name, int, doc=doc, required=required)
        if value is not None and value < 0:
            raise self.fail(f"'{name}' is negative")
        return value

    def time(self, name: str) -> dt.datetime:
        text = self.get(name, str)
        try:
            t = parse_iso(text)
        except (ValueError, OverflowError):
            raise self.fail(f"'{name}' is not an ISO 8601 time: {text[:40]!r}") from None
        return t

    def manifest(self) -> Manifest:
        version = self.get("version", int)
        if version > MANIFEST_VERSION:
            raise ManifestInvalid(f"{self.where}: manifest version {version} is newer than this drtool")
        if version < 1:
            raise self.fail(f"unknown version {version}")
        sizes = self.get("sizes", dict)
        tables = self.get("tables", dict)
        if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for k, v in tables.items()):  # fmt: skip
            raise self.fail("'tables' must map table names to row counts")
        d = self.doc
        return Manifest(
            id=self.get("id", str),
            policy=self.get("policy", str),
            database=self.get("database", str),
            server_version=self.get("server_version", str),
            server_version_num=self.count("server_version_num"),  # type: ignore[arg-type]
            pg_dump_version=self.get("pg_dump_version", str),
            **{name: self.time(name) for name in _TIMES},
            sizes=Sizes(
                stored_bytes=self.count("stored_bytes", doc=sizes),  # type: ignore[arg-type]
                plain_bytes=self.count("plain_bytes", doc=sizes),  # type: ignore[arg-type]
                database_bytes=self.count("database_bytes", doc=sizes, required=False),
                compressed_bytes=self.count("compressed_bytes", doc=sizes, required=False),
            ),
            objects=self.objects(),
            tables=dict(tables),
            **{name: self.get(name, str, required=False) for name in _OPTIONAL_STR},
            **{name: self.get(name, dict, required=False) for name in _OPTIONAL_DICT},
            version=version,
            extra={k: v for k, v in d.items() if k not in _KNOWN},
        )

    def objects(self) -> tuple[ManifestObject, ...]:
        items = self.get("objects", list)
        out = []
        for item in items:
            if not isinstance(item, dict):
                raise self.fail("an entry of 'objects' is not an object")
            key = self.get("key", str, doc=item)
            if not key or key.startswith("/") or ".." in key.split("/"):
                raise self.fail(f"object key {key!r} leaves the backup's folder")
            sha = self.get("sha256", str, doc=item)
            if not _SHA256.fullmatch(sha):
                raise self.fail(f"object {key}: 'sha256' is not 64 lowercase hex digits")
            size = self.count("size", doc=item)
            out.append(ManifestObject(self.get("role", str, doc=item), key, size, sha))  # type: ignore[arg-type]
        if not any(o.role == "dump" for o in out):
            raise self.fail("'objects' has no object with role 'dump'")
        return tuple(out)


# -- check records: what verify and drill found about one backup -----------------------------------

CHECK_FORMAT = "drtool-check-record"
CHECK_VERSION = 1
CHECK_KINDS = ("verify", "deep-verify", "drill")
CHECK_RESULTS = ("ok", "damaged")


class CheckRecordInvalid(IntegrityError):
    """A check record that cannot be parsed."""


@dataclass(frozen=True)
class CheckRecord:
    """One finding about one backup: `result` ok or damaged, by `kind` (verify, deep-verify, drill)."""

    policy: str
    backup_id: str
    kind: str
    result: str
    checked_at: dt.datetime
    reason: str | None = None
    host: str | None = None
    tool_version: str | None = None

    @property
    def damaged(self) -> bool:
        return self.result == "damaged"


def serialise_check(c: CheckRecord) -> bytes:
    doc = {
        "format": CHECK_FORMAT, "version": CHECK_VERSION, "policy": c.policy, "backup_id": c.backup_id,
        "kind": c.kind, "result": c.result, "checked_at": iso(c.checked_at), "reason": c.reason, "host": c.host,
        "tool": {"name": "drtool", "version": c.tool_version},
    }  # fmt: skip
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def parse_check(raw: bytes, where: str) -> CheckRecord:
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != CHECK_FORMAT:
            raise ValueError("not a drtool check record")
        if not isinstance(doc.get("version"), int) or doc["version"] > CHECK_VERSION:
            raise ValueError(f"unknown version {doc.get('version')!r}")
        kind, result = doc.get("kind"), doc.get("result")
        if kind not in CHECK_KINDS or result not in CHECK_RESULTS:
            raise ValueError(f"unknown kind {kind!r} or result {result!r}")
        for name in ("policy", "backup_id", "checked_at"):
            if not isinstance(doc.get(name), str):
                raise ValueError(f"'{name}' is missing")
        reason = doc.get("reason")
        tool = doc.get("tool") if isinstance(doc.get("tool"), dict) else {}
        return CheckRecord(doc["policy"], doc["backup_id"], kind, result, parse_iso(doc["checked_at"]),
                           reason if isinstance(reason, str) else None, doc.get("host"),
                           tool.get("version"))  # fmt: skip
    except (ValueError, UnicodeDecodeError, OverflowError) as e:
        raise CheckRecordInvalid(f"{where}: unreadable check record ({e})") from None
