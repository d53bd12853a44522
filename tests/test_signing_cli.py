"""The signing commands as a user runs them: keygen --signing, check, report --sign-key, report
verify, and restore as an unprivileged role."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import subprocess
import uuid

import pytest
from helpers import make_setup, run_cli
from services import need

pytestmark = pytest.mark.integration

NO_POLICY_ENV = {"DRTOOL_POLICY": None}


@pytest.fixture
def local(pg, tmp_path):
    return make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')  # init creates the store


@pytest.fixture
def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    need(path is not None, "stock ssh-keygen (Debian package openssh-client)")
    return path


def keygen_signing(path) -> str:
    r = run_cli("keygen", "--signing", "--output", str(path))
    assert r.code == 0, r.err
    return r.out.strip()


def add_signing(setup, toml: str) -> None:
    setup.policy.write_text(setup.policy.read_text() + "\n[signing]\n" + toml)


def report(setup, out, *extra: str):
    return setup.cli("report", "-p", str(setup.policy), "--format", "md", "-o", str(out), *extra)


# -- keygen --signing ---------------------------------------------------------------------------------------
def test_keygen_signing_writes_openssh_key_0600_and_pub_and_prints_the_line(ssh_keygen, tmp_path):
    key = tmp_path / "new" / "keys" / "signing.key"
    line = keygen_signing(key)
    assert line.startswith("ssh-ed25519 AAAA") and line.endswith(" drtool")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for folder in (key.parent, key.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert (tmp_path / "new" / "keys" / "signing.key.pub").read_text() == line + "\n"
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    # stock OpenSSH reads the private key and derives the same public key
    y = subprocess.run([ssh_keygen, "-y", "-f", str(key)], capture_output=True, text=True)
    assert y.returncode == 0 and y.stdout.split()[:2] == line.split()[:2]


def test_keygen_signing_json_names_both_files_and_the_fingerprint(tmp_path):
    r = run_cli("keygen", "--signing", "--output", str(tmp_path / "k"), "--json")
    assert r.code == 0
    doc = r.json
    assert doc["key_file"] == str(tmp_path / "k") and doc["public_key_file"] == str(tmp_path / "k.pub")
    assert doc["public_key"].startswith("ssh-ed25519 ") and doc["fingerprint"].startswith("SHA256:")


@pytest.mark.parametrize("existing", ["k", "k.pub"])
def test_keygen_signing_refuses_to_overwrite_the_key_or_its_pub(tmp_path, existing):
    (tmp_path / existing).write_text("precious\n")
    r = run_cli("keygen", "--signing", "--output", str(tmp_path / "k"))
    assert r.code == 2 and f"{tmp_path / existing} already exists; refusing to overwrite a key" in r.err
    assert (tmp_path / existing).read_text() == "precious\n"
    assert not (tmp_path / ("k.pub" if existing == "k" else "k")).exists()


def test_age_keygen_creates_missing_parent_folders_0700(tmp_path):
    out = tmp_path / "etc" / "drtool" / "orders.key"
    r = run_cli("keygen", "--output", str(out))
    assert r.code == 0 and r.out.startswith("age1"), r.err
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o700 and stat.S_IMODE(out.stat().st_mode) == 0o600


# -- check --------------------------------------------------------------------------------------------------
def test_check_warns_that_origin_is_not_verified_without_trusted_keys(local):
    r = local.cli("check", "-p", str(local.policy), "--json")
    assert r.code == 0, r.err
    rows = [c for c in r.json["policies"][0]["checks"] if c["check"] == "signing"]
    assert rows == [{"check": "signing", "ok": True,
                     "detail": "warning: origin of backups is not verified (no [signing].trusted_keys)"}]  # fmt: skip
    assert "origin of backups is not verified" in r.err


def test_check_loads_the_signing_key_and_lists_trusted_keys(local, tmp_path):
    line = keygen_signing(tmp_path / "signing.key")
    add_signing(local, f'key_file = "{tmp_path / "signing.key"}"\ntrusted_keys = ["{line}"]\n')
    r = local.cli("check", "-p", str(local.policy), "--json")
    assert r.code == 0, r.err
    (row,) = [c for c in r.json["policies"][0]["checks"] if c["check"] == "signing"]
    assert row["ok"] and f"signing key {tmp_path / 'signing.key'} loads (SHA256:" in row["detail"]
    assert "1 trusted key(s)" in row["detail"] and "not verified" not in r.err


def test_check_warns_when_the_signing_key_is_not_among_trusted_keys(local, tmp_path):
    keygen_signing(tmp_path / "signing.key")
    other = keygen_signing(tmp_path / "other.key")
    add_signing(local, f'key_file = "{tmp_path / "signing.key"}"\ntrusted_keys = ["{other}"]\n')
    r = local.cli("check", "-p", str(local.policy))
    assert r.code == 0 and "is not among [signing].trusted_keys" in r.out


@pytest.mark.parametrize("content", [None, "AGE-SECRET-KEY-1QQQQ\n", "pem"], ids=["missing", "age-identity", "pem"])
def test_check_fails_naming_a_signing_key_file_that_does_not_load(local, tmp_path, content):
    key = tmp_path / "signing.key"
    if content == "pem":
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    elif content is not None:
        key.write_text(content)
    add_signing(local, f'key_file = "{key}"\n')
    r = local.cli("check", "-p", str(local.policy), "--json")
    assert r.code == 3 and "Traceback" not in r.err
    (row,) = [c for c in r.json["policies"][0]["checks"] if c["check"] == "signing" and not c["ok"]]
    assert row["detail"].startswith(f"signing key {key}")
    assert ("does not exist" if content is None else "not an OpenSSH private key") in row["detail"]


def test_world_readable_signing_key_warns(local, tmp_path):
    key = tmp_path / "signing.key"
    keygen_signing(key)
    key.chmod(0o644)
    add_signing(local, f'key_file = "{key}"\n')
    r = local.cli("check", "-p", str(local.policy))
    assert r.code == 0 and f"signing key {key} is readable by other users; chmod 600 it" in r.err
    r = report(local, tmp_path / "r.md", "--sign-key", str(key))
    assert r.code == 0 and f"signing key {key} is readable by other users" in r.err


# -- reports ------------------------------------------------------------------------------------------------
@pytest.fixture
def signed(local, tmp_path):
    """A report signed with a `keygen --signing` key, and a policy that trusts that key."""
    line = keygen_signing(tmp_path / "signing.key")
    add_signing(local, f'trusted_keys = ["{line}"]\n')
    out = tmp_path / "r.md"
    r = report(local, out, "--sign-key", str(tmp_path / "signing.key"))
    assert r.code == 0, r.err
    return out


def test_report_signature_verifies_with_stock_ssh_keygen(signed, tmp_path, ssh_keygen):
    sig = signed.with_name("r.md.sig").read_text()
    assert sig.startswith("-----BEGIN SSH SIGNATURE-----\n")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("drtool " + (tmp_path / "signing.key.pub").read_text())
    with open(signed, "rb") as f:
        r = subprocess.run([ssh_keygen, "-Y", "verify", "-n", "drtool-report", "-f", str(allowed), "-I", "drtool",
                            "-s", f"{signed}.sig"], stdin=f, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_report_verify_with_policy_or_public_key(local, signed, tmp_path):
    r = run_cli("report", "verify", str(signed), "--policy", str(local.policy), env=local.env)
    assert r.code == 0, r.err
    assert f"{signed}: signature valid, signed by trusted key SHA256:" in r.out
    r = run_cli("report", "verify", str(signed), "--public-key", str(tmp_path / "signing.key.pub"), env=NO_POLICY_ENV)
    assert r.code == 0, r.err
    allowed = tmp_path / "allowed_signers"
    allowed.write_text('# auditors\nops@example.com namespaces="drtool-report" '
                       + (tmp_path / "signing.key.pub").read_text())  # fmt: skip
    r = run_cli("report", "verify", str(signed), "--public-key", str(allowed), "--json", env=NO_POLICY_ENV)
    assert r.code == 0 and r.json["ok"] is True and r.json["format"] == "sshsig"


def test_report_verify_without_a_trusted_key_exits_2(signed):
    r = run_cli("report", "verify", str(signed), env=NO_POLICY_ENV)
    assert r.code == 2 and "no trusted key given" in r.err and "Traceback" not in r.err


def test_report_resigned_by_another_key_fails_with_policy(local, signed, tmp_path):
    keygen_signing(tmp_path / "attacker.key")
    signed.write_text(signed.read_text().replace("NOT compliant", "compliant"))
    signed.with_name("r.md.sig").unlink()
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "drtool-report", "-f", str(tmp_path / "attacker.key"),
                    str(signed)], check=True, capture_output=True)  # fmt: skip
    r = run_cli("report", "verify", str(signed), "--policy", str(local.policy), env=local.env)
    assert r.code == 3 and "Traceback" not in r.err
    assert f"{signed}: not trusted: signed by key SHA256:" in r.err and "which is not a trusted key" in r.err


def test_report_changed_after_signing_fails(local, signed):
    signed.write_text(signed.read_text() + "tampered\n")
    r = run_cli("report", "verify", str(signed), "--policy", str(local.policy), env=local.env)
    assert r.code == 3 and f"{signed}: not trusted: the signature does not match the data" in r.err


@pytest.mark.parametrize(
    "sig", [None, "garbage\n", "-----BEGIN SSH SIGNATURE-----\nAAAA\n"], ids=["missing", "text", "truncated"]
)
def test_report_with_missing_or_garbage_signature_fails_naming_it(local, signed, sig):
    path = signed.with_name("r.md.sig")
    if sig is None:
        path.unlink()
    else:
        path.write_text(sig)
    r = run_cli("report", "verify", str(signed), "--policy", str(local.policy), env=local.env)
    assert r.code == 3 and f"{signed}: not trusted: " in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_policy_without_trusted_keys_cannot_verify_a_report(local, tmp_path):
    keygen_signing(tmp_path / "k")
    out = tmp_path / "r.md"
    assert report(local, out, "--sign-key", str(tmp_path / "k")).code == 0
    r = run_cli("report", "verify", str(out), "--policy", str(local.policy), env=local.env)
    assert r.code == 2 and "no [signing].trusted_keys" in r.err


def _old_signature(data: bytes, pem_key: bytes) -> dict:
    """A signature file as drtool 0.1 wrote it."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem_key, password=None)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"algorithm": "ed25519", "sha256": hashlib.sha256(data).hexdigest(),
            "signature": base64.b64encode(key.sign(data)).decode(), "public_key": base64.b64encode(pub).decode(),
            "key_fingerprint": "sha256:" + hashlib.sha256(pub).hexdigest()[:16]}  # fmt: skip


