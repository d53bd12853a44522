"""The `drtool` console command. `drtool wal push ...` (PostgreSQL's archive_command, run once per
WAL file) goes to the standard-library-only drtool/walack.py before click and the storage stack are
imported, and `drtool wal fetch ...` (restore_command, once per segment during recovery) to
drtool/walget.py, which serves segments read ahead and falls through here for anything else;
everything else goes to the click application (drtool/cli/main.py)."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:3] == ["wal", "push"] and not {"-h", "--help"} & set(sys.argv[3:]):
        from .walack import main as wal_push

        wal_push(sys.argv[1:])
    if sys.argv[1:3] == ["wal", "fetch"]:
        from .walget import fetch

        fetch(sys.argv[1:])  # exits 0 when a segment read ahead was served; else the full command runs
    if sys.argv[1:3] == ["wal", "read-ahead"]:
        from .walget import read_ahead_main

        read_ahead_main(sys.argv[1:])
    from .cli.main import main as cli_main

    cli_main()
