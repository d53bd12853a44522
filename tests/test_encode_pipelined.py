"""pipeline.encode with stop_source: zstd and age + SHA-256 in threads of their own (base backups).
The same stored format as the serial encode, errors in their place, and a consumer that stops
early stops the source and leaves no thread behind."""

from __future__ import annotations

import hashlib
import io
import os
import threading

import pytest

from drtool import pipeline
from drtool.crypto import age
from drtool.errors import DatabaseError

PIECE = 1 << 18


def _pieces(n: int = 24) -> list[bytes]:
    """Compressible but not trivial: hex of random bytes, as the bench's random filler."""
    return [os.urandom(PIECE // 2).hex().encode() for _ in range(n)]


def _encode(source, recipient: str, **kw) -> tuple[bytes, pipeline.EncodeStats]:
    stats = pipeline.EncodeStats()
    stored = b"".join(pipeline.encode(source, recipients=[recipient], level=1, threads=0, stats=stats, **kw))
    return stored, stats


def _decode(stored: bytes, identity: age.Identity, stats: pipeline.EncodeStats) -> bytes:
    return b"".join(pipeline.decode(io.BytesIO(stored), identities=[identity], expected_sha256=stats.sha256,
                                    expected_size=len(stored), where="test"))  # fmt: skip


def test_pipelined_encode_stores_what_the_serial_encode_stores():
    identity = age.Identity.generate()
    pieces = _pieces()
    seen: list[bytes] = []
    serial, s_stats = _encode(iter(pieces), identity.recipient)
    piped, p_stats = _encode(iter(pieces), identity.recipient, observe=seen.append, stop_source=lambda: None)
    assert _decode(piped, identity, p_stats) == _decode(serial, identity, s_stats) == b"".join(pieces)
    assert seen == pieces  # the observer saw every plain piece, in order
    assert p_stats.sha256 == hashlib.sha256(piped).hexdigest()
    assert (p_stats.plain_bytes, p_stats.stored_bytes) == (sum(map(len, pieces)), len(piped))
    assert p_stats.compressed_bytes == s_stats.compressed_bytes


def test_pipelined_encode_raises_the_sources_error_after_its_pieces():
    identity = age.Identity.generate()
    threads_before = threading.active_count()

    def source():
        yield from _pieces(4)
        raise DatabaseError("database h:5432/db: pg_basebackup failed (exit 1)")

    with pytest.raises(DatabaseError, match="pg_basebackup failed"):
        _encode(source(), identity.recipient, stop_source=lambda: None)
    assert threading.active_count() == threads_before


def test_pipelined_encode_closed_early_stops_the_source_and_joins_every_stage():
    """As when an upload fails: the consumer stops reading; the source (a child's pipe, blocked
    until the child is killed) is stopped and closed, and every stage thread ends."""
    threads_before = threading.active_count()
    killed = threading.Event()
    closed = threading.Event()

    def source():
        try:
            yield from _pieces(8)
            killed.wait(30)  # a pipe read that returns once the child is killed (30 s: no hang when it is not)
            yield b"after the kill"
        finally:
            closed.set()

    stats = pipeline.EncodeStats()
    stream = pipeline.encode(source(), recipients=[age.Identity.generate().recipient], level=1, threads=0,
                             stats=stats, stop_source=killed.set)  # fmt: skip
    next(stream)
    stream.close()
    assert killed.is_set() and closed.is_set()
    assert threading.active_count() == threads_before
    assert stats.sha256 == ""  # never complete: nothing may record it
