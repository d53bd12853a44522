"""What list and status say right after a base backup or a physical drill (issue 12 leftovers from a
blind runbook pass), against a real PostgreSQL 15 cluster archiving into the real S3 server."""

from __future__ import annotations

import pytest

from drtool import clock

pytestmark = pytest.mark.integration


def _no_index_warning(r, code: int = 0) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    assert "catalog index" not in r.err, r.err
    assert "Traceback" not in r.err


def test_base_backup_updates_the_catalog_index_so_list_and_status_do_not_warn(make_pitr):
    c = make_pitr()
    r = c.cli("backup", "--physical", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    base = r.only
    r = c.cli("list", "-p", str(c.policy), "--json")
    _no_index_warning(r)
    assert [b["id"] for b in r.json["backups"]] == [base["id"]]
    _no_index_warning(c.cli("status", "-p", str(c.policy)), 3)  # degraded: no drill yet


def test_physical_drill_updates_the_catalog_index(make_pitr, scratch_root):
    c = make_pitr()
    c.env["TMPDIR"] = str(scratch_root)
    assert c.cli("backup", "--physical", "-p", str(c.policy)).code == 0
    c.pg.psql("CREATE TABLE t (id int)")
    c.wait_archived(c.switch_wal())
    r = c.cli("drill", "--physical", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    _no_index_warning(c.cli("list", "-p", str(c.policy), "--json"))
    _no_index_warning(c.cli("status", "-p", str(c.policy)))


def test_window_right_after_the_first_base_backup_does_not_end_before_it_starts(make_pitr):
    c = make_pitr()
    r = c.cli("backup", "--physical", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    base = r.only
    r = c.cli("list", "-p", str(c.policy), "--json")
    assert r.code == 0, r.err
    [window] = r.json["windows"]
    assert window["earliest"] == base["physical"]["end_time"]
    assert window["latest"] is not None
    assert clock.parse_iso(window["earliest"]) <= clock.parse_iso(window["latest"]), window
