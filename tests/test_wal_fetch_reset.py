"""`drtool wal fetch` when the store resets the connection halfway through a segment's body (the
fault proxy's "reset"), against a real PostgreSQL 15 cluster archiving into the real S3 server:
the fetch resumes and writes the whole, verified segment, or exits 200 (never 0 with part of it,
never 1 "not archived"); the read-ahead process never leaves a partial segment that a later fetch
would serve. Both the full command (no --spool) and the read-ahead path (--spool) are covered."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from drtool import walnames
from drtool.policy import load_policy
from drtool.storage import open_store

pytestmark = pytest.mark.integration

SEG = 16 * 1024 * 1024


def _archive(c, count: int) -> list[str]:
    names = []
    for _ in range(count):
        c.pg.psql("INSERT INTO filler SELECT md5(random()::text) FROM generate_series(1, 20000)")  # a real body
        names.append(c.switch_wal())
        c.wait_archived(names[-1])
    return names


@pytest.fixture
def cluster(pitr):
    pitr.pg.psql("CREATE TABLE IF NOT EXISTS filler (t text)")
    return pitr


def _proxied(c, tmp_path: Path, endpoint: str) -> Path:
    text = c.policy.read_text()
    policy = tmp_path / "proxied.toml"
    policy.write_text(text.replace(text.split('endpoint_url = "')[1].split('"')[0], endpoint))
    return policy


def _stored_size(c, name: str) -> int:
    store = open_store(load_policy(c.policy).storage)
    return store.stat(walnames.key_for(c.policy_name, c.sysid(), name)).size


def _reset_halfway(proxy, c, name: str, *, for_ever: bool = False) -> None:
    """Reset the first GET of the segment halfway through its body; with for_ever, every later GET
    (the resumed, ranged ones) too, before any byte of the body (no progress: the reads give up)."""
    proxy.add("GET", rf"/{name}\.", "reset", after=_stored_size(c, name) // 2, times=1)
    if for_ever:
        proxy.add("GET", rf"/{name}\.", "reset", after=0)


def _reference(c, name: str, tmp_path: Path) -> str:
    """The segment's SHA-256, fetched straight from the store."""
    dest = tmp_path / f"reference-{name}"
    r = c.cli("wal", "fetch", "-p", str(c.policy), name, str(dest))
    assert r.code == 0, r.err
    assert dest.stat().st_size == SEG
    return _sha(dest)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _resets(proxy, name: str) -> int:
    return sum(
        1 for m, path, outcome in list(proxy.requests) if m == "GET" and name in path and outcome.startswith("reset")
    )


def _one_error_line(err: str, name: str) -> None:
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1 and f"wal fetch {name}" in lines[0], err
    assert "Traceback" not in err


def _no_partial(folder: Path) -> None:
    assert [n for n in os.listdir(folder) if n.endswith(".tmp")] == []


def test_wal_fetch_reset_halfway_resumes_and_writes_the_whole_verified_segment(cluster, tmp_path, fault_proxy):
    c = cluster
    name = _archive(c, 1)[0]
    want = _reference(c, name, tmp_path)
    policy = _proxied(c, tmp_path, fault_proxy.endpoint)
    _reset_halfway(fault_proxy, c, name)
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    r = c.cli("wal", "fetch", "-p", str(policy), name, str(dest))
    assert r.code == 0, r.err
    assert fault_proxy.count("GET", rf"/{name}\.", "reset (store said 200)") == 1  # the fault did hit it
    assert [rng for path, rng in fault_proxy.ranges if name in path]  # and the rest came by a ranged GET
    assert dest.stat().st_size == SEG and _sha(dest) == want
    _no_partial(dest.parent)


def test_wal_fetch_reset_every_time_exits_200_and_writes_nothing(cluster, tmp_path, fault_proxy):
    c = cluster
    name = _archive(c, 1)[0]
    policy = _proxied(c, tmp_path, fault_proxy.endpoint)
    _reset_halfway(fault_proxy, c, name, for_ever=True)
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    r = c.cli("wal", "fetch", "-p", str(policy), name, str(dest))
    assert r.code == 200, (r.code, r.err)  # never 0 with part of it, never 1 "not archived"
    _one_error_line(r.err, name)
    assert not dest.exists()
    _no_partial(dest.parent)


def test_read_ahead_reset_halfway_never_serves_a_partial_segment(cluster, tmp_path, fault_proxy):
    c = cluster
    names = _archive(c, 3)
    wants = {n: _reference(c, n, tmp_path) for n in names[1:]}
    policy = _proxied(c, tmp_path, fault_proxy.endpoint)
    _reset_halfway(fault_proxy, c, names[1])  # resumed: read ahead whole
    _reset_halfway(fault_proxy, c, names[2], for_ever=True)  # cannot be read ahead at all
    spool = tmp_path / "spool"
    ahead = spool / "fetch"
    ahead.mkdir(parents=True)
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()

    def fetch(name: str):
        return c.cli("wal", "fetch", "-p", str(policy), "--spool", str(spool), name, str(pg_wal / "RECOVERYXLOG"))

    assert fetch(names[0]).code == 0  # starts the read-ahead process, through the proxy
    try:
        _reads_ahead_whole_segments_only(c, names, wants, policy, spool, fault_proxy, fetch)
    finally:
        _stop_read_ahead(ahead)


def _stop_read_ahead(ahead: Path) -> None:
    """The read-ahead process this test started (its pid is in its lock file) would linger until idle."""
    try:
        os.kill(int((ahead / "reader.lock").read_text().split()[0]), signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        pass


def _reads_ahead_whole_segments_only(c, names, wants, policy, spool, fault_proxy, fetch) -> None:
    ahead, pg_wal = spool / "fetch", spool.parent / "pg_wal"
    deadline = time.monotonic() + 120
    while not (ahead / names[1]).exists() or _resets(fault_proxy, names[2]) < 7:  # it gave up on names[2] once
        assert time.monotonic() < deadline, (os.listdir(ahead), fault_proxy.requests[-5:])
        if (ahead / names[2]).exists():  # only a whole, verified segment is ever there
            assert _sha(ahead / names[2]) == wants[names[2]]
        time.sleep(0.1)
    assert _resets(fault_proxy, names[1]) == 1
    assert (ahead / names[1]).stat().st_size == SEG and _sha(ahead / names[1]) == wants[names[1]]
    assert not (ahead / names[2]).exists()  # a read-ahead that failed keeps nothing

    r = fetch(names[1])  # served from the read-ahead folder: the whole segment
    assert r.code == 0, r.err
    assert _sha(pg_wal / "RECOVERYXLOG") == wants[names[1]]
    r = fetch(names[2])  # not read ahead: asked of the store, which keeps resetting
    assert r.code == 200, (r.code, r.err)
    _one_error_line(r.err, names[2])
    assert _sha(pg_wal / "RECOVERYXLOG") == wants[names[1]]  # %p was not touched
    _no_partial(pg_wal)
    assert not (ahead / names[2]).exists()

    fault_proxy.clear()  # the store answers whole bodies again: the same request now succeeds
    r = fetch(names[2])
    assert r.code == 0, r.err
    assert _sha(pg_wal / "RECOVERYXLOG") == wants[names[2]]
