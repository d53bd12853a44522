"""drtool check: policy, database, pg_dump, store and keys."""

from __future__ import annotations

from typing import Any

import click

from ...errors import DrtoolError
from ..context import Ctx, json_option, name_option, only_option, pass_ctx, policies, policy_option
from ..output import INVALID, echo_invalid, emit_json, paint

WARNING_PREFIX = "warning: "


def check_state(c: dict[str, Any]) -> str:
    """ok, warn (passed with a warning) or FAIL."""
    if not c["ok"]:
        return "FAIL"
    return "warn" if str(c.get("detail", "")).startswith(WARNING_PREFIX) else "ok"


@click.command()
@policy_option
@name_option
@only_option("Check only what these jobs need on this host, e.g. backup,prune (no identity) or drill.")
@json_option
@pass_ctx
def check(ctx: Ctx, policy_path: str, policy_name: str | None, only: tuple[str, ...] | None, as_json: bool) -> None:
    """Check policy, database, pg_dump, store and keys."""
    results: list[dict[str, Any]] = []
    failed: DrtoolError | None = None
    for p in policies(ctx, policy_path, policy_name):
        try:
            outcome = ctx.app.check(p, only=frozenset(only) if only else None)
        except DrtoolError as e:
            failed = failed or e
            results.append({"policy": p.name, "ok": False, "error": str(e)})
            continue
        failed = failed or outcome.error
        results.append(outcome.result)
    if as_json:
        emit_json({"ok": failed is None and not INVALID, "policies": results})
    else:
        for r in results:
            for c in r.get("checks", []):
                state = check_state(c)
                detail = c["detail"][len(WARNING_PREFIX) :] if state == "warn" else c["detail"]
                click.echo(f"{r['policy']:<16} {c['check']:<9} {paint(f'{state:<4}', state)}  {detail}")
        echo_invalid()
    if failed:
        raise failed
