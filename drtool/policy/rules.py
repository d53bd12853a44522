"""The per-section rules of a policy: what each value must be, and what combinations are refused
or warned about (docs/policy.md). Shape and types are checked first (shape.py)."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlparse

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError

from .. import bech32
from ..crypto import sshsig
from ..durations import format_duration
from ..errors import PolicyError
from ..postgres import dsn_password_keys
from .schema import BackupOptions, Drill, Notify, Pitr, Policy, Retention, Schedule, Signing, StorageTarget
from .shape import OPENSSH_PRIVATE, SCHEMA, SECRET_HINTS, ShapeChecker, default, secret_advice

DRILL_KINDS = ("logical", "physical", "both")  # [drill] kind: what `drtool run` drills
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})$")


class Validator(ShapeChecker):
    """One policy file's values, section by section; run() returns the Policy or raises
    PolicyError with every problem found."""

    # -- values ----------------------------------------------------------------------------
    def run(self, raw: dict) -> Policy:
        """The whole policy, every problem collected before PolicyError is raised."""
        raw = self.check_shape(raw, SCHEMA, "")  # value checks below see only well-typed keys
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
        elif not NAME.match(name):
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

    def schedule(self, sched: dict) -> tuple[Schedule, dict[str, tuple[int, int]]]:
        """The schedule, and for each valid cron expression its (smallest, largest) gap in seconds."""
        tz = sched.get("timezone", default(Schedule, "timezone"))
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.bad("schedule.timezone", f"'{tz}' is not a known time zone (e.g. UTC, Europe/Berlin)")
        gaps: dict[str, tuple[int, int]] = {}
        for job in ("backup", "base", "drill", "prune"):
            expr = sched.get(job)
            if expr is None:
                continue
            checked = _cron_gaps(expr)
            if isinstance(checked, tuple):
                gaps[job] = checked
            elif checked == "invalid":
                self.bad(f"schedule.{job}", f"'{expr}' is not a valid cron expression")
            else:
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
        level = options.get("zstd_level", default(BackupOptions, "zstd_level"))
        if not 1 <= level <= 19:
            self.bad("backup.zstd_level", f"{level} is outside 1..19")
        threads = options.get("zstd_threads", default(BackupOptions, "zstd_threads"))
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
        pick = drill.get("pick", default(Drill, "pick"))
        if pick not in ("latest", "random"):
            self.bad("drill.pick", f"'{pick}' must be 'latest' or 'random'")
        profile = drill.get("profile", default(Drill, "profile"))
        if profile not in ("durable", "fast"):
            self.bad("drill.profile", f"'{profile}' must be 'durable' (settings of a production server) or 'fast'")
        kind = drill.get("kind", default(Drill, "kind"))
        if kind not in DRILL_KINDS:
            self.bad("drill.kind", f"'{kind}' must be one of {', '.join(repr(k) for k in DRILL_KINDS)}")
        return Drill(
            kind=kind,
            checks=tuple(drill.get("checks", ())),
            target_dsn=target_dsn,
            pg_bin_dir=self.path_value(drill.get("pg_bin_dir")),
            pick=pick,
            amcheck=drill.get("amcheck", default(Drill, "amcheck")),
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
            notify.get("on_success", default(Notify, "on_success")),
            timeout or default(Notify, "timeout"),
        )

    def pitr(self, raw: dict, rpo: int) -> Pitr:
        """[pitr]: when enabled, where the cluster and the spool are; archive_timeout from the RPO if unset."""
        enabled = raw.get("enabled", default(Pitr, "enabled"))
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
        workers = raw.get("upload_workers", default(Pitr, "upload_workers"))
        if workers < 1:
            self.bad("pitr.upload_workers", "must be 1 or more")
        prefetch = raw.get("prefetch", default(Pitr, "prefetch"))
        if prefetch < 0:
            self.bad("pitr.prefetch", "must be 0 (no read-ahead) or more")
        return Pitr(
            enabled=enabled, pgdata=pgdata, spool_dir=spool, archive_timeout=timeout, upload_workers=workers,
            ack_timeout=self.duration("pitr.ack_timeout", raw.get("ack_timeout")) or default(Pitr, "ack_timeout"),
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

    def signing(self, raw: dict) -> Signing:
        """[signing]: every trusted key parses, none twice, and no private key pasted in (never echoed)."""
        keys = raw.get("trusted_keys", [])
        seen: dict[bytes, int] = {}
        for i, line in enumerate(keys):
            kp = f"signing.trusted_keys[{i}]"
            if SECRET_HINTS.search(line) or OPENSSH_PRIVATE.search(line):
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
            self.bad(key, f"contains a password ({', '.join(keys)}); " + secret_advice())

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
            "addressing_style", "path" if raw.get("endpoint_url") else default(StorageTarget, "addressing_style")
        )
        if style not in ("auto", "path", "virtual"):
            self.bad(f"{key}.addressing_style", f"'{style}' must be auto, path or virtual")
        checks = raw.get("request_checksums", default(StorageTarget, "request_checksums"))
        if checks not in ("when_required", "when_supported"):
            self.bad(f"{key}.request_checksums", f"'{checks}' must be when_required or when_supported")
        ep = raw.get("endpoint_url")
        if ep and not re.match(r"^https?://[^/\s]+", ep):
            self.bad(f"{key}.endpoint_url", f"'{ep}' must be an http(s):// URL")
        if ep and urlparse(ep).password:
            self.bad(f"{key}.endpoint_url", "contains credentials; " + secret_advice())
        retry_mode = raw.get("retry_mode", default(StorageTarget, "retry_mode"))
        if retry_mode not in ("standard", "adaptive"):
            self.bad(f"{key}.retry_mode", f"'{retry_mode}' must be standard or adaptive (botocore retry modes)")
        attempts = raw.get("max_attempts", default(StorageTarget, "max_attempts"))
        if attempts < 1:
            self.bad(f"{key}.max_attempts", "must be 1 or more")
        read_timeout = self.duration(f"{key}.read_timeout", raw.get("read_timeout"))
        lock = raw.get("object_lock_days")
        if lock is not None and lock <= 0:
            self.bad(f"{key}.object_lock_days", "must be 1 or more")
        if lock is not None and urlparse(url).scheme == "file":
            self.bad(f"{key}.object_lock_days", "Object Lock needs an S3 bucket; a folder store cannot enforce it")
        lock_mode = raw.get("object_lock_mode", default(StorageTarget, "object_lock_mode"))
        if lock_mode not in ("COMPLIANCE", "GOVERNANCE"):
            self.bad(f"{key}.object_lock_mode", f"'{lock_mode}' must be COMPLIANCE or GOVERNANCE")
        return StorageTarget(
            url=url,
            region=raw.get("region"),
            endpoint_url=ep,
            addressing_style=style,
            request_checksums=checks,
            verify_tls=raw.get("verify_tls", default(StorageTarget, "verify_tls")),
            retry_mode=retry_mode,
            max_attempts=attempts,
            read_timeout=read_timeout or default(StorageTarget, "read_timeout"),
            ca_bundle=raw.get("ca_bundle"),
            object_lock_days=lock,
            object_lock_mode=lock_mode,
            name=name,
        )


def _valid_recipient(text: str) -> bool:
    try:
        hrp, data = bech32.decode(text)
    except ValueError:
        return False
    return hrp == "age" and len(data) == 32 and text == text.lower()


@functools.lru_cache(maxsize=4096)
def _cron_gaps(expr: str) -> tuple[int, int] | str:
    """_gaps(expr), or "invalid" (not a cron expression) or "never" (no such date). Cached: a
    fleet's policies repeat a few expressions, and every command validates every policy it loads."""
    try:
        fields, nth = croniter.expand(expr)
    except CroniterError:
        return "invalid"
    try:
        return _gaps(expr, fields, nth)
    except CroniterBadDateError:
        return "never"


