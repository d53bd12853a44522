"""Load and validate policy files: every problem reported with its file and TOML key path."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import zoneinfo
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from croniter import croniter
from croniter.croniter import CroniterBadDateError

from .. import bech32
from ..crypto import sshsig
from ..durations import format_duration, parse_duration
from ..errors import PolicyError
from ..postgres import dsn_password_keys
from .schema import (
    BackupOptions,
    Drill,
    Fleet,
    InvalidPolicy,
    Notify,
    Pitr,
    Policy,
    Retention,
    Schedule,
    Signing,
    StorageTarget,
)

DRILL_KINDS = ("logical", "physical", "both")  # [drill] kind: what `drtool run` drills

# The schema: section -> key -> type tag. A nested dict is a section; a list of one dict an array of
# tables. Sections that have a dataclass take their keys and types from its fields (schema.py).


def _keys(cls: type, *, without: tuple[str, ...] = ()) -> dict[str, str]:
    """TOML key -> type tag of a section's dataclass: str, int, bool, list[str] (a duration is a str)."""
    tags = {"str": "str", "int": "int", "bool": "bool", "tuple[str, ...]": "list[str]"}
    out = {}
    for f in fields(cls):
        if f.name in without:
            continue
        kind = str(f.type).removesuffix(" | None")
        out[f.name] = "str" if f.metadata.get("toml") == "duration" else tags[kind]
    return out


def _default(cls: type, name: str) -> Any:
    """A section key's default, stated once: on its dataclass field."""
    return next(f.default for f in fields(cls) if f.name == name)


_STORAGE_KEYS = _keys(StorageTarget, without=("name",))
_SCHEMA: dict[str, Any] = {
    "name": "str",
    "database": {"dsn": "str", "password_env": "str"},
    "schedule": _keys(Schedule),
    "retention": _keys(Retention),
    "storage": {**_STORAGE_KEYS, "copies": [{**_STORAGE_KEYS, "name": "str"}]},
    "encryption": {"recipients": "list[str]", "identity_file": "str"},
    "objectives": {"rpo": "str", "rto": "str"},
    "backup": _keys(BackupOptions),
    "notify": _keys(Notify),
    "drill": _keys(Drill),
    "signing": _keys(Signing),
    "pitr": _keys(Pitr),
}

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_HINTS = re.compile(r"(?i)AGE-SECRET-KEY-1|aws_secret_access_key|BEGIN [A-Z ]*PRIVATE KEY")
_OPENSSH_PRIVATE = re.compile(r"b3BlbnNzaC1rZXktdjE")  # base64 of "openssh-key-v1": a private key's body
_SECRET_KEYS = re.compile(
    r"(?i)^(password|passwd|secret|token|secret_key|access_key|aws_secret_access_key|webhook_url|heartbeat_url)$"
)
_AGE_SECRET = re.compile(r"(?i)AGE-SECRET-KEY-1")

# The largest value each number may take: anything above is a typo or an attack, and would fail
# later (OverflowError, a C conversion, a date before year 1) instead of here with its key path.
# Keys under storage.copies[i] share the storage.* bounds. An integer key not listed gets _INT_MAX.
_INT_BOUNDS = {
    **{f"retention.keep_{k}": 1_000_000 for k in ("last", "hourly", "daily", "weekly", "monthly", "yearly")},
    "storage.max_attempts": 100,
    "storage.object_lock_days": 36_500,  # 100 years, S3's own limit
    "backup.zstd_level": 19,
    "backup.zstd_threads": 200,  # ZSTDMT_NBWORKERS_MAX
    "pitr.upload_workers": 64,
    "pitr.prefetch": 1024,
}
_INT_MAX = 1_000_000
_YEAR = 365 * 86400
_DURATION_BOUNDS = {  # seconds; a duration key not listed gets _DURATION_MAX
    "retention.keep_within": 100 * _YEAR,
    "objectives.rpo": 10 * _YEAR,
    "objectives.rto": 10 * _YEAR,
    "notify.timeout": 300,  # a notification never holds a job up for long
    "storage.read_timeout": 3600,  # a store silent this long is down, not slow
    "pitr.archive_timeout": 3600,
    "pitr.ack_timeout": 3600,
    "pitr.heartbeat_interval": 3600,
}
_DURATION_MAX = 100 * _YEAR


