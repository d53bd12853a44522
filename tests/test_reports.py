"""status, report and metrics, built from a real store's evidence."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import pytest
from helpers import drill_setup, run_cli
from prometheus_client.parser import text_string_to_metric_families

from drtool.reports import text

pytestmark = pytest.mark.integration


def just_now() -> str:
    """A period start just before what the test does next (ISO 8601 UTC)."""
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat().replace("+00:00", "Z")


@pytest.fixture
def local(pg, tmp_path, scratch_root):
    return drill_setup(pg, tmp_path, scratch_root, '[drill]\nchecks = ["SELECT count(*) = 3000 FROM orders"]\n')


def test_empty_store_is_no_evidence_and_not_compliant(local, tmp_path):
    out = tmp_path / "r.json"
    r = local.cli("report", "-p", str(local.policy), "--format", "json", "-o", str(out))
    assert r.code == 0, r.err
    doc = json.loads(out.read_text())
    assert doc["compliant"] is False
    assert "no backups: there is no evidence" in doc["policies"][0]["reasons"]
    s = local.cli("status", "-p", str(local.policy), "--json")
    assert s.code == 3 and s.json["status"] == "unhealthy"
    assert "no complete backup" in s.json["policies"][local.db.replace("_", "-")]["reasons"]


def test_period_without_drills_is_not_compliant(local, tmp_path):
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    out = tmp_path / "r.md"
    r = local.cli("report", "-p", str(local.policy), "--format", "md", "-o", str(out))
    assert r.code == 0
    text = out.read_text()
    assert "NOT compliant" in text and "no restore drill ran in the period" in text


def test_report_with_real_backups_and_drills(local, tmp_path):
    evidence_from = just_now()
    for _ in range(2):
        assert local.cli("backup", "-p", str(local.policy)).code == 0
    assert local.cli("drill", "-p", str(local.policy)).code == 0
    out = tmp_path / "r.json"
    r = local.cli("report", "-p", str(local.policy), "--format", "json", "-o", str(out), "--from", evidence_from)
    assert r.code == 0, r.err
    doc = json.loads(out.read_text())
    p = doc["policies"][0]
    assert doc["compliant"] is True and p["compliant"] is True and p["reasons"] == []
    assert p["drills"]["run"] == 1 and p["drills"]["passed"] == 1 and p["drills"]["rto_last_seconds"] > 0
    assert len(p["inventory"]) == 2 and p["rpo"]["worst_seconds"] < 6 * 3600
    assert p["forecast"]["available"] is True and p["forecast"]["expected_rto_seconds"] > 0
    assert {e["control"] for e in doc["evidence_map"]} >= {"SOC 2 A1.3", "ISO 27001 A.8.13", "DORA art. 12"}
    # the SHA-256 printed and written beside the report is the file's
    import hashlib

    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert r.out.strip() == digest and (tmp_path / "r.json.sha256").read_text().startswith(digest)
    html_out = tmp_path / "r.html"
    assert local.cli("report", "-p", str(local.policy), "--format", "html", "-o", str(html_out)).code == 0
    page = html_out.read_text()
    assert page.count("<svg") == 3 and "<script" not in page and "http://" not in page and "https://" not in page


def test_corrupt_drill_record_is_reported_not_crashed_on(local, tmp_path):
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    assert local.cli("drill", "-p", str(local.policy)).code == 0
    drills = next((tmp_path / "store").rglob("drills"))
    (drills / "20260101T000000Z-badbad.json").write_text("{not json")
    out = tmp_path / "r.json"
    r = local.cli("report", "-p", str(local.policy), "--format", "json", "-o", str(out))
    assert r.code == 0 and "unreadable drill record" in r.err
    p = json.loads(out.read_text())["policies"][0]
    assert p["compliant"] is False and "1 drill record(s) could not be read" in p["reasons"]
    s = local.cli("status", "-p", str(local.policy), "--json")
    assert "drill_records" in s.json["components"] and "Traceback" not in s.err


def test_status_healthy_after_backup_and_drill_and_metrics_parse(local, tmp_path):
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    prom = tmp_path / "metrics" / "drtool.prom"
    prom.parent.mkdir()
    assert local.cli("drill", "-p", str(local.policy), "--metrics-file", str(prom)).code == 0
    s = local.cli("status", "-p", str(local.policy), "--json")
    assert s.code == 0, s.out
    assert s.json["status"] == "healthy" and s.json["components"]["database"] == "ok"
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    assert families["drtool_drill_success"].samples[0].value == 1.0
    # a backup and a passed drill, but the 90 days before the backup are covered by none
    assert families["drtool_compliant"].samples[0].value == 0.0
    assert families["drtool_rpo_objective_seconds"].samples[0].value == 6 * 3600
    assert families["drtool_last_backup_size_bytes"].samples[0].value > 0


def test_unwritable_metrics_folder_warns_and_the_job_still_succeeds(local, tmp_path):
    r = local.cli("backup", "-p", str(local.policy), "--metrics-file", "/proc/drtool/metrics.prom")
    assert r.code == 0 and "cannot write metrics file /proc/drtool/metrics.prom" in r.err


def test_signed_report_verifies_and_detects_changes(local, tmp_path):
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    key, pub = tmp_path / "sign.pem", tmp_path / "sign.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
    out = tmp_path / "r.md"
    assert (
        local.cli("report", "-p", str(local.policy), "--format", "md", "-o", str(out), "--sign-key", str(key)).code == 0
    )
    ok = run_cli("report", "verify", str(out), "--public-key", str(pub))
    assert ok.code == 0 and "signature valid" in ok.out
    out.write_text(out.read_text() + "tampered\n")
    bad = run_cli("report", "verify", str(out), "--public-key", str(pub))
    assert bad.code == 3 and "was changed" in bad.err
    assert not os.path.exists(str(out) + ".sig.tmp")


def test_html_report_renders_in_headless_chromium_without_network(local, tmp_path):
    """The page opens in a real browser, and the browser asks the network for nothing: every
    request would have to pass a proxy we run, and the proxy sees no connection."""
    import shutil
    import socket
    import threading

    from services import need

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    need(chromium is not None, "Chromium (Debian package chromium)")
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    assert local.cli("drill", "-p", str(local.policy)).code == 0
    page = tmp_path / "r.html"
    assert local.cli("report", "-p", str(local.policy), "--format", "html", "-o", str(page)).code == 0

    seen: list[bytes] = []
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(16)
    proxy.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = proxy.accept()
            except OSError:
                continue
            seen.append(conn.recv(200))
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    shot = tmp_path / "r.png"
    try:
        r = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
             f"--proxy-server=http://127.0.0.1:{proxy.getsockname()[1]}", "--proxy-bypass-list=<-loopback>",
             "--window-size=1280,2400", f"--screenshot={shot}", f"file://{page}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        stop.set()
        t.join()
        proxy.close()
    assert r.returncode == 0, r.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # a real rendering, not a blank page
    # and it prints: the PDF a reviewer files with the evidence (look at both when the layout changes)
    pdf = tmp_path / "r.pdf"
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
                        f"file://{page}"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert pdf.read_bytes().startswith(b"%PDF-") and pdf.read_bytes().count(b"/Type /Page") >= 1
    # Chromium itself phones home (clock, updates, accounts) whatever the page is; what must not
    # appear is any request on the page's behalf
    browser_own = ("google.com", "googleapis.com", "gvt1.com")
    hosts = [req.split(b" ")[1].decode(errors="replace") for req in seen if b" " in req]
    from_page = [h for h in hosts if not any(h.split("//")[-1].split("/")[0].split(":")[0].endswith(d)
                                              for d in browser_own)]  # fmt: skip
    assert from_page == [], f"the report made network requests: {from_page}"


def test_json_report_and_status_validate_against_documented_schemas(local, tmp_path):
    from pathlib import Path

    import jsonschema

    schemas = Path(__file__).resolve().parents[1] / "docs" / "schemas"
    for _ in range(2):
        assert local.cli("backup", "-p", str(local.policy)).code == 0
    assert local.cli("drill", "-p", str(local.policy)).code == 0
    out = tmp_path / "r.json"
    assert local.cli("report", "-p", str(local.policy), "--format", "json", "-o", str(out)).code == 0
    jsonschema.validate(json.loads(out.read_text()), json.loads((schemas / "report.schema.json").read_text()))
    st = local.cli("status", "-p", str(local.policy), "--json")
    jsonschema.validate(st.json, json.loads((schemas / "status.schema.json").read_text()))
    # and the schema is not a blank cheque: a report without its verdict is rejected
    doc = json.loads(out.read_text())
    del doc["policies"][0]["compliant"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, json.loads((schemas / "report.schema.json").read_text()))


def test_report_into_a_missing_folder_is_one_clear_error(local, tmp_path):
    r = local.cli("report", "-p", str(local.policy), "--format", "md", "-o", str(tmp_path / "no" / "r.md"))
    assert r.code == 2 and "cannot write" in r.err and "Traceback" not in r.err
    bad_key = tmp_path / "k.pub"
    bad_key.write_text("not a key")
    out = tmp_path / "r.md"
    assert local.cli("report", "-p", str(local.policy), "--format", "md", "-o", str(out)).code == 0
    (tmp_path / "r.md.sig").write_text('{"public_key": "", "signature": "", "sha256": "x"}')
    v = run_cli("report", "verify", str(out), "--public-key", str(bad_key))
    assert v.code in (2, 3) and "Traceback" not in v.err


def test_period_before_the_first_backup_counts_against_the_rpo(local, tmp_path):
    evidence_from = just_now()
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    assert local.cli("drill", "-p", str(local.policy)).code == 0
    first = local.cli("list", "-p", str(local.policy), "--json").json["backups"][0]
    # over the default 90 days the evidence covers minutes: not compliant, and the report says from when
    out = tmp_path / "r.json"
    r = local.cli("report", "-p", str(local.policy), "--format", "json", "-o", str(out))
    assert r.code == 0, r.err
    p = json.loads(out.read_text())["policies"][0]
    assert p["compliant"] is False
    assert p["rpo"]["uncovered"]["to"] == first["completed_at"] and p["rpo"]["worst_seconds"] > 89 * 86400
    assert any(x.startswith(f"no backup before {first['completed_at']}") for x in p["reasons"]), p["reasons"]
    md = tmp_path / "r.md"
    assert local.cli("report", "-p", str(local.policy), "--format", "md", "-o", str(md)).code == 0
    assert f"Evidence starts at {text.when(first['completed_at'])}" in md.read_text()
    # a period that starts just before the first backup is covered, and can be compliant
    r = local.cli("report", "-p", str(local.policy), "--format", "json", "-o", str(out), "--from", evidence_from)
    p = json.loads(out.read_text())["policies"][0]
    assert p["compliant"] is True, p["reasons"]
    assert p["rpo"]["uncovered"]["seconds"] < 6 * 3600


def test_fail_on_noncompliant_exits_3_only_when_not_compliant(local, tmp_path):
    evidence_from = just_now()
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    assert local.cli("drill", "-p", str(local.policy)).code == 0
    out = tmp_path / "r.md"
    args = ["report", "-p", str(local.policy), "--format", "md", "-o", str(out), "--fail-on-noncompliant"]
    r = local.cli(*args)
    assert r.code == 3 and "Traceback" not in r.err
    assert f"not compliant: {local.db.replace('_', '-')}" in r.err and out.exists()  # the report is written anyway
    ok = local.cli(*args, "--from", evidence_from)
    assert ok.code == 0, ok.err
