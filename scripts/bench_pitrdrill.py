"""scripts/bench --pitr-drill: the PITR drill row (issue 13 point 7), in one run on the same data.

A cluster archiving with `drtool wal push` (as tests/pitr_fixtures.py makes it) with
archive_timeout = 5s holds pgbench data of --scale in the policy's database. One base backup and
one logical dump are taken; then, under a steady write load (one row committed every --every
seconds into `bench_load`), each round runs `drtool drill --physical --json` and `drtool drill
--json` on the same policy. Per round: the physical drill's RTO (to promotion) and its phases,
its RPO from the replayed data, the logical drill's RTO and RPO, and the wall time of each
command seen from outside. --record FILE keeps the last physical drill record as printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg
from bench import ROOT, SERVERS, load_pgbench, timed
from pitr_fixtures import make_pitr_cluster, s3_storage_toml
from services import Seaweed, tmpdir


class WriteLoad:
    """One row committed every `every` seconds on the source, from its own connection."""

    def __init__(self, dsn: str, password: str, every: float) -> None:
        self.dsn, self.password, self.every = dsn, password, every
        self.stop_flag = threading.Event()
        self.rows = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, password=self.password, autocommit=True) as conn:
            while not self.stop_flag.is_set():
                conn.execute("INSERT INTO bench_load DEFAULT VALUES")
                self.rows += 1
                time.sleep(self.every)

    def __enter__(self) -> WriteLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=30)


def _drill(drtool: list[str], policy: Path, env: dict[str, str], work: Path, *extra: str) -> tuple[dict, float]:
    out = work / "drill.json"
    with open(out, "wb") as f:
        m = timed([*drtool, "drill", "-p", str(policy), "--json", *extra], env, stdout=f, ok=(0, 1, 3))
    (rec,) = json.loads(out.read_text())["drills"]
    return rec, m["seconds"]


def _row(rec: dict, wall: float) -> dict:
    return {"passed": rec["passed"], "failure": rec.get("failure"), "rto_seconds": rec["rto_seconds"],
            "rpo_seconds": rec["rpo_seconds"], "outside_wall_seconds": round(wall, 2),
            "phases": rec.get("phases"), "milestones": rec.get("milestones")}  # fmt: skip


def pitrdrill_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="scripts/bench --pitr-drill")
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--every", type=float, default=0.2, help="seconds between the write load's commits")
    ap.add_argument("--json", default=str(ROOT / ".bench" / "pitrdrill.json"))
    ap.add_argument("--record", default=None, help="write the last physical drill record here")
    args = ap.parse_args(argv)
    work = tmpdir("drtool-bench-pitrdrill-")
    os.chmod(work, 0o755)  # the scratch servers (TMPDIR) run as postgres
    weed = Seaweed(work / "weed")
    c = None
    try:
        weed.start()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        bucket = weed.make_bucket("drtool-bench-pitrdrill")
        c = make_pitr_cluster(s3_storage_toml(weed.endpoint, bucket, "bench"))
        SERVERS.update(postgres=c.pg.proc.pid, s3=weed.proc.pid)
        c.pg.psql("ALTER SYSTEM SET archive_timeout = 5")
        c.pg.psql("SELECT pg_reload_conf()")
        db = "bench"
        print(f"bench: loading pgbench scale {args.scale} into the policy's database {db}...", file=sys.stderr)
        size = load_pgbench(c.pg, db, args.scale, "random")
        c.policy.write_text(c.policy.read_text().replace(f'dsn = "{c.pg.dsn()}"', f'dsn = "{c.pg.dsn(db)}"'))
        c.pg.psql("CREATE TABLE bench_load (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())", db=db)
        db_bytes = size
        env = dict(os.environ, PGPASSWORD=c.pg.PASSWORD, TEST_PGPASSWORD=c.pg.PASSWORD, TMPDIR=str(work))
        drtool = [sys.executable, "-m", "drtool", "--quiet"]
        for what in (["backup", "--physical"], ["backup"]):
            timed([*drtool, *what, "-p", str(c.policy)], env)
        rounds = []
        last_physical = None
        with WriteLoad(c.pg.dsn(db), c.pg.PASSWORD, args.every) as load:
            time.sleep(15)  # a few archive_timeout switches under load
            for i in range(args.rounds):
                phys, phys_wall = _drill(drtool, c.policy, env, work, "--physical")
                logical, logical_wall = _drill(drtool, c.policy, env, work)
                last_physical = phys
                rounds.append({"physical": _row(phys, phys_wall), "logical": _row(logical, logical_wall)})
                print(f"bench:   round {i + 1}: physical RTO {phys['rto_seconds']} s RPO {phys['rpo_seconds']} s"
                      f" (wall {phys_wall:.1f} s); logical RTO {logical['rto_seconds']} s RPO "
                      f"{logical['rpo_seconds']} s (wall {logical_wall:.1f} s)", file=sys.stderr)  # fmt: skip
            rows_written = load.rows

        def med(kind: str, key: str) -> float | None:
            vals = [r[kind][key] for r in rounds if r[kind][key] is not None]
            return round(statistics.median(vals), 2) if vals else None

        results = {
            "scale": args.scale, "db_bytes": db_bytes, "rounds": rounds,
            "archive_timeout_seconds": 5, "write_every_seconds": args.every, "rows_written": rows_written,
            "median": {f"{k}_{m}": med(k, m) for k in ("physical", "logical") for m in
                       ("rto_seconds", "rpo_seconds", "outside_wall_seconds")},
        }  # fmt: skip
        if args.record and last_physical is not None:
            Path(args.record).write_text(json.dumps(last_physical, indent=2, sort_keys=True) + "\n")
    finally:
        if c is not None:
            c.stop()
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
