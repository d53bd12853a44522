"""age v1: conformance vectors, round trips, and interoperability with the stock age tool."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import zlib
from pathlib import Path

import pytest
from helpers import run_cli

from drtool.crypto import age

KINDS = {
    "header": "header failure",
    "hmac": "HMAC failure",
    "payload": "payload failure",
    "no match": "no match",
}
UNSUPPORTED = ("scrypt", "armor", "hybrid")  # features drtool does not offer


VECTORS = Path(__file__).parent / "data" / "age-cctv"  # public C2SP/CCTV vectors; see its README.md


def load_vectors():
    folder = VECTORS
    for f in sorted(folder.iterdir()):
        if f.name == "README.md":
            continue
        head, _, body = f.read_bytes().partition(b"\n\n")
        meta = dict(line.split(": ", 1) for line in head.decode().splitlines())
        if meta.get("compressed") == "zlib":  # how the vector is stored, not an age feature
            body = zlib.decompress(body)
        yield f.name, meta, body


def decrypt_outcome(meta, body) -> tuple[str, bytes | None]:
    try:
        ids = [age.Identity.parse(meta["identity"])]
    except (KeyError, ValueError):
        ids = []  # e.g. an scrypt passphrase or a post-quantum identity: we hold no usable key
    try:
        out = b"".join(age.decrypt_stream(io.BytesIO(body), ids))
        return "success", out
    except age.AgeError as e:
        return KINDS[e.kind], None


def test_conformance_vectors():
    checked = 0
    for name, meta, body in load_vectors():
        outcome, out = decrypt_outcome(meta, body)  # must never raise anything but AgeError
        if any(name.startswith(u) for u in UNSUPPORTED) or meta.get("armored") == "yes":
            assert outcome != "success" or meta["expect"] == "success", name
            continue
        assert outcome == meta["expect"], (name, meta.get("comment"))
        if out is not None:
            assert hashlib.sha256(out).hexdigest() == meta["payload"], name
        checked += 1
    assert checked >= 60  # every X25519, header and STREAM vector


def test_unsupported_vectors_fail_cleanly():
    checked = 0
    for name, meta, body in load_vectors():
        if any(name.startswith(u) for u in UNSUPPORTED) and meta["expect"] == "success":
            outcome, _ = decrypt_outcome(meta, body)
            assert outcome in KINDS.values(), name
            checked += 1
    assert checked >= 3  # armored, scrypt and hybrid files are in the set


@pytest.mark.parametrize("size", [0, 1, age.CHUNK - 1, age.CHUNK, age.CHUNK + 1, 3 * age.CHUNK, 200_001])
def test_round_trip_at_chunk_boundaries(size):
    ident = age.Identity.generate()
    data = os.urandom(size)
    enc = age.Encryptor([ident.recipient])
    out = io.BytesIO()
    out.write(enc.header())
    for i in range(0, size, 7777):  # odd piece sizes
        out.write(enc.update(data[i : i + 7777]))
    out.write(enc.finalize())
    out.seek(0)
    assert b"".join(age.decrypt_stream(out, [ident])) == data


def test_every_recipient_can_decrypt():
    a, b = age.Identity.generate(), age.Identity.generate()
    blob = age.encrypt_bytes(b"shared secret data", [a.recipient, b.recipient])
    for ident in (a, b):
        assert b"".join(age.decrypt_stream(io.BytesIO(blob), [ident])) == b"shared secret data"
    with pytest.raises(age.NoMatch):
        list(age.decrypt_stream(io.BytesIO(blob), [age.Identity.generate()]))


def test_identity_repr_hides_the_key():
    ident = age.Identity.generate()
    assert ident.encode() not in repr(ident) and ident.recipient in repr(ident)


def test_stock_age_decrypts_drtool_output(age_bin, tmp_path):
    ident = age.Identity.generate()
    key = tmp_path / "k.txt"
    key.write_text(ident.encode() + "\n")
    data = os.urandom(300_000)
    (tmp_path / "x.age").write_bytes(age.encrypt_bytes(data, [ident.recipient]))
    r = subprocess.run([age_bin, "-d", "-i", str(key), str(tmp_path / "x.age")], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


def test_drtool_decrypts_stock_age_output_and_age_keygen_keys(age_bin, tmp_path):
    keygen = age_bin + "-keygen"
    key = tmp_path / "k.txt"
    subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
    recipient = [ln.split(": ")[1] for ln in key.read_text().splitlines() if "public key" in ln][0]
    data = os.urandom(150_000)
    r = subprocess.run([age_bin, "-e", "-r", recipient], input=data, capture_output=True)
    assert r.returncode == 0
    idents = age.parse_identity_file(key.read_text())
    assert idents[0].recipient == recipient
    assert b"".join(age.decrypt_stream(io.BytesIO(r.stdout), idents)) == data


def test_keygen_writes_0600_identity_in_age_keygen_layout(age_bin, tmp_path):
    out = tmp_path / "id.txt"
    r = run_cli("keygen", "--output", str(out))
    assert r.code == 0, r.err
    recipient = r.out.strip()
    assert recipient.startswith("age1")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# created: ") and lines[1] == f"# public key: {recipient}"
    assert lines[2].startswith("AGE-SECRET-KEY-1") and lines[2] not in r.out + r.err
    # stock age agrees on the recipient of this identity
    y = subprocess.run([age_bin + "-keygen", "-y", str(out)], capture_output=True, text=True)
    assert y.stdout.strip() == recipient


def test_keygen_refuses_to_overwrite(tmp_path):
    out = tmp_path / "id.txt"
    out.write_text("precious")
    r = run_cli("keygen", "--output", str(out))
    assert r.code == 2 and "already exists" in r.err
    assert out.read_text() == "precious"
