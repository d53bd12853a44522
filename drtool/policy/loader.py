"""Load policy files: read, parse TOML, validate (shape.py, then rules.py); every problem is
reported with its file and TOML key path."""

from __future__ import annotations

import os
import pwd
import stat
import tomllib
from pathlib import Path

from ..errors import PolicyError
from .rules import NAME, Validator
from .schema import Fleet, InvalidPolicy, Policy
from .shape import AGE_SECRET, age_secret_advice


def load_fleet(path: str | Path, name: str | None = None) -> Fleet:
    """The policies of a file or a folder of *.toml, each file loaded on its own.

    In a folder an invalid file (or a second file using a name taken by an earlier one, in file
    name order) is returned in `invalid` and the others load. A single file that is invalid, a
    missing path or an empty folder raise PolicyError listing every problem.
    With `name`, only the folder's files that declare that name (and those too broken to say
    which name they declare) are validated: the rest of the fleet costs a TOML parse each."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise PolicyError([f"{p}: no such policy file or folder"]) from None
    except OSError as e:  # a folder on the way the user cannot enter (e.g. postgres, /etc/drtool 0700)
        raise PolicyError([f"{p}: cannot read: {e.strerror} (as user {_user()})"]) from None
    if stat.S_ISREG(mode):
        return Fleet([load_policy(p)], [])
    if not stat.S_ISDIR(mode):
        raise PolicyError([f"{p}: no such policy file or folder"])
    files = sorted(p.glob("*.toml"))
    if not files:
        raise PolicyError([f"{p}: no *.toml policy files in this folder"])
    fleet = Fleet([], [])
    seen: dict[str, Path] = {}
    for f in files:
        if name is not None and _declared_name(f) not in (name, None):
            continue
        loaded = _load(f)
        if isinstance(loaded, InvalidPolicy):
            fleet.invalid.append(loaded)
        elif loaded.name in seen:  # two files would share one catalog and lock: the first keeps it
            problem = f"{f}: name: '{loaded.name}' is also used by {seen[loaded.name]}"
            fleet.invalid.append(InvalidPolicy(f, (problem,), loaded.name))
        else:
            seen[loaded.name] = f
            fleet.policies.append(loaded)
    return fleet


def _user() -> str:
    """Who is reading: the postgres user runs archive_command and the WAL daemon, not root."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def load_policies(path: str | Path) -> list[Policy]:
    """Policies from a file or a folder of *.toml; raises PolicyError listing every problem of every file."""
    fleet = load_fleet(path)
    if fleet.invalid:
        raise PolicyError([line for bad in fleet.invalid for line in bad.problems])
    return fleet.policies


def load_policy(path: Path) -> Policy:
    """One policy file; raises PolicyError listing every problem."""
    loaded = _load(path)
    if isinstance(loaded, InvalidPolicy):
        raise PolicyError(list(loaded.problems))
    return loaded


def _declared_name(path: Path) -> str | None:
    """The `name` a policy file declares, without validating anything else; None when the file
    cannot be read or parsed far enough to say."""
    try:
        name = tomllib.loads(path.read_text(encoding="utf-8")).get("name")
    except (OSError, UnicodeDecodeError, ValueError):  # TOMLDecodeError is a ValueError
        return None
    return name if isinstance(name, str) else None


def _load(path: Path) -> Policy | InvalidPolicy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        return InvalidPolicy(path, (f"{path}: cannot read: {e.strerror} (as user {_user()})",))
    except UnicodeDecodeError:
        return InvalidPolicy(path, (f"{path}: not UTF-8 text",))
    # An age identity anywhere (a value, a key, a comment) is refused before parsing, so a file
    # that is also not valid TOML is still named for it; the message never quotes the line.
    secret_lines = [f"{path}: line {n}: {age_secret_advice()}"
                    for n, line in enumerate(text.splitlines(), 1) if AGE_SECRET.search(line)]  # fmt: skip
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return InvalidPolicy(path, (*secret_lines, f"{path}: not valid TOML: {e}"))
    except ValueError:  # tomllib lets int() refuse a number of thousands of digits
        return InvalidPolicy(path, (*secret_lines, f"{path}: not valid TOML: a number too long to read"))
    try:
        return Validator(path, secret_lines).run(raw)
    except PolicyError as e:
        name = raw.get("name")
        return InvalidPolicy(path, tuple(e.problems), name if isinstance(name, str) and NAME.match(name) else None)