def test_old_json_signature_is_still_read_but_only_against_a_trusted_key(local, tmp_path):
    pem, pem_pub = tmp_path / "old.pem", tmp_path / "old.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(pem)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(pem), "-pubout", "-out", str(pem_pub)], check=True)
    out = tmp_path / "r.md"
    assert report(local, out).code == 0
    sig = _old_signature(out.read_bytes(), pem.read_bytes())
    out.with_name("r.md.sig").write_text(json.dumps(sig))
    ok = run_cli("report", "verify", str(out), "--public-key", str(pem_pub), env=NO_POLICY_ENV)
    assert ok.code == 0 and "signature valid" in ok.out and "old drtool signature format (deprecated" in ok.err
    # 0.1 trusted the key inside the signature file when no key was given: no longer
    assert run_cli("report", "verify", str(out), env=NO_POLICY_ENV).code == 2
    # an old-format signature by a key the policy does not trust fails
    add_signing(local, f'trusted_keys = ["{keygen_signing(tmp_path / "new.key")}"]\n')
    bad = run_cli("report", "verify", str(out), "--policy", str(local.policy), env=local.env)
    assert bad.code == 3 and "which is not a trusted key" in bad.err


def test_pem_sign_key_still_signs_in_ssh_format_with_a_deprecation_warning(local, tmp_path):
    pem = tmp_path / "old.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(pem)], check=True)
    out = tmp_path / "r.md"
    r = report(local, out, "--sign-key", str(pem))
    assert r.code == 0 and "PEM signing keys are deprecated" in r.err
    assert out.with_name("r.md.sig").read_text().startswith("-----BEGIN SSH SIGNATURE-----")


