"""drtool init: create the store roots."""

from __future__ import annotations

from typing import Any

import click

from ...errors import DrtoolError
from ..context import Ctx, json_option, name_option, pass_ctx, policies, policy_option
from ..output import emit_json, paint


@click.command()
@policy_option
@name_option
@json_option
@pass_ctx
def init(ctx: Ctx, policy_path: str, policy_name: str | None, as_json: bool) -> None:
    """Create the store root: the folder, or the bucket (with versioning and Object Lock when the
    policy asks), of the primary and every copy target. Safe to run again; nothing else creates it."""
    results: list[dict[str, Any]] = []
    failed: DrtoolError | None = None
    for p in policies(ctx, policy_path, policy_name):
        try:
            outcome = ctx.app.init(p)
        except DrtoolError as e:
            failed = failed or e
            results.append({"policy": p.name, "ok": False, "error": str(e), "targets": []})
            continue
        failed = failed or outcome.error
        results.append(outcome.result)
    if as_json:
        emit_json({"ok": failed is None, "policies": results})
    else:
        for r in results:
            for t in r["targets"]:
                mark = paint("ok  ", "ok") if t["ok"] else paint("FAIL")
                click.echo(f"{r['policy']:<16} {t['target']:<9} {mark}  {t['detail']}")
    if failed:
        raise failed
