"""scripts/bench: measure drtool backup/restore against the stock tools (see scripts/bench)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from services import PgCluster, Seaweed, pg_bindir, tmpdir  # noqa: E402

from drtool.crypto import age  # noqa: E402


def session_procs(session: int):
    """/proc folders of the processes in a session, with their stat fields after the name."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:  # field 6 of stat: the session id
                yield d, fields
        except (OSError, ValueError, IndexError):
            continue


def tree_memory_mb(session: int) -> tuple[float, float]:
    """(PSS, RSS) summed over a process session, in MB. PSS splits shared pages fairly between
    the processes sharing them; RSS counts a shared page once per process (shared libraries,
    and a forked child's pages, count twice), so it overstates a process tree."""
    pss = rss = 0
    for d, _ in session_procs(session):
        try:
            for line in (d / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return pss / 1024, rss / 1024


SERVERS: dict[str, int] = {}  # name -> session id of a server whose CPU time we account for


def session_cpu_s(session: int) -> float:
    """CPU seconds used so far by a process session, reaped children included."""
    ticks = sum(sum(int(x) for x in fields[11:15]) for _, fields in session_procs(session))  # u/s/cu/cs time
    return ticks / os.sysconf("SC_CLK_TCK")


SAMPLE_EVERY = 0.1  # seconds between memory samples; each costs about 1.3 ms of CPU (a /proc walk),
# so 20 ms sampling took 5-10 % of a core from the command being timed on a 2-core machine


def timed(argv: list[str], env: dict[str, str], stdout=subprocess.DEVNULL, ok: tuple[int, ...] = (0,)) -> dict:
    """Wall seconds; peak memory in MB (the largest total PSS of all the processes the command
    started, sampled every SAMPLE_EVERY seconds); CPU seconds of the command's processes and of
    each server."""
    time.sleep(0.5)  # let earlier backends exit and be reaped, so their CPU is not counted here
    before = {name: session_cpu_s(sid) for name, sid in SERVERS.items()}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.PIPE, start_new_session=True)
    peak = peak_rss = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_rss
        while not done.is_set():
            pss, rss = tree_memory_mb(proc.pid)
            peak, peak_rss = max(peak, pss), max(peak_rss, rss)
            done.wait(SAMPLE_EVERY)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode not in ok:
        raise SystemExit(f"bench: {' '.join(argv[:3])} failed ({proc.returncode}): {err[-800:]}")
    out = {"seconds": wall, "peak_mb": peak, "peak_rss_mb": peak_rss, "cpu_s": usage.ru_utime + usage.ru_stime}
    time.sleep(0.5)  # the command's backends exit and are reaped into the postmaster's totals
    for name, sid in SERVERS.items():
        out[f"{name}_cpu_s"] = session_cpu_s(sid) - before[name]
    return out


