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


def run_interval_minutes(policies: list[Policy]) -> int:
    """How often `drtool run` must be called: often enough for the tightest schedule, and at
    least every 15 minutes so a job starts at most that late. A divisor of 60."""
    exprs = [e for p in policies for e in (p.schedule.backup, p.schedule.prune, p.schedule.drill) if e]
    tightest = tightest_interval(exprs) // 60 if exprs else 15
    return max(d for d in _DIVISORS_OF_60 if d <= max(1, min(15, tightest)))


def _paths(policies: list[Policy]) -> tuple[list[str], list[str]]:
    """(read-write, read-only) paths the service needs besides the network."""
    rw, ro = set(), set()
    for p in policies:
        for target in (p.storage, *p.copies):
            u = urlparse(target.url)
            if u.scheme == "file":
                rw.add(u.path)
        if p.identity_file:
            ro.add(str(Path(p.identity_file).parent))
        ro.add(str(p.source.resolve().parent))
    return sorted(rw), sorted(ro - rw)


def systemd_units(policies: list[Policy], policy_path: str, drtool: str) -> dict[str, str]:
    minutes = run_interval_minutes(policies)
    rw, ro = _paths(policies)
    names = ", ".join(p.name for p in policies)
    service = f"""[Unit]
Description=drtool: backups, pruning and restore drills due for {names}
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={drtool} --quiet run {policy_path}
# The longest run allowed: backups and drills of large databases take long. The lock `drtool run`
# holds in the store is renewed meanwhile; once systemd stops the run, the next one takes it over.
TimeoutStartSec={LONGEST_RUN}
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
# Hardening: drtool needs the network, the store and key paths below, and (for drills) to run
# a scratch PostgreSQL as the postgres user in its private /tmp.
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ProtectHome=read-only
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
"""
    # "-": a path that does not exist (yet) is not an error
    if rw:
        service += "ReadWritePaths=" + " ".join(f"-{x}" for x in rw) + "\n"
    if ro:
        service += "ReadOnlyPaths=" + " ".join(f"-{x}" for x in ro) + "\n"
    timer = f"""[Unit]
Description=Run drtool every {minutes} minutes for {names}

[Timer]
OnCalendar=*:0/{minutes}
Persistent=true
RandomizedDelaySec={min(60, minutes * 15)}
AccuracySec=1s

[Install]
WantedBy=timers.target
"""
    return {"drtool.service": service, "drtool.timer": timer}


def crontab(policies: list[Policy], policy_path: str, drtool: str) -> dict[str, str]:
    minutes = run_interval_minutes(policies)
    every = "*" if minutes == 1 else f"*/{minutes}"
    text = (
        f"# drtool: does what the policies in {policy_path} say is due, at most once per slot\n"
        f"# (every {format_duration(minutes * 60)}; a lock in the store keeps overlapping runs apart)\n"
        f"{every} * * * * {drtool} --quiet run {policy_path} >> /var/log/drtool.log 2>&1\n"
    )
    return {"drtool.cron": text}
