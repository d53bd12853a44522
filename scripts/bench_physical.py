"""scripts/bench --physical: base backup and point-in-time restore against the stock pipe and
pgBackRest, in one run.

Rows (median of --repeat): the stock `pg_basebackup -Ft -D - -X none | zstd -1 -T0 | age | upload`
(to /dev/null, and to S3 with the AWS CLI when it installs), `drtool backup --physical`, and, when
the `pgbackrest` binary is installed, a pgBackRest full backup (zstd level 1, aes-256-cbc, repo in a
local folder: pgBackRest's S3 client speaks only TLS and the bench's SeaweedFS serves plain HTTP);
then, after --wal-mb of pgbench WAL archived by `drtool wal push` (and `pgbackrest archive-push`),
`drtool restore --pgdata --to-latest` and the replay until promotion (pg_is_in_recovery() false),
timed apart, and the same with `pgbackrest restore` (archive-get async, its read-ahead). During each
replay the processes of the restore_command (and drtool's read-ahead) are sampled for peak RSS.
The cost of one `wal fetch` call is measured alone too: a segment read ahead served by the thin
entry point, the same through the full CLI (what every call cost before), and a miss.
"""

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


class ProcMemory:
    """Peak RSS of the processes whose command line contains all of `words`, sampled every 0.1 s
    from /proc: the largest single process and the largest sum at one instant, in MB."""

    def __init__(self, *words: str):
        self.words = [w.encode() for w in words]
        self.peak_one = self.peak_sum = 0.0
        self.seen: set[int] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.done.is_set():
            total = 0.0
            for d in Path("/proc").iterdir():
                if not d.name.isdigit():
                    continue
                try:
                    cmd = (d / "cmdline").read_bytes()
                    if not all(w in cmd for w in self.words):
                        continue
                    rss = next(int(ln.split()[1]) for ln in (d / "status").read_text().splitlines()
                               if ln.startswith("VmRSS:")) / 1024  # fmt: skip
                except (OSError, StopIteration, ValueError):
                    continue
                self.seen.add(int(d.name))
                total += rss
                self.peak_one = max(self.peak_one, rss)
            self.peak_sum = max(self.peak_sum, total)
            self.done.wait(0.1)

    def report(self) -> dict:
        return {"processes": len(self.seen), "peak_rss_one_mb": round(self.peak_one, 1),
                "peak_rss_sum_mb": round(self.peak_sum, 1)}  # fmt: skip


def _replay(start_command: list[str], c) -> float:
    """Start the restored server, seconds until it has promoted (out of recovery)."""
    t0 = time.perf_counter()
    subprocess.run(start_command, check=True, capture_output=True, timeout=3600)
    psql = [str(pg_bindir() / "psql"), "-h", str(c.pg.sock), "-p", str(c.pg.port), "-U", "postgres", "-Atc",
            "SELECT pg_is_in_recovery()"]  # fmt: skip
    while subprocess.run(psql, capture_output=True, text=True).stdout.strip() != "f":
        time.sleep(0.2)
    return time.perf_counter() - t0


def _no_archiving(target: Path) -> None:
    """A restored copy must not archive its new timeline into the archives the next restore reads."""
    with open(target / "postgresql.auto.conf", "a") as f:
        f.write("archive_mode = off\n")


def _stop_restored(target: Path) -> None:
    subprocess.run(_as_postgres([str(pg_bindir() / "pg_ctl"), "-D", str(target), "stop", "-m", "fast"]),
                   capture_output=True)  # fmt: skip
    shutil.rmtree(target, ignore_errors=True)