def repeated(n: int, argv: list[str], env: dict[str, str], before=None, after=None, **kw) -> dict:
    """The run with the median wall time out of n (the machine is shared and noisy), with every
    run's seconds in "runs". before/after are called around each run (fresh restore targets)."""
    runs = []
    for _ in range(n):
        if before:
            before()
        runs.append(timed(argv, env, **kw))
        if after:
            after()
    runs.sort(key=lambda m: m["seconds"])
    out = dict(runs[len(runs) // 2])
    out["runs"] = [round(m["seconds"], 2) for m in runs]
    return out


def record(row: dict, name: str, m: dict) -> None:
    size = row["db_bytes"]
    row[name] = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in m.items()}
    row[name]["mb_per_s"] = round(size / 1e6 / m["seconds"], 1)
    servers = "  ".join(f"{k} {v:5.2f}" for k, v in m.items() if k.endswith("_cpu_s") and k != "cpu_s")
    print(
        f"bench:   {name:<22} {m['seconds']:6.2f} s  {m['peak_mb']:6.1f} MB (RSS {m['peak_rss_mb']:.1f})  "
        f"cpu {m['cpu_s']:5.2f} s  {servers}"
        f"  runs {m.get('runs')}",
        file=sys.stderr,
    )


def run_drill(drtool: list[str], policy: Path, env: dict[str, str], work: Path) -> dict:
    """One drill of the newest backup: its record's RTO and phases, the wall time seen from
    outside (process start to exit), and the overhead beyond the restore itself."""
    from drtool.clock import parse_iso

    out = work / "drill.json"
    with open(out, "wb") as f:
        m = timed([*drtool, "drill", "-p", str(policy), "--json"], env, stdout=f)
    (rec,) = json.loads(out.read_text())["drills"]  # one policy: one record
    ph = rec["phases"]
    recorded = (parse_iso(rec["completed_at"]) - parse_iso(rec["started_at"])).total_seconds()
    return {
        "passed": rec["passed"],
        "rto_seconds": rec["rto_seconds"],
        "phases": ph,
        "overhead_seconds": round(ph["provision"] + ph["verify"] + ph["teardown"], 2),
        "recorded_seconds": round(recorded, 2),
        "command_seconds": rec.get("command_seconds"),
        "outside_wall_seconds": round(m["seconds"], 3),
    }


def aws_cli() -> str | None:
    """The stock AWS CLI (v1, from PyPI) in its own virtualenv under .bench/, so that its pinned
    botocore does not touch drtool's; None if it cannot be installed (then its row is left out)."""
    venv = ROOT / ".bench" / "awscli"
    aws = venv / "bin" / "aws"
    if not aws.exists():
        print("bench: installing the stock AWS CLI into .bench/awscli...", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "awscli"], check=True, capture_output=True)
        except subprocess.CalledProcessError as e:
            print(f"bench: no AWS CLI, stock upload row skipped: {e.stderr.decode()[-300:]}", file=sys.stderr)
            return None
    return str(aws)


