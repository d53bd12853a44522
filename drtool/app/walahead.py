"""Use case: the read-ahead process of restore_command (`drtool wal read-ahead`, started by the thin
`wal fetch`, drtool/walget.py). ONE process per spool keeps the `pitr.prefetch` segments after the
replay position (<spool>/fetch/want) downloaded, several at once, so that each restore_command call
is a rename instead of a download while PostgreSQL replays (docs/pitr.md, "Replay speed").

What it reads ahead is never an answer: a segment it cannot get (not archived yet, store down) is
simply not in the folder. Requests the folder cannot serve (a miss, a history file, the end of the
archive) are answered on <spool>/fetch/reader.sock by this warm process, each looked up in the
store afresh (0 written, 1 not archived, 200 failed), so they cost no interpreter start either.
"""

from __future__ import annotations

import os
import socketserver
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .. import fetchspool, walarchive, walnames
from ..errors import DrtoolError
from ..policy import Policy
from .context import Context

TICK = 0.05  # seconds between looks at the replay position (a stat; the window is pitr.prefetch segments ahead)
RETRY = 1.0  # seconds before a segment that was not there (or failed) is asked for again
IDLE_EXIT = 60.0  # seconds without a new replay position: recovery ended or waits; the process leaves
MAX_WORKERS = 8


def read_ahead(app: Context, policy: Policy, ahead: Path, stop: threading.Event,
               warn: Callable[[str], None] = lambda line: None) -> int:  # fmt: skip
    """Keep the segments after the replay position downloaded into `ahead` until recovery stops
    asking (IDLE_EXIT), the folder is replaced (a new restore) or `stop` is set. Returns how many
    segments it downloaded. The caller holds fetchspool.take_reader_lock(ahead)."""
    store, identities = app.store(policy), app.identities(policy)
    workers = min(MAX_WORKERS, max(2, policy.pitr.upload_workers))
    folder = _inode(ahead)
    state = _Ahead(policy.pitr.prefetch)
    cluster = None
    server = _serve_requests(ahead, policy, lambda name, dest: walarchive.fetch_file(store, policy, identities,
                                                                                     name, dest))  # fmt: skip
    want_file, want_seen = ahead / fetchspool.WANT, None
    ended = threading.Event()  # a download ended: start the next one now, not at the next tick
    with server, ThreadPoolExecutor(max_workers=workers) as pool:
        while not stop.is_set() and folder is not None and _inode(ahead) == folder:
            now = time.monotonic()
            stamp = _stamp(want_file)
            if stamp != want_seen:  # one stat per tick; the file is read only when it was replaced
                want_seen = stamp
                state.idle(fetchspool.read_want(ahead), now)
            if state.idle(state.want, now) > IDLE_EXIT:
                break
            state.collect(now, warn)
            if cluster is None:
                cluster = _cluster(store, policy, warn)
            if cluster is not None and state.want is not None and state.needs_look(now):
                for name in state.to_start(ahead, cluster.wal_segment_size, workers, now):
                    state.in_flight[name] = pool.submit(walarchive.fetch_file, store, policy, identities, name,
                                                        ahead / name, cluster.sysid)  # fmt: skip
                    state.in_flight[name].add_done_callback(lambda f: ended.set())
            ended.wait(TICK if cluster is not None else RETRY)  # `stop` is seen at the next tick
            ended.clear()
        for f in state.in_flight.values():
            f.cancel()
        server.shutdown()
        (ahead / fetchspool.SOCK).unlink(missing_ok=True)
    return state.fetched


