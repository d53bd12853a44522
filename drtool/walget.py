"""`drtool wal fetch --policy P --spool DIR %f %p`: PostgreSQL's restore_command, fast path
(standard library only), and the entry of the read-ahead process it starts.

Recovery runs restore_command once per WAL segment and replays nothing while it waits, so loading
click, boto3 and cryptography (~0.3 s, seconds on a loaded host) for every 16 MiB segment bounds
replay speed. This entry point, reached from drtool/entry.py before any heavy import:

1. records the segment asked for as the replay position (<spool>/fetch/want) and, when no
   read-ahead process holds <spool>/fetch/reader.lock, starts one (`drtool wal read-ahead`,
   drtool/app/walahead.py), detached, and waits until it listens; it keeps pitr.prefetch segments
   ahead, several at once;
2. serves a segment that was read ahead: a rename (or a copy across file systems) and an fsync,
   exit 0; waits for a segment that the read-ahead is downloading right now;
3. asks the running read-ahead process (<spool>/fetch/reader.sock) for anything else: a miss, a
   history file, the end of the archive. It is warm (no interpreter start, no imports) and looks
   in the store afresh for each request: 0 written, 1 not archived (never cached), 200 failed;
4. hands everything else to the full `drtool wal fetch` (no read-ahead process yet, no --spool,
   any unusual argument), which fetches from the store and gives the same answers.
"""

from __future__ import annotations

import os
import sys
import time

from . import fetchspool

# No pathlib here (nor in fetchspool): it pulls re, enum, urllib and more, ~15 ms of every call
# while recovery waits (docs/benchmarks.md); tests/test_wal_fetch_fast.py checks the imports.

SEGMENT_CHARS = frozenset("0123456789ABCDEF")
POLL = 0.01  # seconds between looks while the read-ahead downloads the segment asked for
WAIT_DOWNLOAD = 120.0  # at most this long; then this process fetches the segment itself
READER_START = 60.0  # at most this long for a new read-ahead process to listen


def parse(argv: list[str]) -> tuple[str, str, str, str] | None:
    """(policy file, spool, WAL file name, dest) from
    `wal fetch [--policy|-p FILE] --spool DIR NAME DEST`; None for anything else (the full command
    handles it, usage errors included)."""
    args, policy, spool, rest = list(argv[2:]), None, None, []
    while args:
        a = args.pop(0)
        if a in ("--policy", "-p", "--spool") and args:
            value = args.pop(0)
            policy, spool = (value, spool) if a != "--spool" else (policy, value)
        elif a.startswith(("--policy=", "--spool=")):
            key, value = a.split("=", 1)
            policy, spool = (value, spool) if key == "--policy" else (policy, value)
        elif a.startswith("-"):
            return None
        else:
            rest.append(a)
    if spool is None or len(rest) != 2 or (policy is None and not os.environ.get("DRTOOL_POLICY")):
        return None
    name, dest = rest
    stem, _, suffix = name.partition(".")
    if not SEGMENT_CHARS.issuperset(stem) or suffix not in ("", "history", "partial") and "." not in suffix:
        return None  # the read-ahead process and the full command check names strictly
    return policy or os.environ["DRTOOL_POLICY"], spool, name, dest


def fetch(argv: list[str]) -> None:
    """Serve a segment read ahead and exit 0; otherwise return (the caller runs the full command)."""
    parsed = parse(argv)
    if parsed is None:
        return
    policy, spool, name, dest = parsed
    ahead = os.path.join(spool, fetchspool.FETCH)
    segment = len(name) == 24
    try:
        if segment:
            fetchspool.write_want(ahead, name)
        alive = fetchspool.reader_alive(ahead) or _started(start_reader(policy, spool), ahead)
        if segment and (fetchspool.serve(ahead, name, dest) or _wait_download(ahead, name, dest)):
            _leave(0)
    except OSError as e:  # the full command tries again and reports what it finds
        _say(f"drtool wal fetch {name}: read-ahead folder {ahead}: {e.strerror or e}; fetching from the store")
        return
    verdict = fetchspool.ask(ahead, policy, name, dest) if alive else None
    if verdict is not None:
        code, reason = verdict
        if reason:
            _say(f"drtool: error: wal fetch {name}: {reason}")
        _leave(code)


