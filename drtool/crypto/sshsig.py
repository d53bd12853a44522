"""SSH signatures (SSHSIG), Ed25519 only: the detached, armored format of `ssh-keygen -Y sign`.

Format: openssh-portable PROTOCOL.sshsig. The armored blob is

    byte[6] "SSHSIG"; uint32 version (1); string publickey; string namespace; string reserved;
    string hash_algorithm; string signature

and the key signs  byte[6] "SSHSIG"; string namespace; string reserved; string hash_algorithm;
string H(message). We write sha512 (as ssh-keygen does) and accept sha256 and sha512.
Anything that does not parse raises SignatureError, never another exception: signatures are read
from a store that an attacker may write to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

# cryptography (~30 ms to import) is imported by the functions that make, load or use a key: every
# command imports this module, few of them sign, verify, encrypt or decrypt.

MAGIC = b"SSHSIG"
VERSION = 1
BEGIN = b"-----BEGIN SSH SIGNATURE-----"
END = b"-----END SSH SIGNATURE-----"
KEY_TYPE = "ssh-ed25519"
HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
LINE = 70  # base64 characters per armored line, as ssh-keygen writes them
MAX_ARMORED = 64 * 1024  # an Ed25519 signature is ~300 bytes; refuse to decode anything huge


class SignatureError(Exception):
    """A signature or key that is malformed, unsupported, or does not verify. The message says
    which, without echoing the input."""


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key as SSH sees it."""

    raw: bytes  # 32 bytes
    comment: str = ""

    @property
    def blob(self) -> bytes:
        return _string(KEY_TYPE.encode()) + _string(self.raw)

    @property
    def fingerprint(self) -> str:
        """As `ssh-keygen -l` prints it: SHA256:<unpadded base64 of the blob's SHA-256>."""
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")

    def line(self) -> str:
        """The authorized_keys / .pub line: `ssh-ed25519 AAAA... comment`."""
        text = f"{KEY_TYPE} {base64.b64encode(self.blob).decode()}"
        return f"{text} {self.comment}" if self.comment else text


@dataclass(frozen=True)
class Signature:
    """A parsed SSHSIG blob (not yet verified)."""

    public_key: PublicKey
    namespace: str
    hash_algorithm: str
    signature: bytes  # the raw 64-byte Ed25519 signature


# -- keys -----------------------------------------------------------------------------------------
def parse_public_key(line: str) -> PublicKey:
    """An `ssh-ed25519 AAAA... [comment]` line (policy validation uses it: no key material involved)."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2 or parts[0] != KEY_TYPE:
        raise SignatureError("not an ssh-ed25519 public key line ('ssh-ed25519 AAAA... [comment]')")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the ssh-ed25519 key is not valid base64") from None
    key = _key_from_blob(blob)
    return PublicKey(key.raw, parts[2].strip() if len(parts) > 2 else "")


def public_key_of(private_key: Ed25519PrivateKey, comment: str = "") -> PublicKey:
    from cryptography.hazmat.primitives import serialization

    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(raw, comment)


def public_key_from_pem(data: bytes) -> PublicKey:
    """An Ed25519 public key in PEM (SubjectPublicKeyInfo), as openssl writes it."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SignatureError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("the PEM public key is not Ed25519")
    return PublicKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def generate(comment: str = "drtool") -> tuple[bytes, PublicKey]:
    """A new key: (the private key in OpenSSH format, unencrypted, and its public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())  # fmt: skip
    return pem, public_key_of(key, comment)


def load_private_key(data: bytes, *, allow_pem: bool = False) -> Ed25519PrivateKey:
    """An unencrypted OpenSSH Ed25519 private key (what `keygen --signing` and `ssh-keygen -t
    ed25519 -N ''` write); with allow_pem also a PKCS#8 PEM one (the old report signing keys)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key: PrivateKeyTypes
    if b"BEGIN OPENSSH PRIVATE KEY" in data:
        try:
            key = serialization.load_ssh_private_key(data, password=None)
        except TypeError:
            raise SignatureError("the key is encrypted with a passphrase; drtool needs an unencrypted key") from None
        except (ValueError, UnsupportedAlgorithm):
            raise SignatureError("not a valid OpenSSH private key") from None
    elif allow_pem and b"BEGIN PRIVATE KEY" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise SignatureError("not a valid PEM private key") from None
    else:
        raise SignatureError("not an OpenSSH private key (make one with 'drtool keygen --signing --output FILE')")
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the key is not Ed25519 (ssh-keygen -t ed25519)")
    return key


# -- sign and verify --------------------------------------------------------------------------------
def sign(data: bytes, namespace: str, private_key: Ed25519PrivateKey) -> bytes:
    """The armored SSH signature of data, as `ssh-keygen -Y sign -n NAMESPACE` writes it."""
    return sign_sha512(hashlib.sha512(data).digest(), namespace, private_key)


