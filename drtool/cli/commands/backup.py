"""drtool backup: one backup now, for each policy."""

from __future__ import annotations

import click

from ... import clock
from ...errors import DrtoolError
from ..context import Ctx, json_option, metrics_option, name_option, pass_ctx, policies, policy_option
from ..logs import log
from ..output import INVALID, echo_invalid, emit_json
from ..render import human_bytes, human_duration


@click.command()
@policy_option
@name_option
@metrics_option
@click.option("--physical", is_flag=True, help="A base backup (pg_basebackup) for point-in-time recovery ([pitr]).")
@json_option
@pass_ctx
def backup(ctx: Ctx, policy_path: str, policy_name: str | None, metrics_file: str | None, physical: bool,
           as_json: bool) -> None:  # fmt: skip
    """Take one backup now (for each policy): a logical dump, or with --physical a base backup."""
    done, first_error = [], None
    found = policies(ctx, policy_path, policy_name)
    job = "base backup" if physical else "backup"
    for p in found:
        try:
            m = ctx.app.backup_physical(p) if physical else ctx.app.backup(p)
        except DrtoolError as e:
            first_error = first_error or e
            log("error", f"{job} {p.name}: {e}", policy=p.name, job="base" if physical else "backup")
            continue
        took = (clock.parse_iso(m["completed_at"]) - clock.parse_iso(m["started_at"])).total_seconds()
        what = (f"WAL {m['physical']['start_lsn']} .. {m['physical']['end_lsn']}" if physical
                else f"{len(m['tables'])} tables")  # fmt: skip
        ctx.info(
            f"{job} {p.name}: {m['id']} committed in {human_duration(took)} "
            f"({human_bytes(m['sizes']['stored_bytes'])} stored, {what})",
            policy=p.name, job="base" if physical else "backup", backup_id=m["id"], duration_seconds=round(took, 3),
        )  # fmt: skip
        done.append(m)
    if metrics_file:
        ctx.app.write_metrics(metrics_file, found, invalid=INVALID)
    if as_json:
        emit_json({"backups": done})
    else:
        for m in done:
            click.echo(m["id"])
        echo_invalid()
    if first_error:
        raise click.exceptions.Exit(first_error.exit_code)
