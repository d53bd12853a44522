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
_LSN = re.compile(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}")


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


KINDS = ("logical", "physical")
PAYLOAD_ROLES = {"logical": "dump", "physical": "base"}  # the object a restore reads, per kind


@dataclass(frozen=True)
class PhysicalInfo:
    """What a base backup needs to be restored to a point in time: the WAL from start_lsn on
    timeline `timeline` up to end_lsn makes it consistent (from backup_label and backup_manifest).
    LSNs in PostgreSQL's text form ('0/61000028'); sysid as a decimal string (JSON numbers lose
    64-bit precision in some readers)."""

    sysid: str
    timeline: int
    start_lsn: str
    end_lsn: str
    wal_segment_size: int
    pg_version: str  # the server's major version, "15"
    start_time: dt.datetime
    end_time: dt.datetime  # no earlier than the end LSN was written: restores to T pick end_time <= T
    tablespaces: str = "refused"  # base backups of clusters with extra tablespaces are refused

    def as_dict(self) -> dict[str, Any]:
        return {"sysid": self.sysid, "timeline": self.timeline, "start_lsn": self.start_lsn,
                "end_lsn": self.end_lsn, "wal_segment_size": self.wal_segment_size, "pg_version": self.pg_version,
                "start_time": iso(self.start_time), "end_time": iso(self.end_time),
                "tablespaces": self.tablespaces}  # fmt: skip


@dataclass(frozen=True)
class Manifest:
    """The commit marker of one backup (version 1). Unknown fields are kept in `extra` so a
    manifest read and written again (a copy) loses nothing. `kind` is "logical" (a pg_dump
    archive, object role "dump") or "physical" (a pg_basebackup tar, role "base", with
    `physical` set); a manifest without `kind` is logical."""

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
    kind: str = "logical"
    physical: PhysicalInfo | None = None  # set when kind is "physical"
    version: int = MANIFEST_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dump(self) -> ManifestObject:
        """The payload a restore reads: the dump of a logical backup, the base tar of a physical one."""
        role = PAYLOAD_ROLES[self.kind]
        return next(o for o in self.objects if o.role == role)  # parse guarantees one

    @property
    def is_physical(self) -> bool:
        return self.kind == "physical"

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
    if m.kind != "logical":  # a logical manifest stays byte-identical to what older drtools wrote
        doc["kind"] = m.kind
    if m.physical is not None:
        doc["physical"] = m.physical.as_dict()
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
    return manifest_from_doc(doc, where)


def manifest_from_doc(doc: Any, where: str) -> Manifest:
    """parse_manifest of a document already decoded (the catalog index holds them decoded); the
    Manifest may share its nested dicts (encryption, tool, extra values) with `doc`."""
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ManifestInvalid(f"{where}: not a drtool manifest")
    return _Reader(doc, where).manifest()


def recipient_fingerprints(doc: dict[str, Any]) -> list[str]:
    """The recipients' fingerprints a manifest document names. Its encryption block is optional to
    the parser and its recipients unchecked: a hand-edited one names none rather than stopping a
    report or a restore check."""
    enc = doc.get("encryption")
    recipients = enc.get("recipients") if isinstance(enc, dict) else None
    if not isinstance(recipients, list):
        return []
    return [r["fingerprint"] for r in recipients if isinstance(r, dict) and isinstance(r.get("fingerprint"), str)]


def manifest_outline(doc: Any, where: str) -> tuple[str, dt.datetime, tuple[ManifestObject, ...]]:
    """(id, recovery point, objects) of a manifest document, with the fields a listing, status or
    report publishes checked as manifest_from_doc checks them (ManifestInvalid naming `where`):
    version, id, kind, recovery_point and completed_at (as drtool writes times), sizes, objects
    and the encryption recipients' shape. The rest is not read: for
    a reader that needs only these now (a deferred catalog index entry, catalog.Backup.deferred)."""
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ManifestInvalid(f"{where}: not a drtool manifest")
    r = _Reader(doc, where)
    r.version()
    r.sizes()
    recipients = (r.get("encryption", dict, required=False) or {}).get("recipients") or []  # published
    if not isinstance(recipients, list) or not all(isinstance(x, dict) and isinstance(x.get("fingerprint", ""), str)
                                                   for x in recipients):  # fmt: skip
        raise r.fail("'encryption.recipients' is not a list of recipients")
    r.canonical_time("completed_at")
    return r.get("id", str), r.canonical_time("recovery_point"), r.objects(PAYLOAD_ROLES[r.kind()])


