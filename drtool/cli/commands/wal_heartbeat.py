"""drtool wal heartbeat: write one heartbeat row on the source (docs/pitr.md, "Heartbeat")."""

from __future__ import annotations

import click

from ..context import Ctx, json_option, name_option, pass_ctx, policies, policy_option
from ..output import emit_json


@click.command("heartbeat")
@policy_option
@name_option
@json_option
@pass_ctx
def heartbeat(ctx: Ctx, policy_path: str, policy_name: str | None, as_json: bool) -> None:
    """Commit one heartbeat row (drtool.heartbeat) now; `wal daemon` does it every pitr.heartbeat_interval."""
    done = [ctx.app.wal_heartbeat(p) for p in policies(ctx, policy_path, policy_name)]
    if as_json:
        emit_json({"heartbeats": done})
    else:
        for d in done:
            click.echo(f"{d['policy']}: heartbeat written to {d['table']} at {d['at']}")
