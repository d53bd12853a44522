"""drtool.pipes.read_ahead and pg_basebackup's reader thread: pieces in order, bounded, errors in
their place, and a consumer that stops early stops the child behind it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from drtool import pgtools
from drtool.errors import DatabaseError
from drtool.pipes import read_ahead
from drtool.postgres import Conninfo


def _wait_until(cond, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_read_ahead_yields_every_piece_in_order():
    pieces = [bytes([i]) * 10 for i in range(100)]
    assert list(read_ahead(iter(pieces), 4)) == pieces


def test_read_ahead_reads_at_most_depth_pieces_ahead_of_the_consumer():
    produced = 0

    def source():
        nonlocal produced
        for i in range(1000):
            produced += 1
            yield bytes([i % 256])

    it = read_ahead(source(), 8)
    next(it)
    _wait_until(lambda: produced >= 9, "the read-ahead to fill")
    time.sleep(0.3)  # room for a producer that does not stop at the bound to overshoot
    # one piece given out, 8 queued, at most one more waiting to be queued
    assert produced <= 10
    it.close()


def test_read_ahead_raises_the_sources_error_after_its_pieces():
    def source():
        yield b"a"
        yield b"b"
        raise DatabaseError("database h:5432/db: pg_basebackup failed (exit 1)")

    it = read_ahead(source(), 4)
    assert next(it) == b"a" and next(it) == b"b"
    with pytest.raises(DatabaseError, match="pg_basebackup failed"):
        next(it)


def test_read_ahead_closed_early_runs_on_close_then_joins_its_reader():
    released = threading.Event()
    threads_before = threading.active_count()

    def blocking_source():
        yield b"first"
        released.wait()  # a read blocked on a pipe until the child is killed
        yield b"after kill"

    it = read_ahead(blocking_source(), 4, on_close=released.set)
    assert next(it) == b"first"
    it.close()
    assert released.is_set()
    assert threading.active_count() == threads_before


def test_basebackup_stream_closed_early_kills_pg_basebackup(tmp_path: Path):
    """The reader thread blocks in a pipe read while pg_basebackup is silent (waiting for the
    archiver): closing the stream must still kill the child and return."""
    pid_file = tmp_path / "pid"
    tool = tmp_path / "pg_basebackup"
    tool.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nhead -c 524288 /dev/zero\nexec sleep 600\n")
    tool.chmod(0o755)
    stream = pgtools.basebackup_stream(pgtools.Tool(str(tool), "15.0"), Conninfo("postgresql://x@127.0.0.1/db"))
    assert len(next(stream)) == 1 << 18  # the reader has read the rest and now waits on the silent pipe
    stream.close()
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running or a zombie
        os.kill(pid, 0)


def test_basebackup_stream_failure_is_raised_after_its_output(tmp_path: Path):
    tool = tmp_path / "pg_basebackup"
    tool.write_text("#!/bin/sh\nhead -c 600000 /dev/zero\necho 'pg_basebackup: error: boom' >&2\nexit 1\n")
    tool.chmod(0o755)
    stream = pgtools.basebackup_stream(pgtools.Tool(str(tool), "15.0"), Conninfo("postgresql://x@127.0.0.1/db"))
    got = 0
    with pytest.raises(DatabaseError, match=r"pg_basebackup failed \(exit 1\).*boom"):
        for piece in stream:
            got += len(piece)
    assert got == 600000
