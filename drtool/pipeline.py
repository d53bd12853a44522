"""The byte pipelines: dump -> zstd -> age (backup) and age -> zstd -> dump (restore).

Bounded memory: pieces flow through and are not kept. Hashes and sizes are taken on the way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .compress import Compressor, Decompressor, TruncatedFrame
from .crypto import age
from .errors import IdentityError, IntegrityError

Progress = Callable[[int], None]


@dataclass
class EncodeStats:
    plain_bytes: int = 0
    compressed_bytes: int = 0
    stored_bytes: int = 0
    sha256: str = ""
    _h: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)


def encode(
    source: Iterable[bytes],
    *,
    recipients: Iterable[str],
    level: int,
    threads: int,
    stats: EncodeStats,
    observe: Callable[[bytes], None] | None = None,
    progress: Progress | None = None,
) -> Iterator[bytes]:
    """Stored bytes of age(zstd(source)). `observe` sees every plain piece (the row counter)."""
    comp = Compressor(level, threads)
    enc = age.Encryptor(recipients)
    h = stats._h

    def out(data: bytes) -> bytes:
        stats.stored_bytes += len(data)
        h.update(data)
        return data

    yield out(enc.header())
    for piece in source:
        stats.plain_bytes += len(piece)
        if observe:
            observe(piece)
        z = comp.compress(piece)
        if z:
            stats.compressed_bytes += len(z)
            c = enc.update(z)
            if c:
                yield out(c)
        if progress:
            progress(len(piece))
    z = comp.flush()
    stats.compressed_bytes += len(z)
    tail = enc.update(z) + enc.finalize()
    yield out(tail)
    stats.sha256 = h.hexdigest()


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
