"""pg_dump's success is its exit status and a whole archive, never words on its stderr.
Each case runs a wrapper around the real pg_dump (backup.pg_bin_dir) against the real server."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from helpers import EXPECTED_ROWS, make_setup

from drtool.dumpscan import DamagedArchive, DumpScanner

pytestmark = pytest.mark.integration


def wrapped_pg_dump(setup, tmp_path, body: str) -> None:
    """Point the policy at a pg_dump wrapper; $REAL is the real one, --version passes through."""
    d = tmp_path / f"bin-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    script = d / "pg_dump"
    real = setup.pg.bindir / "pg_dump"
    script.write_text(f'#!/bin/bash\nREAL="{real}"\nif [ "$1" = --version ]; then exec "$REAL" "$@"; fi\n{body}\n')
    script.chmod(0o755)
    (d / "pg_restore").symlink_to(setup.pg.bindir / "pg_restore")
    setup.policy.write_text(setup.policy.read_text() + f'\n[backup]\npg_bin_dir = "{d}"\n')


@pytest.fixture
def local(pg, tmp_path):
    return make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')


def listed(setup) -> list[str]:
    r = setup.cli("list", "-p", str(setup.policy), "--json")
    assert r.code == 0, r.err
    return [b["id"] for b in r.json["backups"]]


def stored_files(tmp_path) -> list[str]:
    root = tmp_path / "store"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "/backups/" in str(p))


def test_error_on_stderr_with_exit_0_and_a_whole_archive_is_a_good_backup(local, tmp_path):
    wrapped_pg_dump(local, tmp_path, 'echo "pg_dump: error: not really, a table is named error_log" >&2\n'
                                     'exec "$REAL" "$@"')  # fmt: skip
    b = local.cli("backup", "-p", str(local.policy), "--json")
    assert b.code == 0, b.err
    assert listed(local) == [b.only["id"]]
    assert b.only["row_count_method"] == "dump-stream" and b.only["tables"] == EXPECTED_ROWS
    r = local.restore(local.target_db(), "--json")
    assert r.code == 0 and r.json["row_counts"]["mismatched"] == {}, r.err


def test_non_zero_exit_with_a_whole_archive_fails_the_backup(local, tmp_path):
    wrapped_pg_dump(local, tmp_path, '"$REAL" "$@"\necho "pg_dump: something went wrong" >&2\nexit 3')
    b = local.cli("backup", "-p", str(local.policy))
    assert b.code == 1 and "Traceback" not in b.err, b.err
    assert f"database 127.0.0.1:{local.pg.port}/{local.db}: pg_dump failed (exit 3)" in b.err
    assert listed(local) == [] and stored_files(tmp_path) == []


def test_truncated_archive_with_exit_0_fails_the_backup(local, tmp_path):
    wrapped_pg_dump(local, tmp_path, '"$REAL" "$@" | head -c 300000\nexit 0')
    b = local.cli("backup", "-p", str(local.policy))
    assert b.code == 1 and "Traceback" not in b.err, b.err
    assert "pg_dump exited 0, but its archive is not whole: archive ended in the middle of a record" in b.err
    assert listed(local) == [] and stored_files(tmp_path) == []


def test_archive_cut_between_data_blocks_is_damaged(pg):
    """A cut exactly at a block boundary leaves no partial record; the table of contents still
    announces the blocks that never came."""
    db = pg.create_db(f"cut_{uuid.uuid4().hex[:8]}")
    pg.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 10);", db=db)
    data = subprocess.run(
        [str(pg.bindir / "pg_dump"), "-Fc", "-Z0", "-h", str(pg.sock), "-p", str(pg.port), "-U", "postgres", db],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    whole = DumpScanner()
    whole.feed(data)
    toc_end = whole.finish().toc_end
    cut = DumpScanner()
    cut.feed(data[:toc_end])
    with pytest.raises(DamagedArchive, match="ended before 1 of its data blocks"):
        cut.finish()


def test_a_backup_leaves_no_warning_in_the_servers_log(local):
    """drtool's snapshot transaction was opened twice (psycopg's BEGIN, then its own): the server
    logged "WARNING: there is already a transaction in progress" for every backup."""
    log = local.pg.base / "postgres.log"
    before = log.stat().st_size
    assert local.cli("backup", "-p", str(local.policy)).code == 0
    with open(log, "rb") as f:
        f.seek(before)
        added = f.read().decode(errors="replace")
    assert [ln for ln in added.splitlines() if "WARNING" in ln or "ERROR" in ln] == []
