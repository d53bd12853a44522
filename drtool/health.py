"""Health of a policy from what the store says (pure): healthy, degraded or unhealthy, and why."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .records import ScheduleState

ORDER = {"healthy": 0, "degraded": 1, "unhealthy": 2}
DRILL_MAX_AGE = 8 * 86400  # no passed drill for this long: degraded
# without the first three nothing can be restored; "origin": untrusted objects are in the store
UNHEALTHY_COMPONENTS = ("storage", "keys", "restore", "origin")

# A drill record's outcome. "could-not-run": the store, the scratch server or a tool was not
# available; it says nothing about the backup, so it is neither a pass nor a failure.
PASSED, FAILED, COULD_NOT_RUN = "passed", "failed", "could-not-run"


def drill_outcome(record: dict[str, Any]) -> str:
    """The outcome of a drill record; records written before `outcome` existed have only `passed`."""
    outcome = record.get("outcome")
    if isinstance(outcome, str) and outcome in (PASSED, FAILED, COULD_NOT_RUN):
        return outcome
    return PASSED if record.get("passed") else FAILED


def drills_that_ran(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of drills that restored (or tried to restore) a backup: evidence about it."""
    return [r for r in records if drill_outcome(r) != COULD_NOT_RUN]


def worst(*states: str) -> str:
    return max(states, key=lambda s: ORDER[s], default="healthy")


def evaluate(
    *,
    now: dt.datetime,
    rpo: int | None,
    newest_recovery_point: dt.datetime | None,
    last_drill: dict[str, Any] | None,
    copies_pending: dict[str, int],
    schedule_state: ScheduleState,
    components: dict[str, str],
    last_attempt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The policy's status with the figures and reasons behind it. `last_drill` is the newest drill
    that ran (passed or failed); `last_attempt` the newest record of any outcome."""
    reasons: list[str] = []
    status = "healthy"
    age = None if newest_recovery_point is None else (now - newest_recovery_point).total_seconds()
    if age is None:
        status = "unhealthy"
        reasons.append("no complete backup")
    elif rpo and age > rpo:
        status = "unhealthy"
        reasons.append(f"newest backup is {int(age)}s old, more than the RPO target of {rpo}s")
    drill_age = None
    if last_drill is None:
        status = worst(status, "degraded")
        reasons.append("no restore drill has run")
    else:
        drill_age = (now - dt.datetime.fromisoformat(last_drill["started_at"].replace("Z", "+00:00"))).total_seconds()
        if drill_outcome(last_drill) == FAILED:
            status = "unhealthy"
            reasons.append(f"last drill {last_drill['drill_id']} failed: {last_drill.get('failure')}")
        elif drill_age > DRILL_MAX_AGE:
            status = worst(status, "degraded")
            reasons.append(f"last passed drill is {int(drill_age // 86400)} days old")
    if last_attempt is not None and drill_outcome(last_attempt) == COULD_NOT_RUN:
        status = worst(status, "degraded")
        reasons.append(f"last drill attempt {last_attempt['drill_id']} could not run: {last_attempt.get('failure')}")
    for target, n in copies_pending.items():
        if n:
            status = worst(status, "degraded")
            reasons.append(f"{n} backup(s) not yet copied to '{target}'")
    for job, st in schedule_state.jobs.items():
        if st.get("last_outcome") == "failed":
            status = worst(status, "degraded")
            reasons.append(f"last scheduled {job} failed: {st.get('last_message')}")
        if st.get("last_missed"):
            status = worst(status, "degraded")
            reasons.append(f"{st['last_missed']} scheduled {job} slot(s) were missed before the last run")
    for name, state in components.items():
        if state != "ok":
            status = worst(status, "unhealthy" if name in UNHEALTHY_COMPONENTS else "degraded")
            reasons.append(f"{name}: {state}")
    return {
        "status": status,
        "reasons": reasons,
        "last_backup_age_seconds": None if age is None else round(age, 1),
        "rpo_seconds": rpo,
        "last_drill": None
        if last_drill is None
        else {
            "drill_id": last_drill["drill_id"],
            "passed": last_drill.get("passed"),
            "outcome": drill_outcome(last_drill),
            "age_seconds": round(drill_age, 1) if drill_age is not None else None,
            "rto_seconds": last_drill.get("rto_seconds"),
        },
        "copies_pending": copies_pending,
        "components": components,
    }
