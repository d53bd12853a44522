"""The byte pipelines: dump -> zstd -> age (backup) and age -> zstd -> dump (restore).

Bounded memory: pieces flow through and are not kept. Hashes and sizes are taken on the way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field

from .compress import Compressor, Decompressor, TruncatedFrame
from .crypto import age
from .errors import IdentityError, IntegrityError
from .pipes import close_source, read_ahead

Progress = Callable[[int], None]


@dataclass
class EncodeStats:
    plain_bytes: int = 0
    compressed_bytes: int = 0
    stored_bytes: int = 0
    sha256: str = ""
    _h: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)


# pieces queued between two pipelined stages: zstd hands out ~128 KiB at a time (its stream output
# buffer), so about 0.5 MiB per queue; pg_basebackup's reader keeps 4 MiB ahead of them
STAGE_DEPTH = 4


def encode(
    source: Iterable[bytes],
    *,
    recipients: Iterable[str],
    level: int,
    threads: int,
    stats: EncodeStats,
    observe: Callable[[bytes], None] | None = None,
    progress: Progress | None = None,
    stop_source: Callable[[], object] | None = None,
) -> Generator[bytes, None, None]:
    """Stored bytes of age(zstd(source)). `observe` sees every plain piece (the row counter).

    With `stop_source` (it must make a read of `source` that is blocked return, e.g. kill the
    child writing it), the stages run pipelined, each in a thread of its own: reading `source`,
    observing and compressing it in one; encrypting and hashing in another; the caller uploads.
    zstd, ChaCha20-Poly1305 and SHA-256 release the GIL, so the stages overlap on several cores.
    Memory: STAGE_DEPTH pieces between stages (about 1 MiB in all) besides zstd's own buffers.
    `observe` and `progress` then run in the compressing thread; `stats` is complete once the
    stream has ended. Close the stream when it is not read to the end: stop_source runs, then
    every stage thread is joined."""
    comp = Compressor(level, threads)
    enc = age.Encryptor(recipients)
    if stop_source is None:
        return _encrypted(_compressed(source, comp, stats, observe, progress), enc, stats)
    compressed = read_ahead(_compressed(source, comp, stats, observe, progress), STAGE_DEPTH, name="encode-zstd")
    return read_ahead(_encrypted(compressed, enc, stats), STAGE_DEPTH, on_close=stop_source, name="encode-age")


def _compressed(
    source: Iterable[bytes], comp: Compressor, stats: EncodeStats, observe: Callable[[bytes], None] | None,
    progress: Progress | None,
) -> Generator[bytes, None, None]:  # fmt: skip
    try:
        for piece in source:
            stats.plain_bytes += len(piece)
            if observe:
                observe(piece)
            z = comp.compress(piece)
            if z:
                stats.compressed_bytes += len(z)
                yield z
            if progress:
                progress(len(piece))
        z = comp.flush()
        stats.compressed_bytes += len(z)
        yield z
    finally:
        close_source(source)  # stopped early: the source stops too (a child's stream kills the child)


def _encrypted(compressed: Iterable[bytes], enc: age.Encryptor, stats: EncodeStats) -> Generator[bytes, None, None]:
    h = stats._h

    def out(data: bytes) -> bytes:
        stats.stored_bytes += len(data)
        h.update(data)
        return data

    try:
        yield out(enc.header())
        for z in compressed:
            c = enc.update(z)
            if c:
                yield out(c)
        yield out(enc.finalize())
        stats.sha256 = h.hexdigest()
    finally:
        close_source(compressed)


class HashingReader:
    """Wraps a stored object's stream; counts and hashes every byte read."""

    def __init__(self, raw: age.ByteSource, progress: Progress | None = None):
        self._raw = raw
        self._h = hashlib.sha256()
        self.size = 0
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._h.update(data)
        self.size += len(data)
        if self._progress and data:
            self._progress(len(data))
        return data

    def readline(self, limit: int = -1) -> bytes:
        data = self._raw.readline(limit)
        self._h.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def decode(
    raw: age.ByteSource,
    *,
    identities: list[age.Identity],
    expected_sha256: str,
    expected_size: int,
    where: str,
    progress: Progress | None = None,
) -> Iterator[bytes]:
    """Plain dump bytes from a stored age(zstd(...)) object.

    Every piece is authenticated before it is yielded; at the end the whole object's SHA-256
    and size must equal the manifest's. Damage raises IntegrityError naming `where`.
    """
    reader = HashingReader(raw, progress)
    dec = Decompressor()
    try:
        pieces = age.decrypt_stream(reader, identities)
        for piece in pieces:
            if piece:
                out = dec.decompress(piece)
                if out:
                    yield out
        dec.finish()
    except age.NoMatch as e:
        reader.drain()
        if reader.hexdigest() != expected_sha256 or reader.size != expected_size:
            raise IntegrityError(f"{where}: {_hash_note(reader, expected_sha256, expected_size)}") from None
        raise IdentityError(f"{where}: {e}; is encryption.identity_file the key for this backup?") from None
    except (age.AgeError, TruncatedFrame) as e:
        reader.drain()
        raise IntegrityError(f"{where}: {e}; {_hash_note(reader, expected_sha256, expected_size)}") from None
    reader.drain()
    if reader.hexdigest() != expected_sha256 or reader.size != expected_size:
        raise IntegrityError(f"{where}: {_hash_note(reader, expected_sha256, expected_size)}")


def _hash_note(reader: HashingReader, expected: str, size: int) -> str:
    actual = reader.hexdigest()
    if actual == expected and reader.size == size:
        return "SHA-256 matches the manifest, so the object was stored damaged or the key is wrong"
    return f"SHA-256 expected {expected} ({size} bytes), actual {actual} ({reader.size} bytes)"


def hash_only(raw: age.ByteSource, progress: Progress | None = None) -> tuple[str, int]:
    reader = HashingReader(raw, progress)
    reader.drain()
    return reader.hexdigest(), reader.size
