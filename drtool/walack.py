"""`drtool wal push --policy P %p`: PostgreSQL's archive_command, kept cheap (standard library only).

PostgreSQL runs it once per WAL file and waits, so it must not pay for click, boto3 and
cryptography (~250 ms) on every segment. The work is done by `drtool wal daemon`, which uploads
the files of pg_wal/archive_status/*.ready and writes `<spool>/ack/<name>.ok` once each object is
durable in the store. This entry point only:

1. answers 0 at once when `<spool>/ack/<name>.ok` exists (the daemon made it durable);
2. answers 1 when `<spool>/ack/<name>.error` exists (refused for good, e.g. different content is
   archived under the name; a person must look), printing that error;
3. while the daemon holds `<spool>/daemon.lock`, waits up to pitr.ack_timeout for one of the two;
4. when no daemon holds the lock, uploads the file itself (the full drtool, "sync push"), so
   archiving never depends on the daemon.

Exit codes are 0 (durable in the store) and 1 (PostgreSQL retries later), never anything else:
PostgreSQL treats an exit above 125 or death by a signal as fatal for the archiver. Every
exception, KeyboardInterrupt and SIGTERM end in 1.
"""

from __future__ import annotations

import os
import sys
import time

from .walspool import answer, daemon_alive

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import signal as signals
else:
    try:  # the C module behind `signal`: the same handler without importing enum and re (~5 ms)
        import _signal as signals
    except ImportError:  # another Python
        import signal as signals

# The ack path imports nothing beyond the interpreter's start-up set, os, errno and _signal:
# pathlib, tomllib, typing, uuid, enum and re cost ~15 ms together idle, more than the answer itself
# (tests/test_wal_archive.py checks it; docs/benchmarks.md, WAL archiving).

POLL = 0.01  # seconds between looks at the spool while the daemon works (a stat each)
USAGE = "usage: drtool wal push --policy FILE PATH (PostgreSQL's archive_command: ... wal push --policy FILE %p)"


class _Stop(Exception):
    """SIGTERM (PostgreSQL shutting down, systemd stop): give up this attempt with exit 1."""


def _on_sigterm(signum, frame) -> None:
    raise _Stop("stopped by SIGTERM; PostgreSQL retries the file later")


def main(argv: list[str] | None = None) -> None:
    """Run `wal push` and leave with 0 or 1 (os._exit: no teardown can change the code)."""
    code, message = 1, ""
    try:
        signals.signal(signals.SIGTERM, _on_sigterm)
        code, message = run(sys.argv[1:] if argv is None else argv)
    except BaseException as e:  # noqa: BLE001 - anything at all must end in 0/1, never a traceback or 2
        code, message = 1, f"{type(e).__name__}: {e}"
    try:
        if message:
            sys.stderr.write(f"drtool wal push: {message}\n")
            sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a closed stderr must not change the exit code
        pass
    os._exit(0 if code == 0 else 1)


def parse(argv: list[str]) -> tuple[str, str]:
    """(policy file, WAL path) from `wal push [--policy|-p FILE] PATH`; ValueError for anything else."""
    args = list(argv)
    if args[:2] == ["wal", "push"]:
        args = args[2:]
    policy = os.environ.get("DRTOOL_POLICY", "")
    paths = []
    while args:
        a = args.pop(0)
        if a in ("--policy", "-p"):
            if not args:
                raise ValueError(USAGE)
            policy = args.pop(0)
        elif a.startswith("--policy="):
            policy = a.split("=", 1)[1]
        elif a in ("-q", "--quiet"):
            continue
        elif a.startswith("-") and a != "-":
            raise ValueError(f"unknown option {a}; {USAGE}")
        else:
            paths.append(a)
    if not policy or len(paths) != 1:
        raise ValueError(USAGE)
    return policy, paths[0]


def run(argv: list[str]) -> tuple[int, str]:
    try:
        policy_file, wal_path = parse(argv)
    except ValueError as e:
        return 1, str(e)
    name = os.path.basename(wal_path)
    spool, ack_timeout, pgdata = _spool_settings(policy_file)
    if spool is not None:
        inside = _in_pg_wal(wal_path, pgdata)
        verdict = answer(spool, name)
        if verdict is not None and (inside or verdict[0] != 0):  # a refusal holds for any file of that name
            return verdict
        if inside and daemon_alive(spool):
            waited = _wait_for_daemon(spool, name, _seconds(ack_timeout))
            if waited is not None:
                return waited
    return _sync_push(policy_file, wal_path)


