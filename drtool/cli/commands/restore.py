"""drtool restore: a backup into a database."""

from __future__ import annotations

import datetime as dt

import click

from ..context import Ctx, backup_id_option, json_option, name_option, one_policy, pass_ctx, policy_option
from ..output import emit_json
from ..render import human_duration


@click.command()
@policy_option
@name_option
@backup_id_option("Backup to restore (default: the newest).")
@click.option("--target", metavar="DSN", help="Database to restore into (no password in it).")
@click.option("--pgdata", metavar="DIR", help="Physical restore: an empty or new data directory for a base backup.")
@click.option("--to-time", metavar="TIME", help="With --pgdata: recover to this time (ISO 8601; UTC unless it says).")
@click.option("--to-latest", is_flag=True, help="With --pgdata: recover to the end of the archived WAL (the default).")
@click.option("--owner", metavar="USER", help="With --pgdata, as root: the restored files' owner (default postgres).")
@click.option("--drtool", "drtool_path", metavar="PATH",
              help="With --pgdata: the drtool the server runs in restore_command (default: this one).")  # fmt: skip
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
    target: str | None,
    pgdata: str | None,
    to_time: str | None,
    to_latest: bool,
    owner: str | None,
    drtool_path: str | None,
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
    if pgdata is not None or to_time or to_latest or owner or drtool_path:
        _physical(ctx, p, target, pgdata, to_time, to_latest, owner, drtool_path, backup_id, from_copy, as_json)
        return
    if not target:
        raise click.UsageError("give --target DSN (a logical restore) or --pgdata DIR (a physical one)")
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


def _physical(ctx: Ctx, p, target: str | None, pgdata: str | None, to_time: str | None, to_latest: bool,
              owner: str | None, drtool_path: str | None, backup_id: str | None, from_copy: str | None,
              as_json: bool) -> None:  # fmt: skip
    if target:
        raise click.UsageError("--target restores a dump into a database; --pgdata restores a base backup: give one")
    if not pgdata:
        raise click.UsageError("--to-time, --to-latest, --owner and --drtool go with --pgdata DIR")
    if to_time and to_latest:
        raise click.UsageError("give --to-time TIME or --to-latest, not both")
    when = None
    if to_time:
        try:
            when = dt.datetime.fromisoformat(to_time.strip().replace("Z", "+00:00"))
        except (ValueError, OverflowError):
            raise click.BadParameter(f"{to_time!r} is not an ISO 8601 time (e.g. 2026-11-30T14:03:27Z)",
                                     param_hint="--to-time") from None  # fmt: skip
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # a time without a zone is UTC, as every time drtool prints
    r = ctx.app.restore_physical(p, pgdata, to_time=when, backup_id=backup_id, owner=owner, from_copy=from_copy,
                                 drtool=drtool_path)  # fmt: skip
    if as_json:
        emit_json(r)
        return
    goal = f"to {r['target_time']}" if r["target_time"] else "to the end of the archived WAL"
    ctx.info(f"restored base backup {r['backup']} into {r['pgdata']} in {human_duration(r['restore_seconds'])} "
             f"(pg_verifybackup ok); recovery {goal} is configured, then the server promotes")  # fmt: skip
    click.echo(f"start the server with: {r['start_command']}")
