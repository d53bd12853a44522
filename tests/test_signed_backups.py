"""Origin of backups and evidence, through the real CLI against real stores (a folder and
SeaweedFS): with [signing] every manifest, record and state object is signed on write, and with
trusted_keys nothing unsigned or wrongly signed is restored, counted, pruned or believed."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest
from helpers import make_setup, run_cli
from services import need

from drtool.crypto import sshsig
from drtool.policy import load_policy
from drtool.storage import get_bytes, open_store

pytestmark = pytest.mark.integration

EVIL_SQL = "CREATE TABLE customers (id int, name text); INSERT INTO customers VALUES (1, 'planted');"


def keygen_signing(path) -> str:
    r = run_cli("keygen", "--signing", "--output", str(path))
    assert r.code == 0, r.err
    return r.out.strip()


def signed_setup(pg, tmp_path, storage_toml: str):
    line = keygen_signing(tmp_path / "signing.key")
    signing = f'\n[signing]\nkey_file = "{tmp_path / "signing.key"}"\ntrusted_keys = ["{line}"]\n'
    s = make_setup(pg, tmp_path, storage_toml, extra_toml=signing)
    s.signing_line = line
    return s


@pytest.fixture
def signed(pg, tmp_path, store_toml):
    """A policy that signs what it writes and trusts only its own key, on a folder and on S3."""
    if store_toml.startswith('[storage]\nurl = "file://'):
        (tmp_path / "store").mkdir(exist_ok=True)
    return signed_setup(pg, tmp_path, store_toml)


@pytest.fixture
def local(pg, tmp_path):
    return signed_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')


def store_of(setup):
    return open_store(load_policy(setup.policy).storage)


def policy_name(setup) -> str:
    return load_policy(setup.policy).name


def backup(setup, policy=None) -> str:
    r = setup.cli("backup", "-p", str(policy or setup.policy), "--json")
    assert r.code == 0, r.err
    return r.only["id"]


def listed(setup) -> dict[str, dict]:
    r = setup.cli("list", "-p", str(setup.policy), "--json")
    assert r.code == 0, r.err
    return {row["id"]: row for row in r.json["backups"]}


def plant(setup, tmp_path, signing_toml: str = "") -> str:
    """An attacker with write access to the bucket and the recipient (printed in every manifest):
    dumps another database, encrypts it to the recipient, commits it with a correct SHA-256 and
    size and a newer id; signed with the attacker's own key, or not at all."""
    evil = setup.pg.create_db(f"evil_{uuid.uuid4().hex[:8]}")
    setup.pg.psql(EVIL_SQL, db=evil)
    text = setup.policy.read_text().split("\n[signing]\n")[0].replace(f"/{setup.db}", f"/{evil}")
    attacker = tmp_path / "attacker.toml"
    attacker.write_text(text + signing_toml)
    return backup(setup, attacker)


def manifest_key(setup, backup_id: str) -> str:
    return f"{policy_name(setup)}/backups/{backup_id}.manifest.json"


def put(store, key: str, data: bytes) -> None:
    store.put(key, [data], size_hint=len(data))


def one_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.startswith("error:") or "Traceback" in x]
    assert "Traceback" not in err
    return lines[-1] if lines else err.strip().splitlines()[-1]


# -- the planted backup -------------------------------------------------------------------------------------
def test_planted_backup_is_untrusted_never_latest_never_pruned_and_restore_takes_the_genuine_one(signed, tmp_path):
    genuine = backup(signed)
    planted = plant(signed, tmp_path)  # its recovery point is newer: without trusted keys it would be "latest"

    rows = listed(signed)
    assert rows[genuine]["status"] == "ok"
    assert rows[planted]["status"] == "untrusted"
    assert manifest_key(signed, planted) in rows[planted]["error"]
    assert f"its signature {planted}.manifest.json.sig is missing" in rows[planted]["error"]

    target = signed.target_db()
    r = signed.restore(target, "--json")
    assert r.code == 0, r.err
    assert r.json["backup"] == genuine
    assert signed.pg.psql("SELECT count(*) FROM customers", db=target).strip() == "500"

    for cmd in (("restore", "--target", signed.pg.dsn(signed.target_db()), "--target-password-env",
                 "TEST_PGPASSWORD"), ("verify",)):  # fmt: skip
        r = signed.cli(*cmd, "-p", str(signed.policy), "--backup", planted)
        assert r.code == 3, (cmd, r.err)
        assert manifest_key(signed, planted) in one_line(r.err) and "not trusted" in one_line(r.err)

    signed.policy.write_text(signed.policy.read_text().replace("[objectives]", "[retention]\nkeep_last = 1\n\n"
                                                                                "[objectives]"))  # fmt: skip
    r = signed.cli("prune", "-p", str(signed.policy), "--json")
    assert r.code == 0, r.err
    assert [b["id"] for b in r.only["backups"]] == [genuine]  # the planted one counts for no rule
    assert [u["id"] for u in r.only["untrusted"]] == [planted]
    assert "evidence of tampering" in r.only["untrusted"][0]["reason"]
    assert store_of(signed).stat(manifest_key(signed, planted))  # still there

    r = signed.cli("status", "-p", str(signed.policy), "--json")
    doc = r.json["policies"][policy_name(signed)]
    assert r.code == 3 and doc["status"] == "unhealthy"
    assert manifest_key(signed, planted) in doc["components"]["origin"]


