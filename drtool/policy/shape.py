"""The shape and types of a policy file: which keys exist (derived from the dataclasses in
schema.py), their types and bounds, and the refusal of secrets pasted in. Every problem is
collected with its key path; the per-section rules are in rules.py, the file reading in loader.py."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..durations import format_duration, parse_duration
from .schema import BackupOptions, Drill, Notify, Pitr, Retention, Schedule, Signing, StorageTarget


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


def default(cls: type, name: str) -> Any:
    """A section key's default, stated once: on its dataclass field."""
    return next(f.default for f in fields(cls) if f.name == name)


_STORAGE_KEYS = _keys(StorageTarget, without=("name",))
SCHEMA: dict[str, Any] = {
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

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_HINTS = re.compile(r"(?i)AGE-SECRET-KEY-1|aws_secret_access_key|BEGIN [A-Z ]*PRIVATE KEY")
OPENSSH_PRIVATE = re.compile(r"b3BlbnNzaC1rZXktdjE")  # base64 of "openssh-key-v1": a private key's body
SECRET_KEYS = re.compile(
    r"(?i)^(password|passwd|secret|token|secret_key|access_key|aws_secret_access_key|webhook_url|heartbeat_url)$"
)
AGE_SECRET = re.compile(r"(?i)AGE-SECRET-KEY-1")

# The largest value each number may take: anything above is a typo or an attack, and would fail
# later (OverflowError, a C conversion, a date before year 1) instead of here with its key path.
# Keys under storage.copies[i] share the storage.* bounds. An integer key not listed gets INT_MAX.
INT_BOUNDS = {
    **{f"retention.keep_{k}": 1_000_000 for k in ("last", "hourly", "daily", "weekly", "monthly", "yearly")},
    "storage.max_attempts": 100,
    "storage.object_lock_days": 36_500,  # 100 years, S3's own limit
    "backup.zstd_level": 19,
    "backup.zstd_threads": 200,  # ZSTDMT_NBWORKERS_MAX
    "pitr.upload_workers": 64,
    "pitr.prefetch": 1024,
}
INT_MAX = 1_000_000
_YEAR = 365 * 86400
DURATION_BOUNDS = {  # seconds; a duration key not listed gets DURATION_MAX
    "retention.keep_within": 100 * _YEAR,
    "objectives.rpo": 10 * _YEAR,
    "objectives.rto": 10 * _YEAR,
    "notify.timeout": 300,  # a notification never holds a job up for long
    "storage.read_timeout": 3600,  # a store silent this long is down, not slow
    "pitr.archive_timeout": 3600,
    "pitr.ack_timeout": 3600,
    "pitr.heartbeat_interval": 3600,
}
DURATION_MAX = 100 * _YEAR


class ShapeChecker:
    """Collects a policy file's problems (each with its key path) and checks shapes and types:
    unknown keys, wrong types, numbers and durations out of bounds, secrets pasted in. The
    per-section rules (rules.py) build on it."""

    def __init__(self, path: Path, secret_lines: list[str] | None = None):
        self.path = path
        self.secret_lines = secret_lines or []  # lines of the file holding an age identity
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.age_secret_named = False  # an age identity was found in a value or key and named by its path

    def bad(self, key: str, msg: str) -> None:
        self.problems.append(f"{self.path}: {key}: {msg}")

    # -- shape and types -------------------------------------------------------------------------
    def check_shape(self, data: dict, schema: dict, prefix: str) -> dict:
        """Report unknown and mistyped keys; return the data with only the well-formed keys."""
        clean: dict = {}
        for key, value in data.items():
            kp = f"{prefix}{key}"
            if SECRET_HINTS.search(key):  # never echo the key itself
                self.age_secret_named |= bool(AGE_SECRET.search(key))
                self.bad(f"{prefix}(a key)" if prefix else "(a key)", secret_advice_for(key))
                continue
            if SECRET_KEYS.match(key):
                self.bad(kp, secret_advice())
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
            self.bad(kp, f"must be {TYPE_WORDS[want]}, not {type(value).__name__} {short(value)}")
            return False
        if want == "int" and value > (top := INT_BOUNDS.get(bound_key(kp), INT_MAX)):
            self.bad(kp, f"{short(value)} is more than the largest allowed, {top}")
            return False
        return True

    def holds_secret(self, kp: str, value: Any) -> bool:
        """Name (never echo) each string in the value that looks like a secret."""
        items = [(kp, value)] if isinstance(value, str) else []
        if isinstance(value, list):
            items = [(f"{kp}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str)]
        found = False
        for where, text in items:
            if SECRET_HINTS.search(text):
                self.age_secret_named |= bool(AGE_SECRET.search(text))
                self.bad(where, secret_advice_for(text))
                found = True
        return found

    # -- typed values -----------------------------------------------------------------------
    def env_name(self, key: str, value: str | None, why: str = "") -> None:
        if value is not None and not ENV_NAME.match(value):
            self.bad(key, f"'{value}' is not an environment variable name{why}")

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
        top = DURATION_BOUNDS.get(bound_key(key), DURATION_MAX)
        if secs > top:
            self.bad(key, f"'{value}' is longer than the largest allowed, {format_duration(top)}")
            return 0
        return secs


TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "bool": "true or false",
    "list[str]": "a list of strings",
}


def secret_advice() -> str:
    return (
        "secrets do not belong in the policy: the database password comes from "
        "database.password_env, PGPASSFILE or ~/.pgpass; the age identity from "
        "encryption.identity_file; S3 credentials from the AWS credential chain"
    )


def age_secret_advice() -> str:
    return "holds an age identity (a secret key); " + secret_advice()


def secret_advice_for(text: str) -> str:
    return age_secret_advice() if AGE_SECRET.search(text) else secret_advice()


def bound_key(key_path: str) -> str:
    """storage.copies[1].max_attempts -> storage.max_attempts: the key its bound is listed under."""
    return re.sub(r"^storage\.copies\[\d+\]\.", "storage.", key_path)


def short(value: Any) -> str:
    """A value for a message: a number of hundreds of digits is not worth echoing."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a number of over 30 digits"
    if SECRET_HINTS.search(text):
        return "(not shown: it holds a secret)"
    return text if len(text) <= 60 else text[:57] + "..."
