"""drtool's age against pyrage's, encrypting 256 MiB and decrypting 128 MiB (docs/design.md).

Needs pyrage installed beside drtool:  python scripts/bench_age.py ours|pyrage
"""

from __future__ import annotations

import io
import os
import resource
import sys
import time

from drtool.crypto import age

ENC_BYTES = 256 * 1024 * 1024
PIECE = os.urandom(1 << 20)


class Source(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.left, len(PIECE))
        b[:n] = PIECE[:n]
        self.left -= n
        return n


class Sink(io.RawIOBase):
    def __init__(self):
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.n += len(b)
        return len(b)


def encrypt(which: str, ident: age.Identity) -> None:
    if which == "ours":
        enc = age.Encryptor([ident.recipient])
        enc.header()
        for _ in range(ENC_BYTES // len(PIECE)):
            enc.update(PIECE)
        enc.finalize()
    else:
        import pyrage

        recipient = pyrage.x25519.Recipient.from_str(ident.recipient)
        pyrage.encrypt_io(io.BufferedReader(Source(ENC_BYTES), 1 << 20), Sink(), [recipient])


def decrypt(which: str, ident: age.Identity, blob: bytes) -> None:
    if which == "ours":
        for _ in age.decrypt_stream(io.BytesIO(blob), [ident]):
            pass
    else:
        import pyrage

        pyrage.decrypt_io(io.BytesIO(blob), Sink(), [pyrage.x25519.Identity.from_str(ident.encode())])


def timed(label: str, size: int, fn, *args) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{label}: {size / wall / 1e6:.0f} MB/s, {cpu:.2f} CPU-s for {size >> 20} MiB")


def main() -> None:
    which = sys.argv[1]
    ident = age.Identity.generate()
    timed(f"{which} encrypt", ENC_BYTES, encrypt, which, ident)
    blob = age.encrypt_bytes(PIECE * 128, [ident.recipient])
    timed(f"{which} decrypt", len(PIECE) * 128, decrypt, which, ident, blob)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{which} peak RSS {peak:.0f} MB (the decrypt test holds its 128 MiB input and output)")


if __name__ == "__main__":
    main()
