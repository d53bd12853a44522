"""drtool list: complete backups, newest first."""

from __future__ import annotations

import click

from ..context import Ctx, json_option, name_option, pass_ctx, policies, policy_option
from ..output import echo_invalid, emit_json_rows
from ..render import human_bytes, table


@click.command("list")
@policy_option
@name_option
@click.option("--target", "target", metavar="NAME", help="List a copy target ([[storage.copies]] name).")
@json_option
@pass_ctx
def list_(ctx: Ctx, policy_path: str, policy_name: str | None, target: str | None, as_json: bool) -> None:
    """Complete backups, newest first."""
    chosen = policies(ctx, policy_path, policy_name)
    if as_json:  # streamed: one policy's rows in memory at a time
        emit_json_rows("backups", (row for p in chosen for row in ctx.app.list_backups(p, target=target)))
        return
    rows = [row for p in chosen for row in ctx.app.list_backups(p, target=target)]
    echo_invalid()
    if not rows:
        ctx.info("no complete backups")
        return
    for r in rows:
        r["size"] = human_bytes(r.get("size_bytes"))
        last = r.get("last_drill")
        r["drill"] = "-" if not last else ("passed " if last["passed"] else "FAILED ") + last["started_at"][:16]
        r["pending"] = ", ".join(r.get("copies_pending") or []) or "-"
    columns = [
        ("policy", "POLICY"),
        ("id", "ID"),
        ("status", "STATUS"),
        ("recovery_point", "RECOVERY POINT"),
        ("completed_at", "COMPLETED"),
        ("size", "SIZE"),
        ("tables", "TABLES"),
        ("drill", "LAST DRILL"),
    ]
    if any("copies_pending" in r for r in rows):
        columns.append(("pending", "COPIES PENDING"))
    click.echo(table(rows, columns))