@pytest.mark.parametrize("how", ["attacker-key", "garbage", "genuine-sig-copied"])
def test_planted_manifest_with_a_wrong_signature_is_refused(local, tmp_path, how):
    genuine = backup(local)
    store = store_of(local)
    if how == "attacker-key":
        other = sshsig.parse_public_key(keygen_signing(tmp_path / "attacker.key"))
        planted = plant(local, tmp_path, f'\n[signing]\nkey_file = "{tmp_path / "attacker.key"}"\n')
        expected = f"signed by key {other.fingerprint}, which is not a trusted key"
    else:
        planted = plant(local, tmp_path)
        sig = (b"-----BEGIN SSH SIGNATURE-----\nnot base64 at all\n-----END SSH SIGNATURE-----\n"
               if how == "garbage" else get_bytes(store, manifest_key(local, genuine) + ".sig"))  # fmt: skip
        put(store, manifest_key(local, planted) + ".sig", sig)
        expected = "" if how == "garbage" else "does not match the data"
    r = local.restore(local.target_db(), "--backup", planted)
    assert r.code == 3
    line = one_line(r.err)
    assert manifest_key(local, planted) in line and "not trusted" in line and expected in line
    assert listed(local)[planted]["status"] == "untrusted"


@pytest.mark.parametrize("edit", ["row count", "size", "recovery point"])
def test_manifest_edited_after_signing_is_refused(local, edit):
    bid = backup(local)
    store, key = store_of(local), manifest_key(local, bid)
    doc = json.loads(get_bytes(store, key))
    if edit == "row count":
        doc["tables"]["public.orders"] = 1
    elif edit == "size":
        doc["sizes"]["plain_bytes"] += 1
    else:
        doc["recovery_point"] = "2099-01-01T00:00:00Z"
    put(store, key, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
    r = local.cli("verify", "-p", str(local.policy), "--backup", bid)
    assert r.code == 3
    assert key in one_line(r.err) and "does not match the data" in one_line(r.err)
    assert listed(local)[bid]["status"] == "untrusted"
    r = local.restore(local.target_db())  # the latest: there is no trusted one left
    assert r.code == 3 and "no trusted backup" in one_line(r.err)


def test_manifest_whose_signature_file_is_missing_is_refused(local):
    bid = backup(local)
    store = store_of(local)
    store.delete(manifest_key(local, bid) + ".sig")
    r = local.cli("verify", "-p", str(local.policy), "--backup", bid)
    assert r.code == 3 and f"its signature {bid}.manifest.json.sig is missing" in one_line(r.err)


# -- key rotation ---------------------------------------------------------------------------------------------
def test_backup_by_a_key_removed_from_trusted_keys_is_untrusted_and_check_lists_it(local, tmp_path):
    old = backup(local)
    new_line = keygen_signing(tmp_path / "new.key")
    text = local.policy.read_text()
    both = text.replace(str(tmp_path / "signing.key"), str(tmp_path / "new.key")).replace(
        f'trusted_keys = ["{local.signing_line}"]', f'trusted_keys = ["{local.signing_line}", "{new_line}"]'
    )
    local.policy.write_text(both)  # rotation under way: both keys trusted
    new = backup(local)
    rows = listed(local)
    assert rows[old]["status"] == rows[new]["status"] == "ok"

    local.policy.write_text(both.replace(f'"{local.signing_line}", ', ""))  # the old key retired
    rows = listed(local)
    assert rows[new]["status"] == "ok" and rows[old]["status"] == "untrusted"
    assert "which is not a trusted key" in rows[old]["error"]
    r = local.cli("check", "-p", str(local.policy), "--json")
    assert r.code == 3
    origin = [c for c in r.json["policies"][0]["checks"] if c["check"] == "origin"]
    assert len(origin) == 1 and not origin[0]["ok"] and old in origin[0]["detail"]
    assert "not a trusted key" in origin[0]["detail"]


# -- evidence and state ---------------------------------------------------------------------------------------
def test_planted_damaged_check_record_is_ignored_and_restore_still_takes_the_latest(local):
    bid = backup(local)
    store = store_of(local)
    record = {"format": "drtool-check-record", "version": 1, "policy": policy_name(local), "backup_id": bid,
              "kind": "verify", "result": "damaged", "checked_at": "2099-01-01T00:00:00Z", "reason": "planted",
              "host": "x", "tool": {"name": "drtool", "version": "0"}}  # fmt: skip
    key = f"{policy_name(local)}/checks/{bid}/20990101T000000000000Z-abcdef.json"
    put(store, key, json.dumps(record).encode())
    r = local.restore(local.target_db(), "--json")
    assert r.code == 0, r.err
    assert r.json["backup"] == bid
    assert key in r.err and "ignored as evidence" in r.err


def test_unsigned_schedule_state_makes_status_unhealthy_naming_it(local):
    backup(local)
    store = store_of(local)
    key = f"{policy_name(local)}/state/schedule.json"
    put(store, key, json.dumps({"format": "drtool-schedule-state", "version": 1, "jobs": {}}).encode())
    r = local.cli("status", "-p", str(local.policy), "--json")
    doc = r.json["policies"][policy_name(local)]
    assert doc["status"] == "unhealthy" and key in doc["components"]["origin"]


def test_state_written_by_run_is_signed_and_trusted(local):
    local.policy.write_text(local.policy.read_text().replace("[objectives]", '[schedule]\nbackup = "* * * * *"\n\n'
                                                                             "[objectives]"))  # fmt: skip
    r = local.cli("run", str(local.policy), "--json")
    assert r.code == 0, r.err
    store = store_of(local)
    assert store.stat(f"{policy_name(local)}/state/schedule.json.sig")
    r = local.cli("status", "-p", str(local.policy), "--json")
    assert "origin" not in r.json["policies"][policy_name(local)]["components"]


def test_drill_record_edited_to_passed_is_ignored_by_report_and_status(pg, tmp_path, scratch_root, ssh_keygen):
    s = signed_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')
    s.env["TMPDIR"] = str(scratch_root)
    s.policy.write_text(s.policy.read_text() + '\n[drill]\nchecks = ["SELECT false"]\n')
    backup(s)
    r = s.cli("drill", "-p", str(s.policy), "--json")
    assert r.code == 3 and r.only["outcome"] == "failed", r.err
    store = store_of(s)
    key = f"{policy_name(s)}/drills/{r.only['drill_id']}.json"
    data = get_bytes(store, key)
    # stock OpenSSH verifies the drill record, as an auditor would
    assert ssh_verify(ssh_keygen, tmp_path, s.signing_line, "drtool-evidence", data, get_bytes(store, key + ".sig"))\
        .returncode == 0  # fmt: skip
    doc = json.loads(data)
    doc.update(passed=True, outcome="passed", failure=None)
    put(store, key, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")

    out = tmp_path / "report.json"
    r = s.cli("report", "-p", str(s.policy), "--format", "json", "-o", str(out))
    section = json.loads(out.read_text())["policies"][0]
    assert section["drills"]["passed"] == 0 and section["drills"]["run"] == 0
    assert not section["compliant"]
    assert any(key in reason and "ignored as evidence" in reason for reason in section["reasons"])
    assert key in r.err
    r = s.cli("status", "-p", str(s.policy), "--json")
    doc = r.json["policies"][policy_name(s)]
    assert doc["status"] == "unhealthy" and key in doc["components"]["origin"]


# -- verify's wording ------------------------------------------------------------------------------------------
def test_verify_names_what_it_proved_origin_only_with_a_trusted_signature(local, tmp_path):
    bid = backup(local)
    fingerprint = sshsig.parse_public_key(local.signing_line).fingerprint
    r = local.cli("verify", "-p", str(local.policy), "--json")
    assert r.code == 0, r.err
    entry = r.json["policies"][0]["backups"][0]
    assert entry["id"] == bid and entry["integrity"] and entry["authenticated"]
    assert entry["origin"] == {"signed_by": fingerprint}
    assert f"origin (manifest signed by trusted key {fingerprint})" in entry["proved"]
    text = local.cli("verify", "-p", str(local.policy)).out
    assert "integrity (SHA-256" in text and "decryptability" in text and "origin (manifest signed by" in text

    local.policy.write_text(local.policy.read_text().split("trusted_keys")[0])  # no trusted keys on this host
    r = local.cli("verify", "-p", str(local.policy), "--json")
    entry = r.json["policies"][0]["backups"][0]
    assert r.code == 0 and entry["origin"] is None and "origin NOT verified" in entry["proved"]
    assert "origin (manifest signed" not in local.cli("verify", "-p", str(local.policy)).out


def test_without_trusted_keys_an_unsigned_backup_is_listed_as_before(pg, tmp_path):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')
    bid = backup(s)
    assert listed(s)[bid]["status"] == "ok"
    assert not list(store_of(s).list_objects(f"{policy_name(s)}/backups/{bid}.manifest.json.sig"))


# -- copies ------------------------------------------------------------------------------------------------------
def test_a_copy_manifest_is_signed_by_the_copying_host_and_listed_ok(local, tmp_path):
    (tmp_path / "dr").mkdir()
    local.policy.write_text(local.policy.read_text().replace(
        "[objectives]", f'[[storage.copies]]\nname = "dr"\nurl = "file://{tmp_path}/dr"\n\n[objectives]'))  # fmt: skip
    bid = backup(local)
    r = local.cli("list", "-p", str(local.policy), "--target", "dr", "--json")
    assert r.code == 0, r.err
    assert [(b["id"], b["status"]) for b in r.json["backups"]] == [(bid, "ok")]
    assert (tmp_path / "dr" / policy_name(local) / "backups" / f"{bid}.manifest.json.sig").exists()


# -- stock OpenSSH -------------------------------------------------------------------------------------------
@pytest.fixture
def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    need(path is not None, "stock ssh-keygen (Debian package openssh-client)")
    return path


def ssh_verify(ssh_keygen, tmp_path, line: str, namespace: str, data: bytes, sig: bytes) -> subprocess.CompletedProcess:
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"drtool {line}\n")
    (tmp_path / "object.sig").write_bytes(sig)
    return subprocess.run([ssh_keygen, "-Y", "verify", "-n", namespace, "-f", str(allowed), "-I", "drtool",
                           "-s", str(tmp_path / "object.sig")], input=data, capture_output=True)  # fmt: skip


def test_stock_ssh_keygen_verifies_a_manifest_written_by_backup(local, tmp_path, ssh_keygen):
    bid = backup(local)
    store, key = store_of(local), manifest_key(local, bid)
    data, sig = get_bytes(store, key), get_bytes(store, key + ".sig")
    r = ssh_verify(ssh_keygen, tmp_path, local.signing_line, "drtool-manifest", data, sig)
    assert r.returncode == 0, r.stderr
    # the namespace binds it: a manifest's signature does not pass for evidence
    assert ssh_verify(ssh_keygen, tmp_path, local.signing_line, "drtool-evidence", data, sig).returncode != 0
    assert ssh_verify(ssh_keygen, tmp_path, local.signing_line, "drtool-manifest", data + b" ", sig).returncode != 0


def test_genuine_check_record_replayed_under_another_backup_does_not_clear_its_damage(local):
    a, b = backup(local), backup(local)
    store, name = store_of(local), policy_name(local)
    dump = f"{name}/backups/{a}.dump.zst.age"
    data = bytearray(get_bytes(store, dump))
    data[len(data) // 2] ^= 0xFF  # same size: only a re-read finds it
    put(store, dump, bytes(data))
    assert local.cli("verify", "-p", str(local.policy), "--backup", a).code == 3
    assert local.cli("verify", "-p", str(local.policy), "--backup", b).code == 0
    assert listed(local)[a]["status"] == "damaged"
    [ok_key] = [o.key for o in store.list_objects(f"{name}/checks/{b}/") if o.key.endswith(".json")]
    replayed = f"{name}/checks/{a}/29990101T000000000000Z-abcdef.json"  # newer than any finding
    put(store, replayed, get_bytes(store, ok_key))
    put(store, replayed + ".sig", get_bytes(store, ok_key + ".sig"))  # a genuine signature: it is genuine
    r = local.cli("list", "-p", str(local.policy), "--json")
    assert {row["id"]: row["status"] for row in r.json["backups"]}[a] == "damaged"
    assert replayed in r.err and "not of its folder" in r.err
