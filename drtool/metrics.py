"""Prometheus metrics in the node_exporter textfile format: the only importer of prometheus_client."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

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
    "compliant": "1 if the policy is compliant over the last 90 days (drtool report's verdict; days before the "
    "first backup count against the RPO), else 0.",
}


def write(path: str, rows: list[dict[str, Any]], policy_files: dict[str, bool] | None = None) -> None:
    """Write one gauge per metric, labelled by policy; rows map metric names to values (None = absent).
    policy_files maps each policy file to whether it is valid (drtool_policy_valid, labelled by file:
    an invalid file has no policy name to label by). Raises OSError when the file cannot be written."""
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
    write_to_textfile(path, registry)
