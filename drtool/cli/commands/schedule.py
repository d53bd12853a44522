"""drtool schedule: the systemd units or crontab lines that call `drtool run`."""

from __future__ import annotations

import os
import shutil
import sys

import click

from ...app import scheduling
from ..context import Ctx, only_option, pass_ctx, policies, policy_option


@click.command()
@policy_option
@click.option("--format", "fmt", type=click.Choice(["systemd", "cron"]), required=True)
@click.option("--install", "install_dir", type=click.Path(file_okay=False), help="Write the files into this folder.")
@click.option("--drtool-bin", help="The drtool command the units call (default: this one).")
@only_option("Units that run only these jobs (drtool-backup-prune.timer, drtool-drill.timer, ...).")
@click.option("--serve", "serve_listen", is_flag=False, flag_value="127.0.0.1:9187", default=None,
              metavar="[HOST:PORT]", help="The drtool-serve.service of `drtool serve` (127.0.0.1:9187).")  # fmt: skip
@pass_ctx
def schedule(ctx: Ctx, policy_path: str, fmt: str, install_dir: str | None, drtool_bin: str | None,
             only: tuple[str, ...] | None, serve_listen: str | None) -> None:  # fmt: skip
    """Print (or --install) the systemd timer and service, or the crontab lines, that run drtool."""
    files = scheduling.schedule_files(policies(ctx, policy_path), policy_path, fmt, drtool_bin or self_command(),
                                      only, serve_listen)  # fmt: skip
    if not install_dir:
        for name, text in files.items():
            click.echo(f"# ---- {name}\n{text}")
        return
    for path in scheduling.install(files, install_dir):
        ctx.info(f"wrote {path}")
    if fmt == "systemd":
        unit = next(n for n in files if n.endswith((".timer", "-serve.service")))
        wal = [n for n in files if n.startswith("drtool-wal-")]
        ctx.info(f"then: systemctl daemon-reload && systemctl enable --now {' '.join([unit, *wal])}")
    else:
        ctx.info("then: copy the line into root's crontab (crontab -e), or /etc/cron.d with a user field")


def self_command() -> str:
    """How to call this drtool again: the installed script, or this interpreter with -m."""
    argv0 = sys.argv[0]
    if argv0.endswith("__main__.py") or not argv0:
        return f"{sys.executable} -m drtool"
    return os.path.abspath(argv0) if os.path.exists(argv0) else (shutil.which(argv0) or argv0)
