"""scripts/bench --pitr: the archiving targets of issue 12, in one run, on a throwaway PostgreSQL 15
cluster archiving with `drtool wal push` (+ `drtool wal daemon`) into a throwaway SeaweedFS (the
cluster of tests/pitr_fixtures.py):

- archiving keeps up: the peak `.ready` backlog during a write burst (pgbench -i with random
  filler), with the daemon, with `wal push` alone (synchronous uploads) and with `cp`;
- `wal push` of a file the daemon already acknowledged, as PostgreSQL runs it (ms, median).

Base backup and restore + replay rows are `scripts/bench --physical` (scripts/bench_physical.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bench import load_pgbench  # noqa: E402
from pitr_fixtures import make_pitr_cluster, s3_storage_toml  # noqa: E402
from services import Seaweed, tmpdir  # noqa: E402


class Sampler:
    """Samples a number every `every` seconds in a thread; keeps the peak."""

    def __init__(self, fn, every: float = 0.1):
        self.fn, self.every, self.peak = fn, every, 0.0
        self._done = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                self.peak = max(self.peak, self.fn())
            except OSError:
                pass
            self._done.wait(self.every)

    def __enter__(self) -> Sampler:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._t.join()


def _ready(c) -> int:
    return len(list((c.pg_wal / "archive_status").glob("*.ready")))


def _drain(c, timeout: float = 600) -> float:
    """Seconds until no `.ready` file is left (after a switch, so the last segment goes too)."""
    t0 = time.monotonic()
    c.switch_wal()
    while _ready(c):
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"bench: archiving did not drain in {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - t0


def _burst(c, name: str, scale: int) -> dict:
    """A write burst (pgbench -i, random filler) while sampling the .ready backlog."""
    db = f"burst_{name}"
    start_lsn = c.pg.psql("SELECT pg_current_wal_lsn()")
    t0 = time.monotonic()
    with Sampler(lambda: _ready(c)) as backlog:
        load_pgbench(c.pg, db, scale, "random")
        load_s = time.monotonic() - t0
        drain_s = _drain(c)
    wal = int(c.pg.psql(f"SELECT pg_current_wal_lsn() - '{start_lsn}'::pg_lsn"))
    c.pg.psql(f'DROP DATABASE "{db}"')
    row = {"peak_ready": int(backlog.peak), "load_s": round(load_s, 2), "drain_after_load_s": round(drain_s, 2),
           "wal_mb": round(wal / 1e6)}  # fmt: skip
    print(f"bench:   burst {name:<10} {row}", file=sys.stderr)
    return row


def _set_archive_command(c, command: str) -> None:
    c.pg.psql(f"ALTER SYSTEM SET archive_command = '{command}'")
    c.pg.psql("SELECT pg_reload_conf()")
    time.sleep(0.5)


def _start_daemon(c) -> subprocess.Popen:
    argv = [str(c.drtool), "wal", "daemon", "--policy", str(c.policy)]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "TEST_PGPASSWORD": c.pg.PASSWORD})  # fmt: skip
    deadline = time.monotonic() + 30
    while not (c.spool / "daemon.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _push_ack_ms(c, runs: int = 20) -> dict:
    """`wal push` of a file with an ack in the spool, as PostgreSQL runs it (postgres user): the
    ack is looked for before anything else, daemon or not, so this is the path of every segment
    the daemon uploaded ahead."""
    name = max(p.name for p in c.pg_wal.iterdir() if len(p.name) == 24)
    ack = c.spool / "ack" / f"{name}.ok"
    ack.parent.mkdir(exist_ok=True)
    ack.touch()
    if os.geteuid() == 0:
        shutil.chown(ack, "postgres")
    times = _timed_as_postgres(c, f"{c.drtool} wal push --policy {c.policy} pg_wal/{name}", runs)
    # the floor: the launcher's interpreter starting and doing nothing (its site, .pth files)
    interpreter = c.drtool.read_text().splitlines()[0][2:]
    floor = _timed_as_postgres(c, f"{interpreter} -c pass", runs)
    ack.unlink()
    row = {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1), "runs": runs,
           "interpreter_median_ms": round(statistics.median(floor), 1)}  # fmt: skip
    print(f"bench:   wal push (acknowledged) {row}", file=sys.stderr)
    return row


def _timed_as_postgres(c, command: str, runs: int) -> list[float]:
    """Milliseconds of each run of command, timed from a process of the postgres user, each run
    through `sh -c` as the archiver does (runuser around every run would add its own PAM session
    to each figure)."""
    harness = (
        "import json, subprocess, sys, time\n"
        "out = []\n"
        f"for _ in range({runs}):\n"
        "    t0 = time.perf_counter()\n"
        f"    r = subprocess.run(['sh', '-c', {command!r}], capture_output=True, text=True)\n"
        "    out.append((time.perf_counter() - t0) * 1000)\n"
        "    if r.returncode: sys.exit(r.stderr[-300:])\n"
        "print(json.dumps(out))\n"
    )
    argv = ["python3", "-c", harness]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=c.pg.data, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"bench: {command} failed: {r.stderr[-300:]}")
    return json.loads(r.stdout)


def pitr_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="scripts/bench --pitr")
    ap.add_argument("--burst-scale", type=int, default=20, help="pgbench scale of each write burst")
    ap.add_argument("--json", default=str(ROOT / ".bench" / "pitr-archiving.json"))
    args = ap.parse_args(argv)

    work = tmpdir("drtool-bench-pitr-")
    os.chmod(work, 0o755)
    weed = Seaweed(work / "weed")
    results: dict = {"burst_scale": args.burst_scale, "cpus": os.cpu_count()}
    c = daemon = None
    try:
        weed.start()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        bucket = weed.make_bucket("drtool-bench-pitr")
        c = make_pitr_cluster(s3_storage_toml(weed.endpoint, bucket, "pitr"), extra_pitr="upload_workers = 4")

        print("bench: archiving under a write burst...", file=sys.stderr)
        daemon = _start_daemon(c)
        results["burst_daemon"] = _burst(c, "daemon", args.burst_scale)
        _stop(daemon)  # its sweep removes acks of files no longer .ready: the one below is made by hand
        results["wal_push_acknowledged"] = _push_ack_ms(c)
        results["burst_push_only"] = _burst(c, "push_only", args.burst_scale)
        cp_dir = work / "cp-archive"
        cp_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(cp_dir, "postgres")
        _set_archive_command(c, f"test ! -f {cp_dir}/%f && cp %p {cp_dir}/%f")
        results["burst_cp"] = _burst(c, "cp", args.burst_scale)
    finally:
        if daemon is not None:
            _stop(daemon)
        if c is not None:
            c.stop()
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(render(results))


def render(r: dict) -> str:
    out = [f"PITR archiving bench: bursts of pgbench -i scale {r['burst_scale']} (random filler), {r['cpus']} CPUs",
           "peak .ready backlog during the burst (target <= 2 with the daemon)"]  # fmt: skip
    for k in ("burst_daemon", "burst_push_only", "burst_cp"):
        b = r[k]
        out.append(f"  {k[6:]:<10} peak {b['peak_ready']:>3}  load {b['load_s']:6.2f} s  "
                   f"drained {b['drain_after_load_s']:5.2f} s after  ({b['wal_mb']} MB of WAL)")  # fmt: skip
    p = r["wal_push_acknowledged"]
    out.append(f"wal push of an acknowledged file: median {p['median_ms']} ms, max {p['max_ms']} ms "
               f"(target <= 20 ms), {p['runs']} runs; the launcher's interpreter doing nothing: "
               f"median {p.get('interpreter_median_ms', '-')} ms")  # fmt: skip
    return "\n".join(out)