def load_pgbench(pg: PgCluster, db: str, scale: int, filler: str) -> int:
    env = dict(os.environ, PGPASSWORD=pg.PASSWORD)
    pg.create_db(db)
    conn = ["-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
    if filler == "blank":
        subprocess.run(
            [str(pg.bindir / "pgbench"), "-i", "-q", "-s", str(scale), *conn, db],
            check=True,
            env=env,
            capture_output=True,
        )
    else:
        subprocess.run(
            [str(pg.bindir / "pgbench"), "-i", "-q", "-I", "dt", "-s", str(scale), *conn, db],
            check=True,
            env=env,
            capture_output=True,
        )
        pg.psql(
            f"""
            INSERT INTO pgbench_branches SELECT g, 0, md5(random()::text) FROM generate_series(1, {scale}) g;
            INSERT INTO pgbench_tellers SELECT g, (g - 1) / 10 + 1, 0, md5(random()::text)
              FROM generate_series(1, {scale * 10}) g;
            INSERT INTO pgbench_accounts SELECT g, (g - 1) / 100000 + 1, 0,
              md5(random()::text) || md5(random()::text) || left(md5(random()::text), 20)
              FROM generate_series(1, {scale * 100000}) g;""",
            db=db,
        )
        subprocess.run(
            [str(pg.bindir / "pgbench"), "-i", "-q", "-I", "vp", "-s", str(scale), *conn, db],
            check=True,
            env=env,
            capture_output=True,
        )
    pg.psql("CHECKPOINT")
    return int(pg.psql(f"SELECT pg_database_size('{db}')"))


def cpu_floor(row: dict) -> dict:
    """The least wall time any tool can take to dump, compress (zstd -1), encrypt (age) and upload
    this database to this S3 server on this machine: the CPU seconds the stock pipe spent in
    pg_dump, zstd, age and the database server, plus what the S3 server spent taking in the
    backup, spread perfectly over every core, with an upload client that costs nothing."""
    pipe = row["stock_pipe_null"]
    s3 = min(row[n]["s3_cpu_s"] for n in ("drtool_backup_s3", "stock_pipe_s3") if n in row)
    cpu = pipe["cpu_s"] + pipe["postgres_cpu_s"] + s3
    return {"cpu_s": round(cpu, 2), "s3_cpu_s": round(s3, 2), "seconds": round(cpu / os.cpu_count(), 2)}


RATIOS = {  # name: (numerator, denominator), each a row entry with its seconds
    "backup_vs_pg_dump_raw": ("drtool_backup_s3", "pg_dump_raw"),
    "backup_vs_pg_dump_zlib": ("drtool_backup_s3", "pg_dump_zlib_file"),
    "restore_vs_pg_restore": ("drtool_restore", "pg_restore_raw"),
    "restore_jobs2_vs_pg_restore": ("drtool_restore_jobs2", "pg_restore_raw"),
    "drill_rto_vs_pg_restore": ("drill", "pg_restore_raw"),
    "backup_vs_stock_pipe_s3": ("drtool_backup_s3", "stock_pipe_s3"),
    "floor_s3_vs_pg_dump_raw": ("floor", "pg_dump_raw"),
}


def ratios(row: dict) -> dict:
    """drtool against the stock commands; a row missing (no AWS CLI) leaves its ratio out."""

    def seconds(name: str) -> float:
        entry = row[name]
        return entry["rto_seconds"] if name == "drill" else entry["seconds"]

    return {k: round(seconds(a) / seconds(b), 2) for k, (a, b) in RATIOS.items() if a in row and b in row}


def shell(pipeline: str) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", pipeline]


def main() -> None:
    if "--fleet" in sys.argv[1:]:
        from bench_fleet import fleet_main

        return fleet_main([a for a in sys.argv[1:] if a != "--fleet"])
    if "--pitr" in sys.argv[1:]:
        from bench_pitr import pitr_main

        return pitr_main([a for a in sys.argv[1:] if a != "--pitr"])
    if "--pitr-drill" in sys.argv[1:]:
        from bench_pitrdrill import pitrdrill_main

        return pitrdrill_main([a for a in sys.argv[1:] if a != "--pitr-drill"])
    if "--physical" in sys.argv[1:]:
        from bench_physical import physical_main

        return physical_main([a for a in sys.argv[1:] if a != "--physical"])
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=50)
    ap.add_argument("--filler", choices=["random", "blank", "both"], default="both")
    ap.add_argument("--memory-scales", default="20,100", help="scales for the backup memory check ('' = skip)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per command; the median is reported")
    ap.add_argument("--json", default=str(ROOT / ".bench" / "results.json"))
    args = ap.parse_args()

    work = tmpdir("drtool-bench-")
    os.chmod(work, 0o755)
    pg = PgCluster(pg_bindir(), work / "pg")
    weed = Seaweed(work / "weed")
    results: dict = {"scale": args.scale, "repeat": args.repeat, "runs": [], "memory": []}
    try:
        pg.init()
        pg.start()
        weed.start()
        SERVERS.update(postgres=pg.proc.pid, s3=weed.proc.pid)
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        bucket = weed.make_bucket("drtool-bench")
        ident = age.Identity.generate()
        key = work / "key.txt"
        key.write_text(ident.encode() + "\n")
        key.chmod(0o600)
        env = dict(os.environ, PGPASSWORD=pg.PASSWORD, BENCH_PW=pg.PASSWORD)
        bindir = pg.bindir
        aws = aws_cli()
        drtool = [sys.executable, "-m", "drtool", "--quiet"]

        def policy_for(db: str) -> Path:
            p = work / f"{db}.toml"
            p.write_text(f"""name = "{db.replace("_", "-")}"
[database]
dsn = "{pg.dsn(db)}"
password_env = "BENCH_PW"
[storage]
url = "s3://{bucket}/bench"
region = "us-east-1"
endpoint_url = "{weed.endpoint}"
[encryption]
recipients = ["{ident.recipient}"]
identity_file = "{key}"
""")
            return p

        def local_policy_for(db: str) -> Path:
            p = work / f"{db}-local.toml"
            text = policy_for(db).read_text().replace(f'url = "s3://{bucket}/bench"', f'url = "file://{work}/store"')
            p.write_text(text.replace(f'endpoint_url = "{weed.endpoint}"\n', ""))
            (work / "store").mkdir(mode=0o700, exist_ok=True)  # what `drtool init` does; nothing else creates it
            return p

        fillers = ["random", "blank"] if args.filler == "both" else [args.filler]
        for filler in fillers:
            db = f"bench_{filler}_{args.scale}"
            print(f"bench: loading pgbench scale {args.scale} ({filler} filler)...", file=sys.stderr)
            size = load_pgbench(pg, db, args.scale, filler)
            policy = policy_for(db)
            conn = ["-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
            raw_file = work / f"{db}.Z0.dump"
            row: dict = {"filler": filler, "db_bytes": size}
            pg_dump, pg_restore = str(bindir / "pg_dump"), str(bindir / "pg_restore")
            target_pw = ["--target-password-env", "BENCH_PW"]

            n = args.repeat
            with open(os.devnull, "wb") as devnull:
                record(row, "pg_dump_raw", repeated(n, [pg_dump, "-Fc", "-Z0", *conn, db], env, stdout=devnull))
            zlib_file = str(work / "zlib.dump")
            record(
                row,
                "pg_dump_zlib_file",
                timed([pg_dump, "-Fc", "--no-sync", "-f", zlib_file, *conn, db], env),  # 10x slower: once
            )
            # The same job done by stock tools in a shell pipe: what any tool doing pg_dump, zstd,
            # age and an upload must at least spend on this machine.
            dump = shlex.join([pg_dump, "-Fc", "-Z0", *conn, db])
            pipe = f"{dump} | zstd -1 -T0 -q | age -r {ident.recipient}"
            record(row, "stock_pipe_null", repeated(n, shell(f"{pipe} >/dev/null"), env))
            if aws:
                up = shlex.join([aws, "s3", "cp", "--only-show-errors", "--endpoint-url", weed.endpoint, "-"])
                record(
                    row,
                    "stock_pipe_s3",
                    repeated(n, shell(f"{pipe} | {up} s3://{bucket}/stock/{db}"), env),
                )
            record(row, "drtool_backup_s3", repeated(n, [*drtool, "backup", "-p", str(policy)], env))
            # the same backup into a local folder: separates drtool's own cost from the S3 server's
            record(row, "drtool_backup_local", repeated(n, [*drtool, "backup", "-p", str(local_policy_for(db))], env))
            subprocess.run([pg_dump, "-Fc", "-Z0", "--no-sync", "-f", str(raw_file), *conn, db], env=env, check=True)
            restores = {
                "pg_restore_raw": [pg_restore, "--exit-on-error", *conn, str(raw_file), "-d"],
                "drtool_restore": [*drtool, "restore", "-p", str(policy), *target_pw, "--target"],
                "drtool_restore_jobs2": [
                    *drtool,
                    "restore",
                    "-p",
                    str(policy),
                    "--jobs",
                    "2",
                    *target_pw,
                    "--target",
                ],
            }
            for name, argv in restores.items():
                target = f"t_{name}_{filler}"

                def fresh_target(target=target) -> None:
                    pg.create_db(target)
                    pg.psql("CHECKPOINT")

                def drop_target(target=target) -> None:
                    pg.psql(f'DROP DATABASE "{target}"')

                last = target if name == "pg_restore_raw" else pg.dsn(target)
                record(row, name, repeated(n, [*argv, last], env, before=fresh_target, after=drop_target))
            row["drill"] = run_drill(drtool, policy, env, work)
            print(f"bench:   drill {row['drill']}", file=sys.stderr)
            raw_file.unlink()
            (work / "zlib.dump").unlink()
            row["floor"] = cpu_floor(row)
            row["ratios"] = ratios(row)
            results["runs"].append(row)
            pg.psql(f'DROP DATABASE "{db}"')

        for scale in [int(s) for s in args.memory_scales.split(",") if s.strip()]:
            db = f"mem_{scale}"
            print(f"bench: memory check, scale {scale} (random filler)...", file=sys.stderr)
            size = load_pgbench(pg, db, scale, "random")
            p = policy_for(db)
            m = timed([*drtool, "backup", "-p", str(p)], env)
            results["memory"].append(
                {"scale": scale, "db_bytes": size, "seconds": round(m["seconds"], 2), "peak_mb": round(m["peak_mb"], 1),
                 "peak_rss_mb": round(m["peak_rss_mb"], 1),
                 "drill": run_drill(drtool, p, env, work)}
            )  # fmt: skip
            pg.psql(f'DROP DATABASE "{db}"')
    finally:
        weed.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(render(results))


def render(results: dict) -> str:
    out = [
        f"pgbench scale {results['scale']}, {os.cpu_count()} CPUs, one run side by side, "
        f"median of {results.get('repeat', 1)} per command (zlib once)",
        "",
    ]
    names = [
        "pg_dump_raw",
        "pg_dump_zlib_file",
        "stock_pipe_null",
        "stock_pipe_s3",
        "drtool_backup_s3",
        "drtool_backup_local",
        "pg_restore_raw",
        "drtool_restore",
        "drtool_restore_jobs2",
    ]
    for row in results["runs"]:
        out.append(f"filler={row['filler']}  database {row['db_bytes'] / 1e6:.0f} MB")
        out.append(
            f"  {'command':<22} {'seconds':>8} {'MB/s':>8} {'peak PSS MB':>12} {'RSS MB':>7} {'CPU s: tool':>12} "
            f"{'postgres':>9} {'S3 server':>10}"
        )
        for n in names:
            if n not in row:
                continue
            r = row[n]
            out.append(
                f"  {n:<22} {r['seconds']:>8.2f} {r['mb_per_s']:>8.1f} {r['peak_mb']:>12.1f} {r['peak_rss_mb']:>7.1f} "
                f"{r['cpu_s']:>12.2f} "
                f"{r.get('postgres_cpu_s', 0):>9.2f} {r.get('s3_cpu_s', 0):>10.2f}"
            )
        out.append("  ratios: " + ", ".join(f"{k} {v}" for k, v in row["ratios"].items()))
        f = row["floor"]
        out.append(
            f"  floor for pg_dump|zstd|age|upload here: {f['cpu_s']:.2f} CPU-s (S3 server {f['s3_cpu_s']:.2f}) "
            f"/ {os.cpu_count()} cores = {f['seconds']:.2f} s, {row['ratios']['floor_s3_vs_pg_dump_raw']}x pg_dump_raw"
        )
        out.append("")
    for row in results["runs"]:
        d = row["drill"]
        out.append(
            f"drill ({row['filler']}): RTO {d['rto_seconds']:.2f} s vs pg_restore_raw "
            f"{row['pg_restore_raw']['seconds']:.2f} s ({row['ratios']['drill_rto_vs_pg_restore']}x); overhead "
            f"(provision+verify+teardown) {d['overhead_seconds']:.2f} s; recorded start..end "
            f"{d['recorded_seconds']:.2f} s; command {d['command_seconds']:.3f} s as recorded vs "
            f"{d['outside_wall_seconds']:.3f} s "
            f"outside ({100 * (d['outside_wall_seconds'] - d['command_seconds']) / d['outside_wall_seconds']:.1f}%); "
            f"phases {d['phases']}"
        )
    for m in results["memory"]:
        d = m["drill"]
        out.append(
            f"memory: scale {m['scale']} ({m['db_bytes'] / 1e6:.0f} MB) drtool backup "
            f"{m['seconds']:.2f} s, peak PSS {m['peak_mb']:.1f} MB (RSS {m['peak_rss_mb']:.1f}); "
            f"drill RTO {d['rto_seconds']:.2f} s, "
            f"overhead {d['overhead_seconds']:.2f} s"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
