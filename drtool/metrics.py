"""Prometheus metrics: the node_exporter textfile, and the exposition `drtool serve` answers
/metrics with. The only importer of prometheus_client."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: every command imports this module, few write metrics (~30 ms)
    from prometheus_client import CollectorRegistry

# generate_latest writes the classic text format; say so, for every Prometheus version to parse it
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_GAUGES = {
    "last_backup_timestamp_seconds": "Completion time of the newest complete backup (Unix time).",
    "last_backup_duration_seconds": "How long the newest complete backup took.",
    "last_backup_size_bytes": "Stored size of the newest complete backup.",
    "last_success_timestamp_seconds": "Time of the newest complete backup or passed drill (Unix time).",
    "rpo_achieved_seconds": "Age of the newest complete backup's recovery point: the RPO achieved now.",
    "drill_rto_seconds": "RTO measured by the newest drill.",
    "drill_success": "1 if the newest drill that ran passed, 0 if it failed (one that could not run is ignored).",
    "drill_last_timestamp_seconds": "Start of the newest drill (Unix time).",
    "rpo_objective_seconds": "objectives.rpo of the policy.",
    "rto_objective_seconds": "objectives.rto of the policy.",
    "copies_pending": "Backups not yet copied to a copy target.",
    "healthy": "1 if drtool status says healthy, else 0.",
    "wal_archive_lag_seconds": "PITR: age of the newest archived WAL segment (when it was completed).",
    "wal_backlog_segments": "PITR: WAL segments waiting in pg_wal to be archived (.ready), where drtool runs "
    "beside the server.",
    "wal_gap": "PITR: 1 if the WAL chain after the oldest restorable base backup has a gap, else 0.",
    "compliant": "1 if the policy is compliant over the last 90 days (drtool report's verdict; days before the "
    "first backup count against the RPO), else 0.",
}


def write(path: str, rows: list[dict[str, Any]], policy_files: dict[str, bool] | None = None) -> None:
    """Write one gauge per metric, labelled by policy; rows map metric names to values (None = absent).
    policy_files maps each policy file to whether it is valid (drtool_policy_valid, labelled by file:
    an invalid file has no policy name to label by). Raises OSError when the file cannot be written."""
    from prometheus_client import write_to_textfile as _write_to_textfile

    _write_to_textfile(path, _registry(rows, policy_files))


def exposition(rows: list[dict[str, Any]], policy_files: dict[str, bool] | None = None) -> bytes:
    """The same gauges as write(), as the text a /metrics endpoint answers with."""
    from prometheus_client import generate_latest

    return generate_latest(_registry(rows, policy_files))


class ServerMetrics:
    """`drtool serve`'s own figures: requests by path and status code, and their latency."""

    _BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self._registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._requests = Counter("drtool_serve_requests", "HTTP requests answered by drtool serve.",
                                 ["path", "code"], registry=self._registry)  # fmt: skip
        self._latency = Histogram("drtool_serve_request_duration_seconds", "Time to answer a request.",
                                  ["path"], buckets=self._BUCKETS, registry=self._registry)  # fmt: skip

    def observe(self, path: str, code: int, seconds: float) -> None:
        with self._lock:
            self._requests.labels(path=path, code=str(code)).inc()
            self._latency.labels(path=path).observe(seconds)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        with self._lock:
            return generate_latest(self._registry)


def _registry(rows: list[dict[str, Any]], policy_files: dict[str, bool] | None) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    gauges = {name: Gauge(f"drtool_{name}", doc, ["policy"], registry=registry) for name, doc in _GAUGES.items()}
    for row in rows:
        for name, gauge in gauges.items():
            value = row.get(name)
            if value is not None:
                gauge.labels(policy=row["policy"]).set(float(value))
    valid = Gauge("drtool_policy_valid", "1 if the policy file validates, 0 if it is invalid and nothing of it runs.",
                  ["file"], registry=registry)  # fmt: skip
    for file, ok in (policy_files or {}).items():
        valid.labels(file=file).set(1.0 if ok else 0.0)
    return registry
