"""Pipe sizing and read-ahead for the streams between drtool and its child processes (pg_dump,
pg_restore, pg_basebackup, the dump scanner). Foundation: stdlib only."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named in the fcntl module only from Python 3.10 on Linux
PIPE_SIZE = 1 << 20  # 1 MiB: fewer context switches between the tools and us


def set_pipe_size(fd: int, size: int = PIPE_SIZE) -> None:
    """Grow a pipe's buffer where the OS allows it; elsewhere (not Linux, a limit) keep the default."""
    try:
        import fcntl

        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except (OSError, ImportError, AttributeError):
        pass


_END = object()


def close_source(source: object) -> None:
    """Close a generator (or anything with close()); a no-op for a plain iterator or an exhausted one."""
    close = getattr(source, "close", None)
    if close is not None:
        close()


def read_ahead(
    source: Iterable[bytes], depth: int, *, on_close: Callable[[], object] | None = None, name: str = "read-ahead"
) -> Generator[bytes, None, None]:
    """The pieces of `source`, read by a thread of their own up to `depth` pieces ahead of the
    consumer, so the producer (a child writing a pipe) never waits while the consumer compresses,
    encrypts or uploads. Memory: `depth` pieces. An error of `source` is raised here, after the
    pieces before it. When the consumer stops early, `on_close` runs first (kill the child: the
    reader's blocked read then ends), then the thread is joined."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for piece in source:
                if not offer((piece, None)):
                    return
            offer((_END, None))
        except BaseException as e:  # handed to the consumer, raised there
            offer((_END, e))
        finally:
            close_source(source)  # stopped early: a generator stage closes its own input (in this thread)

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    ended = False
    try:
        while True:
            piece, error = q.get()
            if piece is _END:
                ended = True
                if error is not None:
                    raise error
                return
            yield piece
    finally:
        stop.set()
        if not ended and on_close is not None:
            on_close()
        worker.join()
