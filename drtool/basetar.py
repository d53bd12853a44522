"""Reading a pg_basebackup tar stream on the way to the store (pure, stdlib only): a small tar
header walker that keeps the few members a base backup's record needs (backup_label,
backup_manifest's tail, tablespace_map, global/pg_control's head) without holding the rest.

The stream passes through unchanged; the walker only looks. Its findings:
- backup_label: START WAL LOCATION, START TIMELINE, START TIME (where replay must begin);
- backup_manifest: its WAL-Ranges (End-LSN: where the backup becomes consistent);
- global/pg_control: the system identifier (the cluster whose WAL this backup needs).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

BLOCK = 512
MANIFEST_TAIL = 64 * 1024  # WAL-Ranges and the checksum are the last lines of backup_manifest
_KEEP_WHOLE = {"backup_label": 64 * 1024, "tablespace_map": 64 * 1024}
_KEEP_HEAD = {"global/pg_control": 16}


class BaseTarInvalid(ValueError):
    """The stream is not a tar, or it ended early, or it lacks what a base backup must hold."""


@dataclass
class BaseTarInfo:
    members: int = 0
    backup_label: bytes | None = None
    manifest_tail: bytes = b""
    has_manifest: bool = False
    tablespace_map: bytes | None = None
    pg_control_head: bytes | None = None
    ended: bool = False  # the two zero blocks that end a tar were seen


@dataclass
class _Member:
    name: str
    size: int
    remaining: int
    padding: int
    kept: bytearray = field(default_factory=bytearray)


def _octal(field_: bytes, what: str) -> int:
    if field_[:1] and field_[0] & 0x80:  # GNU base-256 for sizes over 8 GiB
        return int.from_bytes(field_[1:], "big")
    text = field_.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise BaseTarInvalid(f"tar header: {what} is not a number") from None


def _checksum_ok(header: bytes) -> bool:
    stored = _octal(header[148:156], "checksum")
    return stored == sum(header[:148]) + 8 * 32 + sum(header[156:])


class TarScanner:
    """feed() every piece of the tar, in order; finish() when the stream ended."""

    def __init__(self) -> None:
        self.info = BaseTarInfo()
        self._buf = bytearray()
        self._member: _Member | None = None
        self._zero_blocks = 0
        self._long_name: str | None = None

    def feed(self, piece: bytes) -> None:
        view = memoryview(piece)
        while view:
            if self.info.ended:
                return  # anything after the end marker (padding to a record) is ignored
            m = self._member
            if m is not None:
                view = self._member_data(m, view)
                continue
            need = BLOCK - len(self._buf)
            self._buf += view[:need]
            view = view[need:]
            if len(self._buf) == BLOCK:
                header, self._buf = bytes(self._buf), bytearray()
                self._header(header)

    def _member_data(self, m: _Member, view: memoryview) -> memoryview:
        if m.remaining:
            take = view[: m.remaining]
            self._keep(m, take)
            m.remaining -= len(take)
            view = view[len(take) :]
            if m.remaining:
                return view
            self._member_done(m)
        skip = min(m.padding, len(view))
        m.padding -= skip
        if not m.padding:
            self._member = None
        return view[skip:]

    def _keep(self, m: _Member, data: memoryview) -> None:
        if m.name in _KEEP_WHOLE:
            if len(m.kept) + len(data) > _KEEP_WHOLE[m.name]:
                raise BaseTarInvalid(f"tar member {m.name} is larger than {_KEEP_WHOLE[m.name]} bytes")
            m.kept += data
        elif m.name in _KEEP_HEAD:
            m.kept += data[: max(0, _KEEP_HEAD[m.name] - len(m.kept))]
        elif m.name == "backup_manifest":
            m.kept += data
            del m.kept[:-MANIFEST_TAIL]
        elif m.name == "././@LongLink":
            m.kept += data[: max(0, 4096 - len(m.kept))]

    def _member_done(self, m: _Member) -> None:
        data = bytes(m.kept)
        if m.name == "backup_label":
            self.info.backup_label = data
        elif m.name == "backup_manifest":
            self.info.manifest_tail, self.info.has_manifest = data, True
        elif m.name == "tablespace_map":
            self.info.tablespace_map = data
        elif m.name == "global/pg_control":
            self.info.pg_control_head = data
        elif m.name == "././@LongLink":
            self._long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")

    def _header(self, header: bytes) -> None:
        if header == bytes(BLOCK):
            self._zero_blocks += 1
            self.info.ended = self._zero_blocks == 2
            return
        self._zero_blocks = 0
        if not _checksum_ok(header):
            raise BaseTarInvalid(f"tar header of member {self.info.members + 1} has a bad checksum")
        kind = header[156:157]
        size = _octal(header[124:136], "size")
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") if header[257:262] == b"ustar" else ""
        if prefix:
            name = f"{prefix}/{name}"
        if kind == b"L":
            name = "././@LongLink"
        elif self._long_name is not None:
            name, self._long_name = self._long_name, None
        if kind not in (b"L", b"x", b"g"):
            self.info.members += 1
        if kind in (b"1", b"2", b"3", b"4", b"5", b"6"):  # links, devices, folders, FIFOs carry no data
            size = 0
        m = _Member(name.removeprefix("./"), size, size, -size % BLOCK)
        if size == 0:
            self._member_done(m)
        else:
            self._member = m

    def finish(self) -> BaseTarInfo:
        if not self.info.ended or self._member is not None:
            raise BaseTarInvalid("the tar stream ended before its end marker")
        return self.info


# -- what the kept members say ------------------------------------------------------------------------

_LABEL_START = re.compile(r"^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", re.M)
_LABEL_TLI = re.compile(r"^START TIMELINE: (\d+)", re.M)
_LABEL_TIME = re.compile(r"^START TIME: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (UTC|GMT)$", re.M)
_WAL_RANGE = re.compile(r'"Timeline":\s*(\d+),\s*"Start-LSN":\s*"([0-9A-F]+/[0-9A-F]+)",\s*'
                        r'"End-LSN":\s*"([0-9A-F]+/[0-9A-F]+)"')  # fmt: skip


@dataclass(frozen=True)
class BackupRange:
    timeline: int
    start_lsn: str
    end_lsn: str
    end_timeline: int
    start_time: dt.datetime | None  # None when the server writes it in a zone other than UTC


def backup_range(info: BaseTarInfo) -> BackupRange:
    """Where replay starts (backup_label) and where the backup becomes consistent (the last
    WAL-Range's End-LSN in backup_manifest)."""
    if info.backup_label is None:
        raise BaseTarInvalid("the tar has no backup_label")
    if not info.has_manifest:
        raise BaseTarInvalid("the tar has no backup_manifest")
    label = info.backup_label.decode("utf-8", "replace")
    start, tli = _LABEL_START.search(label), _LABEL_TLI.search(label)
    if not start or not tli:
        raise BaseTarInvalid("backup_label has no START WAL LOCATION or START TIMELINE")
    ranges = _WAL_RANGE.findall(info.manifest_tail.decode("utf-8", "replace"))
    if not ranges:
        raise BaseTarInvalid("backup_manifest has no WAL-Ranges")
    end_tli, _, end = ranges[-1]
    t = _LABEL_TIME.search(label)
    started = dt.datetime.strptime(t.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC) if t else None
    return BackupRange(int(tli.group(1)), start.group(1), end, int(end_tli), started)
