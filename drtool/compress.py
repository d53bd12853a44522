"""zstd, streaming: the only importer of zstandard. Output is a standard zstd frame (`zstd -d` reads it)."""

from __future__ import annotations

import zstandard


class Compressor:
    def __init__(self, level: int = 3, threads: int = 0):
        # threads=-1 lets libzstd use one worker per CPU; work happens outside the GIL
        self._obj = zstandard.ZstdCompressor(level=level, threads=threads or -1).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


class TruncatedFrame(Exception):
    pass


class Decompressor:
    def __init__(self):
        self._obj = zstandard.ZstdDecompressor().decompressobj()

    def decompress(self, data: bytes) -> bytes:
        try:
            return self._obj.decompress(data)
        except zstandard.ZstdError as e:
            raise TruncatedFrame(f"zstd data is damaged: {e}") from None

    def finish(self) -> None:
        if not self._obj.eof:
            raise TruncatedFrame("zstd frame is truncated")
