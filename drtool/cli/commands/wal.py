"""drtool wal: continuous WAL archiving (push, daemon, status) and fetching it back (fetch).

`drtool wal push` normally never reaches click: drtool/entry.py hands it to the standard-library
entry point drtool/walack.py first (PostgreSQL runs it per WAL file). The command here is the same
code, for `drtool wal --help` and `python -m drtool.cli.main`."""

from __future__ import annotations

import click

from ... import walack
from ..context import POLICY_HELP
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


wal.add_command(fetch)  # restore_command (drtool/cli/commands/wal_fetch.py)
wal.add_command(heartbeat)  # one heartbeat row (drtool/cli/commands/wal_heartbeat.py)
