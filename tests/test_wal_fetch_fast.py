"""`drtool wal fetch --spool` as restore_command (issue 12 target: replay speed): a segment read
ahead is served by the standard-library entry point (drtool/walget.py) with a rename; ONE
background read-ahead process (drtool/app/walahead.py) keeps the next segments downloaded; misses
and "not archived" always go to the store. Real PostgreSQL 15 archiving into the real S3 server."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drtool import walnames

SEG = 16 * 1024 * 1024

THIN = r"""
import sys
before = set(sys.modules)  # what the interpreter's start (site, an editable install's finder) loaded
sys.argv = ["drtool", "wal", "fetch", "--policy", sys.argv[1], "--spool", sys.argv[2], sys.argv[3], sys.argv[4]]
from drtool import entry
import os
real_exit = os._exit
def report(code):
    slow = ("pathlib", "uuid", "re", "enum", "contextlib", "typing", "tomllib", "click", "boto3", "botocore",
            "cryptography", "zstandard", "psycopg")
    print(code, ",".join(m for m in slow if m in sys.modules and m not in before) or "-", flush=True)
    real_exit(code)
os._exit = report
entry.main()
"""


def _hold_reader_lock(ahead: Path) -> int:
    """Stand in for a live read-ahead process (so the test starts none)."""
    fd = os.open(ahead / "reader.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_segment_read_ahead_is_served_by_a_rename_without_importing_pathlib_uuid_or_re(tmp_path):
    """restore_command runs once per segment while recovery waits: each import costs every segment."""
    spool = tmp_path / "spool"
    ahead = spool / "fetch"
    ahead.mkdir(parents=True)
    name = "000000010000000000000007"
    (ahead / name).write_bytes(b"w" * 4096)
    lock = _hold_reader_lock(ahead)
    try:
        dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
        dest.parent.mkdir()
        r = subprocess.run([sys.executable, "-c", THIN, str(tmp_path / "p.toml"), str(spool), name, str(dest)],
                           capture_output=True, text=True, check=True)  # fmt: skip
    finally:
        os.close(lock)
    assert r.stdout.split() == ["0", "-"], r.stderr
    assert dest.read_bytes() == b"w" * 4096 and not (ahead / name).exists()
    assert (ahead / "want").read_text().strip() == name  # the replay position, for the read-ahead


def _archive_segments(c, count: int) -> list[str]:
    names = []
    for _ in range(count):
        names.append(c.switch_wal())
        c.wait_archived(names[-1])
    return names


def _fetch(c, spool: Path, name: str, dest: Path, policy: Path | None = None):
    return c.cli("wal", "fetch", "-p", str(policy or c.policy), "--spool", str(spool), name, str(dest))


def _wait_read_ahead(ahead: Path, names: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all((ahead / n).exists() for n in names):
            return
        time.sleep(0.1)
    log = (ahead.parent / "read-ahead.log").read_text(errors="replace") if ahead.parent.exists() else ""
    raise AssertionError(f"read-ahead did not download {names} in {timeout}s; have {os.listdir(ahead)}; log: {log}")


def _spool(tmp_path: Path) -> Path:
    spool = tmp_path / "spool"
    (spool / "fetch").mkdir(parents=True)
    return spool


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_read_ahead_process_downloads_the_next_segments_and_they_are_served_with_the_store_down(
    make_pitr, tmp_path
):
    c = make_pitr(extra_pitr="prefetch = 3")
    names = _archive_segments(c, 4)
    spool = _spool(tmp_path)
    ahead = spool / "fetch"
    r = _fetch(c, spool, names[0], tmp_path / "first")
    assert r.code == 0, r.err
    _wait_read_ahead(ahead, names[1:4])
    assert (ahead / "reader.lock").read_text().split()[0].isdigit()
    broken = tmp_path / "broken.toml"
    text = c.policy.read_text()
    broken.write_text(text.replace(text.split('endpoint_url = "')[1].split('"')[0], "http://127.0.0.1:9"))
    reference = tmp_path / "reference"
    assert c.cli("wal", "fetch", "-p", str(c.policy), names[1], str(reference)).code == 0
    r = _fetch(c, spool, names[1], tmp_path / "second", policy=broken)  # the store is unreachable now
    assert r.code == 0, r.err
    assert _sha(tmp_path / "second") == _sha(reference) and (tmp_path / "second").stat().st_size == SEG
    assert not (ahead / names[1]).exists()
    r = c.cli("wal", "fetch", "-p", str(broken), "--spool", str(spool), "000000010000000000000FFF", str(tmp_path / "x"))
    assert r.code == 200, r.err  # a miss goes to the store: unreachable is 200, never 1
    assert "Traceback" not in r.err


def test_read_ahead_never_keeps_not_archived_a_segment_archived_later_is_found(make_pitr, tmp_path):
    c = make_pitr(extra_pitr="prefetch = 4")
    first = _archive_segments(c, 1)[0]
    spool = _spool(tmp_path)
    assert _fetch(c, spool, first, tmp_path / "first").code == 0
    nxt = walnames.parse_segment(first).next().name  # being written: not archived yet
    time.sleep(1.5)  # the read-ahead has asked the store for it meanwhile and been told "not there"
    r = _fetch(c, spool, nxt, tmp_path / "next")
    assert r.code == 1, r.err
    assert not (tmp_path / "next").exists()
    assert _fetch(c, spool, "00000009.history", tmp_path / "h").code == 1  # a probe, as recovery makes
    assert c.switch_wal() == nxt
    c.wait_archived(nxt)
    r = _fetch(c, spool, nxt, tmp_path / "next")
    assert r.code == 0, r.err
    assert (tmp_path / "next").stat().st_size == SEG


def test_concurrent_fetches_of_the_same_segment_all_get_the_whole_archived_file(make_pitr, tmp_path):
    c = make_pitr(extra_pitr="prefetch = 2")
    names = _archive_segments(c, 3)
    reference = tmp_path / "reference"
    assert c.cli("wal", "fetch", "-p", str(c.policy), names[1], str(reference)).code == 0
    spool = _spool(tmp_path)
    dests = [tmp_path / f"d{i}" for i in range(4)] + [tmp_path / "d0"] * 2  # two of them write the same file

    def fetch(dest: Path):
        return _fetch(c, spool, names[1], dest)

    with ThreadPoolExecutor(max_workers=len(dests)) as pool:
        results = list(pool.map(fetch, dests))
    assert [r.code for r in results] == [0] * len(dests), [r.err for r in results]
    for dest in set(dests):
        assert _sha(dest) == _sha(reference), dest
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert leftovers == []


def test_read_ahead_looks_at_its_folder_only_when_replay_moved_a_download_ended_or_a_retry_came_due():
    """Between those, a tick of the read-ahead loop is a stat: it shares the CPUs with PostgreSQL's redo."""
    from concurrent.futures import Future

    from drtool.app.walahead import RETRY, _Ahead

    state = _Ahead(4)
    state.idle("000000010000000000000007", 0.0)
    assert state.needs_look(0.0)  # a new replay position
    assert not state.needs_look(0.05)  # nothing changed since
    state.idle("000000010000000000000007", 0.1)
    assert not state.needs_look(0.1)  # the same position again
    done: Future = Future()
    done.set_result(False)  # not archived yet: asked again after RETRY
    state.in_flight["000000010000000000000008"] = done
    state.collect(0.2, lambda line: None)
    assert state.needs_look(0.2)  # a download ended
    assert not state.needs_look(0.2 + RETRY / 2)
    assert state.needs_look(0.2 + RETRY)  # its retry came due
    assert not state.needs_look(0.3 + RETRY)
    state.idle("000000010000000000000008", 5.0)
    assert state.needs_look(5.0)  # replay moved
