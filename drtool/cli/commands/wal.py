"""drtool wal: WAL archive commands (push and daemon come with the archiving side)."""

from __future__ import annotations

import click

from .wal_fetch import fetch


@click.group()
def wal() -> None:
    """WAL archiving and fetching for point-in-time recovery."""


wal.add_command(fetch)
