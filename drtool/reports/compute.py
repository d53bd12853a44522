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
from ..records import PAYLOAD_ROLES, ScheduleState, recipient_fingerprints

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
    pitr: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report section of one policy. `policy` carries name, objectives, retention, targets
    (and `drill_kind`); `pitr` what the WAL archive says (app/walview.coverage) for a policy with
    [pitr] enabled: its section then has a `pitr` part, and its RPO verdict is the archive's."""
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
    pitr_part = None if pitr is None else _pitr(pitr, attempts, backups, rpo_t, rto_t, start, end)
    if pitr_part is not None:  # the RPO objective is claimed through the WAL archive, not the dumps
        reasons += pitr_part.pop("reasons")
    elif worst is not None and rpo_t and worst.seconds > rpo_t:
        reasons.append(f"worst-case RPO {format_duration(worst.seconds)} exceeds the target {format_duration(rpo_t)}")
    if not in_period:
        reasons.append("no restore drill ran in the period")
    elif pitr_part is not None and policy.get("drill_kind") in ("physical", "both") and not _ran(in_period, PHYSICAL):
        reasons.append("no PITR drill (drill --physical) ran in the period")
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
            "plain_bytes": b["sizes"]["plain_bytes"], "sha256": _payload_sha256(b), "targets": targets,
            "recipients": recipient_fingerprints(b),
        })  # fmt: skip
    section = {
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
                    "kind": kind_of(d),
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
                    "phases": d.get("phases") or {},
                    "milestones": d.get("milestones"),
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
        "forecast": _forecast([b for b in backups if b.get("kind") != PHYSICAL],
                              [d for d in (in_period or drills) if kind_of(d) != PHYSICAL], rto_t),
    }  # fmt: skip
    if pitr_part is not None:
        section["pitr"] = pitr_part
    return section


PHYSICAL = "physical"


def kind_of(drill: dict[str, Any]) -> str:
    """A drill record's kind: "physical" (PITR) or "logical" (a record without `kind`)."""
    return PHYSICAL if drill.get("kind") == PHYSICAL else "logical"


def _ran(drills: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in drills if kind_of(d) == kind]


