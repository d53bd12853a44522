"""The compliance report's document, computed only from the store's evidence: manifests, drill
records and schedule state. Pure: no I/O, no rendering (markdown.py and html.py render it)."""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any

from ..clock import iso, parse_iso
from ..durations import format_duration
from ..health import COULD_NOT_RUN, drill_outcome
from ..objectives import Point
from ..objectives import gaps as rpo_gaps
from ..records import ScheduleState

REPORT_FORMAT = "drtool-compliance-report"
REPORT_VERSION = 1

EVIDENCE_MAP = [
    ("SOC 2 A1.3", "Recovery plan procedures, including restoration of backups, are tested.",
     "Drill log: each restore with its checks, RTO and RPO; compliant verdict per policy."),
    ("ISO 27001 A.8.13", "Backup copies are taken and tested regularly in line with the backup policy.",
     "Backup inventory (encrypted, hashed, retention applied) and the drill log."),
    ("HIPAA 164.308(a)(7)(ii)(D)", "Periodic testing and revision of contingency plans.",
     "Drills run on a schedule; failures and missed slots are listed."),
    ("DORA art. 12", "Backup policies, restoration and recovery procedures, tested periodically; "
     "copies in a separate location.", "Copy targets and regions in the inventory; drills from copies."),
]  # fmt: skip


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _slope(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def build_policy(
    *,
    policy: dict[str, Any],
    backups: list[dict[str, Any]],
    drills: list[dict[str, Any]],
    drill_problems: list[str],
    schedule_state: ScheduleState,
    copies_pending: dict[str, list[str]],
    start: dt.datetime,
    end: dt.datetime,
) -> dict[str, Any]:
    """The report section of one policy. `policy` carries name, objectives, retention, targets."""
    rpo_t, rto_t = policy["rpo_seconds"], policy["rto_seconds"]
    points = [Point(b["id"], parse_iso(b["recovery_point"]), parse_iso(b["completed_at"])) for b in backups]
    # the period's start is part of it: a stretch before the first backup counts against the RPO
    gaps = [g for g in rpo_gaps(points, end, since=start) if g.end > start]
    worst = max(gaps, key=lambda g: g.seconds, default=None)
    uncovered = next((g for g in gaps if g.after_backup is None), None)
    attempts = sorted((d for d in drills if start <= parse_iso(d["started_at"]) <= end), key=lambda d: d["started_at"])
    # a drill that could not run (store, scratch server or tools unavailable) is neither a pass
    # nor a failure of the backup, and it is not "a drill ran"; it is listed as such
    in_period = [d for d in attempts if drill_outcome(d) != COULD_NOT_RUN]
    rtos = [d["rto_seconds"] for d in in_period if d.get("rto_seconds") is not None]
    passed = [d for d in in_period if d.get("passed")]
    reasons = []
    if not backups:
        reasons.append("no backups: there is no evidence")
    if all(g.after_backup is None for g in gaps):
        reasons.append("no backup completed in or before the period")
    elif uncovered is not None and rpo_t and uncovered.seconds > rpo_t:
        reasons.append(f"no backup before {iso(uncovered.end)}: the first {format_duration(uncovered.seconds)} of "
                       f"the period (from {iso(start)}) are covered by no backup, more than the RPO target")  # fmt: skip
    if worst is not None and rpo_t and worst.seconds > rpo_t:
        reasons.append(f"worst-case RPO {format_duration(worst.seconds)} exceeds the target {format_duration(rpo_t)}")
    if not in_period:
        reasons.append("no restore drill ran in the period")
    for d in in_period:
        if not d.get("passed"):
            reasons.append(f"drill {d['drill_id']} failed: {d.get('failure')}")
    if drill_problems:
        reasons.append(f"{len(drill_problems)} drill record(s) could not be read")
    trend = _slope([parse_iso(d["started_at"]).timestamp() / 86400 for d in in_period if d.get("rto_seconds")],
                   rtos)  # fmt: skip
    inventory = []
    for b in sorted(backups, key=lambda b: b["recovery_point"], reverse=True):
        targets = ["primary"] + [
            c["name"] for c in policy["copies"] if b["id"] not in copies_pending.get(c["name"], [])
        ]
        inventory.append({
            "id": b["id"], "recovery_point": b["recovery_point"], "completed_at": b["completed_at"],
            "stored_bytes": b["sizes"]["stored_bytes"], "database_bytes": b["sizes"].get("database_bytes"),
            "plain_bytes": b["sizes"]["plain_bytes"], "sha256": b["objects"][0]["sha256"], "targets": targets,
            "recipients": [r["fingerprint"] for r in b["encryption"]["recipients"]],
        })  # fmt: skip
    return {
        "policy": policy["name"],
        "objectives": {"rpo_seconds": rpo_t, "rto_seconds": rto_t},
        "compliant": not reasons,
        "reasons": reasons,
        "rpo": {
            "worst_seconds": None if worst is None else round(worst.seconds, 1),
            "worst_from": None if worst is None else iso(worst.start),
            "worst_to": None if worst is None else iso(worst.end),
            "uncovered": None
            if uncovered is None
            else {"from": iso(uncovered.start), "to": iso(uncovered.end), "seconds": round(uncovered.seconds, 1)},
            "series": [{"at": iso(g.end), "seconds": round(g.seconds, 1)} for g in gaps],
        },
        "drills": {
            "run": len(in_period),
            "passed": len(passed),
            "failed": len(in_period) - len(passed),
            "could_not_run": len(attempts) - len(in_period),
            "rto_last_seconds": rtos[-1] if rtos else None,
            "rto_median_seconds": statistics.median(rtos) if rtos else None,
            "rto_p95_seconds": _pct(rtos, 0.95),
            "rto_trend_seconds_per_day": None if trend is None else round(trend, 3),
            "log": [
                {
                    "drill_id": d["drill_id"],
                    "started_at": d["started_at"],
                    "backup_id": d["backup_id"],
                    "outcome": drill_outcome(d),
                    "passed": d.get("passed"),
                    "rto_seconds": d.get("rto_seconds"),
                    "scratch_profile": d.get("scratch_profile"),
                    "rpo_seconds": d.get("rpo_seconds"),
                    "storage_target": d.get("storage_target", "primary"),
                    "failure": d.get("failure"),
                    "checks": [{"name": c["name"], "ok": c["ok"], "detail": c["detail"]} for c in d.get("checks", [])],
                }
                for d in attempts
            ],  # fmt: skip
            "unreadable_records": drill_problems,
        },
        "inventory": inventory,
        "storage": policy["storage"],
        "encryption": policy["encryption"],
        "retention": {"rules": policy["retention"], "kept_backups": len(backups)},
        "schedule": {
            job: {k: st.get(k) for k in ("last_slot", "last_outcome", "last_message", "missed_total")}
            for job, st in schedule_state.jobs.items()
        },  # fmt: skip
        "copies_pending": {k: v for k, v in copies_pending.items() if v},
        "forecast": _forecast(backups, in_period or drills, rto_t),
    }


def _forecast(backups: list[dict[str, Any]], drills: list[dict[str, Any]], rto_t: int | None) -> dict[str, Any]:
    """Expected RTO at the current size, from the restore throughput drills achieved, and the day
    the dump's growth would push it over the RTO target (a straight-line fit of dump sizes)."""
    rates, overheads = [], []
    for d in drills:
        ph = d.get("phases", {})
        busy = ph.get("fetch_decrypt_decompress", 0) + ph.get("pg_restore", 0)
        if d.get("passed") and d.get("bytes_restored") and busy > 0:
            rates.append(d["bytes_restored"] / busy)
            overheads.append(ph.get("provision", 0) + ph.get("verify", 0))
    if not rates or not backups:
        return {"available": False, "why": "needs at least one passed drill and one backup"}
    rate, overhead = statistics.median(rates), statistics.median(overheads)
    pts = sorted((parse_iso(b["completed_at"]).timestamp() / 86400, b["sizes"]["plain_bytes"]) for b in backups)
    size = pts[-1][1]
    expected = overhead + size / rate
    out = {"available": True, "restore_bytes_per_second": round(rate), "current_dump_bytes": size,
           "expected_rto_seconds": round(expected, 1), "growth_bytes_per_day": None, "rto_breach_date": None}  # fmt: skip
    growth = _slope([p[0] for p in pts], [p[1] for p in pts])
    if growth is not None:
        out["growth_bytes_per_day"] = round(growth)
        if rto_t and growth > 0 and expected < rto_t:
            days = ((rto_t - overhead) * rate - size) / growth
            out["rto_breach_date"] = (dt.datetime.fromtimestamp(pts[-1][0] * 86400, dt.UTC)
                                      + dt.timedelta(days=days)).date().isoformat()  # fmt: skip
    return out


def build(sections: list[dict[str, Any]], *, start: dt.datetime, end: dt.datetime, now: dt.datetime,
          version: str) -> dict[str, Any]:  # fmt: skip
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "generated_at": iso(now),
        "tool": {"name": "drtool", "version": version},
        "period": {"from": iso(start), "to": iso(end)},
        "compliant": bool(sections) and all(s["compliant"] for s in sections),
        "policies": sections,
        "evidence_map": [{"control": c, "asks": a, "evidence": e} for c, a, e in EVIDENCE_MAP],
    }
