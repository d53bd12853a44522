"""Use case: the health of a fleet of policies, as `status` prints it and /health serves it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import clock, health
from ..policy import InvalidPolicy, Policy
from . import fanout
from .context import Context
from .evidence import EvidenceJobs
from .wal import wal_status

# the few archive fields `status` shows per policy with [pitr] enabled (issue 13 extends them)
WAL_FIELDS = ("daemon_alive", "backlog", "oldest_ready", "newest_archived", "newest_archived_age_seconds")


def fleet_status(
    app: EvidenceJobs, policies: Sequence[Policy], invalid: Sequence[InvalidPolicy] = ()
) -> dict[str, Any]:
    """{"status", "checked_at", "policies": {name: status}, "components"}: the overall status is the
    worst of the policies' (an invalid policy file makes it unhealthy); each component shows the
    first policy's problem with it, or "ok"."""
    probe = app.database_probe()  # one connection per distinct database, not per policy

    def one(p: Policy) -> dict[str, Any]:
        row = app.status(p, probe)
        if p.pitr.enabled:
            _add_wal_archive(app.ctx, p, row)
        return row

    rows = fanout.in_order(one, policies, fanout.readers(policies), "status")
    per = dict(zip((p.name for p in policies), rows, strict=True))
    overall = health.worst(*(r["status"] for r in per.values()), *(["unhealthy"] if invalid else []))
    components: dict[str, str] = {}
    for r in per.values():
        for k, v in r["components"].items():
            if components.get(k, "ok") == "ok":
                components[k] = v
    return {"status": overall, "checked_at": clock.iso(clock.utcnow()), "policies": per, "components": components}


def _add_wal_archive(ctx: Context, policy: Policy, row: dict[str, Any]) -> None:
    """row["wal"] (WAL_FIELDS) and the wal_archive component; a refused file, a growing backlog or
    an unreadable archive make the policy degraded."""
    w = wal_status(ctx, policy)
    row["wal"] = {k: w[k] for k in WAL_FIELDS}
    # status's own WAL health (app/walhealth.py: lag, gaps, archiver) may have set the component already
    said = row["components"].get("wal_archive", "ok")
    row["components"]["wal_archive"] = "; ".join([*([said] if said != "ok" else []), *w["problems"]]) or "ok"
    if w["problems"]:
        row["status"] = health.worst(row["status"], "degraded")
        row["reasons"] = [*row["reasons"], *(f"WAL archive: {p}" for p in w["problems"])]
