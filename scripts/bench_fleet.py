"""scripts/bench --fleet: what everyday commands cost as a fleet grows (issue 15).

For each fleet size N (--policies 10,100): N policies in one folder, all backing up one tiny real
database (one small table) into one store, B backups each (--backups 5). Then each command runs
once, timed from outside: wall seconds, CPU seconds of drtool's processes, peak memory (PSS) and,
on S3, the number of store requests (every request goes through tests/faultproxy.py in
pass-through mode, which counts them; its own cost, about a millisecond a request, is in the
wall time).

    scripts/bench --fleet [--policies 10,100] [--backups 5] [--stores s3,local] [--jobs 4]
                          [--compare-src /work/main] [--json FILE]

--compare-src runs the idle tick also with the drtool package of another checkout (PYTHONPATH),
on the same fleet and store: before/after a change.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench import ROOT, SERVERS, timed
from faultproxy import FaultProxy
from services import PgCluster, Seaweed, pg_bindir, tmpdir

from drtool.crypto import age

SCHEDULE = '[schedule]\nbackup = "0 0 * * *"\n[retention]\nkeep_last = 1000\n'


def fleet_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="scripts/bench --fleet")
    ap.add_argument("--policies", default="10,100", help="fleet sizes, comma-separated")
    ap.add_argument("--backups", type=int, default=5, help="backups per policy")
    ap.add_argument("--stores", default="s3,local", help="s3, local or both")
    ap.add_argument("--jobs", type=int, default=4, help="run --jobs for the all-due tick")
    ap.add_argument("--compare-src", help="another checkout whose idle tick to measure too")
    ap.add_argument("--json", default=str(ROOT / ".bench" / "fleet.json"))
    args = ap.parse_args(argv)

    work = tmpdir("drtool-fleet-")
    os.chmod(work, 0o755)
    pg = PgCluster(pg_bindir(), work / "pg")
    weed = Seaweed(work / "weed")
    proxy: FaultProxy | None = None
    results: list[dict] = []
    try:
        pg.init()
        pg.start()
        weed.start()
        proxy = FaultProxy(weed.endpoint).start()
        SERVERS.update(postgres=pg.proc.pid, s3=weed.proc.pid)
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        bucket = weed.make_bucket("drtool-fleet")
        pg.create_db("tiny")
        pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text);"
                "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g", db="tiny")  # fmt: skip
        ident = age.Identity.generate()
        key = work / "key.txt"
        key.write_text(ident.encode() + "\n")
        key.chmod(0o600)
        env = dict(os.environ, BENCH_PW=pg.PASSWORD)
        for store in args.stores.split(","):
            for n in [int(x) for x in args.policies.split(",")]:
                if store == "s3":
                    url, extra = f"s3://{bucket}/n{n}", f'region = "us-east-1"\nendpoint_url = "{proxy.endpoint}"\n'
                else:
                    (work / f"store-{n}").mkdir(mode=0o700)  # what `drtool init` does
                    url, extra = f"file://{work}/store-{n}", ""
                folder = work / f"{store}-{n}"
                write_fleet(folder, n, pg.dsn("tiny"), url, extra, ident.recipient, key)
                row = measure(folder, n, store, args, env, proxy if store == "s3" else None)
                results.append(row)
                print(render_row(row), file=sys.stderr)
    finally:
        if proxy:
            proxy.stop()
        weed.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(render(results))


def write_fleet(folder: Path, n: int, dsn: str, url: str, extra: str, recipient: str, key: Path) -> None:
    folder.mkdir()
    for i in range(n):
        (folder / f"p{i:05d}.toml").write_text(f"""name = "p{i:05d}"
[database]
dsn = "{dsn}"
password_env = "BENCH_PW"
[storage]
url = "{url}"
{extra}[encryption]
recipients = ["{recipient}"]
identity_file = "{key}"
[objectives]
rpo = "2d"
{SCHEDULE}""")


def measure(folder: Path, n: int, store: str, args, env: dict[str, str], proxy: FaultProxy | None) -> dict:
    drtool = [sys.executable, "-m", "drtool", "--quiet"]
    row: dict = {"store": store, "policies": n, "backups_per_policy": args.backups, "commands": {}}

    def run(name: str, argv: list[str], ok=(0,), prefix=drtool) -> None:
        if proxy:
            proxy.requests.clear()
        m = timed([*prefix, *argv], env, ok=ok)
        m = {k: round(v, 2) for k, v in m.items() if isinstance(v, float)}
        if proxy:
            m["requests"] = len(proxy.requests)
            m["requests_per_policy"] = round(len(proxy.requests) / n, 2)
        row["commands"][name] = m

    p = str(folder)
    run(f"run_all_due_jobs{args.jobs}", ["run", "--jobs", str(args.jobs), p])  # backup 1 of each policy
    run("run_idle", ["run", p])
    if args.compare_src:  # the other checkout's package first on sys.path (-m would put the cwd first)
        src = str(Path(args.compare_src).resolve())
        boot = f"import runpy, sys; sys.path.insert(0, {src!r}); runpy.run_module('drtool', run_name='__main__')"
        run("run_idle_compare_src", ["run", p], prefix=[sys.executable, "-c", boot, "--quiet"])
    for _ in range(args.backups - 1):  # the other backups, not measured
        subprocess.run([*drtool, "backup", "-p", p], env=env, check=True, stdout=subprocess.DEVNULL)
    run("list_json", ["list", "-p", p, "--json"])
    run("status", ["status", "-p", p, "--json"], ok=(0, 3))  # 3: an objective is not met (no drill yet)
    out = folder.parent / f"report-{store}-{n}.json"
    run("report_json", ["report", "-p", p, "--format", "json", "--output", str(out)], ok=(0, 3))
    run("prune_dry_run", ["prune", "-p", p, "--dry-run"])
    return row


def render_row(row: dict) -> str:
    lines = [f"bench: {row['store']}, {row['policies']} policies x {row['backups_per_policy']} backups"]
    for name, m in row["commands"].items():
        req = f"{m['requests']:>7} req ({m['requests_per_policy']:.2f}/policy)" if "requests" in m else ""
        lines.append(f"bench:   {name:<22} {m['seconds']:8.2f} s  cpu {m['cpu_s']:7.2f} s  "
                     f"peak {m['peak_mb']:6.1f} MB  {req}")  # fmt: skip
    return "\n".join(lines)


def render(results: list[dict]) -> str:
    out = [f"fleet bench, {os.cpu_count()} CPUs; seconds / CPU-s / peak PSS MB / store requests (S3)", ""]
    out.append("| store | policies x backups | command | wall s | CPU s | peak MB | requests | req/policy |")
    out.append("|---|---|---|---|---|---|---|---|")
    for row in results:
        for name, m in row["commands"].items():
            req = (m.get("requests", "–"), m.get("requests_per_policy", "–"))
            size = f"{row['policies']} x {row['backups_per_policy']}"
            out.append(f"| {row['store']} | {size} | {name} | {m['seconds']:.2f} | {m['cpu_s']:.2f} "
                       f"| {m['peak_mb']:.0f} | {req[0]} | {req[1]} |")  # fmt: skip
    return "\n".join(out)