class _Reader:
    """Typed field access for one JSON document; every problem is one `error` naming `where`."""

    def __init__(self, doc: dict[str, Any], where: str, error: type[IntegrityError] = ManifestInvalid,
                 label: str = "invalid manifest"):  # fmt: skip
        self.doc, self.where, self.error, self.label = doc, where, error, label

    def fail(self, problem: str) -> IntegrityError:
        return self.error(f"{self.where}: {self.label}: {problem}")

    def get(self, name: str, kind: type | tuple[type, ...], *, doc: dict[str, Any] | None = None,
            required: bool = True) -> Any:  # fmt: skip
        value = (self.doc if doc is None else doc).get(name)
        if type(value) is kind:  # what JSON decoding makes: the common case, checked first
            return value
        if value is None:
            if required:
                raise self.fail(f"'{name}' is missing")
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int,))):
            raise self.fail(f"'{name}' has the wrong type ({type(value).__name__})")
        return value

    def count(self, name: str, *, doc: dict[str, Any] | None = None, required: bool = True) -> int | None:
        value: int | None = self.get(name, int, doc=doc, required=required)
        if value is not None and value < 0:
            raise self.fail(f"'{name}' is negative")
        return value

    def needed_count(self, name: str, *, doc: dict[str, Any] | None = None) -> int:
        """A count that must be there (count() with required=True, typed as such)."""
        value = self.count(name, doc=doc)
        assert value is not None  # count() raised when it was missing
        return value

    def seconds(self, name: str) -> float | None:
        value: float | None = self.get(name, (int, float), required=False)
        if isinstance(value, bool):
            raise self.fail(f"'{name}' has the wrong type (bool)")
        return value

    def time(self, name: str, *, doc: dict[str, Any] | None = None) -> dt.datetime:
        text = self.get(name, str, doc=doc)
        try:
            t = parse_iso(text)
        except (ValueError, OverflowError):
            raise self.fail(f"'{name}' is not an ISO 8601 time: {text[:40]!r}") from None
        return t

    def version(self) -> int:
        version: int = self.get("version", int)
        if version > MANIFEST_VERSION:
            raise ManifestInvalid(f"{self.where}: manifest version {version} is newer than this drtool")
        if version < 1:
            raise self.fail(f"unknown version {version}")
        return version

    def sizes(self) -> Sizes:
        sizes = self.get("sizes", dict)
        return Sizes(
            stored_bytes=self.needed_count("stored_bytes", doc=sizes),
            plain_bytes=self.needed_count("plain_bytes", doc=sizes),
            database_bytes=self.count("database_bytes", doc=sizes, required=False),
            compressed_bytes=self.count("compressed_bytes", doc=sizes, required=False),
        )

    def canonical_time(self, name: str) -> dt.datetime:
        """time(), written as drtool writes it (clock.iso): a reader that publishes the text as it
        stands (a deferred index entry) must publish what the parsed manifest would say."""
        t = self.time(name)
        if iso(t) != self.doc[name]:
            raise self.fail(f"'{name}' is not written as drtool writes times: {self.doc[name][:40]!r}")
        return t

    def manifest(self) -> Manifest:
        version = self.version()
        tables = self.get("tables", dict)
        if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for k, v in tables.items()):  # fmt: skip
            raise self.fail("'tables' must map table names to row counts")
        kind = self.kind()
        d = self.doc
        return Manifest(
            id=self.get("id", str),
            policy=self.get("policy", str),
            database=self.get("database", str),
            server_version=self.get("server_version", str),
            server_version_num=self.needed_count("server_version_num"),
            pg_dump_version=self.get("pg_dump_version", str),
            recovery_point=self.time("recovery_point"),
            started_at=self.time("started_at"),
            completed_at=self.time("completed_at"),
            sizes=self.sizes(),
            objects=self.objects(PAYLOAD_ROLES[kind]),
            tables=dict(tables),
            **{name: self.get(name, str, required=False) for name in _OPTIONAL_STR},
            **{name: self.get(name, dict, required=False) for name in _OPTIONAL_DICT},
            kind=kind,
            physical=self.physical() if kind == "physical" else None,
            version=version,
            extra={k: v for k, v in d.items() if k not in _KNOWN},
        )

    def kind(self) -> str:
        kind = self.get("kind", str, required=False) or "logical"
        if kind not in KINDS:
            raise self.fail(f"unknown kind {kind[:40]!r}")
        return kind

    def physical(self) -> PhysicalInfo:
        doc = self.get("physical", dict)
        sysid = self.get("sysid", str, doc=doc)
        if not sysid.isdigit():
            raise self.fail("'physical.sysid' is not a decimal number")
        lsns = {name: self.get(name, str, doc=doc) for name in ("start_lsn", "end_lsn")}
        for name, text in lsns.items():
            if not _LSN.fullmatch(text):
                raise self.fail(f"'physical.{name}' is not an LSN: {text[:40]!r}")
        timeline = self.count("timeline", doc=doc)
        size = self.count("wal_segment_size", doc=doc)
        if not timeline or not size or size & (size - 1):
            raise self.fail("'physical.timeline' must be 1 or more and 'physical.wal_segment_size' a power of two")
        return PhysicalInfo(
            sysid=sysid, timeline=timeline, start_lsn=lsns["start_lsn"], end_lsn=lsns["end_lsn"],
            wal_segment_size=size, pg_version=self.get("pg_version", str, doc=doc),
            start_time=self.time("start_time", doc=doc), end_time=self.time("end_time", doc=doc),
            tablespaces=self.get("tablespaces", str, doc=doc, required=False) or "refused",
        )  # fmt: skip

    def objects(self, payload_role: str = "dump") -> tuple[ManifestObject, ...]:
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
            size = self.needed_count("size", doc=item)
            out.append(ManifestObject(self.get("role", str, doc=item), key, size, sha))
        if not any(o.role == payload_role for o in out):
            raise self.fail(f"'objects' has no object with role '{payload_role}'")
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
        tool = doc["tool"] if isinstance(doc.get("tool"), dict) else {}
        return CheckRecord(doc["policy"], doc["backup_id"], kind, result, parse_iso(doc["checked_at"]),
                           reason if isinstance(reason, str) else None, doc.get("host"),
                           tool.get("version"))  # fmt: skip
    except (ValueError, UnicodeDecodeError, OverflowError) as e:
        raise CheckRecordInvalid(f"{where}: unreadable check record ({e})") from None


