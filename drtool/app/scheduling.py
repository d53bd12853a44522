"""Use case: the systemd units or crontab lines that call `drtool run` (and the services of
`drtool wal daemon` for policies with [pitr] enabled), printed or installed."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .. import units
from ..errors import UsageError
from ..policy import Policy


def schedule_files(policies: Sequence[Policy], policy_path: str, fmt: str, drtool: str,
                   only: Sequence[str] | None = None, serve_listen: str | None = None) -> dict[str, str]:  # fmt: skip
    """File name -> text, for `fmt` "systemd" (a service and a timer) or "cron" (one crontab line);
    `only` limits the jobs (units named after them); `serve_listen` makes the `drtool serve` unit."""
    path = os.path.abspath(policy_path)
    if serve_listen:
        if fmt != "systemd" or only:
            raise UsageError("--serve makes a systemd service; it takes neither --format cron nor --only")
        return units.serve_unit(path, drtool, serve_listen, "30s")
    make = units.systemd_units if fmt == "systemd" else units.crontab
    files = make(list(policies), path, drtool, only)
    if fmt == "systemd" and not only:  # the WAL daemons of policies with [pitr] enabled
        files.update(units.wal_daemon_units(list(policies), drtool))
    return files


def install(files: dict[str, str], install_dir: str) -> list[str]:
    """Write the files into install_dir (made when missing); UsageError naming the file that failed."""
    written = []
    for name, text in files.items():
        path = os.path.join(install_dir, name)
        try:
            os.makedirs(install_dir, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        except OSError as e:
            raise UsageError(f"--install {install_dir}: cannot write {name}: {e.strerror}") from None
        written.append(path)
    return written
