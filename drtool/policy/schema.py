"""The policy as typed values (stdlib only). Loading and validation live in loader.py.

Each section's dataclass is its schema: loader.py derives the TOML keys and their types from the
fields, and takes every default from here. A field written in the file as a duration ("60s") but
held in seconds is marked DURATION."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DURATION = {"toml": "duration"}  # field metadata: a duration string in TOML, seconds here


@dataclass(frozen=True)
class StorageTarget:
    url: str  # s3://bucket/prefix or file:///path
    region: str | None = None
    endpoint_url: str | None = None
    addressing_style: str = "auto"  # path for most S3-compatible servers when endpoint_url is set
    request_checksums: str = "when_required"  # boto3's default "when_supported" breaks many S3 clones
    verify_tls: bool = True
    retry_mode: str = "standard"  # botocore: standard, or adaptive (client-side rate limiting)
    max_attempts: int = 5  # botocore's per request, and drtool's per read (storage/retry.py)
    read_timeout: int = field(default=60, metadata=DURATION)  # seconds without a byte before a read is retried
    ca_bundle: str | None = None
    object_lock_days: int | None = None  # S3 Object Lock on every backup object for this long
    object_lock_mode: str = "COMPLIANCE"  # or GOVERNANCE (privileged users may lift it)
    name: str = "primary"


@dataclass(frozen=True)
class Retention:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: int = field(default=0, metadata=DURATION)


@dataclass(frozen=True)
class Schedule:
    backup: str | None = None
    base: str | None = None  # physical base backups ([pitr]); run by `drtool run` like the others
    drill: str | None = None
    prune: str | None = None
    timezone: str = "UTC"


@dataclass(frozen=True)
class BackupOptions:
    zstd_level: int = 1
    zstd_threads: int = 0  # 0: one per CPU
    pg_bin_dir: str | None = None  # where pg_dump/pg_restore live; default: pg_config --bindir, then PATH


@dataclass(frozen=True)
class Drill:
    checks: tuple[str, ...] = ()
    target_dsn: str | None = None  # default: a throwaway local server
    pg_bin_dir: str | None = None  # server binaries for the scratch server
    pick: str = "latest"  # or "random": any complete backup, so old ones are proven too
    amcheck: bool = False  # bt_index_check every restored B-tree index
    target_password_env: str | None = None
    from_copy: str | None = None  # drill from this [[storage.copies]] target, proving the DR copy
    profile: str = "durable"  # scratch server settings: "durable" (as production) or "fast" (fsync off)
    kind: str = "logical"  # what `drtool run` drills: "logical", "physical" (PITR) or "both"


@dataclass(frozen=True)
class Notify:
    webhook_url_env: str | None = None  # env var holding a webhook URL (JSON POST, Slack-compatible text)
    heartbeat_url_env: str | None = None  # env var holding a healthchecks-style ping URL
    on_success: bool = False  # also post to the webhook when a job succeeds
    timeout: int = field(default=10, metadata=DURATION)


@dataclass(frozen=True)
class Signing:
    key_file: str | None = None  # OpenSSH Ed25519 private key, on hosts that write
    trusted_keys: tuple[str, ...] = ()  # `ssh-ed25519 AAAA... [comment]` lines, on hosts that read


@dataclass(frozen=True)
class Pitr:
    """Continuous WAL archiving and physical base backups (docs/pitr.md)."""

    enabled: bool = False
    pgdata: str | None = None  # the cluster's data directory: the WAL daemon reads pg_wal/archive_status there
    spool_dir: str | None = None  # acknowledgements and prefetched WAL; outside PGDATA; required when enabled
    archive_timeout: int = field(default=0, metadata=DURATION)  # 0: derived from objectives.rpo, at most 60 s
    upload_workers: int = 4  # segments uploaded at once by `drtool wal daemon`
    ack_timeout: int = field(default=60, metadata=DURATION)  # `wal push` waits this long for the daemon
    prefetch: int = 16  # segments `wal fetch` downloads ahead during recovery
    heartbeat_interval: int = field(default=0, metadata=DURATION)  # 0: off (issue 13: drtool.heartbeat rows)


@dataclass(frozen=True)
class Policy:
    name: str
    source: Path
    dsn: str
    password_env: str | None
    storage: StorageTarget
    copies: tuple[StorageTarget, ...]
    recipients: tuple[str, ...]
    identity_file: str | None
    schedule: Schedule = field(default_factory=Schedule)
    retention: Retention = field(default_factory=Retention)
    rpo: int | None = None  # seconds
    rto: int | None = None
    backup: BackupOptions = field(default_factory=BackupOptions)
    drill: Drill = field(default_factory=Drill)
    notify: Notify = field(default_factory=Notify)
    signing: Signing = field(default_factory=Signing)
    pitr: Pitr = field(default_factory=Pitr)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class InvalidPolicy:
    """A policy file that did not validate: it is named, never run, and does not stop the others."""

    source: Path
    problems: tuple[str, ...]  # each 'file: key.path: message', secrets never echoed
    name: str | None = None  # the name the file declares, when it parses far enough to say


@dataclass
class Fleet:
    """The policies of a file or folder: the valid ones to run, the invalid ones to report."""

    policies: list[Policy]
    invalid: list[InvalidPolicy]