# -- drill records: append-only evidence, one object per drill (docs/drills.md) ---------------------

DRILL_FORMAT = "drtool-drill-record"
DRILL_VERSION = 1
DRILL_OUTCOMES = ("passed", "failed", "could-not-run")


class DrillRecordInvalid(IntegrityError):
    """A drill record that cannot be parsed: not JSON, not a drill record, or fields of the wrong type."""


_DRILL_LABEL = "unreadable drill record"


@dataclass(frozen=True)
class DrillRecord:
    """One drill: what was restored where, how long it took, and whether it passed. The fields
    every reader relies on are typed and checked; `doc` is the whole document as stored (the dict
    view readers and the JSON output use), so fields added later survive a read."""

    drill_id: str
    policy: str
    backup_id: str | None  # None when the drill could not even pick a backup
    started_at: dt.datetime
    outcome: str  # passed, failed or could-not-run (records older than `outcome` derive it from `passed`)
    failure: str | None
    rto_seconds: float | None
    rpo_seconds: float | None
    doc: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.doc)


def drill_record(doc: dict[str, Any], where: str) -> DrillRecord:
    """Validate a drill record's document (as built by a drill, or as read); DrillRecordInvalid
    naming `where` for anything malformed."""
    r = _Reader(doc, where, DrillRecordInvalid, _DRILL_LABEL)
    if doc.get("format") != DRILL_FORMAT:
        raise r.fail("not a drtool drill record")
    version = r.get("version", int)
    if version > DRILL_VERSION or version < 1:
        raise r.fail(f"version {version} is not one this drtool reads")
    outcome = r.get("outcome", str, required=False)
    passed = r.get("passed", bool, required=False)
    if outcome is None:
        outcome = "passed" if passed else "failed"
    if outcome not in DRILL_OUTCOMES:
        raise r.fail(f"unknown outcome {outcome[:40]!r}")
    if passed is not None and passed != (outcome == "passed"):
        raise r.fail(f"'passed' contradicts outcome {outcome!r}")
    if doc.get("completed_at") is not None:
        r.time("completed_at")
    checks = r.get("checks", list, required=False) or []
    if not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in checks):
        raise r.fail("an entry of 'checks' is not a named check")
    phases = r.get("phases", dict, required=False) or {}
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in phases.values()):
        raise r.fail("'phases' must map phase names to seconds")
    r.get("storage_target", str, required=False)
    r.count("bytes_restored", required=False)
    return DrillRecord(
        drill_id=r.get("drill_id", str),
        policy=r.get("policy", str),
        backup_id=r.get("backup_id", str, required=False),
        started_at=r.time("started_at"),
        outcome=outcome,
        failure=r.get("failure", str, required=False),
        rto_seconds=r.seconds("rto_seconds"),
        rpo_seconds=r.seconds("rpo_seconds"),
        doc=dict(doc),
    )


