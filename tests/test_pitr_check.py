"""`drtool check` on a [pitr] policy checks the archiving prerequisites it can see (issue 12
leftovers), against real PostgreSQL 15 clusters archiving with `drtool wal push`."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.integration


def _pitr_rows(r) -> list[dict]:
    [policy] = r.json["policies"]
    return [c for c in policy["checks"] if c["check"] == "pitr"]


def test_check_passes_the_archiving_prerequisites_of_a_working_cluster(make_pitr):
    c = make_pitr()
    r = c.cli("check", "-p", str(c.policy), "--json")
    assert r.code == 0, (r.out, r.err)
    rows = _pitr_rows(r)
    assert len(rows) == 5 and all(x["ok"] and not x["detail"].startswith("warning") for x in rows), rows
    assert any("wal push" in x["detail"] for x in rows)


def test_check_names_a_missing_spool_and_an_archive_command_that_is_not_drtool(make_pitr):
    c = make_pitr(archive_command="/bin/true")
    shutil.rmtree(c.spool)
    r = c.cli("check", "-p", str(c.policy), "--json")
    assert r.code == 3, (r.code, r.out, r.err)
    assert "Traceback" not in r.err
    rows = _pitr_rows(r)
    [failed] = [x for x in rows if not x["ok"]]
    assert str(c.spool) in failed["detail"] and "No such file" in failed["detail"]
    [warned] = [x for x in rows if x["detail"].startswith("warning")]
    assert "'/bin/true' does not run 'drtool wal push" in warned["detail"]
    text = c.cli("check", "-p", str(c.policy))
    assert text.code == 3 and f"pitr.spool_dir {c.spool}" in text.out
