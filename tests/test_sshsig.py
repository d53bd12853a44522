"""SSH signatures (drtool/crypto/sshsig.py) against stock OpenSSH, both ways, and a fuzz of the parser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services import need

from drtool.crypto import sshsig
from drtool.crypto.sshsig import SignatureError

DATA = b'{"id": "20260101T000000Z", "tables": {"public.orders": 3000}}\n'


@pytest.fixture
def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    need(path is not None, "stock ssh-keygen (Debian package openssh-client)")
    return path


@pytest.fixture
def ours(tmp_path):
    """A key made by drtool, written as `keygen --signing` writes it."""
    priv, pub = sshsig.generate()
    key = tmp_path / "ours.key"
    key.write_bytes(priv)
    key.chmod(0o600)
    (tmp_path / "ours.key.pub").write_text(pub.line() + "\n")
    return key, sshsig.load_private_key(priv), pub


@pytest.fixture
def stock_key(ssh_keygen, tmp_path):
    """A key made by stock ssh-keygen."""
    key = tmp_path / "stock.key"
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", "stock", "-f", str(key)], check=True)
    return key, sshsig.parse_public_key((tmp_path / "stock.key.pub").read_text())


def _allowed_signers(tmp_path, pub: sshsig.PublicKey, principal: str = "drtool"):
    path = tmp_path / "allowed_signers"
    path.write_text(f"{principal} {pub.line()}\n")
    return path


def _stock_sign(ssh_keygen: str, key, data: bytes, namespace: str, tmp_path) -> bytes:
    msg = tmp_path / "msg"
    msg.write_bytes(data)
    subprocess.run([ssh_keygen, "-q", "-Y", "sign", "-n", namespace, "-f", str(key), str(msg)], check=True,
                   capture_output=True)  # fmt: skip
    sig = (tmp_path / "msg.sig").read_bytes()
    (tmp_path / "msg.sig").unlink()
    return sig


def test_our_signature_verifies_with_stock_ssh_keygen(ssh_keygen, ours, tmp_path):
    _, key, pub = ours
    sig = tmp_path / "data.sig"
    sig.write_bytes(sshsig.sign(DATA, "drtool-manifest", key))
    allowed = _allowed_signers(tmp_path, pub)
    r = subprocess.run([ssh_keygen, "-Y", "verify", "-n", "drtool-manifest", "-f", str(allowed), "-I", "drtool",
                        "-s", str(sig)], input=DATA, capture_output=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert pub.fingerprint.encode() in r.stdout + r.stderr
    r = subprocess.run([ssh_keygen, "-Y", "check-novalidate", "-n", "drtool-manifest", "-s", str(sig)], input=DATA,
                       capture_output=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    # and stock OpenSSH holds it to its namespace and data, as we do
    r = subprocess.run([ssh_keygen, "-Y", "verify", "-n", "drtool-report", "-f", str(allowed), "-I", "drtool",
                        "-s", str(sig)], input=DATA, capture_output=True)  # fmt: skip
    assert r.returncode != 0
    r = subprocess.run([ssh_keygen, "-Y", "verify", "-n", "drtool-manifest", "-f", str(allowed), "-I", "drtool",
                        "-s", str(sig)], input=DATA + b" ", capture_output=True)  # fmt: skip
    assert r.returncode != 0


def test_our_signature_is_byte_for_byte_what_ssh_keygen_writes(ssh_keygen, ours, tmp_path):
    """Ed25519 is deterministic, so the same key, data and namespace give the same armored file:
    the format, the hash (sha512) and the 70-character lines all match."""
    path, key, _ = ours
    assert sshsig.sign(DATA, "drtool-evidence", key) == _stock_sign(ssh_keygen, path, DATA, "drtool-evidence", tmp_path)


def test_stock_ssh_keygen_signature_verifies_with_ours(ssh_keygen, stock_key, ours, tmp_path):
    path, pub = stock_key
    sig = _stock_sign(ssh_keygen, path, DATA, "drtool-report", tmp_path)
    signer = sshsig.verify(DATA, sig, "drtool-report", [ours[2], pub])
    assert signer.fingerprint == pub.fingerprint and signer.comment == "stock"
    assert sshsig.load_private_key(path.read_bytes())  # a stock key also loads as a signing key


def test_fingerprint_is_the_one_ssh_keygen_prints(ssh_keygen, ours, tmp_path):
    r = subprocess.run([ssh_keygen, "-l", "-f", str(tmp_path / "ours.key.pub")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split()[1] == ours[2].fingerprint


def test_wrong_namespace_is_refused(ours):
    _, key, pub = ours
    sig = sshsig.sign(DATA, "drtool-evidence", key)
    with pytest.raises(SignatureError, match="namespace 'drtool-evidence', not 'drtool-manifest'"):
        sshsig.verify(DATA, sig, "drtool-manifest", [pub])


def test_untrusted_key_is_refused_naming_its_fingerprint(ours):
    _, key, pub = ours
    _, other = sshsig.generate()
    sig = sshsig.sign(DATA, "drtool-manifest", key)
    with pytest.raises(SignatureError, match=re.escape(f"signed by key {pub.fingerprint}, which is not a trusted key")):
        sshsig.verify(DATA, sig, "drtool-manifest", [other])
    with pytest.raises(SignatureError, match="no trusted keys"):
        sshsig.verify(DATA, sig, "drtool-manifest", [])


@pytest.mark.parametrize(
    "change",
    [lambda d: d.replace(b"3000", b"3001"), lambda d: d + b"\n", lambda d: d[:-1], lambda d: b""],
    ids=["row-count", "appended", "truncated", "empty"],
)
def test_changed_data_is_refused(ours, change):
    _, key, pub = ours
    sig = sshsig.sign(DATA, "drtool-manifest", key)
    with pytest.raises(SignatureError, match="does not match the data"):
        sshsig.verify(change(DATA), sig, "drtool-manifest", [pub])


def test_signature_blob_with_the_trusted_key_swapped_in_is_refused(ours):
    """An attacker signs with their key and puts the trusted public key in the blob."""
    _, key, pub = ours
    attacker = sshsig.load_private_key(sshsig.generate()[0])
    blob = sshsig.dearmor(sshsig.sign(DATA, "drtool-manifest", attacker))
    forged = blob.replace(sshsig.public_key_of(attacker).blob, pub.blob)
    with pytest.raises(SignatureError, match="does not match"):
        sshsig.verify(DATA, sshsig.armor(forged), "drtool-manifest", [pub])


def test_other_key_types_are_unsupported_not_a_crash(ssh_keygen, tmp_path):
    key = tmp_path / "ecdsa.key"
    subprocess.run([ssh_keygen, "-q", "-t", "ecdsa", "-N", "", "-f", str(key)], check=True)
    sig = _stock_sign(ssh_keygen, key, DATA, "drtool-manifest", tmp_path)
    with pytest.raises(SignatureError, match="unsupported key type 'ecdsa-sha2-nistp256'"):
        sshsig.parse(sig)
    with pytest.raises(SignatureError, match="not an ssh-ed25519 public key line"):
        sshsig.parse_public_key((tmp_path / "ecdsa.key.pub").read_text())
    with pytest.raises(SignatureError, match="not Ed25519"):
        sshsig.load_private_key(key.read_bytes())


def test_passphrase_protected_key_is_one_clear_error(ssh_keygen, tmp_path):
    key = tmp_path / "locked.key"
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(key)], check=True)
    with pytest.raises(SignatureError, match="encrypted with a passphrase"):
        sshsig.load_private_key(key.read_bytes())


def test_public_key_line_round_trips_with_comment(ours):
    pub = ours[2]
    assert pub.line().startswith("ssh-ed25519 AAAA") and pub.line().endswith(" drtool")
    assert sshsig.parse_public_key(pub.line() + "\n") == pub
    assert sshsig.parse_public_key(pub.line().rsplit(" ", 1)[0]).raw == pub.raw


@pytest.mark.parametrize(
    "text",
    ["", "ssh-ed25519", "ssh-ed25519 !!!", "ssh-rsa AAAAB3NzaC1yc2E", "ssh-ed25519 " + base64.b64encode(
        b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x10" + b"x" * 16).decode()],
    ids=["empty", "no-blob", "not-base64", "rsa", "short-key"],
)  # fmt: skip
def test_malformed_public_key_lines_are_signature_errors(text):
    with pytest.raises(SignatureError):
        sshsig.parse_public_key(text)


# -- fuzz: whatever is in a .sig file, the parser answers with SignatureError or a result ---------------
_KEY = sshsig.load_private_key(sshsig.generate()[0])
_GOOD = sshsig.sign(DATA, "drtool-manifest", _KEY)
_BLOB = sshsig.dearmor(_GOOD)
_TRUSTED = [sshsig.public_key_of(_KEY)]


def _check(armored) -> None:
    try:
        sshsig.verify(DATA, armored, "drtool-manifest", _TRUSTED)
    except SignatureError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_garbage_bytes_and_garbage_blobs(garbage):
    _check(garbage)
    _check(sshsig.armor(garbage))
    _check(sshsig.armor(b"SSHSIG" + garbage))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(_BLOB) - 1))
def test_fuzz_truncated_signatures(n):
    with pytest.raises(SignatureError):
        sshsig.verify(DATA, sshsig.armor(_BLOB[:n]), "drtool-manifest", _TRUSTED)
    with pytest.raises(SignatureError):
        sshsig.verify(DATA, _GOOD[: n % len(_GOOD)], "drtool-manifest", _TRUSTED)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(_BLOB) - 1), st.integers(min_value=1, max_value=255))
def test_fuzz_every_changed_byte_is_refused(pos, xor):
    """No single changed byte of a valid signature blob still verifies (the reserved field is
    empty here, so every byte is covered by a length, the signed data or the signature)."""
    mutated = bytearray(_BLOB)
    mutated[pos] ^= xor
    with pytest.raises(SignatureError):
        sshsig.verify(DATA, sshsig.armor(bytes(mutated)), "drtool-manifest", _TRUSTED)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_text_and_public_key_lines(text):
    _check(text)
    _check("-----BEGIN SSH SIGNATURE-----\n" + text + "\n-----END SSH SIGNATURE-----\n")
    try:
        sshsig.parse_public_key("ssh-ed25519 " + text)
    except SignatureError:
        pass
