"""Use case: the systemd units or crontab lines that call `drtool run`, printed or installed."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .. import units
from ..errors import UsageError
from ..policy import Policy


def schedule_files(policies: Sequence[Policy], policy_path: str, fmt: str, drtool: str) -> dict[str, str]:
    """File name -> text, for `fmt` "systemd" (a service and a timer) or "cron" (one crontab line)."""
    make = units.systemd_units if fmt == "systemd" else units.crontab
    return make(list(policies), os.path.abspath(policy_path), drtool)


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
