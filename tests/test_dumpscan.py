"""Row counts read from the dump stream equal count(*) in the same data, however the stream is cut."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from helpers import EXPECTED_ROWS, SAMPLE_SQL

from drtool.dumpscan import DumpScanner, UnsupportedArchive

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dumps(pg):
    db = pg.create_db(f"scan_{uuid.uuid4().hex[:8]}")
    pg.psql(SAMPLE_SQL + "SELECT lo_from_bytea(0, 'large object data');", db=db)

    def dump(*flags: str) -> bytes:
        r = subprocess.run(
            [
                str(pg.bindir / "pg_dump"),
                "-Fc",
                *flags,
                "-h",
                str(pg.sock),
                "-p",
                str(pg.port),
                "-U",
                "postgres",
                db,
            ],
            capture_output=True,
            check=True,
        )
        return r.stdout

    return {"plain": dump("-Z0"), "zlib": dump("-Z6")}


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20, 1 << 30])
def test_counts_match_however_the_stream_is_cut(dumps, piece):
    data = dumps["plain"]
    s = DumpScanner()
    for i in range(0, len(data), piece):
        s.feed(data[i : i + piece])
    info = s.finish()
    assert info.row_counts() == EXPECTED_ROWS
    assert info.blobs == 1
    assert info.server_version.startswith("15.")


def test_compressed_archive_is_refused_so_caller_falls_back(dumps):
    s = DumpScanner()
    s.feed(dumps["zlib"])
    with pytest.raises(UnsupportedArchive, match="compressed"):
        s.finish()


def test_truncated_archive_is_refused(dumps):
    s = DumpScanner()
    s.feed(dumps["plain"][: len(dumps["plain"]) // 2])
    with pytest.raises(UnsupportedArchive, match="ended in the middle"):
        s.finish()


def test_not_an_archive_is_refused():
    s = DumpScanner()
    s.feed(b"-- plain SQL dump\n")
    with pytest.raises(UnsupportedArchive):
        s.finish()


# -- where a backup scans its dump: inline for a small database, in a child process otherwise ------


@pytest.mark.parametrize("kind", ["inline", "background"])
def test_both_scanners_give_the_row_counts_and_refuse_a_cut_archive_alike(dumps, kind):
    from drtool.dumpscan import BackgroundScanner, DamagedArchive, InlineScanner

    make = InlineScanner if kind == "inline" else BackgroundScanner
    data = dumps["plain"]
    s = make()
    for i in range(0, len(data), 4096):
        s.feed(data[i : i + 4096])
    info = s.finish()
    assert info.row_counts() == EXPECTED_ROWS and info.blobs == 1
    cut = make()
    cut.feed(data[: len(data) // 2])
    with pytest.raises(DamagedArchive, match="ended in the middle"):
        cut.finish()


def test_a_small_database_is_scanned_inline_a_large_one_in_a_child_process():
    """A child interpreter costs ~50 ms of CPU to start: a fleet of 1,000 tiny databases spent
    50 CPU-s a tick on it (issue 15), for dumps that take well under a millisecond to scan."""
    from drtool.dumpscan import INLINE_BELOW, BackgroundScanner, InlineScanner, scanner_for

    assert isinstance(scanner_for(8 << 20), InlineScanner)  # an empty database is about 7.5 MB
    big = scanner_for(INLINE_BELOW)
    try:
        assert isinstance(big, BackgroundScanner)
    finally:
        big.abort()


def test_a_bug_in_the_inline_scanner_becomes_a_row_count_fallback_not_a_failed_backup(dumps, monkeypatch):
    """In a child process, a scanner bug ended the child and the backup counted rows with count(*);
    inline, the same bug must not escape into the dump's pipeline."""
    from drtool import dumpscan

    def broken(self):
        raise IndexError("scanner bug")

    monkeypatch.setattr(dumpscan.DumpScanner, "_parse_header", broken)
    s = dumpscan.InlineScanner()
    s.feed(dumps["plain"])  # no exception here
    with pytest.raises(UnsupportedArchive, match="row counter failed: IndexError: scanner bug"):
        s.finish()
