"""drtool drill: restore test into a scratch database, measured and recorded."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from ...errors import EXIT_CHECK, EXIT_FAILED
from ..context import Ctx, backup_id_option, json_option, metrics_option, name_option, pass_ctx, policies, policy_option
from ..logs import log
from ..output import INVALID, echo_invalid, emit_json, paint
from ..render import human_duration


@click.command()
@policy_option
@name_option
@backup_id_option("Backup to drill (default: drill.pick, the newest).")
@click.option("--from", "from_copy", metavar="COPY", help="Drill from a copy target instead of the primary.")
@click.option("--physical", is_flag=True, help="PITR drill: a base backup plus archived WAL, replayed and promoted.")
@click.option("--to-time", metavar="TIME", help="With --physical: recover to this time (ISO 8601; UTC unless it says).")
@metrics_option
@json_option
@pass_ctx
def drill(ctx: Ctx, policy_path: str, policy_name: str | None, backup_id: str | None, from_copy: str | None,
          physical: bool, to_time: str | None, metrics_file: str | None, as_json: bool) -> None:  # fmt: skip
    """Restore test: restore into a scratch database, verify, measure RPO and RTO, record it."""
    records, worst = [], 0
    when = _target_time(to_time, physical, from_copy)
    found = policies(ctx, policy_path, policy_name)
    for p in found:
        if physical:
            ctx.info(f"drill {p.name}: replaying a base backup and archived WAL in a scratch server...")
            r = ctx.app.drill_physical(p, backup_id=backup_id, to_time=when)
        else:
            ctx.info(f"drill {p.name}: restoring into a scratch database...")
            r = ctx.app.drill(p, backup_id=backup_id, from_copy=from_copy)
        records.append(r)
        if r["outcome"] == "could-not-run":  # nothing is known about the backup: the operation failed
            worst = max(worst, EXIT_FAILED)
            log("error", f"drill {p.name}: could not run: {r['failure']}", policy=p.name, job="drill")
        elif not r["passed"] or r["rpo_met"] is False:
            worst = EXIT_CHECK
        if not as_json:
            render_drill(r)
    if metrics_file:
        ctx.app.write_metrics(metrics_file, found, invalid=INVALID)
    if as_json:
        emit_json({"drills": records})
    else:
        echo_invalid()
    if worst:
        raise click.exceptions.Exit(worst)


def _target_time(to_time: str | None, physical: bool, from_copy: str | None) -> dt.datetime | None:
    if not physical:
        if to_time:
            raise click.UsageError("--to-time goes with --physical (a logical drill restores a dump as it is)")
        return None
    if from_copy:
        raise click.UsageError("--from is not supported with --physical yet: a PITR drill reads the primary")
    if not to_time:
        return None
    try:
        when = dt.datetime.fromisoformat(to_time.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{to_time!r} is not an ISO 8601 time (e.g. 2026-11-30T14:03:27Z)",
                                 param_hint="--to-time") from None  # fmt: skip
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def render_drill(r: dict[str, Any]) -> None:
    def secs(v: float | None) -> str:
        return "-" if v is None else human_duration(v)

    obj = r["objectives"]
    verdict = {"passed": "PASSED", "failed": "FAILED", "could-not-run": "COULD NOT RUN"}[r["outcome"]]
    profile = f" (scratch server: {r['scratch_profile']})" if r.get("scratch_profile") else ""
    click.echo(f"{r['policy']}: drill {r['drill_id']} of backup {r['backup_id'] or '-'}: "
               f"{paint(verdict, r['outcome'])}{profile}")  # fmt: skip
    if r["failure"]:
        click.echo(f"  reason: {r['failure']}")
    met = {True: "met", False: "MISSED", None: "not measured"}
    rpo_t = f" (target {secs(obj['rpo_seconds'])}, {met[r['rpo_met']]})" if obj["rpo_seconds"] else ""
    rto_t = f" (target {secs(obj['rto_seconds'])}, {met[r['rto_met']]})" if obj["rto_seconds"] else ""
    click.echo(f"  RPO {secs(r['rpo_seconds'])}{rpo_t}   RTO {secs(r['rto_seconds'])}{rto_t}")
    if r["worst_rpo"]:
        click.echo(
            f"  worst-case RPO over {r['worst_rpo']['backups_considered']} backups: {secs(r['worst_rpo']['seconds'])}"
        )
    if r.get("kind") == "physical":
        _render_physical(r, secs)
    click.echo("  phases: " + ", ".join(f"{k} {human_duration(v)}" for k, v in r["phases"].items()))
    for c in r["checks"]:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[c["ok"]]
        click.echo(f"  {paint(mark, 'ok' if c['ok'] else ('skip' if c['ok'] is None else 'fail'))} "
                   f"{c['name']}: {c['detail']}")  # fmt: skip


def _render_physical(r: dict[str, Any], secs) -> None:
    if r.get("recovery_point"):
        click.echo(f"  recovery point {r['recovery_point']} ({r['recovery_point_source']}), timeline {r['timeline']}")
    if r.get("recovery_accuracy_seconds") is not None:
        click.echo(f"  target {r['target_time']}: stopped {secs(r['recovery_accuracy_seconds'])} before it")
    if r.get("rto_first_write_seconds") is not None:
        click.echo(f"  first write committed at {secs(r['rto_first_write_seconds'])}")
    if r.get("milestones"):
        click.echo("  milestones: " + ", ".join(f"{k} {human_duration(v)}" for k, v in r["milestones"].items()))
