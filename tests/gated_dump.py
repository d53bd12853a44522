"""A pg_dump (or pg_basebackup) that stops halfway until the test lets it finish: a backup held
mid-upload for as long as a test needs, without racing the clock. Point the policy's
`[backup] pg_bin_dir` at it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from drtool import pgtools

_SCRIPT = """#!{python}
import os, shutil, subprocess, sys, time
real = {real!r}
if len(sys.argv) > 1 and sys.argv[1] == "--version":
    os.execv(real, [real, *sys.argv[1:]])
proc = subprocess.Popen([real, *sys.argv[1:]], stdout=subprocess.PIPE)
out, left = sys.stdout.buffer, {before}
while left > 0:
    piece = proc.stdout.read(min(left, 1 << 16))
    if not piece:
        break
    out.write(piece)
    left -= len(piece)
out.flush()
open({reached!r}, "w").close()
deadline = time.monotonic() + 600  # never hang for ever if a test dies before opening the gate
while not os.path.exists({gate!r}) and time.monotonic() < deadline:
    time.sleep(0.05)
shutil.copyfileobj(proc.stdout, out)
out.flush()
sys.exit(proc.wait())
"""


class GatedDump:
    """`tool` (pg_dump, or pg_basebackup whose tar goes to stdout) passes its first `before` bytes,
    touches `reached`, then waits for `release()`."""

    def __init__(self, folder: Path, before: int, tool: str = "pg_dump"):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.reached, self.gate = folder, folder / "reached", folder / "gate"
        real = pgtools.find_tool(tool).path
        script = folder / tool
        script.write_text(_SCRIPT.format(python=sys.executable, real=real, before=before,
                                         reached=str(self.reached), gate=str(self.gate)))  # fmt: skip
        script.chmod(0o755)
        pg_restore = Path(real).with_name("pg_restore")
        if pg_restore.exists():
            os.symlink(pg_restore, folder / "pg_restore")

    @property
    def toml(self) -> str:
        return f'[backup]\npg_bin_dir = "{self.folder}"\n'

    def wait_reached(self, proc, timeout: float = 120) -> None:
        """Until the dump is held at the gate (fails if the backup process ended first)."""
        deadline = time.monotonic() + timeout
        while not self.reached.exists():
            assert proc.poll() is None, f"backup ended before reaching the gate: {proc.communicate()}"
            assert time.monotonic() < deadline, "pg_dump never reached the gate"
            time.sleep(0.05)

    def release(self) -> None:
        self.gate.touch()
