"""drtool wal: continuous WAL archiving (push, daemon, status) and fetching it back (fetch).

`drtool wal push` normally never reaches click: drtool/entry.py hands it to the standard-library
entry point drtool/walack.py first (PostgreSQL runs it per WAL file). The command here is the same
code, for `drtool wal --help` and `python -m drtool.cli.main`."""

from __future__ import annotations

import os
import signal
import threading

import click

from ... import walack
from ...errors import DrtoolError
from ..context import POLICY_HELP, Ctx, json_option, name_option, one_policy, pass_ctx, policy_option
from ..output import emit_json
from ..render import human_duration
from .wal_fetch import fetch
from .wal_heartbeat import heartbeat


@click.group()
def wal() -> None:
    """Continuous WAL archiving for point-in-time recovery (docs/cli.md, "wal")."""


@wal.command(context_settings={"ignore_unknown_options": True})
@click.option("--policy", "-p", "policy_path", envvar="DRTOOL_POLICY", required=True, metavar="FILE", help=POLICY_HELP)
@click.argument("path", metavar="PATH")
def push(policy_path: str, path: str) -> None:
    """archive_command: exit 0 once PATH (%p) is durable in the store, else 1 (never anything else).

    Answers at once when `drtool wal daemon` has uploaded the file; waits for the daemon up to
    pitr.ack_timeout; uploads the file itself when no daemon runs."""
    code, message = walack.run(["--policy", policy_path, path])
    if message:
        click.echo(f"drtool wal push: {message}", err=True)
    raise click.exceptions.Exit(0 if code == 0 else 1)


@wal.command()
@policy_option
@name_option
@pass_ctx
def daemon(ctx: Ctx, policy_path: str, policy_name: str | None) -> None:
    """Upload WAL ahead of archive_command: scan pg_wal/archive_status, upload pitr.upload_workers
    files at once, acknowledge each once durable. Runs until SIGTERM (a systemd service as postgres)."""
    policy = one_policy(ctx, policy_path, policy_name)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    ctx.info(f"wal daemon of {policy.name}: uploading from {policy.pitr.pgdata}/pg_wal (pid {os.getpid()})")
    result = ctx.app.wal_daemon(policy, stop)
    ctx.info(f"wal daemon of {policy.name}: stopped after archiving {result['archived']} file(s)")


@wal.command(name="status")
@policy_option
@name_option
@json_option
@pass_ctx
def status_(ctx: Ctx, policy_path: str, policy_name: str | None, as_json: bool) -> None:
    """The archive's state: backlog of .ready files, daemon alive, newest archived file and its age."""
    policy = one_policy(ctx, policy_path, policy_name)
    doc = ctx.app.wal_status(policy, with_store=True)
    unreachable = doc.get("store_error")
    if as_json:
        emit_json(doc)
    else:
        _render_status(policy.name, doc, unreachable)
    if unreachable:  # what this host knows was shown; the archive's state is unknown: the command failed
        raise DrtoolError(unreachable)


def _render_status(name: str, doc: dict, unreachable: str | None) -> None:
    click.echo(f"{name}: daemon {'running' if doc['daemon_alive'] else 'not running'}; "
               f"backlog {doc['backlog'] if doc['backlog'] is not None else 'unknown'} file(s) waiting")  # fmt: skip
    newest = doc.get("newest_archived")
    if newest:
        click.echo(f"  newest archived: {newest} ({human_duration(doc['newest_archived_age_seconds'])} ago)")
    elif not unreachable:
        click.echo("  nothing archived yet")
    for line in doc["problems"]:
        if line != unreachable:  # said once, as the error line
            click.echo(f"  - {line}")


wal.add_command(fetch)  # restore_command (drtool/cli/commands/wal_fetch.py)
wal.add_command(heartbeat)  # one heartbeat row (drtool/cli/commands/wal_heartbeat.py)