def _restore_and_replay(c, work: Path, env: dict[str, str], drtool: list[str]) -> dict:
    target = work / f"restored-{uuid.uuid4().hex[:6]}"
    out = work / "restore.json"
    with open(out, "wb") as f:
        m = timed([*drtool, "restore", "-p", str(c.policy), "--pgdata", str(target), "--to-latest",
                   "--drtool", str(c.drtool), "--json"], env, stdout=f)  # fmt: skip
    r = json.loads(out.read_text())
    _no_archiving(target)
    with ProcMemory(str(c.base), "wal") as mem:  # this cluster's wal fetch and read-ahead, not other hosts' drtool
        replay = _replay(shlex.split(r["start_command"]), c)
    log = Path(c.spool) / "read-ahead.log"
    _stop_restored(target)
    return {"restore_seconds": round(m["seconds"], 2), "restore_peak_mb": round(m["peak_mb"], 1),
            "restore_peak_rss_mb": round(m["peak_rss_mb"], 1), "replay_seconds": round(replay, 2),
            "total_seconds": round(m["seconds"] + replay, 2), "replay_memory": mem.report(),
            "read_ahead_log": log.read_text(errors="replace")[-600:] if log.exists() else ""}  # fmt: skip


# -- pgBackRest (Debian package `pgbackrest`), repo in a local folder ---------------------------------


