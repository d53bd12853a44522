"""Which archived WAL a restore needs, where the chain breaks, and which WAL retention may delete
(pure domain, stdlib only: it works on names, history files and base backup positions, never on
the store).

PostgreSQL's own rules, restated (xlogrecovery.c, timeline.c):
- A timeline history file `<T>.history` lists every ancestor of timeline T, one line each:
  `<parent timeline>\\t<switch LSN>\\t<reason>`: the parent's WAL ends at that LSN, where the next
  timeline in the list begins.
- Recovery reads forward from the base backup's start LSN (its checkpoint's redo point), on the
  target timeline's path. For segment number n it takes the file of the newest timeline on the
  path that had begun by n: the segment holding a switch point is read from the new timeline (it
  was made by copying the old one up to the switch).
- recovery_target_timeline = 'latest' (the default) probes `<T+1>.history`, `<T+2>.history`, ...
  from the backup's timeline and follows the last one found.
- A backup can only follow a timeline that left its own timeline after the backup began.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .walnames import DEFAULT_SEGMENT_SIZE, BadWalName, Segment, kind_of, parse_segment, segment_of

History = Mapping[int, "tuple[Switch, ...]"]  # timeline -> its parsed history file


class HistoryInvalid(ValueError):
    """A timeline history file that does not read as one."""


@dataclass(frozen=True)
class Switch:
    """One line of a history file: `parent`'s WAL ends at `lsn`."""

    parent: int
    lsn: int
    reason: str = ""


@dataclass(frozen=True)
class Span:
    """A timeline's stretch of WAL on a path: from `begin` (LSN) to `end` (None: open-ended)."""

    timeline: int
    begin: int
    end: int | None


@dataclass(frozen=True)
class BaseBackup:
    """What the chain needs to know of a physical backup (from its manifest)."""

    id: str
    timeline: int
    start_lsn: int  # backup_label's START WAL LOCATION: recovery reads WAL from here
    end_lsn: int  # recovery must replay through here before the copy is consistent


@dataclass(frozen=True)
class Gap:
    """A run of consecutive segments missing from a chain, and what that breaks."""

    first: Segment
    last: Segment
    breaks: str

    @property
    def count(self) -> int:
        return self.last.number - self.first.number + 1


@dataclass(frozen=True)
class Chain:
    """The WAL a restore from `backup` to the newest archived segment of `timeline` replays."""

    backup: BaseBackup
    timeline: int
    start: Segment
    end: Segment  # the segment holding the backup's end LSN: consistency needs every one up to here
    newest: Segment | None  # the newest archived segment on the path (None: nothing archived)
    gaps: tuple[Gap, ...] = ()
    problems: tuple[str, ...] = ()  # the chain cannot even be followed (timeline not a child)
    spans: tuple[Span, ...] = field(default=(), compare=False)  # the target timeline's path

    @property
    def ok(self) -> bool:
        return not self.gaps and not self.problems

    @property
    def consistent(self) -> bool:
        """A restore from this backup reaches a consistent state (every segment up to its end)."""
        return not self.problems and (not self.gaps or self.gaps[0].first.number > self.end.number)

    @property
    def restorable_through(self) -> Segment | None:
        """The last segment replayable without crossing a gap (None: the backup cannot be restored)."""
        if not self.consistent:
            return None
        if self.gaps:
            return segment_before(self.gaps[0].first, self.spans)
        return self.newest


# -- history files ------------------------------------------------------------------------------


def parse_history(text: str, timeline: int, where: str = "") -> tuple[Switch, ...]:
    """The switches in `<timeline>.history`; HistoryInvalid naming `where` for anything malformed.
    Blank lines and `#` comments are skipped, as PostgreSQL does."""
    label = where or f"{timeline:08X}.history"
    out: list[Switch] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(None, 2)
        try:
            parent = int(parts[0])
            lsn = _lsn(parts[1])
        except (IndexError, ValueError):
            raise HistoryInvalid(f"{label}: line {number} is not '<timeline> <LSN> <reason>'") from None
        if out and (parent <= out[-1].parent or lsn < out[-1].lsn):
            raise HistoryInvalid(f"{label}: line {number}: timelines and LSNs must increase")
        if parent <= 0 or parent >= timeline:
            raise HistoryInvalid(f"{label}: line {number}: parent timeline {parent} is not below {timeline}")
        out.append(Switch(parent, lsn, parts[2] if len(parts) > 2 else ""))
    return tuple(out)


