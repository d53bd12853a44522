"""The command-line contract: JSON documents, check, progress on terminals only."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest
from helpers import make_setup

pytestmark = pytest.mark.integration


@pytest.fixture
def local(pg, tmp_path):
    return make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')


def test_json_documents_carry_schema_version_and_contract_fields(local):
    b = local.cli("backup", "-p", str(local.policy), "--json")
    assert b.code == 0, b.err
    assert b.json["schema_version"] == 2 and len(b.json["backups"]) == 1  # one shape for one policy or many
    doc = b.only
    for key in ("id", "policy", "recovery_point", "started_at", "completed_at", "sizes", "objects", "tables"):
        assert key in doc
    assert doc["recovery_point"].endswith("Z") and doc["started_at"] <= doc["completed_at"]

    listed = local.cli("list", "-p", str(local.policy), "--json").json
    assert listed["schema_version"] == 2
    assert set(listed["backups"][0]) >= {"id", "recovery_point", "started_at", "completed_at", "size_bytes"}

    v = local.cli("verify", "-p", str(local.policy), "--json").json
    assert v["schema_version"] == 2 and v["ok"] is True

    c = local.cli("check", "-p", str(local.policy), "--json")
    assert c.code == 0, c.err
    assert c.json["schema_version"] == 2
    assert {x["check"] for x in c.json["policies"][0]["checks"]} >= {
        "policy",
        "database",
        "pg_dump",
        "storage",
        "keys",
    }


def test_check_names_each_failing_part_and_exits_3(local, tmp_path):
    other = tmp_path / "other.key"
    other.write_text("AGE-SECRET-KEY-1QQQQ\n")
    text = local.policy.read_text().replace(f":{local.pg.port}/", ":1/").replace(str(local.key), str(other))
    local.policy.write_text(text)
    r = local.cli("check", "-p", str(local.policy), "--json")
    assert r.code == 3
    checks = {c["check"]: c for c in r.json["policies"][0]["checks"]}
    assert checks["database"]["ok"] is False and "127.0.0.1:1/" in checks["database"]["detail"]
    assert checks["keys"]["ok"] is False and str(other) in checks["keys"]["detail"]
    assert checks["storage"]["ok"] is True
    assert "Traceback" not in r.err


def test_check_warns_when_identity_matches_no_recipient(local, tmp_path):
    from drtool.crypto import age

    stranger = tmp_path / "stranger.key"
    stranger.write_text(age.Identity.generate().encode() + "\n")
    local.policy.write_text(local.policy.read_text().replace(str(local.key), str(stranger)))
    r = local.cli("check", "-p", str(local.policy))
    assert r.code == 3 and "matches none of encryption.recipients" in r.out


def _on_a_terminal(local, *args: str) -> tuple[int, str]:
    """Run drtool with stderr on a pseudo-terminal, as a person at a shell does; (exit code, stderr)."""
    primary, secondary = pty.openpty()
    env = {**os.environ, **{k: v for k, v in local.env.items() if v is not None}}
    env = {k: v for k, v in env.items() if k not in ("PGPASSWORD", "PGPASSFILE", "DRTOOL_POLICY")}
    proc = subprocess.Popen([sys.executable, "-m", "drtool", *args], stdout=subprocess.PIPE, stderr=secondary, env=env)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(primary)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_progress_is_drawn_on_a_terminal_only(local):
    # not a terminal (cron): no progress line
    quiet = local.cli("backup", "-p", str(local.policy))
    assert quiet.code == 0 and "\r" not in quiet.err and "/s" not in quiet.err
    # a terminal on stderr: the progress line appears
    code, shown = _on_a_terminal(local, "backup", "-p", str(local.policy))
    assert code == 0, shown
    assert "\r" in shown and "/s" in shown and "backup " in shown


def test_backup_progress_total_is_the_previous_backups_size_and_an_estimate_only_at_first(local):
    from drtool.durations import format_size

    code, first = _on_a_terminal(local, "backup", "-p", str(local.policy))
    assert code == 0, first
    # no previous backup: the database's on-disk size, marked as an estimate
    assert " of ~" in first, first
    previous = local.cli("list", "-p", str(local.policy), "--json").json["backups"][0]
    code, second = _on_a_terminal(local, "backup", "-p", str(local.policy))
    assert code == 0, second
    # the previous backup's plain dump size, which is what the line counts: no "~"
    assert f" of {format_size(previous['plain_bytes'])}" in second, second
    assert " of ~" not in second, second
