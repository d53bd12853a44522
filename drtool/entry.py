"""The `drtool` console command. `drtool wal push ...` (PostgreSQL's archive_command, run once per
WAL file) goes to the standard-library-only drtool/walack.py before click and the storage stack are
imported; everything else goes to the click application (drtool/cli/main.py)."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:3] == ["wal", "push"] and not {"-h", "--help"} & set(sys.argv[3:]):
        from .walack import main as wal_push

        wal_push(sys.argv[1:])
    from .cli.main import main as cli_main

    cli_main()