def _gaps(expr: str, fields: list, nth: dict) -> tuple[int, int]:
    """(smallest, largest) interval in seconds between consecutive firings over ~60 firings.
    CroniterBadDateError when the expression never fires (e.g. 30 February). An expression firing
    every day alike (minutes and hours only) is counted from its expanded fields: the same 60
    firings as croniter's, at a fraction of the cost (croniter steps ~5 datetimes per firing)."""
    if len(fields) == 5 and not nth and all(f == ["*"] for f in fields[2:]):
        times = list(itertools.islice(_daily_firings(fields[0], fields[1]), 60))
    else:
        it = croniter(expr, dt.datetime(2026, 1, 1))
        firings = [it.get_next(dt.datetime) for _ in range(60)]
        times = [int((t - firings[0]).total_seconds()) for t in firings]  # naive: no DST, no local time
    spans = [b - a for a, b in zip(times, times[1:], strict=False)]
    return min(spans), max(spans)


def _daily_firings(minutes: list, hours: list) -> Iterator[int]:
    """Seconds after a midnight of the firings strictly after it, day after day."""
    ms = range(60) if minutes == ["*"] else sorted({int(m) for m in minutes})
    hs = range(24) if hours == ["*"] else sorted({int(h) for h in hours})
    day = [h * 3600 + m * 60 for h in hs for m in ms]
    for d in itertools.count():
        for t in day:
            if d or t:
                yield d * 86400 + t