def _spool_settings(policy_file: str) -> tuple[str | None, object, str | None]:
    """[pitr] spool_dir, ack_timeout (unparsed: only a wait needs it) and pgdata, read without
    validating the rest (the sync push does). Paths are taken as the policy loader takes them
    (policy/shape.py path_value: ~ expanded, relative to the policy file's folder)."""
    try:
        with open(policy_file, "rb") as f:
            pitr = pitr_table(f.read())
    except (OSError, ValueError):
        return None, None, None
    if not isinstance(pitr, dict) or not isinstance(pitr.get("spool_dir"), str) or not pitr["spool_dir"]:
        return None, None, None
    pgdata = pitr.get("pgdata") if isinstance(pitr.get("pgdata"), str) else None
    where = os.path.dirname(policy_file)
    return _path(where, pitr["spool_dir"]), pitr.get("ack_timeout", "60s"), pgdata and _path(where, pgdata)


def _path(folder: str, value: str) -> str:
    return os.path.realpath(os.path.join(folder, os.path.expanduser(value)))


def _in_pg_wal(wal_path: str, pgdata: str | None) -> bool:
    """Whether the file is in the pg_wal the daemon reads (pitr.pgdata). A server started from
    another folder (a restored copy, before pitr.pgdata points at it) archives files the daemon
    never sees, and an ack in the spool for the same name is about another file: that server's
    pushes upload by themselves (create-only, so different content is still refused). A refusal
    (<name>.error) holds for every file of the name until a person removes it."""
    if not pgdata:
        return False
    here = os.path.realpath(os.path.dirname(os.path.abspath(wal_path)))
    return here == os.path.realpath(os.path.join(pgdata, "pg_wal"))


def _seconds(value: object) -> float:
    from .durations import parse_duration  # stdlib-only module

    try:
        return float(parse_duration(value)) if isinstance(value, str) else 60.0
    except ValueError:
        return 60.0


def _wait_for_daemon(spool: str, name: str, ack_timeout: float) -> tuple[int, str] | None:
    """The daemon's verdict within ack_timeout; None when the daemon went away meanwhile (then
    this process pushes the file itself)."""
    deadline = time.monotonic() + ack_timeout
    checks = 0
    while time.monotonic() < deadline:
        time.sleep(POLL)
        verdict = answer(spool, name)
        if verdict is not None:
            return verdict
        checks += 1
        if checks % 10 == 0 and not daemon_alive(spool):
            return answer(spool, name)
    return 1, (f"{name}: the WAL daemon did not acknowledge it within {ack_timeout:g}s "
               "(pitr.ack_timeout); PostgreSQL retries it")  # fmt: skip


def _sync_push(policy_file: str, wal_path: str) -> tuple[int, str]:
    """Upload the file in this process: the whole of drtool (~0.3 s), only when no daemon runs."""
    from .app.wal import push_sync

    return push_sync(policy_file, wal_path)


# -- the [pitr] table of the policy file, without tomllib ------------------------------------------
#
# tomllib (with re, string, its parser) costs ~8 ms to import, more than the rest of an ack. Policy
# files are plain: `key = "string"`, numbers, booleans, one-line arrays, bare [headers]. The reader
# below takes exactly that subset, checks it as strictly as TOML does (duplicates, control
# characters, a table defined twice), and hands ANYTHING else to tomllib: escapes, multi-line
# strings or arrays, inline tables, dotted or quoted keys, floats, dates, [pitr.sub], a key used
# twice. So it never disagrees with tomllib; it only answers plain files without it (compared
# over many files in tests/test_wal_push_policy.py). The policy file stays the one source.


class _NotPlain(Exception):
    """Outside the plain subset: tomllib decides."""


def pitr_table(data: bytes) -> object:
    """tomllib.loads(data).get("pitr"): the [pitr] table (None when absent); ValueError when the
    file is not UTF-8 TOML."""
    try:
        return _plain_pitr(data)
    except _NotPlain:
        import tomllib

        return tomllib.loads(data.decode("utf-8")).get("pitr")


_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_DIGITS = frozenset("0123456789")
_CONTROL = frozenset(chr(i) for i in range(32) if i != 9) | {chr(127)}  # TOML allows tab, no other
_WS = " \t"


