"""Report signatures of drtool 0.1 (deprecated; read for one more version, never written).

That format was a JSON document beside the report: the raw Ed25519 signature of the file's bytes,
its SHA-256 and the signer's raw public key. Reports are now signed in SSH format (sshsig.py,
namespace drtool-report), which stock `ssh-keygen -Y verify` checks. The key inside the JSON is
never trusted by itself: the signer must be one of the keys the caller trusts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable

from .sshsig import PublicKey


class SigningError(Exception):
    pass


def is_legacy(signature: bytes) -> bool:
    """True for the old JSON signature files (the SSH format starts with its armor header)."""
    return signature.lstrip().startswith(b"{")


def verify_legacy(data: bytes, signature: bytes, trusted: Iterable[PublicKey]) -> PublicKey:
    """The trusted key that made this old-format signature; SigningError otherwise."""
    from cryptography.exceptions import InvalidSignature  # here: few commands verify (drtool/crypto/age.py)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        sig = json.loads(signature)
        pub_raw = base64.b64decode(sig["public_key"], validate=True)
        raw_sig = base64.b64decode(sig["signature"], validate=True)
        expected_sha256 = sig.get("sha256")
    except (ValueError, KeyError, TypeError, binascii.Error, AttributeError):
        raise SigningError("the signature file is malformed") from None
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise SigningError("the report's SHA-256 does not match the signed one: it was changed")
    try:
        Ed25519PublicKey.from_public_bytes(pub_raw).verify(raw_sig, data)
    except (InvalidSignature, ValueError):
        raise SigningError("the signature does not match the report") from None
    for key in trusted:
        if key.raw == pub_raw:
            return key
    raise SigningError(f"signed by key {PublicKey(pub_raw).fingerprint}, which is not a trusted key")