def test_bad_sign_key_fails_before_writing_the_report(local, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("AGE-SECRET-KEY-1QQQQ\n")
    out = tmp_path / "r.md"
    r = report(local, out, "--sign-key", str(bad))
    assert r.code == 1 and f"signing key {bad}: not an OpenSSH private key" in r.err and "Traceback" not in r.err
    assert not out.exists()


# -- restore as an unprivileged role ------------------------------------------------------------------------
def _owners(pg, db: str) -> set[str]:
    rows = pg.psql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
                   "'information_schema')", db=db)  # fmt: skip
    return set(rows.splitlines())


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_restore_role_restores_as_a_non_superuser_that_owns_the_target(local, jobs):
    pg = local.pg
    role, db = f"app_{uuid.uuid4().hex[:8]}", f"restore_{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE ROLE {role} NOLOGIN NOSUPERUSER")
    pg.psql(f"CREATE DATABASE {db} OWNER {role}")
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    r = local.restore(db, "--role", role, "--jobs", jobs, "--json")
    assert r.code == 0, r.err
    assert r.json["role"] == role and r.json["no_owner"] is True
    assert _owners(pg, db) == {role}
    fn_owner = pg.psql("SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'add_one'", db=db)
    assert fn_owner == role


def test_restore_as_a_login_role_that_is_no_superuser_needs_no_owner(local):
    """The operator's case: the target server's own account, not a superuser."""
    pg = local.pg
    role, db = f"app_{uuid.uuid4().hex[:8]}", f"restore_{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE ROLE {role} LOGIN NOSUPERUSER PASSWORD '{pg.PASSWORD}'")
    pg.psql(f"CREATE DATABASE {db} OWNER {role}")
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    args = ("restore", "-p", str(local.policy), "--target", pg.dsn(db, user=role), "--target-password-env",
            "TEST_PGPASSWORD")  # fmt: skip
    plain = local.cli(*args)
    assert plain.code == 1 and "pg_restore failed" in plain.err and "Traceback" not in plain.err
    r = local.cli(*args, "--no-owner")
    assert r.code == 0, r.err
    assert _owners(pg, db) == {role}


def test_restore_role_that_does_not_exist_is_one_line_exit_1(local):
    db = local.target_db()
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    r = local.restore(db, "--role", "no_such_role_x")
    assert r.code == 1 and "Traceback" not in r.err
    assert 'role "no_such_role_x" does not exist' in r.err
