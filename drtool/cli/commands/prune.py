"""drtool prune: apply retention."""

from __future__ import annotations

from typing import Any

import click

from ..context import Ctx, json_option, name_option, pass_ctx, policies, policy_option
from ..output import echo_invalid, emit_json
from ..render import human_duration


def rules_text(rules: dict[str, Any]) -> str:
    """keep_last=4, keep_daily=7, keep_within=2d (or "none"): as written in [retention]."""
    parts = [f"{k}={human_duration(v) if k == 'keep_within' else v}" for k, v in rules.items()]
    return ", ".join(parts) or "none"


@click.command()
@policy_option
@name_option
@click.option("--dry-run", is_flag=True, help="Say what would be kept and deleted, and why; change nothing.")
@json_option
@pass_ctx
def prune(ctx: Ctx, policy_path: str, policy_name: str | None, dry_run: bool, as_json: bool) -> None:
    """Apply retention: keep what the rules say (with reasons), delete the rest and failed backups."""
    results = ctx.app.prune_fleet(policies(ctx, policy_path, policy_name), dry_run=dry_run)
    if as_json:
        emit_json({"policies": results})
        return
    echo_invalid()
    for r in results:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{r['policy']}: keep {r['kept']}, {verb} {r['deleted']} (rules: {rules_text(r['rules'])})")
        for b in r["backups"]:
            action = b["action"].upper() if b["action"] == "delete" else b["action"]
            kind = b.get("kind", "logical")
            click.echo(f"  {action:<6} {b['id']}  {kind:<8} {b['recovery_point']}  {'; '.join(b['reasons'])}")
        for x in r["incomplete"]:
            action = x["action"].upper() if x["action"] == "delete" else x["action"]
            parts = f"{x['objects']} objects, {x['unfinished_uploads']} unfinished uploads"
            click.echo(f"  {action:<6} {x['id']}  incomplete ({parts}): {x['reason']}")
        for u in r.get("unreadable", []):
            click.echo(f"  keep   {u['id']}  unreadable manifest, not pruned: {u['error']}")
        for t in r.get("untrusted", []):
            click.echo(f"  keep   {t['id']}  untrusted, not pruned (evidence of tampering): {t['error']}")
        for w in r.get("wal", []):
            click.echo(f"  WAL of cluster {w['sysid']}: keep {w['kept']}, {verb} {w['deleted']}")
            for reason, count in sorted(w["reasons"].items()):
                click.echo(f"    {count:>6}  {reason}")
            if dry_run:
                for name in w["delete"]:
                    click.echo(f"    DELETE {name}")
