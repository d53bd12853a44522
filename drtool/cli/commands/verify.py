"""drtool verify: re-read stored objects and check them."""

from __future__ import annotations

from typing import Any

import click

from ...errors import DrtoolError, UsageError
from ..context import Ctx, backup_id_option, json_option, name_option, pass_ctx, policies, policy_option
from ..output import INVALID, echo_invalid, emit_json, paint


@click.command()
@policy_option
@name_option
@backup_id_option("Backup to verify (default: the newest).")
@click.option("--all", "all_backups", is_flag=True, help="Verify every complete backup.")
@click.option("--shallow", is_flag=True, help="Only SHA-256, even when the identity file is at hand.")
@json_option
@pass_ctx
def verify(
    ctx: Ctx,
    policy_path: str,
    policy_name: str | None,
    backup_id: str | None,
    all_backups: bool,
    shallow: bool,
    as_json: bool,
) -> None:
    """Re-read stored objects and check their hashes (and, with the identity, their authentication)."""
    if backup_id and all_backups:
        raise UsageError("use either --backup ID or --all")
    results: list[dict[str, Any]] = []
    failed: DrtoolError | None = None
    for p in policies(ctx, policy_path, policy_name):
        try:
            outcome = ctx.app.verify(p, backup_id=backup_id, all_backups=all_backups, deep=False if shallow else None)
        except DrtoolError as e:
            failed = failed or e
            results.append({"policy": p.name, "error": str(e)})
            continue
        failed = failed or outcome.error
        results.append(outcome.result)
    if as_json:
        emit_json({"ok": failed is None and not INVALID, "policies": results})
    else:
        ctx.progress.clear()
        echo_invalid()
        for r in results:
            for b in r.get("backups", []):
                state = paint("ok", "ok") if b["ok"] else paint("UNTRUSTED" if b.get("untrusted") else "DAMAGED")
                click.echo(f"{r['policy']:<16} {b['id']}  {state}  ({b.get('proved', 'nothing')})")
            for c in r.get("wal") or []:
                state = paint("ok", "ok") if c["ok"] else paint("GAP" if c["gaps"] else "BROKEN")
                through = c["restorable_through"] or "nothing"
                click.echo(f"{r['policy']:<16} {c['backup']}  WAL chain {state}  (timeline {c['timeline']}, "
                           f"{c['start']} .. {c['newest'] or 'none'}, replayable through {through})")  # fmt: skip
    if failed:
        raise failed
