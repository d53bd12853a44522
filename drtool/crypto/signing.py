"""Ed25519 signatures for reports: sign the file's bytes; verify with the signer's public key."""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class SigningError(Exception):
    pass


def _public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(public_raw).hexdigest()[:16]


def sign(data: bytes, private_pem: bytes) -> dict:
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as e:
        raise SigningError(f"not a PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError("the signing key must be Ed25519 (openssl genpkey -algorithm ed25519)")
    pub = _public_raw(key.public_key())
    return {
        "algorithm": "ed25519",
        "sha256": hashlib.sha256(data).hexdigest(),
        "signature": base64.b64encode(key.sign(data)).decode(),
        "public_key": base64.b64encode(pub).decode(),
        "key_fingerprint": fingerprint(pub),
    }


def verify(data: bytes, sig: dict, public_pem: bytes | None) -> str:
    """The signer's key fingerprint if the signature holds; SigningError otherwise. With
    `public_pem` the signer must be that key (otherwise only integrity is proven)."""
    try:
        pub_raw = base64.b64decode(sig["public_key"])
        signature = base64.b64decode(sig["signature"])
    except (KeyError, ValueError, TypeError):
        raise SigningError("the signature file is malformed") from None
    if hashlib.sha256(data).hexdigest() != sig.get("sha256"):
        raise SigningError("the report's SHA-256 does not match the signed one: it was changed")
    if public_pem is not None:
        expected = serialization.load_pem_public_key(public_pem)
        if not isinstance(expected, Ed25519PublicKey) or _public_raw(expected) != pub_raw:
            raise SigningError("signed by a different key than the one given")
    try:
        Ed25519PublicKey.from_public_bytes(pub_raw).verify(signature, data)
    except InvalidSignature:
        raise SigningError("the signature does not match the report") from None
    return fingerprint(pub_raw)
