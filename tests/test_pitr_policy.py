"""[pitr] in the policy file, and WAL names (drtool/walnames.py): pure, no server."""

from __future__ import annotations

import pytest
from test_policy import VALID, problems, write

from drtool import walnames
from drtool.policy import load_policy

PITR = '\n[pitr]\nenabled = true\npgdata = "/var/lib/postgresql/15/main"\nspool_dir = "/var/spool/drtool"\n'


def test_pitr_is_off_by_default(tmp_path):
    p = load_policy(write(tmp_path, VALID))
    assert p.pitr.enabled is False and p.schedule.base is None


def test_pitr_archive_timeout_is_derived_from_the_rpo_and_capped_at_60s(tmp_path):
    p = load_policy(write(tmp_path, VALID + PITR))
    assert p.pitr.enabled and p.pitr.spool_dir == "/var/spool/drtool" and p.pitr.upload_workers == 4
    assert p.pitr.archive_timeout == min(p.rpo or 60, 60)
    p = load_policy(write(tmp_path, VALID + PITR + 'archive_timeout = "5s"\n'))
    assert p.pitr.archive_timeout == 5


@pytest.mark.parametrize(
    "extra, key",
    [
        ("\n[pitr]\nenabled = true\n", "pitr.pgdata"),
        ('\n[pitr]\nenabled = true\npgdata = "/d"\n', "pitr.spool_dir"),
        ('\n[pitr]\nenabled = true\npgdata = "/d"\nspool_dir = "/d/spool"\n', "pitr.spool_dir"),
        (PITR + "upload_workers = 0\n", "pitr.upload_workers"),
        (PITR + 'archive_timeout = "soon"\n', "pitr.archive_timeout"),
        (PITR.replace("enabled = true", "enabled = 1"), "pitr.enabled"),
        ("\n[pitr]\nwal_workers = 3\n", "pitr.wal_workers"),
    ],
)
def test_bad_pitr_settings_name_the_key(tmp_path, extra, key):
    found = problems(tmp_path, VALID + extra)
    assert any(f": {key}:" in p for p in found), found


def test_base_schedule_needs_pitr(tmp_path):
    text = VALID.replace("[schedule]\n", '[schedule]\nbase = "0 1 * * 0"\n')
    assert any("schedule.base" in p for p in problems(tmp_path, text))
    assert load_policy(write(tmp_path, text + PITR)).schedule.base == "0 1 * * 0"


def test_segment_names_round_trip_and_step_across_a_log_boundary():
    s = walnames.parse_segment("0000000100000016000000FF")
    assert s.timeline == 1 and s.name == "0000000100000016000000FF"
    assert s.next().name == "000000010000001700000000"
    assert walnames.segment_of(walnames.parse_lsn("16/B374D848"), 1).name == "0000000100000016000000B3"
    assert walnames.format_lsn(walnames.parse_lsn("16/B374D848")) == "16/B374D848"


@pytest.mark.parametrize(
    "name", ["", "0000000100000016000000B", "0000000100000016000000b3", "../../etc/passwd", "00000001.history.x",
             "000000010000001600001000", "000000000000001600000001", "00000000.history",
             "00000001000000160000003F.partial.zst"],
)  # fmt: skip
def test_names_postgresql_never_archives_are_refused(name):
    with pytest.raises(walnames.BadWalName):
        walnames.key_for("p", 1, name)


def test_each_kind_of_wal_file_has_one_key():
    assert walnames.key_for("p", 7, "00000002.history") == "p/wal/7/history/00000002.history.zst.age"
    key = walnames.key_for("p", 7, "000000010000001600000040.00000028.backup")
    assert key == "p/wal/7/0000000100000016/000000010000001600000040.00000028.backup.zst.age"
    assert walnames.name_of_key(key) == "000000010000001600000040.00000028.backup"
    assert walnames.kind_of("000000010000001600000040.partial") == "partial"