def _pitr(pitr: dict[str, Any], attempts: list[dict[str, Any]], backups: list[dict[str, Any]], rpo_t: int | None,
          rto_t: int | None, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:  # fmt: skip
    """The PITR part of a policy's section: the restorable window, the worst-case RPO from archive
    continuity over the period (the largest interval during which the newest point a restore
    could reach aged: a gap in the chain lasts until a base backup after it, or the period's
    end), the physical drills' RTO and RPO, the physical restore forecast, and which objective
    each figure proves. `reasons` (popped by the caller) say what misses an objective."""
    win = pitr["window"]
    gaps = [g for g in rpo_gaps(pitr["points"], end, since=start) if g.end > start]
    worst = max(gaps, key=lambda g: g.seconds, default=None)
    uncovered = next((g for g in gaps if g.after_backup is None), None)
    largest = sorted(gaps, key=lambda g: g.seconds, reverse=True)[:LARGEST_INTERVALS]
    physical = [d for d in _ran(attempts, PHYSICAL) if drill_outcome(d) != COULD_NOT_RUN]
    rtos = [d["rto_seconds"] for d in physical if d.get("rto_seconds") is not None]
    rpos = [d["rpo_seconds"] for d in physical if d.get("rpo_seconds") is not None]
    passed = [d for d in physical if d.get("passed")]
    reasons = []
    if not win.get("earliest"):
        reasons.append("PITR: no base backup is restorable with the archived WAL")
    if worst is not None and rpo_t and worst.seconds > rpo_t:
        reasons.append(f"worst-case RPO from the WAL archive {format_duration(worst.seconds)} "
                       f"({iso(worst.start)} to {iso(worst.end)}) exceeds the target {format_duration(rpo_t)}")  # fmt: skip
    for g in win.get("gaps", []):
        reasons.append(f"WAL gap: {g['missing']} missing ({g['segments']} segment(s)): {g['breaks']}")
    forecast = _physical_forecast([b for b in backups if b.get("kind") == PHYSICAL], passed, rto_t)
    figures: dict[str, Any] = {
        "worst_rpo": {"seconds": None if worst is None else round(worst.seconds, 1),
                      "from": None if worst is None else iso(worst.start),
                      "to": None if worst is None else iso(worst.end),
                      "after": None if worst is None else worst.after_backup,
                      "exact": bool(pitr.get("worst_exact"))},
        "drill_rto_last_seconds": rtos[-1] if rtos else None,
        "drill_rpo_last_seconds": rpos[-1] if rpos else None,
    }  # fmt: skip
    return {
        "reasons": reasons,
        "window": {k: win.get(k) for k in WINDOW_KEYS},
        "gaps": win.get("gaps", []),
        "unrestorable": win.get("unrestorable", []),
        "rpo": {
            **figures["worst_rpo"],
            "bound": pitr.get("bound"),
            "uncovered": None
            if uncovered is None
            else {"from": iso(uncovered.start), "to": iso(uncovered.end), "seconds": round(uncovered.seconds, 1)},
            "largest": [
                {"from": iso(g.start), "to": iso(g.end), "seconds": round(g.seconds, 1), "after": g.after_backup}
                for g in largest
            ],
        },  # fmt: skip
        "drills": {
            "run": len(physical),
            "passed": len(passed),
            "failed": len(physical) - len(passed),
            "rto_last_seconds": figures["drill_rto_last_seconds"],
            "rto_median_seconds": statistics.median(rtos) if rtos else None,
            "rto_p95_seconds": _pct(rtos, 0.95),
            "rpo_last_seconds": figures["drill_rpo_last_seconds"],
            "rpo_max_seconds": max(rpos) if rpos else None,
        },
        "forecast": forecast,
        "proves": _proves(figures, win, forecast, rpo_t, rto_t),
    }


WINDOW_KEYS = ("sysid", "earliest", "latest", "timeline", "newest_segment", "newest_segment_end", "timelines_inferred")
LARGEST_INTERVALS = 5  # the report lists this many of the archive's largest uncovered intervals


def _proves(figures: dict[str, Any], win: dict[str, Any], forecast: dict[str, Any], rpo_t: int | None,
            rto_t: int | None) -> list[dict[str, Any]]:  # fmt: skip
    """Each PITR figure with the objective it is evidence for and whether it meets it (None: no
    target or no figure)."""

    def met(value: float | None, target: int | None) -> bool | None:
        return None if value is None or not target else value <= target

    worst = figures["worst_rpo"]["seconds"]
    expected = forecast.get("expected_rto_seconds")
    return [
        {"figure": "restorable window", "objective": "rpo", "value": {"earliest": win.get("earliest"),
         "latest": win.get("latest")}, "target": None, "met": None,
         "proves": "a restore can reach any moment from earliest to latest (base backups plus unbroken WAL)"},
        {"figure": "worst-case RPO from the WAL archive", "objective": "rpo", "value": worst, "target": rpo_t,
         "met": met(worst, rpo_t),
         "proves": "the most a disaster at any moment of the period would have lost (archive continuity)"},
        {"figure": "PITR drill RPO (last)", "objective": "rpo", "value": figures["drill_rpo_last_seconds"],
         "target": rpo_t, "met": met(figures["drill_rpo_last_seconds"], rpo_t),
         "proves": "what a restore to latest really held, read from the restored data"},
        {"figure": "PITR drill RTO (last)", "objective": "rto", "value": figures["drill_rto_last_seconds"],
         "target": rto_t, "met": met(figures["drill_rto_last_seconds"], rto_t),
         "proves": "time from the drill's start to a promoted, writable server"},
        {"figure": "physical restore RTO forecast", "objective": "rto", "value": expected, "target": rto_t,
         "met": met(expected, rto_t),
         "proves": "the RTO a physical restore of the newest base backup would take at today's size"},
    ]  # fmt: skip


def _physical_forecast(backups: list[dict[str, Any]], drills: list[dict[str, Any]],
                       rto_t: int | None) -> dict[str, Any]:  # fmt: skip
    """Expected RTO of a physical restore of the newest base backup, as the logical forecast
    does it: the extract throughput passed PITR drills achieved (base bytes / fetch+decrypt+extract)
    and the rest of their RTO (WAL, pg_verifybackup, start, replay, promotion) as overhead."""
    rates, overheads = [], []
    for d in drills:
        busy = (d.get("phases") or {}).get("fetch_decrypt_extract", 0)
        if d.get("bytes_restored") and busy > 0 and d.get("rto_seconds") is not None:
            rates.append(d["bytes_restored"] / busy)
            overheads.append(max(0.0, d["rto_seconds"] - busy))
    if not rates or not backups:
        return {"available": False, "why": "needs at least one passed PITR drill and one base backup"}
    return _extrapolate(backups, statistics.median(rates), statistics.median(overheads), rto_t)


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
    return _extrapolate(backups, statistics.median(rates), statistics.median(overheads), rto_t)


def _extrapolate(backups: list[dict[str, Any]], rate: float, overhead: float, rto_t: int | None) -> dict[str, Any]:
    """overhead + newest size / rate, and when the size's straight-line growth would pass rto_t."""
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


def _payload_sha256(manifest: dict[str, Any]) -> str:
    """The SHA-256 of the object a restore reads (the dump, or a base backup's archive), which
    need not be the manifest's first object."""
    role = PAYLOAD_ROLES.get(manifest.get("kind") or "logical")
    objects = manifest["objects"]
    sha: str = next((o["sha256"] for o in objects if o.get("role") == role), objects[0]["sha256"])
    return sha