def _serve_requests(ahead: Path, policy: Policy, fetch: Callable[[str, Path], bool]) -> socketserver.BaseServer:
    """Answer `wal fetch` requests on <ahead>/reader.sock, one thread each: "0" written, "1" not
    archived, "200 <reason>" failed, "-" not this process's policy (the caller fetches itself)."""
    mine = os.path.realpath(policy.source)

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            try:
                source, name, dest = fetchspool.parse_request(self.rfile.readline())
            except ValueError:
                return
            if os.path.realpath(source) != mine or not dest.is_absolute():
                self.wfile.write(b"-\n")
                return
            try:
                reply = "0" if fetch(name, dest) else "1"
            except DrtoolError as e:
                reply = "200 " + " ".join(str(e).split())
            except Exception as e:  # noqa: BLE001 - a bug must stop recovery, never read as "not archived"
                reply = f"200 unexpected {type(e).__name__}: {' '.join(str(e).split())}"
            self.wfile.write(reply.encode() + b"\n")

    sock = ahead / fetchspool.SOCK
    sock.unlink(missing_ok=True)  # left by a process that died; this one holds the lock
    server = socketserver.ThreadingUnixStreamServer(str(sock), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True).start()
    return server


def _stamp(path: Path) -> tuple[int, int] | None:
    """Changes whenever `wal fetch` replaces the file (write_want renames a new one in)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _inode(folder: Path) -> int | None:
    try:
        return folder.stat().st_ino
    except OSError:
        return None


def _cluster(store, policy: Policy, warn: Callable[[str], None]):
    try:
        return walarchive.read_cluster(store, policy)
    except DrtoolError as e:
        warn(f"read-ahead: {e}")
        return None


class _Ahead:
    """What the read-ahead knows between ticks (only its main thread touches it)."""

    def __init__(self, count: int):
        self.count = count
        self.want: str | None = None
        self.changed = time.monotonic()
        self.in_flight: dict[str, Future] = {}
        self.retry_at: dict[str, float] = {}
        self.done: set[str] = set()  # downloaded here: never again, even once served and gone
        self.fetched = 0
        self.dirty = True  # something changed since the folder was last looked at (see needs_look)

    def idle(self, want: str | None, now: float) -> float:
        """Seconds since the replay position last moved."""
        if want != self.want and (want is None or walnames.SEGMENT.match(want)):
            self.want, self.changed, self.dirty = want, now, True
        return now - self.changed

    def needs_look(self, now: float) -> bool:
        """Whether to look at the folder and start downloads: the replay position moved, a download
        ended, or a segment's retry time came. Otherwise a tick costs a stat, not a listdir and a
        dozen more (the process shares the CPUs with PostgreSQL's redo for the whole replay)."""
        due = any(t <= now for t in self.retry_at.values())
        look, self.dirty = self.dirty or due, False
        if due:
            self.retry_at = {n: t for n, t in self.retry_at.items() if t > now}
        return look

    def collect(self, now: float, warn: Callable[[str], None]) -> None:
        for name, f in list(self.in_flight.items()):
            if not f.done():
                continue
            del self.in_flight[name]
            self.dirty = True
            try:
                found = f.result()
            except DrtoolError as e:
                warn(f"read-ahead {name}: {e}")
                found = False
            if found:
                self.done.add(name)
                self.fetched += 1
            else:  # not archived yet, or failed: not kept, asked again later
                self.retry_at[name] = now + RETRY

    def window(self, size: int) -> list[str]:
        assert self.want is not None
        seg, names = walnames.parse_segment(self.want, size), []
        for _ in range(self.count):
            seg = seg.next()
            names.append(seg.name)
        return names

    def to_start(self, ahead: Path, size: int, workers: int, now: float) -> list[str]:
        """Drop what replay has passed, then the nearest segments of the window that are neither
        there nor downloading, up to `workers` downloads at once. Stops at a segment that was not
        there a moment ago: replay cannot pass it, so nothing after it is worth downloading yet."""
        window = self.window(size)
        self._drop_stale(ahead, {*window, self.want, *self.in_flight})
        self.done &= set(window)
        start: list[str] = []
        for name in window:
            if len(self.in_flight) + len(start) >= workers or self.retry_at.get(name, 0) > now:
                break
            if name in self.in_flight or name in self.done or (ahead / name).exists():
                continue
            start.append(name)
        return start

    @staticmethod
    def _drop_stale(ahead: Path, keep: set) -> None:
        try:
            names = os.listdir(ahead)
        except OSError:
            return
        for name in names:
            if walnames.SEGMENT.match(name) and name not in keep:
                (ahead / name).unlink(missing_ok=True)
