"""scripts/bench --physical: base backup and point-in-time restore against the stock pipe, in one run.

Rows (median of --repeat): the stock `pg_basebackup -Ft -D - -X none | zstd -1 -T0 | age | upload`
(to /dev/null, and to S3 with the AWS CLI when it installs), `drtool backup --physical`; then, after
--wal-mb of pgbench WAL archived by `drtool wal push`, `drtool restore --pgdata --to-latest` and the
replay until promotion (pg_is_in_recovery() false), timed apart. The cluster archives like the test
clusters (tests/pitr_fixtures.py): archive_command runs drtool as the postgres user.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench import ROOT, SERVERS, aws_cli, load_pgbench, record, repeated, shell, timed
from pitr_fixtures import make_pitr_cluster, s3_storage_toml
from services import Seaweed, pg_bindir, tmpdir


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _wait_archived(c, timeout: float = 1800) -> None:
    name = c.switch_wal()
    c.wait_archived(name, timeout)


def _wal_load(c, db: str, megabytes: int) -> int:
    """Updates of pgbench_accounts (a twentieth of the rows each, one transaction per statement)
    until about `megabytes` of WAL exist after the base backup; returns the bytes written."""
    start = c.pg.psql("SELECT pg_current_wal_lsn()")
    i = 0
    while True:
        c.pg.psql(f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 20 = {i % 20}", db=db)
        i += 1
        done = int(c.pg.psql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start}')::bigint"))
        if done >= megabytes * 1e6:
            return done


def _restore_and_replay(c, work: Path, env: dict[str, str], drtool: list[str]) -> dict:
    target = work / f"restored-{uuid.uuid4().hex[:6]}"
    if os.geteuid() == 0:
        import pwd

        os.chown(c.key, pwd.getpwnam("postgres").pw_uid, -1)
    out = work / "restore.json"
    with open(out, "wb") as f:
        m = timed([*drtool, "restore", "-p", str(c.policy), "--pgdata", str(target), "--to-latest",
                   "--drtool", str(c.drtool), "--json"], env, stdout=f)  # fmt: skip
    r = json.loads(out.read_text())
    t0 = time.perf_counter()
    subprocess.run(shlex.split(r["start_command"]), check=True, capture_output=True, timeout=3600)
    psql = [str(pg_bindir() / "psql"), "-h", str(c.pg.sock), "-p", str(c.pg.port), "-U", "postgres", "-Atc",
            "SELECT pg_is_in_recovery()"]  # fmt: skip
    while subprocess.run(psql, capture_output=True, text=True).stdout.strip() != "f":
        time.sleep(0.2)
    replay = time.perf_counter() - t0
    subprocess.run(_as_postgres([str(pg_bindir() / "pg_ctl"), "-D", str(target), "stop", "-m", "fast"]),
                   capture_output=True)  # fmt: skip
    shutil.rmtree(target, ignore_errors=True)
    return {"restore_seconds": round(m["seconds"], 2), "restore_peak_mb": round(m["peak_mb"], 1),
            "replay_seconds": round(replay, 2), "total_seconds": round(m["seconds"] + replay, 2)}  # fmt: skip


def physical_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="scripts/bench --physical")
    ap.add_argument("--scale", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--wal-mb", type=int, default=1000, help="WAL to replay after the base backup")
    ap.add_argument("--json", default=str(ROOT / ".bench" / "physical.json"))
    args = ap.parse_args(argv)
    work = tmpdir("drtool-bench-phys-")
    os.chmod(work, 0o755)
    weed = Seaweed(work / "weed")
    c = None
    try:
        weed.start()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        bucket = weed.make_bucket("drtool-bench-phys")
        c = make_pitr_cluster(s3_storage_toml(weed.endpoint, bucket, "bench"))
        SERVERS.update(postgres=c.pg.proc.pid, s3=weed.proc.pid)
        db = f"bench_random_{args.scale}"
        print(f"bench: loading pgbench scale {args.scale} (random filler), archiving its WAL...", file=sys.stderr)
        size = load_pgbench(c.pg, db, args.scale, "random")
        _wait_archived(c)
        cluster_bytes = int(c.pg.psql("SELECT sum(pg_database_size(oid)) FROM pg_database"))
        row: dict = {"filler": "random", "db_bytes": cluster_bytes, "pgbench_db_bytes": size}
        env = dict(os.environ, PGPASSWORD=c.pg.PASSWORD, TEST_PGPASSWORD=c.pg.PASSWORD)
        drtool = [sys.executable, "-m", "drtool", "--quiet"]
        conn = ["-h", "127.0.0.1", "-p", str(c.pg.port), "-U", "postgres"]
        bb = shlex.join([str(c.pg.bindir / "pg_basebackup"), "-Ft", "-D", "-", "-X", "none", "-c", "fast", *conn])
        pipe = f"{bb} | zstd -1 -T0 -q | age -r {c.recipient}"
        n = args.repeat
        record(row, "stock_basebackup_null", repeated(n, shell(f"{pipe} >/dev/null"), env))
        aws = aws_cli()
        if aws:
            up = shlex.join([aws, "s3", "cp", "--only-show-errors", "--endpoint-url", weed.endpoint, "-"])
            record(row, "stock_basebackup_s3", repeated(n, shell(f"{pipe} | {up} s3://{bucket}/stock/base"), env))
        record(row, "drtool_base_backup_s3", repeated(n, [*drtool, "backup", "--physical", "-p", str(c.policy)], env))
        print(f"bench: writing about {args.wal_mb} MB of WAL with pgbench...", file=sys.stderr)
        row["wal_bytes"] = _wal_load(c, db, args.wal_mb)
        _wait_archived(c)
        c.stop()  # restores come from the store alone, on the same port
        row["drtool_restore_latest"] = _restore_and_replay(c, work, env, drtool)
        print(f"bench:   restore+replay {row['drtool_restore_latest']}", file=sys.stderr)
        if "stock_basebackup_s3" in row:
            row["ratio_base_vs_stock_pipe_s3"] = round(
                row["drtool_base_backup_s3"]["seconds"] / row["stock_basebackup_s3"]["seconds"], 2
            )
        results = {"scale": args.scale, "repeat": n, "physical": row}
    finally:
        if c is not None:
            c.stop()
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
