"""drtool's command line (click): the group, global options, and the entry point that maps
errors to exit codes. Each command lives in cli/commands/<command>.py."""

from __future__ import annotations

import time

COMMAND_T0 = time.monotonic()  # before the heavy imports: drill records how long the command ran

import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import click  # noqa: E402

from .. import __version__  # noqa: E402
from ..app.runtime import bound_malloc  # noqa: E402
from ..errors import EXIT_USAGE, DrtoolError, PolicyError  # noqa: E402
from . import logs  # noqa: E402
from .commands import (  # noqa: E402
    backup,
    check,
    drill,
    init,
    keygen,
    listing,
    prune,
    report,
    restore,
    run,
    schedule,
    serve,
    status,
    verify,
    wal,
)
from .commands.wal_fetch import FETCH_FAILED, is_wal_fetch  # noqa: E402
from .context import Ctx  # noqa: E402
from .logs import log  # noqa: E402
from .output import INVALID, worst  # noqa: E402
from .render import ProgressLine  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="drtool")
@click.option("--quiet", "-q", is_flag=True, help="No progress or info lines (errors still go to stderr).")
@click.option("--lock-wait", default=0.0, metavar="SECONDS", help="Wait this long for a policy locked by another job.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", help="stderr as text or JSON lines.")
@click.pass_context
def cli(click_ctx: click.Context, quiet: bool, lock_wait: float, log_format: str) -> None:
    """Backups of PostgreSQL that are encrypted, streamed to object storage, and proven by restores."""
    INVALID.clear()
    ctx = Ctx(quiet, log_format == "json", COMMAND_T0)
    logs.configure(json_lines=log_format == "json", command=click_ctx.invoked_subcommand, quiet=quiet,
                   before_emit=ctx.progress.clear)  # fmt: skip
    ctx.app.lock_wait = lock_wait
    click_ctx.obj = ctx


for command in (
    keygen.keygen, init.init, check.check, backup.backup, listing.list_, restore.restore, verify.verify,
    prune.prune, drill.drill, run.run, schedule.schedule, status.status, report.report, serve.serve,
    wal.wal,
):  # fmt: skip
    cli.add_command(command)


def _on_sigterm(signum, frame) -> None:
    """SIGTERM (systemd stop, kill) unwinds like Ctrl-C, so scratch servers and uploads are cleaned up."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps DrtoolError to its exit code and one stderr line; bugs keep their traceback.
    `wal fetch` exits 0, 1 or 200 only: any other code (bad usage, an invalid policy) would tell
    PostgreSQL "not archived" and end recovery early."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not is_wal_fetch(args):
        _main(args)
        return
    try:
        _main(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        os._exit(code if code in (0, 1) else FETCH_FAILED)
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(FETCH_FAILED)


def _main(argv: list[str]) -> None:
    bound_malloc()
    signal.signal(signal.SIGTERM, _on_sigterm)
    logs.configure(json_lines=False, command=None, quiet=False, before_emit=lambda: None)  # until the group's
    try:
        rc = cli.main(args=argv, prog_name="drtool", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("drtool: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_USAGE if e.exit_code == 2 else e.exit_code)
    except PolicyError as e:
        for line in e.problems:
            log("error", line)
        sys.exit(e.exit_code)
    except DrtoolError as e:
        ProgressLine().clear()
        for line in str(e).splitlines() or [type(e).__name__]:
            log("error", line)
        sys.exit(worst(e.exit_code))
    except KeyboardInterrupt:
        click.echo("\ndrtool: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        os._exit(1)
    code = worst(rc if isinstance(rc, int) else 0)
    _exit(code if code in (0, 1) or not is_wal_fetch(argv) else FETCH_FAILED)


def _exit(code: int) -> None:
    """Leave without the interpreter's slow module teardown (~100 ms; docs/design.md): every job is
    finished, its files closed and its children reaped by now; only our output needs flushing."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