def _lsn(text: str) -> int:
    hi, sep, lo = text.partition("/")
    if not sep:
        raise ValueError(text)
    return (int(hi, 16) << 32) | int(lo, 16)


def path_to(timeline: int, histories: History) -> tuple[Span, ...]:
    """The spans of WAL, oldest first, that make up `timeline`'s history. A timeline without a
    history file is taken as a root (PostgreSQL does the same)."""
    switches = histories.get(timeline, ())
    spans, begin = [], 0
    for s in switches:
        spans.append(Span(s.parent, begin, s.lsn))
        begin = s.lsn
    spans.append(Span(timeline, begin, None))
    return tuple(spans)


def latest_timeline(start: int, history_timelines: Iterable[int]) -> int:
    """recovery_target_timeline = 'latest': from `start`, the last of an unbroken run of history
    files start+1, start+2, ..."""
    have, newest = set(history_timelines), start
    while newest + 1 in have:
        newest += 1
    return newest


def follows(backup: BaseBackup, timeline: int, histories: History) -> bool:
    """Whether a restore from `backup` can reach `timeline`: it is the backup's own, or it left
    the backup's timeline at or after the backup began."""
    if timeline == backup.timeline:
        return True
    return any(s.timeline == backup.timeline and s.end is not None and s.end >= backup.start_lsn
               for s in path_to(timeline, histories))  # fmt: skip


def infer_histories(segments: Iterable[Segment], history_timelines: Iterable[int]) -> dict[int, tuple[Switch, ...]]:
    """Timeline histories guessed from names alone, for readers without the identity (history
    files are encrypted): timelines descend one from the next (1 -> 2 -> 3, the common case of
    restores and promotions), and timeline t begins at its lowest archived segment. Never used to
    delete anything."""
    first: dict[int, int] = {}
    size = DEFAULT_SEGMENT_SIZE
    for s in segments:
        size = s.size
        first[s.timeline] = min(first.get(s.timeline, s.number), s.number)
    out: dict[int, tuple[Switch, ...]] = {}
    for t in sorted(set(history_timelines)):
        if t <= 1:
            continue
        before = out.get(t - 1, ())
        begin = max(first.get(t, 0) * size, before[-1].lsn if before else 0)
        out[t] = (*before, Switch(t - 1, begin, "inferred from segment names"))
    return out


# -- the chain of one backup ----------------------------------------------------------------------


def owner(number: int, spans: Sequence[Span], size: int) -> int:
    """The timeline whose file recovery reads for segment `number` on this path."""
    for s in reversed(spans):
        if s.begin // size <= number:
            return s.timeline
    return spans[0].timeline


def segment_before(seg: Segment, spans: Sequence[Span]) -> Segment | None:
    if seg.number == 0:
        return None
    return Segment(owner(seg.number - 1, spans, seg.size), seg.number - 1, seg.size)


def chain(backup: BaseBackup, segments: Iterable[Segment], histories: History, *,
          timeline: int | None = None, size: int = DEFAULT_SEGMENT_SIZE) -> Chain:  # fmt: skip
    """The chain a restore from `backup` replays to the newest archived segment on `timeline`
    (default: the latest, as PostgreSQL picks it), with every gap named."""
    present = {(s.timeline, s.number) for s in segments}
    target = timeline if timeline is not None else latest_timeline(backup.timeline, histories)
    spans = path_to(target, histories)
    start = segment_of(backup.start_lsn, backup.timeline, size)
    end_number = max(backup.end_lsn - 1, backup.start_lsn) // size
    end = Segment(owner(end_number, spans, size), end_number, size)
    if not follows(backup, target, histories):
        problem = (f"timeline {target} left timeline {backup.timeline} before backup {backup.id} began: "
                   f"a restore from it cannot follow timeline {target}")  # fmt: skip
        return Chain(backup, target, start, end, None, (), (problem,), spans)
    on_path = [n for (t, n) in present if n >= start.number and owner(n, spans, size) == t]
    newest_number = max(on_path, default=None)
    newest = None if newest_number is None else Segment(owner(newest_number, spans, size), newest_number, size)
    last = max(end.number, newest_number if newest_number is not None else -1)
    gaps: list[Gap] = []
    run: list[Segment] = []
    for n in range(start.number, last + 1):
        seg = Segment(owner(n, spans, size), n, size)
        if (seg.timeline, n) in present:
            if run:
                gaps.append(_gap(run, backup, end, newest))
                run = []
        else:
            run.append(seg)
    if run:
        gaps.append(_gap(run, backup, end, newest))
    return Chain(backup, target, start, end, newest, tuple(gaps), (), spans)


