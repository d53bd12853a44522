"""drtool catalog rebuild: the catalog index, made anew from the manifests."""

from __future__ import annotations

import click

from ..context import Ctx, json_option, name_option, pass_ctx, policies, policy_option
from ..output import echo_invalid, emit_json


@click.group()
def catalog() -> None:
    """The catalog index (<policy>/index.json): a cache of the manifests, kept by every writer."""


@catalog.command()
@policy_option
@name_option
@click.option("--target", "target", metavar="NAME", help="Rebuild a copy target's index ([[storage.copies]] name).")
@json_option
@pass_ctx
def rebuild(ctx: Ctx, policy_path: str, policy_name: str | None, target: str | None, as_json: bool) -> None:
    """Read every manifest, check and drill record, and write the policy's index anew."""
    results = [ctx.app.rebuild_index(p, target) for p in policies(ctx, policy_path, policy_name)]
    if as_json:
        emit_json({"policies": results})
        return
    echo_invalid()
    for r in results:
        click.echo(
            f"{r['policy']}: {r['index']}: {r['backups']} backup(s) indexed"
            + (f", {len(r['problems'])} unreadable or untrusted manifest(s)" if r["problems"] else "")
        )