def _plain_pitr(data: bytes) -> dict | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _NotPlain from None
    doc = _PlainDoc()
    for line in text.split("\n"):
        line = line[:-1] if line.endswith("\r") else line
        if not _CONTROL.isdisjoint(line):
            raise _NotPlain
        s = line.lstrip(_WS)
        if not s or s[0] == "#":
            continue
        if s[0] == "[":
            doc.header(s)
        else:
            doc.key_value(s)
    return doc.pitr


class _PlainDoc:
    """What the lines read so far define, enough to refuse what TOML refuses (then tomllib says it)."""

    def __init__(self) -> None:
        self.kinds: dict[tuple[str, ...], str] = {}  # path -> "table" | "array" | "value"
        self.implicit: set[tuple[str, ...]] = set()  # tables a dotted header created on the way
        self.table: tuple[str, ...] = ()
        self.pitr: dict | None = None

    def header(self, s: str) -> None:
        array = s.startswith("[[")
        opening = "[[" if array else "["
        closing = "]]" if array else "]"
        close = s.find("]")
        if close < 0 or s[close : close + len(closing)] != closing:
            raise _NotPlain
        path = tuple(_bare(part) for part in s[len(opening) : close].split("."))
        _end(s[close + len(closing) :])
        if path[0] == "pitr" and (array or len(path) > 1):
            raise _NotPlain
        if any(self.kinds.get(path[:i]) in ("value", "array") for i in range(1, len(path))):
            raise _NotPlain  # a table inside a value or inside an array's element
        if path in self.implicit or self.kinds.get(path) not in ((None, "array") if array else (None,)):
            raise _NotPlain
        if array:  # a new element: what the previous one defined is gone
            for p in [p for p in self.kinds if p[: len(path)] == path and len(p) > len(path)]:
                del self.kinds[p]
        self.implicit.update(path[:i] for i in range(1, len(path)))
        self.kinds[path] = "array" if array else "table"
        self.table = path
        if path == ("pitr",):
            self.pitr = {}

    def key_value(self, s: str) -> None:
        key, eq, rest = s.partition("=")
        if not eq:
            raise _NotPlain
        path = (*self.table, _bare(key))
        if path in self.kinds or path in self.implicit or path == ("pitr",):
            raise _NotPlain
        value, rest = _value(rest.lstrip(_WS))
        _end(rest)
        self.kinds[path] = "value"
        if self.pitr is not None and self.table == ("pitr",):
            self.pitr[path[-1]] = value


def _bare(text: str) -> str:
    key = text.strip(_WS)
    if not key or not _BARE.issuperset(key):
        raise _NotPlain
    return key


def _end(rest: str) -> None:
    """Only blanks and a comment may follow."""
    rest = rest.lstrip(_WS)
    if rest and rest[0] != "#":
        raise _NotPlain


def _value(s: str) -> tuple[object, str]:
    """One value at the start of s and what follows it."""
    if s[:1] in ('"', "'"):
        quote = s[0]
        close = s.find(quote, 1)
        if s.startswith(quote * 3) or close < 0 or (quote == '"' and "\\" in s[1:close]):
            raise _NotPlain  # multi-line, unclosed, or escapes
        return s[1:close], s[close + 1 :]
    if s[:1] == "[":
        return _array(s[1:])
    n = 0
    while n < len(s) and s[n] not in " \t,]#":
        n += 1
    word = s[:n]
    if word in ("true", "false"):
        return word == "true", s[n:]
    digits = word[1:] if word[:1] in ("+", "-") else word
    if not digits or not _DIGITS.issuperset(digits) or (digits[0] == "0" and len(digits) > 1):
        raise _NotPlain  # floats, dates, 0x.., 1_000, inline tables, leading zeros: tomllib
    return int(word), s[n:]


def _array(s: str) -> tuple[list, str]:
    """A one-line array of plain values (after its "["); nested arrays go to tomllib."""
    items: list = []
    while True:
        s = s.lstrip(_WS)
        if s[:1] == "]":
            return items, s[1:]
        if not s or s[0] in "[,#":
            raise _NotPlain
        value, s = _value(s)
        items.append(value)
        s = s.lstrip(_WS)
        if s[:1] == ",":
            s = s[1:]
        elif s[:1] != "]":
            raise _NotPlain
