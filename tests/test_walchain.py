"""The WAL chain as a pure function (drtool/walchain.py): history files, the segments a restore
replays across timeline switches, gaps named with what they break, and which WAL retention may
delete; worked examples, then invariants checked by hypothesis over random timeline trees and
archives with holes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drtool import walchain
from drtool.walchain import BaseBackup, HistoryInvalid, Switch
from drtool.walnames import Segment, parse_segment

SIZE = 16 * 1024 * 1024


def seg(tli: int, n: int) -> Segment:
    return Segment(tli, n, SIZE)


def lsn(n: int, offset: int = 0x28) -> int:
    """An LSN inside segment n."""
    return n * SIZE + offset


def segs(tli: int, numbers) -> list[Segment]:
    return [seg(tli, n) for n in numbers]


# -- history files --------------------------------------------------------------------------------


def test_history_file_as_postgresql_writes_it():
    text = "1\t0/5000028\tno recovery target specified\n\n# a comment\n2\t0/9000000\tbefore 2026-11-26 14:03:27+00\n"
    assert walchain.parse_history(text, 3) == (
        Switch(1, 0x5000028, "no recovery target specified"),
        Switch(2, 0x9000000, "before 2026-11-26 14:03:27+00"),
    )


@pytest.mark.parametrize(
    "text",
    ["1 notanlsn reason\n", "x\t0/1\tr\n", "2\t0/5\tr\n1\t0/6\tr\n", "1\t0/9\tr\n2\t0/5\tr\n", "3\t0/5\tr\n"],
)
def test_malformed_history_file_is_refused_naming_it(text):
    with pytest.raises(HistoryInvalid, match="00000003.history"):
        walchain.parse_history(text, 3)


def test_path_to_a_timeline_follows_its_history():
    histories = {3: (Switch(1, lsn(5)), Switch(2, lsn(9)))}
    assert walchain.path_to(3, histories) == (
        walchain.Span(1, 0, lsn(5)),
        walchain.Span(2, lsn(5), lsn(9)),
        walchain.Span(3, lsn(9), None),
    )
    assert walchain.path_to(1, histories) == (walchain.Span(1, 0, None),)


def test_latest_timeline_is_the_last_of_an_unbroken_run_of_history_files():
    assert walchain.latest_timeline(1, {2, 3, 5}) == 3
    assert walchain.latest_timeline(1, set()) == 1
    assert walchain.latest_timeline(4, {2, 3, 5}) == 5


# -- the chain of one backup ---------------------------------------------------------------------

B1 = BaseBackup("b1", 1, lsn(2), lsn(3))


def test_complete_chain_on_one_timeline():
    c = walchain.chain(B1, segs(1, range(0, 8)), {})
    assert c.ok and c.consistent
    assert (c.start, c.end, c.newest) == (seg(1, 2), seg(1, 3), seg(1, 7))
    assert c.restorable_through == seg(1, 7)


def test_segment_missing_from_the_middle_is_named_with_what_it_breaks():
    c = walchain.chain(B1, segs(1, [2, 3, 4, 6, 7, 9]), {})
    assert [(g.first.name, g.last.name) for g in c.gaps] == [
        ("000000010000000000000005", "000000010000000000000005"),
        ("000000010000000000000008", "000000010000000000000008"),
    ]
    assert c.consistent and not c.ok
    assert c.restorable_through == seg(1, 4)
    assert "restores from backup b1 stop before 000000010000000000000005" in c.gaps[0].breaks


def test_segment_missing_before_the_backup_end_breaks_the_backup():
    c = walchain.chain(B1, segs(1, [2, 4, 5]), {})
    assert c.gaps[0].first == seg(1, 3)
    assert not c.consistent and c.restorable_through is None
    assert "backup b1 cannot be restored" in c.gaps[0].breaks
    assert "000000010000000000000003" in c.gaps[0].breaks


def test_backup_whose_end_is_not_archived_yet_is_not_consistent():
    c = walchain.chain(B1, segs(1, [2]), {})
    assert not c.consistent and c.gaps[0].first == seg(1, 3)


def test_chain_follows_a_timeline_switch():
    # timeline 2 began inside segment 5: segments 0-4 of timeline 1, then 5.. of timeline 2. The
    # old timeline's own segment 5 (and beyond: the old primary ran on) is not on the path.
    histories = {2: (Switch(1, lsn(5, 0x1234)),)}
    archived = segs(1, range(0, 9)) + segs(2, range(5, 12))
    c = walchain.chain(B1, archived, histories)
    assert c.timeline == 2 and c.ok
    assert c.newest == seg(2, 11)
    # without timeline 2's segment 5, the chain breaks there, even though timeline 1 has a segment 5
    broken = walchain.chain(B1, [s for s in archived if s != seg(2, 5)], histories)
    assert broken.gaps[0].first == seg(2, 5)
    assert broken.restorable_through == seg(1, 4)
    # and restoring on timeline 1 explicitly uses timeline 1's files
    assert walchain.chain(B1, archived, histories, timeline=1).newest == seg(1, 8)


def test_switch_at_a_segment_boundary_starts_the_new_timeline_in_that_segment():
    histories = {2: (Switch(1, 5 * SIZE),)}
    c = walchain.chain(B1, segs(1, range(0, 5)) + segs(2, range(5, 7)), histories)
    assert c.ok and c.newest == seg(2, 6)


def test_timeline_that_left_before_the_backup_began_cannot_be_followed():
    histories = {2: (Switch(1, lsn(1)),)}
    c = walchain.chain(B1, segs(1, range(0, 6)) + segs(2, range(1, 6)), histories)
    assert not c.ok and not c.consistent
    assert "timeline 2 left timeline 1 before backup b1 began" in c.problems[0]


# -- retention ---------------------------------------------------------------------------------------

# Two timelines: b1 on timeline 1 from segment 2; a restore promoted timeline 2 inside segment 5;
# the old primary ran on to segment 9 on timeline 1; b2 on timeline 2 from segment 8.
TWO = {2: (Switch(1, lsn(5, 0x500)),)}
B2 = BaseBackup("b2", 2, lsn(8), lsn(8, 0x9000))
NAMES = (
    [s.name for s in segs(1, range(0, 10))]
    + [s.name for s in segs(2, range(5, 13))]
    + ["000000010000000000000005.partial", "000000010000000000000002.00000028.backup", "00000002.history"]
)


def deleted(decisions) -> set[str]:
    return {d.name for d in decisions if not d.keep}


def test_no_kept_physical_backup_deletes_no_wal():
    ds = walchain.wal_retention(NAMES, [], TWO, SIZE)
    assert not deleted(ds)
    assert {d.reason for d in ds} == {
        "no physical backup is kept: WAL is not pruned",
        "timeline history: never deleted",
    }


def test_prune_with_two_timelines_keeps_what_a_kept_backup_needs():
    # keeping only b2: everything of timeline 1 goes (b2 cannot read it), and timeline 2 before b2
    gone = deleted(walchain.wal_retention(NAMES, [B2], TWO, SIZE))
    assert gone == {s.name for s in segs(1, range(0, 10))} | {s.name for s in segs(2, range(5, 8))} | {
        "000000010000000000000005.partial",
        "000000010000000000000002.00000028.backup",
    }
    # keeping b1 too: timeline 1 from b1's start on stays (b1 restores on it, or to a time before the
    # switch), and every segment of timeline 2 (b1 follows it)
    gone = deleted(walchain.wal_retention(NAMES, [B1, B2], TWO, SIZE))
    assert gone == {seg(1, 0).name, seg(1, 1).name}


def test_timeline_segments_are_compared_by_number_not_by_name():
    # 00000001...0A sorts before 00000002...05 as a string, yet b1 (timeline 1, from segment 2) needs it
    names = [seg(1, 10).name, seg(2, 5).name]
    assert not deleted(walchain.wal_retention(names, [B1], TWO, SIZE))


def test_history_files_and_foreign_names_are_never_deleted():
    ds = {d.name: d for d in walchain.wal_retention(["00000002.history", "README"], [B2], TWO, SIZE)}
    assert ds["00000002.history"].keep and ds["README"].keep


def test_segments_of_a_timeline_without_history_are_kept_when_they_may_follow():
    ds = {d.name: d for d in walchain.wal_retention([seg(3, 9).name], [B1], TWO, SIZE)}
    assert ds[seg(3, 9).name].keep


# -- invariants over random timeline trees ---------------------------------------------------------

N = 24  # segment numbers 0 .. N-1


@st.composite
def trees(draw):
    """Timelines 1..k: each k > 1 branched from a random earlier one at a random LSN at or after
    the parent's own start. Returns (parents: tli -> (parent, switch lsn), histories)."""
    count = draw(st.integers(1, 4))
    begins, parents, histories = {1: 0}, {}, {}
    for t in range(2, count + 1):
        p = draw(st.integers(1, t - 1))
        at = draw(st.integers(begins[p] // SIZE, N - 1)) * SIZE + draw(st.sampled_from([0, 0x28, SIZE // 2]))
        at = max(at, begins[p])
        parents[t], begins[t] = (p, at), at
        histories[t] = (*histories.get(p, ()), Switch(p, at))
    # history files list ancestors in increasing order; a child's switch point is after its parent's
    for t, h in histories.items():
        assert [s.parent for s in h] == sorted(s.parent for s in h), t
    return begins, parents, histories


def ancestry_reaches(t: int, b: BaseBackup, parents) -> bool:
    """Oracle: walk t's parents; b can reach t if t is b's timeline, or t descends from it through
    a switch out of b's timeline at or after b's start."""
    while t != b.timeline:
        if t not in parents:
            return False
        p, at = parents[t]
        if p == b.timeline:
            return at >= b.start_lsn
        t = p
    return True


@st.composite
def archives(draw):
    begins, parents, histories = draw(trees())
    every = [(t, n) for t in begins for n in range(begins[t] // SIZE, N)]
    present = draw(st.sets(st.sampled_from(every), max_size=len(every)))
    backups = []
    for i in range(draw(st.integers(0, 3))):
        t = draw(st.sampled_from(sorted(begins)))
        n = draw(st.integers(begins[t] // SIZE + 1, N - 1)) if begins[t] // SIZE + 1 < N else N - 1
        backups.append(BaseBackup(f"b{i}", t, lsn(n), lsn(n + draw(st.integers(0, 2)))))
    return begins, parents, histories, sorted(present), backups


@settings(max_examples=300, deadline=None)
@given(archives())
def test_retention_never_deletes_what_a_kept_backup_can_read(arch):
    begins, parents, histories, present, kept = arch
    names = [seg(t, n).name for t, n in present] + [f"{t:08X}.history" for t in histories]
    gone = deleted(walchain.wal_retention(names, kept, histories, SIZE))
    # not reading the history files (no identity) never deletes more
    assert deleted(walchain.wal_retention(names, kept, None, SIZE)) <= gone
    if not kept:
        assert not gone
    assert not any(name.endswith(".history") for name in gone)
    for b in kept:
        for t in begins:
            if not ancestry_reaches(t, b, parents):
                continue
            c = walchain.chain(b, [seg(*p) for p in present], histories, timeline=t)
            used = {s.name for s in (seg(walchain.owner(n, c.spans, SIZE), n) for n in range(c.start.number, N))}
            assert not (used & gone), (b, t)
    # and everything deleted is truly unreadable: below every backup's start or on a timeline none reaches
    for name in gone:
        s = parse_segment(name[:24])
        assert all(s.number < b.start_lsn // SIZE or not ancestry_reaches(s.timeline, b, parents) for b in kept)


@settings(max_examples=300, deadline=None)
@given(archives())
def test_chain_gaps_are_exactly_the_missing_segments_on_the_path(arch):
    begins, parents, histories, present, backups = arch
    have = set(present)
    for b in backups:
        c = walchain.chain(b, [seg(*p) for p in present], histories)
        if c.problems:
            assert not ancestry_reaches(c.timeline, b, parents)
            continue
        path = [(walchain.owner(n, c.spans, SIZE), n) for n in range(c.start.number, N + 3)]
        on_path = [p for p in path if p in have]
        last = max([c.end.number] + [n for _, n in on_path])
        missing = [p for p in path if p not in have and p[1] <= last]
        assert [(s.timeline, s.number) for g in c.gaps for s in _run(g, c.spans)] == missing
        assert c.ok == (not missing)
        assert c.newest == (seg(*on_path[-1]) if on_path else None)


def _run(g, spans):
    return [seg(walchain.owner(n, spans, SIZE), n) for n in range(g.first.number, g.last.number + 1)]


def test_unreadable_histories_delete_only_what_is_older_than_every_kept_start():
    # without the identity the history files cannot be read: timeline 1's segments 8 and 9 (which
    # b2 cannot follow) stay, as do timeline 2's from b2's start on
    gone = deleted(walchain.wal_retention(NAMES, [B2], None, SIZE))
    assert gone == {s.name for s in segs(1, range(0, 8))} | {s.name for s in segs(2, range(5, 8))} | {
        "000000010000000000000005.partial",
        "000000010000000000000002.00000028.backup",
    }


def test_histories_inferred_from_names_follow_one_timeline_after_the_other():
    archived = segs(1, range(0, 9)) + segs(2, range(5, 12)) + segs(3, range(10, 14))
    guessed = walchain.infer_histories(archived, {2, 3})
    assert walchain.path_to(3, guessed) == (
        walchain.Span(1, 0, 5 * SIZE),
        walchain.Span(2, 5 * SIZE, 10 * SIZE),
        walchain.Span(3, 10 * SIZE, None),
    )
    assert walchain.chain(B1, archived, guessed).ok
