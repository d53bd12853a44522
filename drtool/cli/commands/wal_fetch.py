"""drtool wal fetch: PostgreSQL's restore_command during a physical restore.

Exit codes are PostgreSQL's, not drtool's usual ones: 0 the file was written to %p; 1 it is not
archived (recovery probes history files that do not exist, so this answer is quick); 200 for
anything else (store unreachable, wrong key, bad usage): above 125, recovery aborts instead of
taking a failure for the end of the archive and promoting at the wrong point.
"""

from __future__ import annotations

import click

from ...errors import DrtoolError
from ..context import Ctx, name_option, one_policy, pass_ctx, policy_option
from ..logs import log

NOT_ARCHIVED = 1
FETCH_FAILED = 200  # > 125: PostgreSQL aborts recovery (docs/pitr.md)


@click.command("fetch")
@policy_option
@name_option
@click.option("--spool", metavar="DIR", help="Folder for segments fetched ahead (<DIR>/fetch); restore sets it.")
@click.argument("name")
@click.argument("dest")
@pass_ctx
def fetch(ctx: Ctx, policy_path: str, policy_name: str | None, spool: str | None, name: str, dest: str) -> None:
    """Write the archived WAL file NAME to DEST (restore_command = 'drtool wal fetch -p P %f %p')."""
    try:
        p = one_policy(ctx, policy_path, policy_name)
        found = ctx.app.wal_fetch(p, name, dest, spool)
    except DrtoolError as e:
        log("error", f"wal fetch {name}: {e}", job="wal-fetch")
        raise click.exceptions.Exit(FETCH_FAILED) from None
    except click.exceptions.Exit:
        raise
    except Exception as e:  # a bug must stop recovery too, never read as "not archived"
        log("error", f"wal fetch {name}: unexpected {type(e).__name__}: {e}", job="wal-fetch")
        raise click.exceptions.Exit(FETCH_FAILED) from None
    if not found:
        log("info", f"wal fetch {name}: not archived", job="wal-fetch")
        raise click.exceptions.Exit(NOT_ARCHIVED)


def is_wal_fetch(args: list[str]) -> bool:
    """Whether a command line runs `wal fetch` (its exit codes follow restore_command's rules)."""
    return "wal" in args and args[args.index("wal") + 1 : args.index("wal") + 2] == ["fetch"]
