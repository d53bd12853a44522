"""scripts/bench --fleet: what everyday commands cost as a fleet grows (issue 15).

For each fleet size N (--policies 10,100,1000): N policies in one folder, all backing up one tiny
real database (one small table) into one store. `run` with every policy due (--jobs 4) makes each
policy's first real backup and `run` with nothing due follows; --real R makes R real backups per
policy in all (the others with `drtool backup`). Then for each B of --backups (5,100) the fleet is
grown to B backups per policy by replicating the real ones (scripts/fleet_replicate.py: objects
copied, manifests written under new ids by drtool's catalog code, index updated as a commit does)
and list, status, report and prune --dry-run run once each. On S3 the request floor follows:
status's requests (4 per policy) made by bare boto3 with nothing else (scripts/bench_floor.py),
what any reader of that layout pays on these cores.

Each command is timed from outside: wall seconds, CPU seconds of drtool's processes, peak memory
(PSS, and RSS) and, on S3, the CPU the S3 server spent (the floor on these shared cores) and the
number of store requests per policy. Every command is timed straight against SeaweedFS: the
counting proxy (tests/faultproxy.py in pass-through mode, pure Python) costs about a millisecond of
CPU a request and more for large listings, on the same two cores. Requests are counted by running
the same command again, through the proxy, on 20 of the policies (copies of their files pointing at
the proxy; the all-due tick on a sample fleet of its own, whose first backups it makes).
--proxied times every command through the proxy and counts them all, as the bench did before
2026-11-30 (--proxy-all-due is the older name).

The request floor is measured twice, straight against the store: status's requests made by bare
boto3 (request_floor), and the same requests made by the leanest client (request_floor_raw:
presigned URLs, urllib3, the C XML parser), which leaves the server's own cost and little else.

    scripts/bench --fleet [--policies 10,100] [--backups 5,100] [--real 2] [--stores s3,local]
                          [--jobs 4] [--compare-src DIR] [--json FILE]

--compare-src runs the idle tick and the report also with the drtool package of another checkout
(sys.path), on the same fleet and store: before/after a change.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import ROOT, SERVERS, timed
from faultproxy import FaultProxy
from fleet_replicate import replicate_fleet
from services import PgCluster, Seaweed, pg_bindir, tmpdir

from drtool.crypto import age

SCHEDULE = '[schedule]\nbackup = "0 0 * * *"\n[retention]\nkeep_last = 1000\n'
SAMPLE = 20  # policies of the sample fleet whose all-due tick is counted through the proxy


@dataclass
class Sample:
    """The sample fleet whose all-due tick is counted through the proxy, and the two endpoints."""

    folder: Path
    policies: int
    direct: str
    proxied: str


def fleet_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="scripts/bench --fleet")
    ap.add_argument("--policies", default="10,100", help="fleet sizes, comma-separated")
    ap.add_argument("--backups", default="5,100", help="backups per policy to measure the reads at, comma-separated")
    ap.add_argument("--real", type=int, default=2, help="real backups per policy (the rest are replicated)")
    ap.add_argument("--stores", default="s3,local", help="s3, local or both")
    ap.add_argument("--jobs", type=int, default=4, help="run --jobs for the all-due tick")
    ap.add_argument("--compare-src", help="another checkout whose idle tick to measure too")
    ap.add_argument(
        "--proxied",
        "--proxy-all-due",
        dest="proxied",
        action="store_true",
        help="time every command through the counting proxy, as the bench did before 2026-11-30",
    )
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
                if store == "s3":  # commands go straight to the store unless --proxied
                    endpoint = proxy.endpoint if args.proxied else weed.endpoint
                    url, extra = f"s3://{bucket}/n{n}", f'region = "us-east-1"\nendpoint_url = "{endpoint}"\n'
                else:
                    (work / f"store-{n}").mkdir(mode=0o700)  # what `drtool init` does
                    url, extra = f"file://{work}/store-{n}", ""
                folder = work / f"{store}-{n}"
                write_fleet(folder, n, pg.dsn("tiny"), url, extra, ident.recipient, key)
                sample = None
                if store == "s3" and not args.proxied:
                    sample = Sample(work / f"sample-{n}", min(n, SAMPLE), weed.endpoint, proxy.endpoint)
                    write_fleet(sample.folder, sample.policies, pg.dsn("tiny"), f"s3://{bucket}/sample{n}",
                                extra.replace(weed.endpoint, proxy.endpoint), ident.recipient, key)  # fmt: skip
                floor = ([sys.executable, str(Path(__file__).with_name("bench_floor.py")), endpoint, bucket,
                          f"n{n}", str(n)] if store == "s3" else None)  # fmt: skip
                for row in measure(folder, n, store, args, env, proxy if store == "s3" else None, floor, sample):
                    results.append(row)
                    print(render_row(row), file=sys.stderr, flush=True)
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


def measure(folder: Path, n: int, store: str, args, env: dict[str, str], proxy: FaultProxy | None,
            floor: list[str] | None = None, sample: Sample | None = None):  # fmt: skip
    """Rows, as they are measured: the two ticks, then the reads at each backup count, and on S3
    the request floor of a read (scripts/bench_floor.py: status's requests, made by bare boto3 and
    by the leanest client)."""
    drtool = [sys.executable, "-m", "drtool", "--quiet"]
    other = None
    if args.compare_src:  # the other checkout's package first on sys.path (-m would put the cwd first)
        src = str(Path(args.compare_src).resolve())
        boot = f"import runpy, sys; sys.path.insert(0, {src!r}); runpy.run_module('drtool', run_name='__main__')"
        other = [sys.executable, "-c", boot, "--quiet"]
    p = str(folder)

    counted = None  # copies of SAMPLE policy files pointing at the proxy: each command's requests are counted on them
    if sample and proxy:
        counted = folder.parent / f"counted-{n}"
        counted.mkdir()
        for f in sorted(folder.glob("*.toml"))[:SAMPLE]:
            (counted / f.name).write_text(f.read_text().replace(sample.direct, sample.proxied))

    def timer(row: dict):
        def run(name: str, argv: list[str], ok=(0,), prefix=drtool, count=True) -> None:
            if proxy and not counted:
                proxy.requests.clear()
            m = timed([*prefix, *argv], env, ok=ok)
            m = {k: round(v, 2) for k, v in m.items() if isinstance(v, float)}
            if proxy and not counted:
                m["requests"] = len(proxy.requests)
                m["requests_per_policy"] = round(len(proxy.requests) / n, 2)
            elif proxy and counted and count:  # the same command again, on the counted copies
                proxy.requests.clear()
                subprocess.run([*prefix, *(str(counted) if a == p else a for a in argv)], env=env,
                               stdout=subprocess.DEVNULL, check=False)  # fmt: skip
                k = min(n, SAMPLE)
                m.update(requests_per_policy=round(len(proxy.requests) / k, 2), requests_sampled=k, direct=True)
            row["commands"][name] = m

        return run

    row: dict = {"store": store, "policies": n, "backups_per_policy": 1, "real_backups_per_policy": 1, "commands": {}}
    run = timer(row)
    due = f"run_all_due_jobs{args.jobs}"
    run(due, ["run", "--jobs", str(args.jobs), p], count=False)  # backup 1 of each policy
    if sample and proxy:  # timed straight against the store: count the same tick's requests on the sample
        proxy.requests.clear()
        subprocess.run([*drtool, "run", "--jobs", str(args.jobs), str(sample.folder)], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        k = sample.policies
        row["commands"][due].update(requests_per_policy=round(len(proxy.requests) / k, 2), requests_sampled=k,
                                    direct=True)  # fmt: skip
    run("run_idle", ["run", p])
    if other:
        run("run_idle_compare_src", ["run", p], prefix=other)
    yield row
    for _ in range(args.real - 1):  # the other real backups, not measured
        subprocess.run([*drtool, "backup", "-p", p], env=env, check=True, stdout=subprocess.DEVNULL)
    for b in sorted(int(x) for x in args.backups.split(",")):
        t0 = time.perf_counter()
        made = replicate_fleet(folder, b)
        print(f"bench: {store} {n} policies: {made['replicated']} backups replicated from {made['real']} real ones "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
        row = {"store": store, "policies": n, "backups_per_policy": b, "real_backups_per_policy": args.real,
               "replicated_backups": made["replicated"], "commands": {}}  # fmt: skip
        run = timer(row)
        run("list_json", ["list", "-p", p, "--json"])
        run("status", ["status", "-p", p, "--json"], ok=(0, 3))  # 3: an objective is not met (no drill yet)
        out = folder.parent / f"report-{store}-{n}.json"
        report = ["report", "-p", p, "--format", "json", "--output", str(out)]
        run("report_json", report, ok=(0, 3))
        if other:
            run("report_json_compare_src", report, ok=(0, 3), prefix=other)
        run("prune_dry_run", ["prune", "-p", p, "--dry-run"])
        if floor:
            run("request_floor", floor, prefix=[], count=False)
            run("request_floor_raw", [*floor, "--raw"], prefix=[], count=False)
        yield row


def _size(row: dict) -> str:
    real = row.get("real_backups_per_policy", row["backups_per_policy"])
    size = f"{row['policies']} x {row['backups_per_policy']}"
    return size if real == row["backups_per_policy"] else f"{size} (replicated from {real} real)"


def render_row(row: dict) -> str:
    lines = [f"bench: {row['store']}, {row['policies']} policies x {row['backups_per_policy']} backups"
             + (f", replicated from {row['real_backups_per_policy']} real backups per policy"
                if row["backups_per_policy"] > row["real_backups_per_policy"] else "")]  # fmt: skip
    for name, m in row["commands"].items():
        req = f"{m['requests']:>7} req ({m['requests_per_policy']:.2f}/policy)" if "requests" in m else ""
        if "requests_sampled" in m:
            req = f"direct, {m['requests_per_policy']:.2f} req/policy (counted on {m['requests_sampled']})"
        lines.append(f"bench:   {name:<24} {m['seconds']:8.2f} s  cpu {m['cpu_s']:7.2f} s  "
                     f"peak {m['peak_mb']:6.1f} MB (RSS {m.get('peak_rss_mb', 0):6.1f})  "
                     f"s3 cpu {m.get('s3_cpu_s', 0):6.2f} s  {req}")  # fmt: skip
    return "\n".join(lines)


def render(results: list[dict]) -> str:
    out = [f"fleet bench, {os.cpu_count()} CPUs; seconds / CPU-s of drtool / peak PSS and RSS MB / CPU-s of the "
           "S3 server / store requests (S3)", ""]  # fmt: skip
    out.append("| store | policies x backups | command | wall s | CPU s | peak PSS MB | peak RSS MB | S3 server CPU s "
               "| requests | req/policy |")  # fmt: skip
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for row in results:
        for name, m in row["commands"].items():
            req = (m.get("requests", "–"), m.get("requests_per_policy", "–"))
            s3 = f"{m['s3_cpu_s']:.2f}" if row["store"] == "s3" and "s3_cpu_s" in m else "–"
            mem = f"{m['peak_mb']:.0f} | {m.get('peak_rss_mb', 0):.0f}"
            out.append(f"| {row['store']} | {_size(row)} | {name} | {m['seconds']:.2f} | {m['cpu_s']:.2f} | {mem} "
                       f"| {s3} | {req[0]} | {req[1]} |")  # fmt: skip
    return "\n".join(out)
