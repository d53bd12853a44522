"""scripts/s3-local: a local SeaweedFS the Quick start can use; what it prints works with drtool
as printed, and it stops by PID, from `stop` or from Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_setup

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "s3_local.py"


def start(folder: Path) -> tuple[subprocess.Popen, list[str]]:
    """Start it and read what it prints, up to the last line of its instructions."""
    # Ctrl-C must reach it as it does from a terminal, also when the suite itself runs in the background
    # (a shell starts background jobs with SIGINT ignored, and a child would inherit that)
    p = subprocess.Popen([sys.executable, str(SCRIPT), str(folder), "--bucket", "try-drtool"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    lines = []
    for line in p.stdout:
        lines.append(line.rstrip("\n"))
        if "stops the server" in line:
            return p, lines
    raise AssertionError("s3-local ended early: " + "\n".join(lines) + p.stderr.read())


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_printed_storage_lines_and_variables_work_with_drtool_and_stop_stops_it(pg, tmp_path):
    folder = tmp_path / "s3"
    p, lines = start(folder)
    try:
        storage = "\n".join(lines[lines.index("[storage]") : lines.index("[storage]") + 4])
        export = next(ln for ln in lines if ln.startswith("export "))
        env = dict(kv.split("=", 1) for kv in export.split()[1:])
        s = make_setup(pg, tmp_path, storage, init=False)
        s.env.update(env)
        for args in (("init",), ("backup",), ("verify",)):
            r = s.cli(*args, "-p", str(s.policy))
            assert r.code == 0, r.err
        port = int(storage.split("127.0.0.1:")[1].split('"')[0])
        assert port_open(port)
        pid = int((folder / "weed.pid").read_text())
        stopped = subprocess.run([sys.executable, str(SCRIPT), "stop", str(folder)], capture_output=True, text=True)
        assert stopped.returncode == 0 and f"pid {pid}" in stopped.stderr
        assert p.wait(timeout=30) == 0
        assert not (folder / "weed.pid").exists() and not port_open(port)
    finally:
        if p.poll() is None:
            p.kill()


def test_ctrl_c_stops_the_server(tmp_path):
    folder = tmp_path / "s3"
    p, lines = start(folder)
    pid = int((folder / "weed.pid").read_text())
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (folder / "weed.pid").exists()


def test_stop_without_a_server_says_so(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "stop", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1 and "no server running" in r.stderr
