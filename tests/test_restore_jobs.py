"""restore --jobs N: an archive whose table of contents cannot be read still restores (one job,
with a warning, memory bounded), and no temporary file outlives the command, even a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest
from helpers import make_setup

pytestmark = pytest.mark.integration

# drtool's CLI in a child process with the restore side's archive scanner made to fail, as it
# would on an archive version it does not know (the backup's own scanner runs unpatched).
PATCHED_CLI = """
import sys
import drtool.app.restore as restore
import drtool.dumpscan as dumpscan

if sys.argv[1] == "unknown-version":
    def refuse(self):
        raise dumpscan.UnsupportedArchive("archive version 1.99 is not understood")
    dumpscan.DumpScanner._parse_header = refuse
else:  # the scanner never finds the end of the table of contents, and never gives up either
    dumpscan.DumpScanner.feed = lambda self, data: None
    restore.TOC_CAPTURE_LIMIT = 256 << 10
from drtool.cli.main import main
main(sys.argv[2:])
"""


def child_env(setup, **extra: str) -> dict[str, str]:
    env = {**os.environ, **{k: v for k, v in setup.env.items() if v is not None}, **extra}
    for k, v in setup.env.items():
        if v is None:
            env.pop(k, None)
    return env


def restore_args(setup, target: str) -> list[str]:
    return ["restore", "-p", str(setup.policy), "--target", setup.pg.dsn(target),
            "--target-password-env", "TEST_PGPASSWORD", "--jobs", "2", "--json"]  # fmt: skip


@pytest.fixture
def setup(pg, tmp_path):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')
    b = s.cli("backup", "-p", str(s.policy))
    assert b.code == 0, b.err
    return s


@pytest.mark.parametrize(
    "fault, why",
    [("unknown-version", "archive version 1.99 is not understood"), ("no-toc", "no table of contents in the first")],
)
def test_parallel_restore_of_an_archive_it_cannot_read_falls_back_to_one_job(setup, fault, why):
    target = setup.target_db()
    r = subprocess.run([sys.executable, "-c", PATCHED_CLI, fault, *restore_args(setup, target)],
                       capture_output=True, text=True, env=child_env(setup), timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert f"cannot read the archive's table of contents ({why}" in r.stderr
    assert "restoring with one job instead of 2" in r.stderr
    assert '"mismatched": {}' in r.stdout
    # post-data was restored too: the primary key and the foreign key are there
    constraints = "SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype IN ('p', 'f')"
    assert setup.pg.psql(constraints, db=target) == "2"


def test_parallel_restore_builds_post_data_from_a_file_with_no_name(setup, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    target = setup.target_db()
    r = subprocess.run([sys.executable, "-m", "drtool", *restore_args(setup, target)],
                       capture_output=True, text=True, env=child_env(setup, TMPDIR=str(tmp)), timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "table of contents" not in r.stderr  # no fallback
    constraints = "SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype IN ('p', 'f')"
    assert setup.pg.psql(constraints, db=target) == "2"
    assert list(tmp.iterdir()) == []


def test_sigkilled_parallel_restore_leaves_no_toc_file(setup, tmp_path):
    """pg_restore is held (by a wrapper waiting for a file) at the start of post-data, when the
    table-of-contents file must exist; drtool is killed there with SIGKILL, which no handler sees."""
    tmp, bin_dir = tmp_path / "tmp", tmp_path / f"bin-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    bin_dir.mkdir()
    waiting, go = tmp_path / "waiting", tmp_path / "go"
    real = setup.pg.bindir / "pg_restore"
    wrapper = bin_dir / "pg_restore"
    wrapper.write_text(f'#!/bin/bash\nif [[ "$*" == *post-data* ]]; then touch "{waiting}"\n'
                       f'  while [ ! -e "{go}" ]; do sleep 0.1; done\nfi\nexec "{real}" "$@"\n')  # fmt: skip
    wrapper.chmod(0o755)
    setup.policy.write_text(setup.policy.read_text() + f'\n[backup]\npg_bin_dir = "{bin_dir}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "drtool", *restore_args(setup, setup.target_db())],
                            env=child_env(setup, TMPDIR=str(tmp)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    children: list[int] = []
    try:
        while not waiting.exists():
            assert proc.poll() is None, "restore ended before post-data"
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = [int(x) for x in f.read().split()]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        for pid in children:  # the held wrapper, by its PID
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        go.touch()  # lets a wrapper that was not found run on and end
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert list(tmp.iterdir()) == []
