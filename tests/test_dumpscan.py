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
