"""drtool restore: a backup into a database."""

from __future__ import annotations

import click

from ..context import Ctx, backup_id_option, json_option, name_option, one_policy, pass_ctx, policy_option
from ..output import emit_json
from ..render import human_duration


@click.command()
@policy_option
@name_option
@backup_id_option("Backup to restore (default: the newest).")
@click.option("--target", required=True, metavar="DSN", help="Database to restore into (no password in it).")
@click.option("--target-password-env", metavar="NAME", help="Environment variable holding the target's password.")
@click.option("--clean", is_flag=True, help="Drop objects in the target before restoring them.")
@click.option("--jobs", "-j", default=1, show_default=True, type=int, help="pg_restore jobs for indexes, constraints.")
@click.option("--from", "from_copy", metavar="NAME", help="Restore from a copy target instead of the primary.")
@click.option("--role", metavar="ROLE", help="Restore as this role (pg_restore --role; implies --no-owner).")
@click.option("--no-owner", is_flag=True, help="Do not set object owners: objects belong to the restoring role.")
@click.option("--create", is_flag=True, help="Create the target database if missing (owned by --role if given).")
@json_option
@pass_ctx
def restore(
    ctx: Ctx,
    policy_path: str,
    policy_name: str | None,
    backup_id: str | None,
    target: str,
    target_password_env: str | None,
    clean: bool,
    jobs: int,
    from_copy: str | None,
    role: str | None,
    no_owner: bool,
    create: bool,
    as_json: bool,
) -> None:
    """Restore a backup into a database. The dump's SQL runs with the restoring role's privileges:
    restore as an unprivileged role that owns the target database (--role)."""
    p = one_policy(ctx, policy_path, policy_name)
    r = ctx.app.restore(
        p, target, backup_id=backup_id, clean=clean, jobs=jobs, target_password_env=target_password_env,
        from_copy=from_copy, role=role, no_owner=no_owner, create=create,
    )  # fmt: skip
    if as_json:
        emit_json(r)
    else:
        rc = r["row_counts"]
        ctx.info(
            f"restored {r['backup']} into {r['target']} in {human_duration(r['restore_seconds'])}; "
            f"row counts match the manifest for {rc['matched']} of {rc['tables']} tables"
        )
