"""What to install so cron or systemd calls `drtool run`: pure text from the policies."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from .durations import format_duration
from .policy import Policy
from .scheduler import tightest_interval

_DIVISORS_OF_60 = (1, 2, 3, 4, 5, 6, 10, 12, 15)
# The longest a `drtool run` may take before systemd stops it. The policy lock does not bound a
# job (its lease is renewed while the job runs; docs/design.md, "Locks and leases"): this does.
LONGEST_RUN = "12h"
# Where unattended runs get their secrets (database passwords, AWS keys, webhook URLs): KEY=value
# lines, root-owned, mode 0600. systemd reads it with EnvironmentFile=, the cron line sources it.
ENV_FILE = "/etc/drtool/drtool.env"


# The sandbox every drtool unit runs in (the timer's job and `drtool serve` alike).
_HARDENING = """NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ProtectHome=read-only
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes"""


def run_interval_minutes(policies: list[Policy], only: tuple[str, ...] | None = None) -> int:
    """How often `drtool run` must be called: often enough for the tightest schedule (of the jobs
    in `only`, when given), and at least every 15 minutes so a job starts at most that late. A
    divisor of 60."""
    jobs = only or ("backup", "base", "prune", "drill")
    exprs = [e for p in policies for e in (getattr(p.schedule, j) for j in jobs) if e]
    tightest = tightest_interval(exprs) // 60 if exprs else 15
    return max(d for d in _DIVISORS_OF_60 if d <= max(1, min(15, tightest)))


def unit_name(only: tuple[str, ...] | None) -> str:
    """drtool, or drtool-backup-prune for `--only backup,prune`: split hosts get distinct units."""
    return "drtool" if not only else "drtool-" + "-".join(only)


def _run_command(drtool: str, policy_path: str, only: tuple[str, ...] | None) -> str:
    return f"{drtool} --quiet run {'--only ' + ','.join(only) + ' ' if only else ''}{policy_path}"


def _paths(policies: list[Policy], with_identity: bool = True) -> tuple[list[str], list[str]]:
    """(read-write, read-only) paths the service needs besides the network."""
    rw, ro = set(), set()
    for p in policies:
        for target in (p.storage, *p.copies):
            u = urlparse(target.url)
            if u.scheme == "file":
                rw.add(u.path)
        if p.identity_file and with_identity:
            ro.add(str(Path(p.identity_file).parent))
        ro.add(str(p.source.resolve().parent))
    return sorted(rw), sorted(ro - rw)


def systemd_units(
    policies: list[Policy], policy_path: str, drtool: str, only: tuple[str, ...] | None = None
) -> dict[str, str]:
    """A oneshot service and its timer; with `only` (jobs), named after them (unit_name)."""
    minutes = run_interval_minutes(policies, only)
    rw, ro = _paths(policies, with_identity=not only or "drill" in only)
    names = ", ".join(p.name for p in policies)
    what = ", ".join(only) if only else "backups, pruning and restore drills"
    service = f"""[Unit]
Description=drtool: {what} due for {names}
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
{_ENVIRONMENT}
ExecStart={_run_command(drtool, policy_path, only)}
# The longest run allowed: backups and drills of large databases take long. The lock `drtool run`
# holds in the store is renewed meanwhile; once systemd stops the run, the next one takes it over.
TimeoutStartSec={LONGEST_RUN}
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
# Hardening: drtool needs the network, the store and key paths below, and (for drills) to run
# a scratch PostgreSQL as the postgres user in its private /tmp.
{_HARDENING}
"""
    # "-": a path that does not exist (yet) is not an error
    if rw:
        service += "ReadWritePaths=" + " ".join(f"-{x}" for x in rw) + "\n"
    if ro:
        service += "ReadOnlyPaths=" + " ".join(f"-{x}" for x in ro) + "\n"
    timer = f"""[Unit]
Description=Run drtool ({what}) every {minutes} minutes for {names}

[Timer]
OnCalendar=*:0/{minutes}
Persistent=true
RandomizedDelaySec={min(60, minutes * 15)}
AccuracySec=1s

[Install]
WantedBy=timers.target
"""
    name = unit_name(only)
    return {f"{name}.service": service, f"{name}.timer": timer}


def crontab(
    policies: list[Policy], policy_path: str, drtool: str, only: tuple[str, ...] | None = None
) -> dict[str, str]:
    """One crontab line that sources ENV_FILE (when present, exporting every line) and calls run."""
    minutes = run_interval_minutes(policies, only)
    every = "*" if minutes == 1 else f"*/{minutes}"
    jobs = f" ({', '.join(only)} only)" if only else ""
    text = (
        f"# drtool: does what the policies in {policy_path} say is due{jobs}, at most once per slot\n"
        f"# (every {format_duration(minutes * 60)}; a lock in the store keeps overlapping runs apart).\n"
        f"# Secrets come from {ENV_FILE} (KEY=value lines, mode 0600), exported by set -a.\n"
        f"{every} * * * * set -a; [ ! -r {ENV_FILE} ] || . {ENV_FILE}; set +a; "
        f"{_run_command(drtool, policy_path, only)} >> /var/log/drtool.log 2>&1\n"
    )
    return {f"{unit_name(only)}.cron": text}


def serve_unit(policy_path: str, drtool: str, listen: str, cache: str) -> dict[str, str]:
    """A long-running service for `drtool serve` (/health, /metrics): read-only, restarted on failure."""
    service = f"""[Unit]
Description=drtool serve: /health and /metrics for {policy_path}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
{_ENVIRONMENT}
ExecStart={drtool} serve --policy {policy_path} --listen {listen} --cache {cache}
Restart=on-failure
RestartSec=10s
{_HARDENING}

[Install]
WantedBy=multi-user.target
"""
    return {"drtool-serve.service": service}


# "-": the file is optional (a host with ~/.pgpass and an instance role needs none)
_ENVIRONMENT = f"""# Secrets (*_PGPASSWORD, AWS_*, webhook URLs) as KEY=value lines, root-owned, mode 0600.
# Or systemd credentials: LoadCredential= (README, "Secrets for unattended runs").
EnvironmentFile=-{ENV_FILE}"""


def wal_daemon_units(policies: list[Policy], drtool: str) -> dict[str, str]:
    """One long-running service per policy with [pitr] enabled: `drtool wal daemon` as the postgres
    user (it reads pg_wal and writes the spool PostgreSQL's archive_command reads), restarted
    whenever it stops. `wal push` uploads by itself while it is down, so archiving never waits on it."""
    files = {}
    for p in policies:
        if not p.pitr.enabled:
            continue
        service = f"""[Unit]
Description=drtool wal daemon: WAL archiving of {p.name} ({p.pitr.pgdata})
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
Type=simple
User=postgres
Group=postgres
{_ENVIRONMENT}
ExecStart={drtool} wal daemon --policy {p.source.resolve()}
# SIGTERM: uploads in flight finish, nothing unfinished is acknowledged
KillSignal=SIGTERM
TimeoutStopSec=120s
Restart=always
RestartSec=5s
{_HARDENING}
ReadWritePaths=-{p.pitr.spool_dir}
ReadOnlyPaths=-{p.pitr.pgdata} -{p.source.resolve().parent}

[Install]
WantedBy=multi-user.target
"""
        files[f"drtool-wal-{p.name}.service"] = service
    return files
