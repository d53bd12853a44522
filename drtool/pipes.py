"""Pipe sizing for the streams between drtool and its child processes (pg_dump, pg_restore, the
dump scanner). Foundation: stdlib only."""

from __future__ import annotations

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named in the fcntl module only from Python 3.10 on Linux
PIPE_SIZE = 1 << 20  # 1 MiB: fewer context switches between the tools and us


def set_pipe_size(fd: int, size: int = PIPE_SIZE) -> None:
    """Grow a pipe's buffer where the OS allows it; elsewhere (not Linux, a limit) keep the default."""
    try:
        import fcntl

        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except (OSError, ImportError, AttributeError):
        pass
