"""A throwaway PostgreSQL server for restore drills: initdb into a temporary folder, start,
and always stop and delete again.

Safety: the server has no TCP listener at all, only a Unix socket inside its own 0700 folder,
so the restored copy of production data is reachable by root and the server's user only.
As root, the server runs as the unprivileged `postgres` user (PostgreSQL refuses root), and
the kernel stops it if drtool dies without cleaning up (PR_SET_PDEATHSIG); a folder left by a
killed drtool is removed by the next drill.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DatabaseError, DrtoolError

PREFIX = "drtool-drill-"
OWNER_FILE = "drtool.owner"  # "<pid>" of the drtool process that owns the folder
SUPERUSER = "drtool"

DURABLE, FAST = "durable", "fast"
PROFILES = (DURABLE, FAST)

# "durable" writes as a production server does, so the drill's RTO is what a real recovery
# takes; "fast" skips the flushes and the WAL a crash would need (a quicker drill, a flattering RTO).
_PROFILE_CONF = {
    DURABLE: "fsync = on\nsynchronous_commit = on\nfull_page_writes = on\nwal_level = replica\n",
    FAST: "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nwal_level = minimal\n",
}

_CONF = """
listen_addresses = ''
unix_socket_directories = '{sock}'
port = {port}
max_wal_senders = 0
shared_buffers = 128MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
checkpoint_timeout = 1h
autovacuum = off
"""


@dataclass
class ScratchServer:
    base: Path
    bindir: Path
    port: int
    version: str
    proc: subprocess.Popen | None = None
    ids: dict[str, Any] = field(default_factory=dict)  # user/group the server runs as (empty: ours)

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    @property
    def data(self) -> Path:
        return self.base / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise DrtoolError(
            "running as root, and PostgreSQL refuses to run as root: the drill's scratch server needs "
            "an unprivileged OS user named 'postgres'"
        ) from None


def _die_with_parent() -> None:
    """In the child, after the user switch: the kernel sends SIGQUIT when drtool dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reap_stale(root: Path) -> list[str]:
    """Delete scratch folders whose drtool process is gone (it was killed); returns them."""
    removed = []
    for d in root.glob(PREFIX + "*"):
        owner = d / OWNER_FILE
        try:
            pid = int(owner.read_text().strip())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if pid_alive(pid):
            continue
        pm = d / "data" / "postmaster.pid"
        try:
            pm_pid = int(pm.read_text().splitlines()[0])
            if pid_alive(pm_pid):
                os.kill(pm_pid, signal.SIGQUIT)
                _wait_gone(pm_pid, 10)
        except (OSError, ValueError, IndexError):
            pass
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)


@contextmanager
def scratch_server(
    bindir: Path, version: str, root: Path | None = None, *, profile: str = DURABLE
) -> Iterator[ScratchServer]:
    """A started throwaway server with the settings of `profile`; stopped and deleted when the
    block ends, however it ends."""
    with scratch_folder(bindir, version, root) as server:
        r = subprocess.run(
            [str(bindir / "initdb"), "-D", str(server.data), "-U", SUPERUSER, "--auth=trust", "--no-sync",
             "-E", "UTF8", "--locale=C"],
            capture_output=True, text=True, **_child(server),
        )  # fmt: skip
        if r.returncode != 0:
            raise DatabaseError(f"scratch server: initdb failed: {(r.stderr or r.stdout).strip()[-300:]}")
        with open(server.data / "postgresql.conf", "a") as f:
            f.write(settings(server, profile))
        start(server)
        _wait_ready(server)
        yield server


@contextmanager
def scratch_folder(bindir: Path, version: str, root: Path | None = None) -> Iterator[ScratchServer]:
    """A private folder for a throwaway server (its socket folder made, its data folder not yet):
    the caller fills `server.data` and calls start(). Stopped and deleted when the block ends,
    however it ends; reaped by the next drill when drtool is killed."""
    root = Path(root or tempfile.gettempdir())
    reap_stale(root)
    user = _run_as()
    base = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
    server = ScratchServer(base, bindir, _free_port(), version)
    try:
        (base / OWNER_FILE).write_text(str(os.getpid()))
        server.socket_dir.mkdir(mode=0o700)
        if user:
            os.chown(base, user.pw_uid, user.pw_gid)
            os.chown(server.socket_dir, user.pw_uid, user.pw_gid)
            os.chmod(base, 0o700)
            server.ids = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        yield server
    finally:
        stop(server)


def settings(server: ScratchServer, profile: str = DURABLE) -> str:
    """The isolation settings (no TCP listener, the private socket) and those of `profile`."""
    return _CONF.format(sock=server.socket_dir, port=server.port) + _PROFILE_CONF[profile]


def _child(server: ScratchServer) -> dict:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(server.base)}
    return {"env": env, "cwd": server.base, **server.ids}


def start(server: ScratchServer) -> None:
    """Start the server on its data folder (as the unprivileged user when root), logging into
    server.log; returns at once (_wait_ready, or the caller's own wait, follows)."""
    log = open(server.base / "server.log", "wb")
    try:
        server.proc = subprocess.Popen(
            [str(server.bindir / "postgres"), "-D", str(server.data)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent, **_child(server),
        )  # fmt: skip
    finally:
        log.close()


def log_tail(server: ScratchServer, chars: int = 500) -> str:
    try:
        return (server.base / "server.log").read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


def _wait_ready(server: ScratchServer, timeout: float = 60) -> None:
    sock = server.socket_dir / f".s.PGSQL.{server.port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc and server.proc.poll() is not None:
            raise DatabaseError(f"scratch server exited while starting: {log_tail(server)}")
        if sock.exists():
            r = subprocess.run(
                [str(server.bindir / "pg_isready"), "-q", "-h", str(server.socket_dir), "-p", str(server.port)],
                capture_output=True,
            )
            if r.returncode == 0:
                return
        time.sleep(0.05)
    raise DatabaseError(f"scratch server did not accept connections within {timeout:.0f}s")


def stop(server: ScratchServer) -> None:
    """Immediate shutdown (nothing in it needs to survive), then delete the folder."""
    if server.proc and server.proc.poll() is None:
        server.proc.send_signal(signal.SIGQUIT)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    shutil.rmtree(server.base, ignore_errors=True)