def load_fleet(path: str | Path, name: str | None = None) -> Fleet:
    """The policies of a file or a folder of *.toml, each file loaded on its own.

    In a folder an invalid file (or a second file using a name taken by an earlier one, in file
    name order) is returned in `invalid` and the others load. A single file that is invalid, a
    missing path or an empty folder raise PolicyError listing every problem.
    With `name`, only the folder's files that declare that name (and those too broken to say
    which name they declare) are validated: the rest of the fleet costs a TOML parse each."""
    p = Path(path)
    if p.is_file():
        return Fleet([load_policy(p)], [])
    if not p.is_dir():
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
        return InvalidPolicy(path, (f"{path}: cannot read: {e.strerror}",))
    except UnicodeDecodeError:
        return InvalidPolicy(path, (f"{path}: not UTF-8 text",))
    # An age identity anywhere (a value, a key, a comment) is refused before parsing, so a file
    # that is also not valid TOML is still named for it; the message never quotes the line.
    secret_lines = [f"{path}: line {n}: {_age_secret_advice()}"
                    for n, line in enumerate(text.splitlines(), 1) if _AGE_SECRET.search(line)]  # fmt: skip
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return InvalidPolicy(path, (*secret_lines, f"{path}: not valid TOML: {e}"))
    except ValueError:  # tomllib lets int() refuse a number of thousands of digits
        return InvalidPolicy(path, (*secret_lines, f"{path}: not valid TOML: a number too long to read"))
    try:
        return _Validator(path, secret_lines).run(raw)
    except PolicyError as e:
        name = raw.get("name")
        return InvalidPolicy(path, tuple(e.problems), name if isinstance(name, str) and _NAME.match(name) else None)