def sign_sha512(digest: bytes, namespace: str, private_key: Ed25519PrivateKey) -> bytes:
    """sign() of data whose SHA-512 is `digest` (SSHSIG signs the hash): for data streamed to a
    file that is never held in memory whole."""
    if not namespace:
        raise SignatureError("the namespace must not be empty")
    ns = namespace.encode()
    sig = private_key.sign(_signed_data(ns, b"", "sha512", digest))
    blob = b"".join([
        MAGIC,
        struct.pack(">I", VERSION),
        _string(public_key_of(private_key).blob),
        _string(ns),
        _string(b""),
        _string(b"sha512"),
        _string(_string(KEY_TYPE.encode()) + _string(sig)),
    ])  # fmt: skip
    return armor(blob)


def verify(data: bytes, armored: bytes | str, namespace: str, trusted: Iterable[PublicKey]) -> PublicKey:
    """The signer (one of `trusted`) if `armored` is a valid signature of data in namespace;
    SignatureError saying what is wrong otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    trusted = list(trusted)
    if not trusted:
        raise SignatureError("no trusted keys to check the signature against")
    sig = parse(armored)
    if sig.namespace != namespace:
        raise SignatureError(f"the signature is for namespace '{_printable(sig.namespace)}', not '{namespace}'")
    signed = _signed_data(namespace.encode(), b"", sig.hash_algorithm, HASHES[sig.hash_algorithm](data).digest())
    try:
        Ed25519PublicKey.from_public_bytes(sig.public_key.raw).verify(sig.signature, signed)
    except (InvalidSignature, ValueError):
        raise SignatureError("the signature does not match the data: it was changed, or signed elsewhere") from None
    for key in trusted:
        if key.raw == sig.public_key.raw:
            return key
    raise SignatureError(f"signed by key {sig.public_key.fingerprint}, which is not a trusted key")


def parse(armored: bytes | str) -> Signature:
    """The fields of an armored SSHSIG signature; SignatureError for anything malformed."""
    blob = dearmor(armored)
    r = _Reader(blob)
    if r.take(6) != MAGIC:
        raise SignatureError("not an SSH signature (no SSHSIG preamble)")
    version = r.u32()
    if version != VERSION:
        raise SignatureError(f"unsupported SSH signature version {version}")
    key_blob = r.string()
    namespace = _text(r.string(), "namespace")
    r.string()  # reserved: ignored, as the format asks
    hash_alg = _text(r.string(), "hash algorithm")
    sig_blob = r.string()
    r.end()
    if not namespace:
        raise SignatureError("the signature has an empty namespace")
    if hash_alg not in HASHES:
        raise SignatureError(f"unsupported hash algorithm '{_printable(hash_alg)}' (sha256 or sha512)")
    key = _key_from_blob(key_blob)
    s = _Reader(sig_blob)
    sig_type = _text(s.string(), "signature algorithm")
    raw_sig = s.string()
    s.end()
    if sig_type != KEY_TYPE:
        raise SignatureError(f"unsupported signature algorithm '{_printable(sig_type)}' (only {KEY_TYPE})")
    if len(raw_sig) != 64:
        raise SignatureError("malformed Ed25519 signature (not 64 bytes)")
    return Signature(key, namespace, hash_alg, raw_sig)


def armor(blob: bytes) -> bytes:
    b64 = base64.b64encode(blob)
    lines = [b64[i : i + LINE] for i in range(0, len(b64), LINE)]
    return b"\n".join([BEGIN, *lines, END]) + b"\n"


def dearmor(armored: bytes | str) -> bytes:
    if isinstance(armored, str):
        try:
            armored = armored.encode("ascii")
        except UnicodeEncodeError:
            raise SignatureError("not an SSH signature (not ASCII armor)") from None
    if len(armored) > MAX_ARMORED:
        raise SignatureError("not an SSH signature (far too large)")
    text = armored.strip()
    if not text.startswith(BEGIN):
        raise SignatureError(f"not an SSH signature (does not start with {BEGIN.decode()})")
    if not text.endswith(END):
        raise SignatureError(f"truncated SSH signature (no {END.decode()} line)")
    body = b"".join(text[len(BEGIN) : -len(END)].split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the SSH signature is not valid base64") from None


# -- wire format --------------------------------------------------------------------------------------
def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _signed_data(namespace: bytes, reserved: bytes, hash_alg: str, digest: bytes) -> bytes:
    return MAGIC + _string(namespace) + _string(reserved) + _string(hash_alg.encode()) + _string(digest)


def _key_from_blob(blob: bytes) -> PublicKey:
    r = _Reader(blob)
    kind = _text(r.string(), "key type")
    if kind != KEY_TYPE:
        raise SignatureError(f"unsupported key type '{_printable(kind)}' (only {KEY_TYPE})")
    raw = r.string()
    r.end()
    if len(raw) != 32:
        raise SignatureError("malformed ssh-ed25519 key (not 32 bytes)")
    return PublicKey(raw)


def _text(b: bytes, what: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError(f"malformed SSH signature ({what} is not text)") from None


def _printable(s: str) -> str:
    """For messages: short and free of control characters (the input may be hostile)."""
    clean = "".join(c if c.isprintable() else "?" for c in s)
    return clean if len(clean) <= 40 else clean[:40] + "..."


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise SignatureError("truncated SSH signature")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def string(self) -> bytes:
        return self.take(self.u32())

    def end(self) -> None:
        if self.pos != len(self.data):
            raise SignatureError("malformed SSH signature (trailing bytes)")