def _wait_download(ahead: str, name: str, dest: str) -> bool:
    deadline = time.monotonic() + WAIT_DOWNLOAD
    while time.monotonic() < deadline:
        if not fetchspool.downloading(ahead, name):
            return fetchspool.serve(ahead, name, dest)  # finished meanwhile, or gave up
        time.sleep(POLL)
        if fetchspool.serve(ahead, name, dest):
            return True
    return False


def _started(reader, ahead: str) -> bool:
    """Wait for a read-ahead process just started to listen (one interpreter start instead of two
    competing ones); False when it exits first (a bad policy: the full command says what is wrong)."""
    deadline = time.monotonic() + READER_START
    while time.monotonic() < deadline and reader.poll() is None:
        if os.path.exists(os.path.join(ahead, fetchspool.SOCK)):
            return True
        time.sleep(POLL)
    return False


def start_reader(policy: str, spool: str):
    """Start `drtool wal read-ahead` detached (its own session: it outlives this call), with this
    interpreter and import path, whatever launcher PostgreSQL ran."""
    import subprocess

    argv = [sys.executable, "-m", "drtool", "wal", "read-ahead", "--spool", spool, "--policy",
            os.path.abspath(policy)]  # fmt: skip
    # MALLOC_ARENA_MAX: glibc gives each download thread its own arena of freed buffers otherwise
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), MALLOC_ARENA_MAX="2")
    with open(os.path.join(spool, fetchspool.LOG), "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env,
                         start_new_session=True, close_fds=True)  # fmt: skip


def read_ahead_main(argv: list[str]) -> None:
    """`drtool wal read-ahead --spool DIR [--policy FILE]`: take the lock (before any heavy import:
    a second process started in the same instant leaves at once), then read ahead until idle."""
    args = argv[2:]
    try:
        spool = args[args.index("--spool") + 1]
        policy = args[args.index("--policy") + 1] if "--policy" in args else os.environ.get("DRTOOL_POLICY", "")
    except (ValueError, IndexError):
        _say("usage: drtool wal read-ahead --spool DIR [--policy FILE] (started by drtool wal fetch)")
        _leave(2)
    ahead = os.path.join(spool, fetchspool.FETCH)
    try:
        lock = fetchspool.take_reader_lock(ahead)
    except OSError as e:
        _say(f"drtool wal read-ahead: {ahead}: {e.strerror}")
        _leave(1)
    if lock is None:
        _leave(0)  # another one reads ahead
    _leave(_read_ahead(policy, ahead))


def _read_ahead(policy_file: str, ahead: str) -> int:
    import signal
    import threading
    from pathlib import Path

    from .app.context import Context
    from .app.runtime import bound_malloc
    from .app.walahead import read_ahead
    from .errors import DrtoolError
    from .policy import load_fleet

    bound_malloc()  # as the CLI does: multi-MB download buffers go back to the system when freed
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        fleet = load_fleet(policy_file)
        if fleet.invalid or len(fleet.policies) != 1:
            _say(f"drtool wal read-ahead: {policy_file}: not one valid policy")
            return 1
        n = read_ahead(Context(), fleet.policies[0], Path(ahead), stop, warn=_say)
    except DrtoolError as e:
        _say(f"drtool wal read-ahead: {' '.join(str(e).split())}")
        return 1
    _say(f"drtool wal read-ahead: {n} segment(s) read ahead into {ahead}; recovery stopped asking")
    return 0


def _say(line: str) -> None:
    try:
        sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _leave(code: int):
    os._exit(code)
