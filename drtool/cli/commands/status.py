"""drtool status: health per policy and overall (a Nagios-style check)."""

from __future__ import annotations

import click

from ...app.fleet import fleet_status
from ...errors import EXIT_CHECK
from ..context import Ctx, json_option, metrics_option, name_option, pass_ctx, policies, policy_option
from ..output import INVALID, echo_invalid, emit_json, paint
from ..render import human_duration


@click.command()
@policy_option
@name_option
@metrics_option
@json_option
@pass_ctx
def status(ctx: Ctx, policy_path: str, policy_name: str | None, metrics_file: str | None, as_json: bool) -> None:
    """Health per policy and overall; exit 0 healthy, 3 otherwise (a Nagios-style check)."""
    found = policies(ctx, policy_path, policy_name)
    doc = fleet_status(ctx.app.evidence, found, INVALID)
    if metrics_file:
        ctx.app.write_metrics(metrics_file, found, invalid=INVALID)
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"drtool: {paint(doc['status'].upper(), doc['status'])}")
        for name, r in doc["policies"].items():
            age_s = r["last_backup_age_seconds"]
            if age_s is not None:
                newest = f"newest backup {human_duration(age_s)} old"
            else:  # "backups" is absent when the store could not be read
                newest = "no backups yet" if r.get("backups") == 0 else "newest backup unknown"
            click.echo(f"  {name}: {paint(r['status'], r['status'])}; {newest}")
            for reason in r["reasons"]:
                click.echo(f"    - {reason}")
        echo_invalid()
    if doc["status"] != "healthy":
        raise click.exceptions.Exit(EXIT_CHECK)
