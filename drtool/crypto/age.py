"""The age v1 file format (C2SP age.md) with X25519 recipients, streaming.

A leaf: bytes in, bytes out, no knowledge of storage. Files it writes decrypt with stock
`age -d`, and it decrypts what `age -e -r` writes. Scrypt, armor and post-quantum recipients
are not offered; files that use them fail with a clear error.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from .. import bech32

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

# cryptography (~30 ms to import) is imported by the functions that make, load or use a key: every
# command imports this module, few of them sign, verify, encrypt or decrypt.

VERSION_LINE = b"age-encryption.org/v1"
CHUNK = 64 * 1024
TAG = 16
_X25519_LABEL = b"age-encryption.org/v1/X25519"
_MAX_HEADER = 1 << 20


class AgeError(Exception):
    """Base of age failures; `kind` is one of: header, hmac, payload, no match."""

    kind = "header"


class HeaderError(AgeError):
    kind = "header"


class HmacError(AgeError):
    kind = "hmac"


class NoMatch(AgeError):
    kind = "no match"


class PayloadError(AgeError):
    kind = "payload"


# -- keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """An X25519 private key. repr never shows the key."""

    _key: X25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        return cls(X25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> Identity:
        try:
            hrp, data = bech32.decode(text)
        except ValueError as e:
            raise ValueError(f"malformed age identity: {e}") from None
        if hrp != "age-secret-key-" or len(data) != 32 or text != text.upper():
            raise ValueError("not an age X25519 identity (AGE-SECRET-KEY-1...)")
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        return cls(X25519PrivateKey.from_private_bytes(data))

    def encode(self) -> str:
        raw = self._key.private_bytes_raw()
        return bech32.encode("age-secret-key-", raw).upper()

    @cached_property
    def recipient(self) -> str:
        """The public key, age1...: worked out once (a fleet's status matches it per policy)."""
        return bech32.encode("age", self._key.public_key().public_bytes_raw())

    def __repr__(self) -> str:
        return f"Identity(recipient={self.recipient})"


def parse_recipient(text: str) -> bytes:
    """The 32-byte X25519 public key of an `age1...` string; ValueError if it is not one."""
    try:
        hrp, data = bech32.decode(text)
    except ValueError as e:
        raise ValueError(f"malformed age recipient: {e}") from None
    if hrp != "age" or len(data) != 32 or text != text.lower():
        raise ValueError("not an age X25519 recipient (age1...)")
    return data


def recipient_fingerprint(recipient: str) -> str:
    """Short stable id of a public key for manifests and reports."""
    return "sha256:" + hashlib.sha256(recipient.encode()).hexdigest()[:16]


def parse_identity_file(text: str) -> list[Identity]:
    """Identities in an age-keygen style file (comments and blank lines ignored)."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(Identity.parse(line))
        except ValueError as e:
            raise ValueError(f"line {lineno}: {e}") from None
    if not out:
        raise ValueError("no AGE-SECRET-KEY-1 line found")
    return out


def keygen_text(identity: Identity, now: dt.datetime) -> str:
    """The age-keygen file layout."""
    created = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"# created: {created}\n# public key: {identity.recipient}\n{identity.encode()}\n"


# -- helpers -------------------------------------------------------------------------------


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    """Strict, canonical, unpadded base64 (age's only accepted form)."""
    if b"=" in text or b"\r" in text or b"\n" in text:
        raise HeaderError("base64 padding or line break in header")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise HeaderError("invalid base64 in header") from None
    if _b64(data) != text:
        raise HeaderError("non-canonical base64 in header")
    return data


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


# -- encryption ----------------------------------------------------------------------------


class Encryptor:
    """Streaming age encryption: header() first, then update() per piece, finalize() once."""

    def __init__(self, recipients: Iterable[str]):
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        pubs = [parse_recipient(r) for r in recipients]
        if not pubs:
            raise ValueError("at least one recipient is needed")
        file_key = os.urandom(16)
        lines = [VERSION_LINE]
        for pub in pubs:
            eph = X25519PrivateKey.generate()
            share = eph.public_key().public_bytes_raw()
            shared = eph.exchange(X25519PublicKey.from_public_bytes(pub))
            wrap_key = _hkdf(shared, share + pub, _X25519_LABEL)
            body = ChaCha20Poly1305(wrap_key).encrypt(b"\x00" * 12, file_key, None)
            lines.append(b"-> X25519 " + _b64(share))
            b = _b64(body)
            lines.extend(b[i : i + 64] for i in range(0, len(b), 64))
            if len(b) % 64 == 0:
                lines.append(b"")
        header = b"\n".join(lines) + b"\n---"
        mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
        nonce = os.urandom(16)
        self._header = header + b" " + _b64(mac) + b"\n" + nonce
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._buf = bytearray()
        self._counter = 0
        self._done = False

    def header(self) -> bytes:
        return self._header

    def update(self, data: bytes) -> bytes:
        """Ciphertext for all complete chunks; the last chunk is held back for finalize(),
        which must mark it final. Full chunks are encrypted straight from `data` (no copy)."""
        enc = self._aead.encrypt
        out = []
        mv = memoryview(data)
        pos = 0
        if self._buf:
            need = CHUNK - len(self._buf)
            if len(data) <= need:
                self._buf += data
                return b""
            self._buf += mv[:need]
            pos = need
            out.append(enc(_nonce(self._counter, False), bytes(self._buf), None))
            self._counter += 1
            self._buf.clear()
        while len(data) - pos > CHUNK:
            out.append(enc(_nonce(self._counter, False), mv[pos : pos + CHUNK], None))
            self._counter += 1
            pos += CHUNK
        self._buf += mv[pos:]
        return b"".join(out)

    def finalize(self) -> bytes:
        if self._done:
            raise ValueError("finalize called twice")
        self._done = True
        out = self._aead.encrypt(_nonce(self._counter, True), bytes(self._buf), None)
        self._buf.clear()
        return out


def encrypt_bytes(data: bytes, recipients: Iterable[str]) -> bytes:
    e = Encryptor(recipients)
    return e.header() + e.update(data) + e.finalize()


# -- decryption ----------------------------------------------------------------------------


class ByteSource(Protocol):
    """What decryption reads from: an open file, a store's object stream, a hashing wrapper."""

    def read(self, n: int = -1, /) -> bytes: ...

    def readline(self, limit: int = -1, /) -> bytes: ...


def _read_line(src: ByteSource, budget: list[int]) -> bytes:
    line = src.readline(_MAX_HEADER)
    budget[0] -= len(line)
    if budget[0] < 0:
        raise HeaderError("header too long")
    if not line.endswith(b"\n"):
        raise HeaderError("header ends before its MAC line")
    return line[:-1]


def _args_ok(args: list[bytes]) -> bool:
    return all(a and all(0x21 <= c <= 0x7E for c in a) for a in args)


def read_header(src: ByteSource) -> tuple[bytes, list[tuple[list[bytes], bytes]], bytes]:
    """(header bytes covered by the MAC, [(stanza args, body)], mac) read from `src`."""
    budget = [_MAX_HEADER]
    raw = bytearray()
    first = _read_line(src, budget)
    if first != VERSION_LINE:
        raise HeaderError("not an age v1 file (unknown version line)")
    raw += first + b"\n"
    stanzas = []
    line = _read_line(src, budget)
    while line.startswith(b"-> "):
        raw += line + b"\n"
        args = line[3:].split(b" ")
        if not _args_ok(args):
            raise HeaderError("malformed stanza arguments")
        body = bytearray()
        while True:
            bl = _read_line(src, budget)
            raw += bl + b"\n"
            if len(bl) > 64:
                raise HeaderError("stanza body line longer than 64 columns")
            body += _unb64(bl)
            if len(bl) < 64:
                break
        stanzas.append((args, bytes(body)))
        line = _read_line(src, budget)
    if not line.startswith(b"--- "):
        raise HeaderError("malformed header (expected '-> ' stanza or '--- ' MAC line)")
    raw += b"---"
    mac = _unb64(line[4:])
    if len(mac) != 32:
        raise HeaderError("MAC has the wrong length")
    return bytes(raw), stanzas, mac


def _unwrap(stanzas: list[tuple[list[bytes], bytes]], identities: list[Identity]) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    types = [args[0] for args, _ in stanzas]
    if b"scrypt" in types:
        if len(stanzas) != 1:
            raise HeaderError("an scrypt stanza must be the only one")
        raise NoMatch("file is passphrase-encrypted (scrypt); drtool uses X25519 identities only")
    for args, body in stanzas:
        if args[0] != b"X25519":
            continue
        if len(args) != 2:
            raise HeaderError("X25519 stanza must have one argument")
        share = _unb64(args[1])
        if len(share) != 32:
            raise HeaderError("X25519 share has the wrong length")
        if len(body) != 32:
            raise HeaderError("X25519 stanza body has the wrong length")
        for ident in identities:
            try:
                shared = ident._key.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:
                raise HeaderError("X25519 share is a low-order point") from None
            if shared == b"\x00" * 32:
                raise HeaderError("X25519 share is a low-order point")
            pub = ident._key.public_key().public_bytes_raw()
            wrap_key = _hkdf(shared, share + pub, _X25519_LABEL)
            try:
                return ChaCha20Poly1305(wrap_key).decrypt(b"\x00" * 12, body, None)
            except InvalidTag:
                continue
    raise NoMatch("no identity matches any recipient of this file")


def _read_exact(src: ByteSource, n: int) -> bytes:
    parts = []
    while n:
        b = src.read(n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def decrypt_stream(src: ByteSource, identities: list[Identity]) -> Iterator[bytes]:
    """Plaintext pieces of the age file read from `src`. Raises AgeError subclasses.

    The header is checked before the first piece is yielded; each payload chunk is
    authenticated before it is yielded, and a truncated stream fails at its end.
    """
    raw, stanzas, mac = read_header(src)
    file_key = _unwrap(stanzas, identities)
    if len(file_key) != 16:
        raise HeaderError("file key has the wrong length")
    want = hmac.new(_hkdf(file_key, b"", b"header"), raw, hashlib.sha256).digest()
    if not hmac.compare_digest(want, mac):
        raise HmacError("header MAC does not match (file damaged or tampered with)")
    return _payload(src, file_key)


def _payload(src: ByteSource, file_key: bytes) -> Iterator[bytes]:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    nonce = _read_exact(src, 16)
    if len(nonce) != 16:
        raise HeaderError("payload nonce is missing or truncated")
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    size = CHUNK + TAG
    cur = _read_exact(src, size)
    counter = 0
    while True:
        nxt = _read_exact(src, size) if len(cur) == size else b""
        last = not nxt
        if len(cur) < TAG:
            raise PayloadError("payload is truncated")
        try:
            plain = aead.decrypt(_nonce(counter, last), cur, None)
        except InvalidTag:
            raise PayloadError(
                f"payload chunk {counter} failed authentication (damaged, truncated or tampered with)"
            ) from None
        if last and not plain and counter > 0:
            raise PayloadError("empty final chunk")
        yield plain
        if last:
            return
        counter += 1
        cur = nxt