class PgBackRest:
    def __init__(self, work: Path, c, binary: str):
        self.binary, self.c = binary, c
        self.repo, self.spool, self.logs = work / "pgbr-repo", work / "pgbr-spool", work / "pgbr-log"
        for d in (self.repo, self.spool, self.logs):
            d.mkdir(mode=0o750)
            _chown_postgres(d)
        self.conf = work / "pgbackrest.conf"
        self.conf.write_text(
            "[global]\n"
            f"repo1-path={self.repo}\nrepo1-retention-full=10\n"
            "repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=bench-not-a-secret-0123456789\n"
            "compress-type=zst\ncompress-level=1\nprocess-max=2\n"
            f"archive-async=y\nspool-path={self.spool}\nlog-path={self.logs}\nlock-path={self.spool}\n"
            "log-level-console=warn\nstart-fast=y\n"
            "[bench]\n"
            f"pg1-path={c.pg.data}\npg1-port={c.pg.port}\npg1-socket-path={c.pg.sock}\n"
        )
        self.conf.chmod(0o644)

    def argv(self, *args: str) -> list[str]:
        return _as_postgres([self.binary, f"--config={self.conf}", "--stanza=bench", *args])

    def archive_command(self) -> str:
        return f"{self.binary} --config={self.conf} --stanza=bench archive-push %p"

    def restore_and_replay(self, work: Path, env: dict[str, str]) -> dict:
        target = work / f"pgbr-restored-{uuid.uuid4().hex[:6]}"
        target.mkdir(mode=0o700)
        _chown_postgres(target)
        m = timed(self.argv(f"--pg1-path={target}", "--type=default", "restore"), env)
        _no_archiving(target)
        start = _as_postgres([str(pg_bindir() / "pg_ctl"), "-D", str(target), "-l", str(target / "restore.log"),
                              "start"])  # fmt: skip
        with ProcMemory(str(self.conf), "archive-get") as mem:
            replay = _replay(start, self.c)
        _stop_restored(target)
        return {"restore_seconds": round(m["seconds"], 2), "restore_peak_rss_mb": round(m["peak_rss_mb"], 1),
                "replay_seconds": round(replay, 2), "total_seconds": round(m["seconds"] + replay, 2),
                "replay_memory": mem.report()}  # fmt: skip


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _fetch_call_costs(c, work: Path, env: dict[str, str], seg: str, n: int = 10) -> dict:
    """Median milliseconds of one `wal fetch` as restore_command runs it (the launcher, as the
    postgres user): a segment read ahead through the thin entry point; the same through the full
    click CLI (every call before the thin path); a miss (a download by the full CLI)."""
    spool = work / "fetch-cost"
    (spool / "fetch").mkdir(parents=True)
    for d in (spool, spool / "fetch"):
        _chown_postgres(d)
    blob = os.urandom(16 * 1024 * 1024)
    dest = spool / "RECOVERYXLOG"
    holder = os.open(spool / "fetch" / "reader.lock", os.O_RDWR | os.O_CREAT, 0o644)
    import fcntl

    fcntl.flock(holder, fcntl.LOCK_EX)  # stands in for the read-ahead process: none is started here
    full_cli = [str(c.drtool.parent / "drtool-cli")]
    Path(full_cli[0]).write_text(c.drtool.read_text().replace("from drtool.entry import main",
                                                              "from drtool.cli.main import main"))  # fmt: skip
    Path(full_cli[0]).chmod(0o755)

    def median_ms(argv: list[str], prepare) -> float:
        times = []
        for _ in range(n):
            prepare()
            t0 = time.perf_counter()
            r = subprocess.run(_as_postgres(argv), env=env, capture_output=True)
            times.append((time.perf_counter() - t0) * 1000)
            if r.returncode != 0:
                raise SystemExit(f"bench: {argv[:4]} failed ({r.returncode}): {r.stderr[-400:]!r}")
        return round(sorted(times)[len(times) // 2], 1)

    def put_ahead() -> None:
        (spool / "fetch" / seg).write_bytes(blob)
        _chown_postgres(spool / "fetch" / seg)

    args = ["wal", "fetch", "--policy", str(c.policy), "--spool", str(spool), seg, str(dest)]
    try:
        return {"hit_thin_ms": median_ms([str(c.drtool), *args], put_ahead),
                "hit_full_cli_ms": median_ms([*full_cli, *args], put_ahead),
                "miss_download_ms": median_ms([str(c.drtool), "wal", "fetch", "--policy", str(c.policy), seg,
                                               str(dest)], lambda: None)}  # fmt: skip
    finally:
        os.close(holder)
        shutil.rmtree(spool, ignore_errors=True)


def physical_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="scripts/bench --physical")
    ap.add_argument("--scale", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--wal-mb", type=int, default=1000, help="WAL to replay after the base backup")
    ap.add_argument("--json", default=str(ROOT / ".bench" / "physical.json"))
    ap.add_argument("--base-only", action="store_true", help="the base backup rows only: no WAL load, no restores")
    ap.add_argument(
        "--alternate",
        action="store_true",
        help="run the stock pipe to S3 and drtool one after the other, --repeat times (fairer under load)",
    )
    ap.add_argument("--compare-src", help="another checkout: its drtool is measured too, in turn with this one")
    args = ap.parse_args(argv)
    work = tmpdir("drtool-bench-phys-")
    os.chmod(work, 0o755)
    weed = Seaweed(work / "weed")
    c = None
    results: dict = {}
    try:
        weed.start()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        bucket = weed.make_bucket("drtool-bench-phys")
        c = make_pitr_cluster(s3_storage_toml(weed.endpoint, bucket, "bench"), start=False)
        binary = shutil.which("pgbackrest")
        pgbr = PgBackRest(work, c, binary) if binary else None
        if pgbr:  # both archive every file: drtool first, then pgBackRest (its own repo)
            with open(c.pg.data / "postgresql.conf", "a") as f:
                f.write(f"archive_command = '{c.drtool} wal push --policy {c.policy} %p && "
                        f"{pgbr.archive_command()}'\n")  # fmt: skip
        c.pg.start()
        if pgbr:
            subprocess.run(pgbr.argv("stanza-create"), check=True, capture_output=True)
        SERVERS.update(postgres=c.pg.proc.pid, s3=weed.proc.pid)
        load = {"at_start": os.getloadavg()}
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
        stock_s3 = None
        if aws:
            up = shlex.join([aws, "s3", "cp", "--only-show-errors", "--endpoint-url", weed.endpoint, "-"])
            stock_s3 = shell(f"{pipe} | {up} s3://{bucket}/stock/base")
        stages = StageCpu(work)
        base = [sys.executable, str(ROOT / "scripts" / "stage_cpu.py"), "--quiet", "backup", "--physical", "-p",
                str(c.policy)]  # fmt: skip
        if args.alternate and stock_s3:
            turns = {"stock_basebackup_s3": stock_s3, "drtool_base_backup_s3": base}
            if args.compare_src:  # the same command with the other checkout's package
                turns["drtool_base_backup_s3_compare"] = ["env", f"DRTOOL_SRC={Path(args.compare_src).resolve()}",
                                                          *base]  # fmt: skip
            alternated(row, n, turns, env, stages)
        else:
            if stock_s3:
                record(row, "stock_basebackup_s3", repeated(n, stock_s3, env))
            record(row, "drtool_base_backup_s3", repeated(n, base, stages.env(env), after=stages.collect))
        row["drtool_stage_cpu_s"] = stages.runs
        print(f"bench:   drtool CPU s by thread, per run: {stages.runs}", file=sys.stderr)
        if pgbr:
            record(row, "pgbackrest_full_backup_local", repeated(n, pgbr.argv("--type=full", "backup"), env))
        load["after_backups"] = os.getloadavg()
        if args.base_only:
            row["load_average"] = {k: [round(x, 1) for x in v] for k, v in load.items()}
            _ratio(row)
            results = {"scale": args.scale, "repeat": n, "physical": row}
            return
        print(f"bench: writing about {args.wal_mb} MB of WAL with pgbench...", file=sys.stderr)
        row["wal_bytes"] = _wal_load(c, db, args.wal_mb)
        _wait_archived(c)
        _chown_postgres(c.key)  # restore_command runs as postgres and decrypts with it
        last = c.switch_wal()
        c.wait_archived(last, 1800)
        row["wal_fetch_call"] = _fetch_call_costs(c, work, env, last)
        print(f"bench:   wal fetch call {row['wal_fetch_call']}", file=sys.stderr)
        c.stop()  # restores come from the store alone, on the same port
        load["before_restores"] = os.getloadavg()
        row["drtool_restore_latest"] = _restore_and_replay(c, work, env, drtool)
        print(f"bench:   restore+replay {row['drtool_restore_latest']}", file=sys.stderr)
        if pgbr:
            row["pgbackrest_restore_latest"] = pgbr.restore_and_replay(work, env)
            print(f"bench:   pgbackrest restore+replay {row['pgbackrest_restore_latest']}", file=sys.stderr)
        load["at_end"] = os.getloadavg()
        row["load_average"] = {k: [round(x, 1) for x in v] for k, v in load.items()}
        _ratio(row)
        results = {"scale": args.scale, "repeat": n, "physical": row}
    finally:
        if c is not None:
            c.stop()
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
        if results:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2))
            print(json.dumps(results, indent=2))


