"""drtool/trust.py: signed writes and verified reads, against both stores (a folder and real S3)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from services import need
from test_storage_contract import store  # noqa: F401  (the fixture: a folder store and a real S3 one)

from drtool import trust
from drtool.crypto import sshsig
from drtool.errors import EXIT_CHECK, IdentityError, NotFound, UsageError
from drtool.storage import get_bytes, put_bytes

MANIFEST = b'{"id": "20260101T000000Z", "recovery_point": "2026-01-01T00:00:00Z", "tables": {"public.orders": 3000}}\n'
KEY = "orders/backups/20260101T000000Z/manifest.json"


def _signer(name: str = "backup-host") -> trust.Signer:
    return trust.Signer.from_bytes(sshsig.generate()[0], f"/etc/drtool/{name}.key")


@pytest.fixture
def signer() -> trust.Signer:
    return _signer()


@pytest.fixture
def verifier(signer) -> trust.Verifier:
    return trust.Verifier.from_lines([signer.public_key.line()])


class Recording:
    """Wraps a store and records the order of puts."""

    def __init__(self, inner):
        self.inner, self.puts, self.url = inner, [], inner.url

    def put(self, key, chunks, *args, **kw):
        self.puts.append(key)
        return self.inner.put(key, chunks, *args, **kw)


def test_put_signed_writes_the_signature_before_the_object(store, signer, verifier):  # noqa: F811
    rec = Recording(store)
    trust.put_signed(rec, KEY, MANIFEST, trust.NS_MANIFEST, signer)
    assert rec.puts == [KEY + ".sig", KEY]
    data, who = trust.read_verified(store, KEY, verifier, trust.NS_MANIFEST)
    assert data == MANIFEST and who == signer.fingerprint
    assert trust.get_verified(store, KEY, verifier, trust.NS_MANIFEST) == MANIFEST
    assert get_bytes(store, KEY + ".sig").startswith(b"-----BEGIN SSH SIGNATURE-----\n")


def test_failed_object_write_leaves_no_object_only_an_orphan_signature(store, signer, verifier):  # noqa: F811
    """The object is the commit marker: if its write fails, readers see nothing to trust."""
    trust.put_signed(store, KEY, MANIFEST, trust.NS_MANIFEST, signer)
    from drtool.errors import PreconditionFailed

    with pytest.raises(PreconditionFailed):
        trust.put_signed(store, KEY, MANIFEST, trust.NS_MANIFEST, signer, if_absent=True)
    assert trust.get_verified(store, KEY, verifier, trust.NS_MANIFEST) == MANIFEST


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.replace(b"3000", b"3001"),
        lambda m: m.replace(b"2026-01-01T00:00:00Z", b"2026-01-02T00:00:00Z"),
        lambda m: m + b" ",
    ],
    ids=["row-count", "recovery-point", "whitespace"],
)
def test_object_edited_after_signing_is_untrusted(store, signer, verifier, edit):  # noqa: F811
    trust.put_signed(store, KEY, MANIFEST, trust.NS_MANIFEST, signer)
    put_bytes(store, KEY, edit(MANIFEST))
    with pytest.raises(trust.Untrusted) as e:
        trust.get_verified(store, KEY, verifier, trust.NS_MANIFEST)
    assert e.value.exit_code == EXIT_CHECK
    assert str(e.value).startswith(f"{store.url}/{KEY}: not trusted: the signature does not match")


def test_genuine_signature_copied_next_to_a_forged_object_is_untrusted(store, signer, verifier):  # noqa: F811
    genuine = "orders/backups/20260101T000000Z/manifest.json"
    forged = "orders/backups/20990101T000000Z/manifest.json"
    trust.put_signed(store, genuine, MANIFEST, trust.NS_MANIFEST, signer)
    put_bytes(store, forged, MANIFEST.replace(b"20260101", b"20990101"))
    put_bytes(store, forged + ".sig", get_bytes(store, genuine + ".sig"))
    with pytest.raises(trust.Untrusted, match="20990101T000000Z/manifest.json: not trusted"):
        trust.get_verified(store, forged, verifier, trust.NS_MANIFEST)


def test_missing_signature_is_untrusted_naming_the_object(store, verifier):  # noqa: F811
    put_bytes(store, KEY, MANIFEST)
    with pytest.raises(trust.Untrusted, match="manifest.json: not trusted: its signature manifest.json.sig is missing"):
        trust.get_verified(store, KEY, verifier, trust.NS_MANIFEST)


def test_missing_object_is_not_found_not_untrusted(store, verifier):  # noqa: F811
    with pytest.raises(NotFound):
        trust.get_verified(store, KEY, verifier, trust.NS_MANIFEST)


def test_signature_by_an_untrusted_key_is_untrusted_naming_the_signer(store, verifier):  # noqa: F811
    attacker = _signer("attacker")
    trust.put_signed(store, KEY, MANIFEST, trust.NS_MANIFEST, attacker)
    with pytest.raises(trust.Untrusted) as e:
        trust.get_verified(store, KEY, verifier, trust.NS_MANIFEST)
    assert f"signed by key {attacker.fingerprint}, which is not a trusted key" in str(e.value)


def test_signature_in_another_namespace_is_untrusted(store, signer, verifier):  # noqa: F811
    """A signed drill record cannot pass for a manifest."""
    trust.put_signed(store, KEY, MANIFEST, trust.NS_EVIDENCE, signer)
    with pytest.raises(trust.Untrusted, match="namespace 'drtool-evidence', not 'drtool-manifest'"):
        trust.get_verified(store, KEY, verifier, trust.NS_MANIFEST)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"garbage", b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n", b"\xff" * 100],
    ids=["empty", "text", "short-blob", "binary"],
)
def test_garbage_signature_is_untrusted(store, signer, verifier, garbage):  # noqa: F811
    put_bytes(store, KEY, MANIFEST)
    put_bytes(store, KEY + ".sig", garbage)
    with pytest.raises(trust.Untrusted, match="manifest.json: not trusted: "):
        trust.get_verified(store, KEY, verifier, trust.NS_MANIFEST)


def test_huge_signature_object_is_untrusted_without_reading_it_all(store, signer, verifier):  # noqa: F811
    put_bytes(store, KEY, MANIFEST)
    put_bytes(store, KEY + ".sig", b"-----BEGIN SSH SIGNATURE-----\n" + b"A" * (200 * 1024))
    with pytest.raises(trust.Untrusted, match="far too large"):
        trust.get_verified(store, KEY, verifier, trust.NS_MANIFEST)


def test_rotation_old_and_new_keys_both_trusted_until_the_old_one_is_removed(store):  # noqa: F811
    old, new = _signer("old"), _signer("new")
    trust.put_signed(store, "a", b"by old", trust.NS_EVIDENCE, old)
    trust.put_signed(store, "b", b"by new", trust.NS_EVIDENCE, new)
    both = trust.Verifier.from_lines([old.public_key.line(), new.public_key.line()])
    assert trust.read_verified(store, "a", both, trust.NS_EVIDENCE)[1] == old.fingerprint
    assert trust.read_verified(store, "b", both, trust.NS_EVIDENCE)[1] == new.fingerprint
    only_new = trust.Verifier.from_lines([new.public_key.line()])
    with pytest.raises(trust.Untrusted, match=re.escape(f"signed by key {old.fingerprint}")):
        trust.get_verified(store, "a", only_new, trust.NS_EVIDENCE)


def test_signed_object_verifies_with_stock_ssh_keygen(store, signer, tmp_path):  # noqa: F811
    """An auditor needs no drtool: the object and its .sig, an allowed-signers file, ssh-keygen."""
    need(shutil.which("ssh-keygen") is not None, "stock ssh-keygen (Debian package openssh-client)")
    trust.put_signed(store, KEY, MANIFEST, trust.NS_MANIFEST, signer)
    (tmp_path / "manifest.json.sig").write_bytes(get_bytes(store, KEY + ".sig"))
    (tmp_path / "allowed_signers").write_text(f"drtool {signer.public_key.line()}\n")
    r = subprocess.run(["ssh-keygen", "-Y", "verify", "-n", "drtool-manifest", "-f", str(tmp_path / "allowed_signers"),
                        "-I", "drtool", "-s", str(tmp_path / "manifest.json.sig")], input=get_bytes(store, KEY),
                       capture_output=True)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_signer_from_bad_bytes_is_one_error_naming_the_file():
    with pytest.raises(IdentityError, match="signing key /etc/k: not an OpenSSH private key"):
        trust.Signer.from_bytes(b"AGE-SECRET-KEY-1...", "/etc/k")
    assert "BEGIN" not in repr(_signer()) and "SHA256:" in repr(_signer())


def test_verifier_needs_at_least_one_key_and_names_a_bad_line():
    with pytest.raises(UsageError, match="no trusted key given"):
        trust.Verifier.from_lines([])
    with pytest.raises(UsageError, match=r"signing.trusted_keys\[0\]: not an ssh-ed25519"):
        trust.Verifier.from_lines(["ssh-rsa AAAA"])