def serialise_drill_record(record: DrillRecord) -> bytes:
    """The one serialisation of a drill record."""
    return json.dumps(record.doc, indent=2, sort_keys=True).encode() + b"\n"


def parse_drill_record(raw: bytes, where: str) -> DrillRecord:
    return drill_record(_json_object(raw, where, DrillRecordInvalid, _DRILL_LABEL), where)


# -- state objects: what `drtool run` did per job, and copies still to make -------------------------

SCHEDULE_STATE_FORMAT = "drtool-schedule-state"
COPY_STATE_FORMAT = "drtool-copy-state"
STATE_VERSION = 1


class StateInvalid(IntegrityError):
    """A schedule or copy state object that cannot be parsed."""


@dataclass
class ScheduleState:
    """Per job (backup, prune, drill): last_slot, last_attempt, last_success (ISO times),
    last_outcome, last_message, last_missed, missed_total. Mutable: `run` updates it under the
    policy lock and writes it back."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = STATE_VERSION

    def last_slot(self, job: str) -> dt.datetime | None:
        value = self.jobs.get(job, {}).get("last_slot")
        return parse_iso(value) if value else None


@dataclass
class CopyState:
    """Backups not yet copied: pending[target][backup_id] = {attempts, last_error, last_attempt}."""

    pending: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    version: int = STATE_VERSION


_JOB_TIMES = ("last_slot", "last_attempt", "last_success")
_JOB_COUNTS = ("last_missed", "missed_total")


def serialise_schedule_state(state: ScheduleState) -> bytes:
    doc = {"format": SCHEDULE_STATE_FORMAT, "version": state.version, "jobs": state.jobs}
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def parse_schedule_state(raw: bytes, where: str) -> ScheduleState:
    doc = _json_object(raw, where, StateInvalid, "unreadable schedule state")
    r = _state_reader(doc, where, SCHEDULE_STATE_FORMAT, "unreadable schedule state")
    jobs = r.get("jobs", dict)
    for job, entry in jobs.items():
        if not isinstance(entry, dict):
            raise r.fail(f"job {job!r} is not an object")
        for name in _JOB_TIMES:
            if entry.get(name) is not None:
                r.time(name, doc=entry)
        for name in _JOB_COUNTS:
            r.count(name, doc=entry, required=False)
    return ScheduleState(jobs={job: dict(entry) for job, entry in jobs.items()}, version=doc["version"])


def serialise_copy_state(state: CopyState) -> bytes:
    pending = {target: backups for target, backups in state.pending.items() if backups}
    doc = {"format": COPY_STATE_FORMAT, "version": state.version, "pending": pending}
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def parse_copy_state(raw: bytes, where: str) -> CopyState:
    doc = _json_object(raw, where, StateInvalid, "unreadable copy state")
    if "format" not in doc:  # written before the format field was checked on read
        doc = {**doc, "format": COPY_STATE_FORMAT, "version": doc.get("version", STATE_VERSION)}
    r = _state_reader(doc, where, COPY_STATE_FORMAT, "unreadable copy state")
    pending = r.get("pending", dict)
    for target, backups in pending.items():
        if not isinstance(backups, dict) or not all(isinstance(v, dict) for v in backups.values()):
            raise r.fail(f"pending copies to {target!r} are not a map of backup ids")
    return CopyState(pending={t: {b: dict(v) for b, v in bs.items()} for t, bs in pending.items()},
                     version=doc["version"])  # fmt: skip


def _state_reader(doc: dict[str, Any], where: str, fmt: str, label: str) -> _Reader:
    r = _Reader(doc, where, StateInvalid, label)
    if doc.get("format") != fmt:
        raise r.fail(f"format is not {fmt}")
    version = r.get("version", int)
    if version > STATE_VERSION or version < 1:
        raise r.fail(f"version {version} is not one this drtool reads")
    return r


def _json_object(raw: bytes, where: str, error: type[IntegrityError], label: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise error(f"{where}: {label}: not valid JSON") from None
    if not isinstance(doc, dict):
        raise error(f"{where}: {label}: not a JSON object")
    return doc
