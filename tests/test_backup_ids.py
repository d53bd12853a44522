"""A malformed or malicious --backup id is bad usage (exit 2), named, before anything is touched."""

from __future__ import annotations

import pytest
from helpers import make_setup

from drtool.catalog import check_backup_id, new_backup_id
from drtool.clock import utcnow
from drtool.errors import UsageError

pytestmark = pytest.mark.integration

BAD_IDS = ["../../x", "a/b", "", "x" * 5000, "20261126T192000Z-3f9a1c/../../y", "latest", "20261126T192000Z-3F9A1C"]


@pytest.fixture(scope="module")
def setup(pg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ids")
    return make_setup(pg, tmp, f'[storage]\nurl = "file://{tmp}/store"')


@pytest.mark.parametrize("bad", BAD_IDS, ids=range(len(BAD_IDS)))
@pytest.mark.parametrize("command", ["restore", "verify", "drill"])
def test_malformed_backup_id_is_bad_usage_naming_it(setup, command, bad):
    extra = ["--target", setup.pg.dsn("postgres")] if command == "restore" else []
    r = setup.cli(command, "-p", str(setup.policy), "--backup", bad, *extra)
    assert r.code == 2, (r.code, r.err)
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert f"backup id {bad[:64]!r}" in r.err or f"backup id {bad[:64] + '...'!r}" in r.err, r.err
    assert len(r.err) < 300  # a 5000-character id is not echoed whole


def test_ids_drtool_makes_pass_the_check():
    made = new_backup_id(utcnow())
    assert check_backup_id(made) == made
    with pytest.raises(UsageError):
        check_backup_id(made + "\n")
