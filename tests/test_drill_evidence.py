"""Evidence that never overstates: every drill attempt leaves a record with its outcome, a key
that cannot open the backup is a failed drill, a drill stopped by the store is one that could
not run (neither a pass nor a failure), and status says when this host could not restore."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from helpers import drill_setup, make_setup

from drtool.crypto import age

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"


@pytest.fixture
def local(pg, tmp_path, scratch_root):
    return drill_setup(pg, tmp_path, scratch_root, '[drill]\nchecks = ["SELECT count(*) = 3000 FROM orders"]\n')


def just_now() -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat().replace("+00:00", "Z")


def report(setup, tmp_path, *extra: str) -> dict:
    out = tmp_path / "r.json"
    r = setup.cli("report", "-p", str(setup.policy), "--format", "json", "-o", str(out), *extra)
    assert r.code == 0, r.err
    return json.loads(out.read_text())["policies"][0]


def records(setup) -> list[dict]:
    found = sorted((setup.policy.parent / "store").rglob("drills/*.json"))
    return sorted((json.loads(p.read_text()) for p in found), key=lambda r: r["started_at"])


def test_drill_that_cannot_decrypt_is_a_recorded_failed_drill(local, tmp_path):
    since = just_now()
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    for _ in range(3):
        assert local.cli("drill", "-p", str(local.policy)).code == 0
    before = report(local, tmp_path, "--from", since)
    assert before["compliant"] is True and before["drills"]["passed"] == 3
    good_key = local.key.read_text()
    # the identity file is gone: the backup cannot be restored with the configured key
    local.key.unlink()
    r = local.cli("drill", "-p", str(local.policy), "--json")
    assert r.code == 3 and "Traceback" not in r.err
    assert r.only["outcome"] == "failed" and r.only["passed"] is False
    assert r.only["failure"] == f"identity: identity file {local.key} does not exist (encryption.identity_file)"
    assert [c["name"] for c in r.only["checks"] if c["ok"] is False] == ["identity"]
    # a wrong identity: the object is intact (its hash matches) but the key does not open it
    local.key.write_text(age.Identity.generate().encode() + "\n")
    local.key.chmod(0o600)
    r = local.cli("drill", "-p", str(local.policy), "--json")
    assert r.code == 3 and "Traceback" not in r.err
    assert r.only["outcome"] == "failed" and r.only["failure"].startswith("identity: ")
    assert "is encryption.identity_file the key for this backup?" in r.only["failure"]
    assert [x["outcome"] for x in records(local)] == ["passed"] * 3 + ["failed"] * 2
    after = report(local, tmp_path, "--from", since)
    assert after["compliant"] is False
    assert (after["drills"]["run"], after["drills"]["passed"], after["drills"]["failed"]) == (5, 3, 2)
    assert sum(x.startswith("drill ") and " failed: identity: " in x for x in after["reasons"]) == 2
    local.key.write_text(good_key)


def test_status_is_unhealthy_when_this_host_could_not_restore(local, tmp_path):
    import jsonschema

    assert local.cli("backup", "-p", str(local.policy)).code == 0
    assert local.cli("drill", "-p", str(local.policy)).code == 0
    name = local.db.replace("_", "-")
    ok = local.cli("status", "-p", str(local.policy), "--json")
    assert ok.code == 0 and ok.json["policies"][name]["components"]["restore"] == "ok"
    good_key = local.key.read_text()
    local.key.unlink()
    st = local.cli("status", "-p", str(local.policy), "--json")
    assert st.code == 3 and st.json["status"] == "unhealthy"
    restore = st.json["policies"][name]["components"]["restore"]
    assert restore == f"identity file {local.key} does not exist (encryption.identity_file)"
    assert f"restore: {restore}" in st.json["policies"][name]["reasons"]
    jsonschema.validate(st.json, json.loads((SCHEMAS / "status.schema.json").read_text()))
    assert local.cli("check", "-p", str(local.policy)).code != 0  # status and check now agree
    # a key that is there but opens none of the newest backup's recipients
    local.key.write_text(age.Identity.generate().encode() + "\n")
    local.key.chmod(0o600)
    st = local.cli("status", "-p", str(local.policy), "--json")
    assert st.code == 3 and st.json["status"] == "unhealthy"
    assert "matches none of the recipients of the newest backup" in st.json["policies"][name]["components"]["restore"]
    text = local.cli("status", "-p", str(local.policy))
    assert text.code == 3 and "restore: identity file" in text.out
    local.key.write_text(good_key)


def test_drill_stopped_by_an_unreachable_store_could_not_run(pg, tmp_path, scratch_root, fault_proxy,
                                                             proxied_s3_toml):  # fmt: skip
    s = make_setup(pg, tmp_path, proxied_s3_toml + "\nmax_attempts = 2",
                   extra_toml='[drill]\nchecks = ["SELECT count(*) = 3000 FROM orders"]\n')  # fmt: skip
    s.env["TMPDIR"] = str(scratch_root)
    since = just_now()
    assert s.cli("backup", "-p", str(s.policy)).code == 0
    fault_proxy.add("GET", r"dump\.zst\.age", "error")  # the store answers 503 to every read of the dump
    r = s.cli("drill", "-p", str(s.policy), "--json")
    assert r.code == 1, (r.out, r.err)
    assert "Traceback" not in r.err and "could not run: fetch: " in r.err
    rec = r.only
    assert rec["outcome"] == "could-not-run" and rec["passed"] is False and rec["failure"].startswith("fetch: ")
    assert fault_proxy.count("GET", r"dump\.zst\.age", "error 503") >= 1
    fault_proxy.clear()
    # the record is in the store; the report counts it neither as a failure nor as a drill that ran
    p = report(s, tmp_path, "--from", since)
    d = p["drills"]
    assert (d["run"], d["passed"], d["failed"], d["could_not_run"]) == (0, 0, 0, 1)
    assert [x["outcome"] for x in d["log"]] == ["could-not-run"]
    assert "no restore drill ran in the period" in p["reasons"] and not any(" failed: " in x for x in p["reasons"])
    md = tmp_path / "r.md"
    assert s.cli("report", "-p", str(s.policy), "--format", "md", "-o", str(md), "--from", since).code == 0
    assert "0 / 0 / 0 (1 could not run)" in md.read_text() and "could not run: fetch: " in md.read_text()
    # status: no drill ran (degraded), not a failed backup (which would be unhealthy)
    st = s.cli("status", "-p", str(s.policy), "--json").json["policies"][s.db.replace("_", "-")]
    assert st["status"] == "degraded" and st["last_drill"] is None
    assert any("could not run: fetch: " in x for x in st["reasons"]), st["reasons"]
    # once the store answers, a drill passes, and the earlier attempt still counts for nothing
    assert s.cli("drill", "-p", str(s.policy)).code == 0
    p = report(s, tmp_path, "--from", since)
    assert p["compliant"] is True and p["drills"]["could_not_run"] == 1, p["reasons"]
