"""drtool list: complete backups, newest first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
    windows: list[dict[str, Any]] = []

    def rows_of_each_policy() -> Iterator[dict[str, Any]]:
        for mine, w in ctx.app.list_fleet(chosen, target=target):
            if w is not None:
                windows.append(w)
            yield from mine

    if as_json:  # streamed: one policy's rows in memory at a time; the windows (one per policy) after them
        emit_json_rows("backups", rows_of_each_policy(), after=lambda: {"windows": windows})
        return
    rows = list(rows_of_each_policy())
    echo_invalid()
    if not rows:
        ctx.info("no complete backups")
    if rows:
        _backup_table(rows)
    for w in windows:
        for line in window_lines(w):
            click.echo(line)


def window_lines(w: dict[str, Any]) -> list[str]:
    """The restorable window in words, and every gap in it."""
    if w["earliest"] is None:
        newest = w["newest_segment"] or "none"
        return [f"{w['policy']}: no point-in-time restore possible yet (no physical backup whose WAL is complete; "
                f"newest archived segment: {newest})"]  # fmt: skip
    lines = [f"{w['policy']}: restorable from {w['earliest']} to {w['latest']} (timeline {w['timeline']})"]
    for g in w["gaps"]:
        more = f" (+{g['segments'] - 1} more through {g['through']})" if g["segments"] > 1 else ""
        until = g["restorable_until"] or "unknown"
        lines.append(f"  GAP: {g['missing']} missing{more}; restorable until {until} across it: {g['breaks']}")
    for u in w.get("unrestorable", []):
        lines.append(f"  backup {u['backup']}: {u['reason']}")
    if w.get("timelines_inferred"):
        lines.append("  (timelines inferred from names: the identity is needed to read history files)")
    return lines


def _backup_table(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        r["size"] = human_bytes(r.get("size_bytes"))
        last = r.get("last_drill")
        r["drill"] = "-" if not last else ("passed " if last["passed"] else "FAILED ") + last["started_at"][:16]
        r["pending"] = ", ".join(r.get("copies_pending") or []) or "-"
    columns = [
        ("policy", "POLICY"),
        ("id", "ID"),
        ("kind", "KIND"),
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