def _gap(run: list[Segment], backup: BaseBackup, end: Segment, newest: Segment | None) -> Gap:
    first, last = run[0], run[-1]
    if first.number <= end.number:
        breaks = (f"backup {backup.id} cannot be restored: it needs every segment through {end.name} "
                  f"to reach a consistent state")  # fmt: skip
    elif first.number == backup.start_lsn // first.size:
        breaks = f"backup {backup.id} cannot be restored"
    else:
        breaks = (f"restores from backup {backup.id} stop before {first.name}; "
                  f"WAL after it{' through ' + newest.name if newest else ''} cannot be replayed")  # fmt: skip
    return Gap(first, last, breaks)


# -- retention ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalFile:
    """An archived file by name: its kind, and for all but history files its segment."""

    name: str
    kind: str  # segment, partial, backup, history
    segment: Segment | None


def wal_file(name: str, size: int) -> WalFile:
    """BadWalName for a name PostgreSQL does not archive."""
    kind = kind_of(name)
    return WalFile(name, kind, None if kind == "history" else parse_segment(name[:24], size))


def needed_by(f: WalFile, backup: BaseBackup, histories: History | None) -> bool:
    """Whether a restore from `backup` (to any time, on any timeline it can follow) may read `f`.
    History files are always needed. Recovery never reads a segment before the backup's start;
    beyond it, a timeline that cannot be placed (its history is not archived, or `histories` is
    None: the history files could not be read) is kept, to be safe."""
    if f.segment is None:
        return True
    seg = f.segment
    if seg.number < segment_of(backup.start_lsn, backup.timeline, seg.size).number:
        return False
    if histories is None:
        return True
    if seg.timeline != backup.timeline and seg.timeline not in histories and seg.timeline > backup.timeline:
        return True  # unknown ancestry
    return follows(backup, seg.timeline, histories)


UNNEEDED = "no kept base backup needs it (older than their starts, or on a timeline they cannot follow)"


@dataclass(frozen=True)
class WalDecision:
    name: str
    keep: bool
    reason: str


def wal_retention(names: Iterable[str], kept: Sequence[BaseBackup], histories: History | None,
                  size: int) -> list[WalDecision]:  # fmt: skip
    """A decision for every archived file, by name order. Nothing is deleted while no physical
    backup is kept; history files and names that are not PostgreSQL's are never deleted; any other
    file is deleted only when no kept backup may read it. `histories` None (they could not be
    read): only what is older than every kept backup's start goes, on any timeline."""
    out = []
    for name in sorted(names):
        try:
            f = wal_file(name, size)
        except BadWalName:
            out.append(WalDecision(name, True, "not a WAL file name: left alone"))
            continue
        if f.kind == "history":
            out.append(WalDecision(name, True, "timeline history: never deleted"))
        elif not kept:
            out.append(WalDecision(name, True, "no physical backup is kept: WAL is not pruned"))
        else:
            users = [b.id for b in kept if needed_by(f, b, histories)]
            if users:
                out.append(WalDecision(name, True, f"needed by backup {users[0]}" +
                                       (f" (+{len(users) - 1} more)" if len(users) > 1 else "")))  # fmt: skip
            else:
                out.append(WalDecision(name, False, UNNEEDED))
    return out
