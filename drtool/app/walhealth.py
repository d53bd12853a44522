"""Health of a policy's WAL archive for status and metrics: how far the archive lags (age of the
newest archived segment), what waits to be archived where drtool runs beside the server (the
.ready backlog, pg_stat_archiver.failed_count), whether the daemon lives, and chain gaps."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import clock, postgres, scratch
from ..errors import DrtoolError
from ..policy import Policy
from ..storage import Store
from . import walview

BACKLOG_WARN = 10  # .ready files: more than this and the archiver is falling behind


def wal_health(store: Store, policy: Policy, physical: list[tuple[str, dict[str, Any]]], source,
               warn) -> tuple[dict[str, Any], str]:  # fmt: skip
    """(figures, component state: "ok" or why not). `physical`: (id, physical section) of the
    complete base backups; `source` the policy's Conninfo (probed only for pg_stat_archiver)."""
    now = clock.utcnow()
    win = walview.window(store, policy.name, physical, None, warn) or {}
    end = win.get("newest_segment_end")
    lag = round((now - clock.parse_iso(end)).total_seconds(), 1) if end else None
    out: dict[str, Any] = {
        "newest_segment": win.get("newest_segment"),
        "newest_segment_end": end,
        "lag_seconds": lag,
        "gaps": len(win.get("gaps", [])),
        "first_gap": win["gaps"][0]["missing"] if win.get("gaps") else None,
        "backlog": _ready_count(policy),
        "failed_count": None,
        "daemon_alive": _daemon_alive(policy),
    }
    try:
        out["failed_count"] = postgres.archiver_stats(source)["failed_count"]
    except DrtoolError:
        pass  # the database component says it is unreachable
    problems = []
    if end is None:
        problems.append("no WAL segment is archived yet")
    elif policy.rpo and lag is not None and lag > policy.rpo:
        problems.append(f"lagging: newest archived segment {out['newest_segment']} completed {int(lag)}s ago, more "
                        f"than objectives.rpo ({policy.rpo}s)")  # fmt: skip
    if out["gaps"]:
        problems.append(f"{out['gaps']} gap(s) in the WAL chain, first missing {out['first_gap']}")
    if out["backlog"] is not None and out["backlog"] > BACKLOG_WARN:
        problems.append(f"{out['backlog']} segments waiting in pg_wal to be archived")
    if out["failed_count"]:
        problems.append(f"pg_stat_archiver counts {out['failed_count']} failed archive_command runs")
    return out, "; ".join(problems) or "ok"


def _ready_count(policy: Policy) -> int | None:
    """.ready files in pg_wal/archive_status (None where drtool does not run beside the server)."""
    if not policy.pitr.pgdata:
        return None
    try:
        names = os.listdir(Path(policy.pitr.pgdata) / "pg_wal" / "archive_status")
    except OSError:
        return None
    return sum(1 for n in names if n.endswith(".ready"))


def _daemon_alive(policy: Policy) -> bool | None:
    """From the daemon's status.json in the spool: its pid runs (None: no spool or no daemon here)."""
    if not policy.pitr.spool_dir:
        return None
    try:
        pid = int(json.loads((Path(policy.pitr.spool_dir) / "status.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return scratch.pid_alive(pid)
