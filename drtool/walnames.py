"""WAL file names, segment arithmetic and where each archived file lives in the store (pure, stdlib only).

PostgreSQL archives four kinds of files (docs/storage-format.md, "WAL archive"):
- a segment: 24 hex digits, TTTTTTTTXXXXXXXXYYYYYYYY (timeline, then the segment number split in two);
- a partial segment: `<segment>.partial`, the last segment of an old timeline, archived at promotion;
- a backup history file: `<segment>.<8 hex offset>.backup`, written by pg_backup_stop;
- a timeline history file: `<8 hex timeline>.history`.
Anything else is refused: names are checked by one strict pattern before they reach a key or a path.

Store layout, under the policy's prefix (the system identifier keeps two clusters apart):
    <policy>/wal/<sysid>/<TTTTTTTTXXXXXXXX>/<segment>[.partial|.<offset>.backup].zst.age
    <policy>/wal/<sysid>/history/<TTTTTTTT>.history.zst.age
    <policy>/wal/cluster.json   (create-only: the one cluster whose WAL this policy archives)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
PARTIAL = re.compile(r"^([0-9A-F]{24})\.partial$")
BACKUP = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
SUFFIX = ".zst.age"  # every archived file is zstd-compressed, then age-encrypted
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


class BadWalName(ValueError):
    """Not a name PostgreSQL archives."""


@dataclass(frozen=True, order=True)
class Segment:
    """A WAL segment: its timeline and its number (log * segments_per_log + seg)."""

    timeline: int
    number: int
    size: int = DEFAULT_SEGMENT_SIZE  # wal_segment_size in bytes (a power of two, 1 MiB .. 1 GiB)

    @property
    def per_log(self) -> int:
        return 0x100000000 // self.size

    @property
    def name(self) -> str:
        log, seg = divmod(self.number, self.per_log)
        return f"{self.timeline:08X}{log:08X}{seg:08X}"

    def next(self) -> Segment:
        return Segment(self.timeline, self.number + 1, self.size)

    def on_timeline(self, timeline: int) -> Segment:
        return Segment(timeline, self.number, self.size)

    @property
    def start_lsn(self) -> int:
        return self.number * self.size


def parse_segment(name: str, size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    m = SEGMENT.match(name)
    if not m:
        raise BadWalName(f"{name!r} is not a WAL segment name")
    tli, log, seg = (int(g, 16) for g in m.groups())
    per_log = 0x100000000 // size
    if seg >= per_log:
        raise BadWalName(f"{name!r} is not a WAL segment name for {size} byte segments")
    if tli == 0:
        raise BadWalName(f"{name!r}: timeline 0 does not exist")
    return Segment(tli, log * per_log + seg, size)


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> the 64-bit position."""
    hi, sep, lo = text.strip().partition("/")
    if not sep or not re.fullmatch(r"[0-9A-Fa-f]{1,8}", hi) or not re.fullmatch(r"[0-9A-Fa-f]{1,8}", lo):
        raise ValueError(f"{text!r} is not an LSN")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_of(lsn: int, timeline: int, size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    """The segment that holds byte `lsn` of the WAL."""
    return Segment(timeline, lsn // size, size)


def segments_between(first: Segment, last: Segment) -> list[Segment]:
    """first .. last inclusive, on first's timeline."""
    return [Segment(first.timeline, n, first.size) for n in range(first.number, last.number + 1)]


_SMALLEST_SEGMENT = 1024 * 1024  # wal_segment_size can be 1 MiB .. 1 GiB: the most segments per log


def kind_of(name: str) -> str:
    """'segment', 'partial', 'backup' or 'history'; BadWalName for anything else."""
    for kind, pattern in (("segment", SEGMENT), ("partial", PARTIAL), ("backup", BACKUP), ("history", HISTORY)):
        if pattern.match(name):
            if kind == "history":
                if int(name[:8], 16) == 0:
                    raise BadWalName(f"{name!r}: timeline 0 does not exist")
            else:
                parse_segment(name[:24], _SMALLEST_SEGMENT)
            return kind
    raise BadWalName(f"{name!r} is not a WAL file name (segment, .partial, .backup or .history)")


def archive_prefix(policy: str, sysid: int | str) -> str:
    return f"{policy}/wal/{sysid}/"


def key_for(policy: str, sysid: int | str, name: str) -> str:
    """The store key of an archived WAL file (validates the name)."""
    kind = kind_of(name)
    folder = "history" if kind == "history" else name[:16]
    return f"{archive_prefix(policy, sysid)}{folder}/{name}{SUFFIX}"


def name_of_key(key: str) -> str:
    """The WAL file name a key holds (BadWalName for a key that is not an archived WAL file)."""
    base = key.rsplit("/", 1)[-1]
    if not base.endswith(SUFFIX):
        raise BadWalName(f"{key!r} is not an archived WAL file")
    name = base[: -len(SUFFIX)]
    kind_of(name)
    return name


def cluster_key(policy: str) -> str:
    return f"{policy}/wal/cluster.json"


# The long page header at the start of every segment: xlp_magic(2) xlp_info(2) xlp_tli(4) xlp_pageaddr(8)
# xlp_rem_len(4) + 4 padding, then xlp_sysid(8) xlp_seg_size(4) xlp_xlog_blcksz(4). Reading it tells which
# cluster wrote a segment without asking the server.
_SYSID_OFFSET = 24


def sysid_of_segment(head: bytes) -> int:
    """The system identifier in a segment's first page header (the first 40 bytes are enough)."""
    if len(head) < _SYSID_OFFSET + 16:
        raise BadWalName("too short for a WAL segment header")
    return int.from_bytes(head[_SYSID_OFFSET : _SYSID_OFFSET + 8], "little")


def segment_size_of(head: bytes) -> int:
    return int.from_bytes(head[_SYSID_OFFSET + 8 : _SYSID_OFFSET + 12], "little")


def sysid_of_pg_control(data: bytes) -> int:
    """global/pg_control starts with the system identifier (uint64, host byte order: little-endian here)."""
    return int.from_bytes(data[:8], "little")