class _Validator:
    def __init__(self, path: Path, secret_lines: list[str] | None = None):
        self.path = path
        self.secret_lines = secret_lines or []  # lines of the file holding an age identity
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.age_secret_named = False  # an age identity was found in a value or key and named by its path

    def bad(self, key: str, msg: str) -> None:
        self.problems.append(f"{self.path}: {key}: {msg}")

    # -- structure -------------------------------------------------------------------------
    def check_shape(self, data: dict, schema: dict, prefix: str) -> dict:
        """Report unknown and mistyped keys; return the data with only the well-formed keys."""
        clean: dict = {}
        for key, value in data.items():
            kp = f"{prefix}{key}"
            if _SECRET_HINTS.search(key):  # never echo the key itself
                self.age_secret_named |= bool(_AGE_SECRET.search(key))
                self.bad(f"{prefix}(a key)" if prefix else "(a key)", _secret_advice_for(key))
                continue
            if _SECRET_KEYS.match(key):
                self.bad(kp, _secret_advice())
                continue
            if key not in schema:
                self.holds_secret(kp, value)
                close = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.6)
                hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
                known = ", ".join(sorted(schema))
                self.bad(kp, f"unknown key{hint}; known keys here: {known}")
                continue
            want = schema[key]
            if isinstance(want, dict):
                if not isinstance(value, dict):
                    self.bad(kp, "must be a table ([section])")
                else:
                    clean[key] = self.check_shape(value, want, kp + ".")
            elif isinstance(want, list):
                if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                    self.bad(kp, "must be an array of tables ([[...]])")
                else:
                    clean[key] = [self.check_shape(item, want[0], f"{kp}[{i}].") for i, item in enumerate(value)]
            elif self.check_type(kp, value, want):
                clean[key] = value
        return clean

    def check_type(self, kp: str, value: Any, want: str) -> bool:
        if self.holds_secret(kp, value):
            return False
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        }[want]
        if not ok:
            self.bad(kp, f"must be {_TYPE_WORDS[want]}, not {type(value).__name__} {_short(value)}")
            return False
        if want == "int" and value > (top := _INT_BOUNDS.get(_bound_key(kp), _INT_MAX)):
            self.bad(kp, f"{_short(value)} is more than the largest allowed, {top}")
            return False
        return True

    def holds_secret(self, kp: str, value: Any) -> bool:
        """Name (never echo) each string in the value that looks like a secret."""
        items = [(kp, value)] if isinstance(value, str) else []
        if isinstance(value, list):
            items = [(f"{kp}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str)]
        found = False
        for where, text in items:
            if _SECRET_HINTS.search(text):
                self.age_secret_named |= bool(_AGE_SECRET.search(text))
                self.bad(where, _secret_advice_for(text))
                found = True
        return found

    # -- values ----------------------------------------------------------------------------
    def run(self, raw: dict) -> Policy:
        """The whole policy, every problem collected before PolicyError is raised."""
        raw = self.check_shape(raw, _SCHEMA, "")  # value checks below see only well-typed keys
        name = self.name(raw.get("name"))
        db = raw.get("database", {})
        dsn, pw_env = self.database(db)
        schedule, gaps = self.schedule(raw.get("schedule", {}))
        retention = self.retention(raw.get("retention", {}))
        storage_raw = raw.get("storage")
        storage, copies = self.storages(storage_raw)
        enc = raw.get("encryption", {})
        recipients = self.recipients(enc.get("recipients", []))
        obj = raw.get("objectives", {})
        rpo = self.duration("objectives.rpo", obj.get("rpo"))
        rto = self.duration("objectives.rto", obj.get("rto"))
        backup = self.backup_options(raw.get("backup", {}))
        drill = self.drill(raw.get("drill", {}), {"primary", *(c.name for c in copies)})
        notify = self.notify(raw.get("notify", {}))
        signing = self.signing(raw.get("signing", {}))
        pitr = self.pitr(raw.get("pitr", {}), rpo)
        if schedule.base and not pitr.enabled:
            self.bad("schedule.base", "base backups need [pitr] enabled = true")
        if drill.kind != "logical" and not pitr.enabled:
            self.bad("drill.kind", f"'{drill.kind}' drills replay archived WAL: they need [pitr] enabled = true")
        self.warn_about_schedule(rpo, gaps, raw.get("retention", {}), retention)

        if not self.age_secret_named:  # in a comment, or a value not checked: name its line
            self.problems += self.secret_lines
        if self.problems:
            raise PolicyError(self.problems)
        assert storage is not None and name is not None and dsn is not None
        return Policy(
            name=name, source=self.path, dsn=dsn, password_env=pw_env, storage=storage, copies=tuple(copies),
            recipients=tuple(recipients), identity_file=self.path_value(enc.get("identity_file")),
            schedule=schedule, retention=retention, rpo=rpo or None, rto=rto or None, backup=backup, drill=drill,
            notify=notify, signing=signing, pitr=pitr, warnings=tuple(self.warnings),
        )  # fmt: skip

    def name(self, name: str | None) -> str | None:
        if name is None:
            self.bad("name", "missing (a short id such as 'orders': lower-case letters, digits, dashes)")
        elif not _NAME.match(name):
            self.bad("name", f"'{name}' must be 1-63 of [a-z0-9-], starting with a letter or digit")
        return name

    def database(self, db: dict) -> tuple[str | None, str | None]:
        dsn = db.get("dsn")
        if not dsn:
            self.bad("database.dsn", "missing (e.g. 'postgresql://backup@db1:5432/orders')")
        else:
            self.dsn("database.dsn", dsn)
        self.env_name("database.password_env", db.get("password_env"))
        return dsn, db.get("password_env")

    def env_name(self, key: str, value: str | None, why: str = "") -> None:
        if value is not None and not _ENV_NAME.match(value):
            self.bad(key, f"'{value}' is not an environment variable name{why}")

    def schedule(self, sched: dict) -> tuple[Schedule, dict[str, tuple[int, int]]]:
        """The schedule, and for each valid cron expression its (smallest, largest) gap in seconds."""
        tz = sched.get("timezone", _default(Schedule, "timezone"))
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.bad("schedule.timezone", f"'{tz}' is not a known time zone (e.g. UTC, Europe/Berlin)")
        gaps: dict[str, tuple[int, int]] = {}
        for job in ("backup", "base", "drill", "prune"):
            expr = sched.get(job)
            if expr is None:
                continue
            if not croniter.is_valid(expr):
                self.bad(f"schedule.{job}", f"'{expr}' is not a valid cron expression")
                continue
            try:
                gaps[job] = _gaps(expr)
            except CroniterBadDateError:
                self.bad(f"schedule.{job}", f"'{expr}' never fires (no such date)")
        schedule = Schedule(
            backup=sched.get("backup"),
            base=sched.get("base"),
            drill=sched.get("drill"),
            prune=sched.get("prune"),
            timezone=tz,
        )
        return schedule, gaps

    def retention(self, ret: dict) -> Retention:
        for key, value in ret.items():
            if key != "keep_within" and value < 0:
                self.bad(f"retention.{key}", "must be 0 or more")
        keep_within = self.duration("retention.keep_within", ret.get("keep_within"), allow_zero=True)
        return Retention(**{k: v for k, v in ret.items() if k != "keep_within"}, keep_within=keep_within)

    def storages(self, storage_raw: dict | None) -> tuple[StorageTarget | None, list[StorageTarget]]:
        """[storage] and its [[storage.copies]], each copy with a name used once."""
        if storage_raw is None:
            self.bad("storage", "missing ([storage] url = 's3://bucket/prefix' or 'file:///path')")
            return None, []
        storage = self.storage_target("storage", storage_raw, "primary")
        copies = []
        names = {"primary"}
        for i, c in enumerate(storage_raw.get("copies", [])):
            copy_name = c.get("name") or f"copy{i + 1}"
            if copy_name in names:
                self.bad(f"storage.copies[{i}].name", f"'{copy_name}' is used twice")
            names.add(copy_name)
            target = self.storage_target(f"storage.copies[{i}]", c, copy_name)
            if target:
                copies.append(target)
        return storage, copies

    def recipients(self, recipients: list[str]) -> list[str]:
        if not recipients:
            self.bad(
                "encryption.recipients",
                "missing: at least one age public key (age1...); make one with 'drtool keygen --output FILE'",
            )
        for i, r in enumerate(recipients):
            if not _valid_recipient(r):
                self.bad(f"encryption.recipients[{i}]", f"'{r[:20]}...' is not an age X25519 recipient (age1...)")
        return recipients

    def backup_options(self, options: dict) -> BackupOptions:
        level = options.get("zstd_level", _default(BackupOptions, "zstd_level"))
        if not 1 <= level <= 19:
            self.bad("backup.zstd_level", f"{level} is outside 1..19")
        threads = options.get("zstd_threads", _default(BackupOptions, "zstd_threads"))
        if threads < 0:
            self.bad("backup.zstd_threads", "must be 0 (one per CPU) or more")
        return BackupOptions(level, threads, self.path_value(options.get("pg_bin_dir")))

    def drill(self, drill: dict, storage_names: set[str]) -> Drill:
        target_dsn = drill.get("target_dsn")
        if target_dsn:
            self.dsn("drill.target_dsn", target_dsn)
        self.env_name("drill.target_password_env", drill.get("target_password_env"))
        if drill.get("from_copy") and drill["from_copy"] not in storage_names:
            self.bad("drill.from_copy", f"'{drill['from_copy']}' is not the name of a [[storage.copies]] target")
        pick = drill.get("pick", _default(Drill, "pick"))
        if pick not in ("latest", "random"):
            self.bad("drill.pick", f"'{pick}' must be 'latest' or 'random'")
        profile = drill.get("profile", _default(Drill, "profile"))
        if profile not in ("durable", "fast"):
            self.bad("drill.profile", f"'{profile}' must be 'durable' (settings of a production server) or 'fast'")
        kind = drill.get("kind", _default(Drill, "kind"))
        if kind not in DRILL_KINDS:
            self.bad("drill.kind", f"'{kind}' must be one of {', '.join(repr(k) for k in DRILL_KINDS)}")
        return Drill(
            kind=kind,
            checks=tuple(drill.get("checks", ())),
            target_dsn=target_dsn,
            pg_bin_dir=self.path_value(drill.get("pg_bin_dir")),
            pick=pick,
            amcheck=drill.get("amcheck", _default(Drill, "amcheck")),
            target_password_env=drill.get("target_password_env"),
            from_copy=drill.get("from_copy"),
            profile=profile,
        )

    def notify(self, notify: dict) -> Notify:
        for k in ("webhook_url_env", "heartbeat_url_env"):
            self.env_name(f"notify.{k}", notify.get(k), " (URLs with tokens stay out of the file)")
        timeout = self.duration("notify.timeout", notify.get("timeout"))
        return Notify(
            notify.get("webhook_url_env"),
            notify.get("heartbeat_url_env"),
            notify.get("on_success", _default(Notify, "on_success")),
            timeout or _default(Notify, "timeout"),
        )

    def pitr(self, raw: dict, rpo: int) -> Pitr:
        """[pitr]: when enabled, where the cluster and the spool are; archive_timeout from the RPO if unset."""
        enabled = raw.get("enabled", _default(Pitr, "enabled"))
        pgdata = self.path_value(raw.get("pgdata"))
        spool = self.path_value(raw.get("spool_dir"))
        if enabled:
            if not pgdata:
                self.bad("pitr.pgdata", "missing: the cluster's data directory (the WAL daemon reads pg_wal there)")
            if not spool:
                self.bad("pitr.spool_dir", "missing: a folder outside the data directory, writable by postgres")
            elif pgdata and (Path(spool) == Path(pgdata) or Path(pgdata) in Path(spool).parents):
                self.bad("pitr.spool_dir", f"'{spool}' is inside pitr.pgdata; keep it outside (pg_rewind, restores)")
        timeout = self.duration("pitr.archive_timeout", raw.get("archive_timeout"))
        if not timeout:
            timeout = min(rpo, 60) if rpo else 60
        workers = raw.get("upload_workers", _default(Pitr, "upload_workers"))
        if workers < 1:
            self.bad("pitr.upload_workers", "must be 1 or more")
        prefetch = raw.get("prefetch", _default(Pitr, "prefetch"))
        if prefetch < 0:
            self.bad("pitr.prefetch", "must be 0 (no read-ahead) or more")
        return Pitr(
            enabled=enabled, pgdata=pgdata, spool_dir=spool, archive_timeout=timeout, upload_workers=workers,
            ack_timeout=self.duration("pitr.ack_timeout", raw.get("ack_timeout")) or _default(Pitr, "ack_timeout"),
            prefetch=prefetch,
            heartbeat_interval=self.duration("pitr.heartbeat_interval", raw.get("heartbeat_interval")),
        )  # fmt: skip

    def warn_about_schedule(self, rpo: int, gaps: dict[str, tuple[int, int]], ret: dict, retention: Retention) -> None:
        """Combinations that load but cannot work as meant: warnings, not problems."""
        if rpo and "backup" in gaps:
            smallest, largest = gaps["backup"]
            if largest > rpo:
                self.warnings.append(
                    f"{self.path}: schedule.backup: fires up to {format_duration(largest)} apart, "
                    f"more than objectives.rpo ({format_duration(rpo)}); the RPO target cannot be met"
                )
            elif smallest < 3600 and smallest * 100 < rpo:
                self.warnings.append(
                    f"{self.path}: schedule.backup: fires every {format_duration(smallest)} for an RPO of "
                    f"{format_duration(rpo)}; that many full backups load the database for little gain"
                )
        keep_within = retention.keep_within
        counts = [getattr(retention, f.name) for f in fields(Retention) if f.name != "keep_within"]
        if ret and not any(counts) and keep_within and "backup" in gaps and keep_within < gaps["backup"][1]:
            self.warnings.append(
                f"{self.path}: retention: keeps only what is younger than {format_duration(keep_within)}, "
                "less than the time between backups: prune would keep nothing but the newest backup"
            )

    def path_value(self, p: str | None) -> str | None:
        """~ expanded; a relative path is taken from the policy file's folder."""
        if not p:
            return None
        return str((self.path.parent / os.path.expanduser(p)).resolve())

    def duration(self, key: str, value: str | None, allow_zero: bool = False) -> int:
        if value is None:
            return 0
        try:
            secs = parse_duration(value)
        except ValueError as e:
            self.bad(key, str(e))
            return 0
        if secs == 0 and not allow_zero:
            self.bad(key, "must be longer than 0s")
        top = _DURATION_BOUNDS.get(_bound_key(key), _DURATION_MAX)
        if secs > top:
            self.bad(key, f"'{value}' is longer than the largest allowed, {format_duration(top)}")
            return 0
        return secs

    def signing(self, raw: dict) -> Signing:
        """[signing]: every trusted key parses, none twice, and no private key pasted in (never echoed)."""
        keys = raw.get("trusted_keys", [])
        seen: dict[bytes, int] = {}
        for i, line in enumerate(keys):
            kp = f"signing.trusted_keys[{i}]"
            if _SECRET_HINTS.search(line) or _OPENSSH_PRIVATE.search(line):
                self.bad(kp, "is a private key; list public keys here ('ssh-ed25519 AAAA...', the .pub file of "
                         "'drtool keygen --signing'); the private key goes in signing.key_file")  # fmt: skip
                continue
            try:
                pub = sshsig.parse_public_key(line)
            except sshsig.SignatureError as e:
                self.bad(kp, f"{e}")
                continue
            if pub.raw in seen:
                self.bad(kp, f"the same key ({pub.fingerprint}) as signing.trusted_keys[{seen[pub.raw]}]")
            seen.setdefault(pub.raw, i)
        key_file = raw.get("key_file")
        if key_file is not None and not key_file.strip():
            self.bad("signing.key_file", "is empty (the path of the key 'drtool keygen --signing' wrote)")
        return Signing(key_file=self.path_value(key_file), trusted_keys=tuple(k.strip() for k in keys))

    def dsn(self, key: str, dsn: str) -> None:
        """Refuse a DSN libpq cannot parse or that carries a password (it would show in pg_dump's argv)."""
        try:
            keys = dsn_password_keys(dsn)
        except ValueError as e:
            self.bad(key, str(e))
            return
        if keys:
            self.bad(key, f"contains a password ({', '.join(keys)}); " + _secret_advice())

    def storage_target(self, key: str, raw: dict, name: str) -> StorageTarget | None:
        url = raw.get("url")
        if not url:
            self.bad(f"{key}.url", "missing ('s3://bucket/prefix' or 'file:///path')")
            return None
        u = urlparse(url)
        if u.scheme == "s3":
            if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", u.netloc or ""):
                self.bad(f"{key}.url", f"'{url}': bucket name must be 3-63 of [a-z0-9.-]")
            if u.username or u.password:
                self.bad(
                    f"{key}.url",
                    "contains credentials; S3 credentials come from the AWS chain (environment, ~/.aws, instance role)",
                )
        elif u.scheme == "file":
            if u.netloc not in ("", "localhost") or not u.path.startswith("/"):
                self.bad(f"{key}.url", f"'{url}': use file:///absolute/path")
        else:
            self.bad(f"{key}.url", f"'{url}': scheme must be s3:// or file://")
        style = raw.get(
            "addressing_style", "path" if raw.get("endpoint_url") else _default(StorageTarget, "addressing_style")
        )
        if style not in ("auto", "path", "virtual"):
            self.bad(f"{key}.addressing_style", f"'{style}' must be auto, path or virtual")
        checks = raw.get("request_checksums", _default(StorageTarget, "request_checksums"))
        if checks not in ("when_required", "when_supported"):
            self.bad(f"{key}.request_checksums", f"'{checks}' must be when_required or when_supported")
        ep = raw.get("endpoint_url")
        if ep and not re.match(r"^https?://[^/\s]+", ep):
            self.bad(f"{key}.endpoint_url", f"'{ep}' must be an http(s):// URL")
        if ep and urlparse(ep).password:
            self.bad(f"{key}.endpoint_url", "contains credentials; " + _secret_advice())
        retry_mode = raw.get("retry_mode", _default(StorageTarget, "retry_mode"))
        if retry_mode not in ("standard", "adaptive"):
            self.bad(f"{key}.retry_mode", f"'{retry_mode}' must be standard or adaptive (botocore retry modes)")
        attempts = raw.get("max_attempts", _default(StorageTarget, "max_attempts"))
        if attempts < 1:
            self.bad(f"{key}.max_attempts", "must be 1 or more")
        read_timeout = self.duration(f"{key}.read_timeout", raw.get("read_timeout"))
        lock = raw.get("object_lock_days")
        if lock is not None and lock <= 0:
            self.bad(f"{key}.object_lock_days", "must be 1 or more")
        if lock is not None and urlparse(url).scheme == "file":
            self.bad(f"{key}.object_lock_days", "Object Lock needs an S3 bucket; a folder store cannot enforce it")
        lock_mode = raw.get("object_lock_mode", _default(StorageTarget, "object_lock_mode"))
        if lock_mode not in ("COMPLIANCE", "GOVERNANCE"):
            self.bad(f"{key}.object_lock_mode", f"'{lock_mode}' must be COMPLIANCE or GOVERNANCE")
        return StorageTarget(
            url=url,
            region=raw.get("region"),
            endpoint_url=ep,
            addressing_style=style,
            request_checksums=checks,
            verify_tls=raw.get("verify_tls", _default(StorageTarget, "verify_tls")),
            retry_mode=retry_mode,
            max_attempts=attempts,
            read_timeout=read_timeout or _default(StorageTarget, "read_timeout"),
            ca_bundle=raw.get("ca_bundle"),
            object_lock_days=lock,
            object_lock_mode=lock_mode,
            name=name,
        )


_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "bool": "true or false",
    "list[str]": "a list of strings",
}


def _secret_advice() -> str:
    return (
        "secrets do not belong in the policy: the database password comes from "
        "database.password_env, PGPASSFILE or ~/.pgpass; the age identity from "
        "encryption.identity_file; S3 credentials from the AWS credential chain"
    )


def _age_secret_advice() -> str:
    return "holds an age identity (a secret key); " + _secret_advice()


def _secret_advice_for(text: str) -> str:
    return _age_secret_advice() if _AGE_SECRET.search(text) else _secret_advice()


def _bound_key(key_path: str) -> str:
    """storage.copies[1].max_attempts -> storage.max_attempts: the key its bound is listed under."""
    return re.sub(r"^storage\.copies\[\d+\]\.", "storage.", key_path)


def _short(value: Any) -> str:
    """A value for a message: a number of hundreds of digits is not worth echoing."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a number of over 30 digits"
    if _SECRET_HINTS.search(text):
        return "(not shown: it holds a secret)"
    return text if len(text) <= 60 else text[:57] + "..."


def _valid_recipient(text: str) -> bool:
    try:
        hrp, data = bech32.decode(text)
    except ValueError:
        return False
    return hrp == "age" and len(data) == 32 and text == text.lower()


def _gaps(expr: str) -> tuple[int, int]:
    """(smallest, largest) interval in seconds between consecutive firings over ~60 firings.
    CroniterBadDateError when the expression never fires (e.g. 30 February)."""
    import datetime as dt

    it = croniter(expr, dt.datetime(2026, 1, 1))
    times = [it.get_next(dt.datetime) for _ in range(60)]
    spans = [int((b - a).total_seconds()) for a, b in zip(times, times[1:], strict=False)]
    return min(spans), max(spans)
