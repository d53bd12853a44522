"""Origin of stored objects: sign what this host writes, accept only what a trusted key signed.

A signed object `<key>` has a detached SSH signature (SSHSIG, what `ssh-keygen -Y sign` writes)
in `<key>.sig`, so an auditor checks it with stock OpenSSH and an allowed-signers file:

    ssh-keygen -Y verify -n drtool-manifest -f allowed_signers -I drtool -s manifest.json.sig < manifest.json

The namespace binds a signature to its kind of object: a signed drill record cannot pass for a
manifest. The signature is written before the object, so the object stays the commit marker: a
reader that sees the object finds its signature too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .crypto import sshsig
from .errors import IdentityError, IntegrityError, NotFound, UsageError
from .storage import ObjectInfo, Store, get_bytes

NS_MANIFEST = "drtool-manifest"  # backup manifests, copies' included
NS_EVIDENCE = "drtool-evidence"  # drill and verify records, state objects reports rely on
NS_REPORT = "drtool-report"  # compliance report files (FILE.sig beside FILE)
SIG_SUFFIX = ".sig"


class Untrusted(IntegrityError):
    """An object whose origin is not proven: no signature, a bad one, or one by an untrusted key.
    Exit 3, like any other check that found a problem."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: not trusted: {reason}")
        self.where = where
        self.reason = reason


class Signer:
    """The signing key of a host that writes (policy [signing].key_file)."""

    def __init__(self, private_key: Any, source: str):
        self._key = private_key
        self.source = source
        self.public_key = sshsig.public_key_of(private_key)

    @classmethod
    def from_bytes(cls, data: bytes, source: str, *, allow_pem: bool = False) -> Signer:
        """IdentityError naming `source` when the bytes are not an unencrypted Ed25519 key."""
        try:
            return cls(sshsig.load_private_key(data, allow_pem=allow_pem), source)
        except sshsig.SignatureError as e:
            raise IdentityError(f"signing key {source}: {e}") from None

    @property
    def fingerprint(self) -> str:
        return self.public_key.fingerprint

    def sign(self, data: bytes, namespace: str) -> bytes:
        return sshsig.sign(data, namespace, self._key)

    def sign_sha512(self, digest: bytes, namespace: str) -> bytes:
        """sign() of the data whose SHA-512 is `digest` (data streamed, never held whole)."""
        return sshsig.sign_sha512(digest, namespace, self._key)

    def __repr__(self) -> str:
        return f"Signer({self.source}, {self.fingerprint})"


class Verifier:
    """The keys trusted where objects are read (policy [signing].trusted_keys); several allow rotation."""

    def __init__(self, keys: Iterable[sshsig.PublicKey]):
        self.keys = list(keys)
        if not self.keys:
            raise UsageError("no trusted key given")

    @classmethod
    def from_lines(cls, lines: Iterable[str], where: str = "signing.trusted_keys") -> Verifier:
        keys = []
        for i, line in enumerate(lines):
            try:
                keys.append(sshsig.parse_public_key(line))
            except sshsig.SignatureError as e:
                raise UsageError(f"{where}[{i}]: {e}") from None
        return cls(keys)

    @property
    def fingerprints(self) -> list[str]:
        return [k.fingerprint for k in self.keys]

    def verify(self, data: bytes, signature: bytes, namespace: str, where: str) -> str:
        """The signer's fingerprint (`SHA256:...`) when a trusted key signed data in namespace;
        Untrusted naming `where` (the object) otherwise."""
        try:
            return sshsig.verify(data, signature, namespace, self.keys).fingerprint
        except sshsig.SignatureError as e:
            raise Untrusted(where, str(e)) from None


def sig_key(key: str) -> str:
    return key + SIG_SUFFIX


def put_signed(
    store: Store,
    key: str,
    data: bytes,
    namespace: str,
    signer: Signer,
    *,
    retain: bool = False,
    if_absent: bool = False,
    if_match: str | None = None,
) -> list[ObjectInfo]:
    """Write `<key>.sig`, then `<key>` (with the given write conditions); returns what was
    written, signature first. The signature goes first so the object stays the commit marker; a
    signature left alone by a failed write is an orphan that cleanup removes with the rest of an
    incomplete backup. Two writers of the same key must not race (the policy lock keeps them
    apart): the last signature would win."""
    sig = signer.sign(data, namespace)
    written = [store.put(sig_key(key), [sig], size_hint=len(sig), retain=retain)]
    written.append(store.put(key, [data], size_hint=len(data), retain=retain, if_absent=if_absent, if_match=if_match))
    return written


def read_verified(store: Store, key: str, verifier: Verifier, namespace: str) -> tuple[bytes, str]:
    """(the object's bytes, the signer's fingerprint). NotFound when the object is missing;
    Untrusted when its signature is missing, malformed, wrong or by an untrusted key."""
    data = get_bytes(store, key)
    return data, verify_stored(store, key, data, verifier, namespace)


def verify_stored(store: Store, key: str, data: bytes, verifier: Verifier, namespace: str) -> str:
    """The signer's fingerprint when `<key>.sig` in the store is a trusted signature of `data`
    (the bytes read from `key`); Untrusted naming the object otherwise."""
    where = f"{store.url}/{key}"
    try:
        with store.get(sig_key(key)) as f:
            signature = f.read(sshsig.MAX_ARMORED + 1)  # whoever can write the bucket sets its size
    except NotFound:
        raise Untrusted(where, f"its signature {sig_key(key).rsplit('/', 1)[-1]} is missing") from None
    return verifier.verify(data, signature, namespace, where)


def get_verified(store: Store, key: str, verifier: Verifier, namespace: str) -> bytes:
    """The object's bytes, only when a trusted key signed them (see read_verified)."""
    return read_verified(store, key, verifier, namespace)[0]