def _ratio(row: dict) -> None:
    if "stock_basebackup_s3" in row:
        row["ratio_base_vs_stock_pipe_s3"] = round(
            row["drtool_base_backup_s3"]["seconds"] / row["stock_basebackup_s3"]["seconds"], 2
        )
    if "pgbackrest_full_backup_local" in row:
        row["ratio_base_vs_pgbackrest"] = round(
            row["drtool_base_backup_s3"]["seconds"] / row["pgbackrest_full_backup_local"]["seconds"], 2
        )


class StageCpu:
    """CPU seconds of drtool's threads per run, from scripts/stage_cpu.py (the drtool row runs under it)."""

    def __init__(self, work: Path):
        self.path = work / "stage-cpu.json"
        self.runs: list[dict] = []

    def env(self, env: dict[str, str]) -> dict[str, str]:
        return dict(env, DRTOOL_STAGE_CPU=str(self.path))

    def collect(self, name: str = "drtool_base_backup_s3") -> None:
        if self.path.exists():
            self.runs.append({"row": name, "load1": round(os.getloadavg()[0], 1), **json.loads(self.path.read_text())})
            self.path.unlink()


def alternated(row: dict, n: int, commands: dict[str, list[str]], env: dict[str, str], stages: StageCpu) -> None:
    """Each command once per round, n rounds, so a change of load hits both; the median per command."""
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    for _ in range(n):
        for name, argv in commands.items():
            runs[name].append(timed(argv, stages.env(env)))
            stages.collect(name)
    for name, ms in runs.items():
        ms.sort(key=lambda m: m["seconds"])
        med = dict(ms[len(ms) // 2])
        med["runs"] = [round(m["seconds"], 2) for m in ms]
        record(row, name, med)
