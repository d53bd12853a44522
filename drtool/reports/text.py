"""Wording shared by the Markdown and HTML renderings: plain words and human units. Values here are
plain text; each renderer escapes them for its format."""

from __future__ import annotations

from typing import Any

from ..clock import parse_iso
from ..durations import format_duration, format_size

RESULT = {"passed": "passed", "failed": "FAILED", "could-not-run": "could not run"}
CHECK_RESULT = {True: "ok", None: "skipped", False: "FAILED"}


def duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def size(n: float | None) -> str:
    """33300000 -> '33.3 MB' (decimal units, as the CLI shows them)."""
    return format_size(n)


def when(value: str | None) -> str:
    """An ISO time from the evidence as people read it, to the second: '2026-11-01 07:27:54 UTC'."""
    if not value:
        return "-"
    try:
        return parse_iso(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value  # not a time after all: shown as stored (each renderer escapes it)


def backups_kept(n: int) -> str:
    return f"{n} backup kept" if n == 1 else f"{n} backups kept"


def verdict(compliant: bool) -> str:
    return "compliant" if compliant else "NOT compliant"


def drill_counts(d: dict[str, Any]) -> str:
    could_not_run = f" ({d['could_not_run']} could not run)" if d.get("could_not_run") else ""
    return f"{d['run']} / {d['passed']} / {d['failed']}{could_not_run}"


def rto(x: dict[str, Any]) -> str:
    """A drill's RTO with the scratch server's settings beside it: a fast profile flatters it."""
    profile = x.get("scratch_profile")
    return duration(x["rto_seconds"]) + (f" ({profile})" if profile and x["rto_seconds"] is not None else "")


def drill_result(x: dict[str, Any]) -> str:
    return RESULT[x["outcome"]] + (f": {x['failure']}" if x["outcome"] == "could-not-run" else "")


def check(c: dict[str, Any]) -> str:
    return f"{c['name']} {CHECK_RESULT.get(c['ok'], 'FAILED')}"


def worst_rpo(r: dict[str, Any]) -> str:
    return f"{duration(r['worst_seconds'])} ({when(r['worst_from'])} to {when(r['worst_to'])})"


def coverage(r: dict[str, Any]) -> str:
    u = r.get("uncovered")
    if not u:
        return ""
    return (f"Evidence starts at {when(u['to'])}: no backup covers the period before it (from {when(u['from'])}, "
            f"{duration(u['seconds'])}).")  # fmt: skip


def forecast(f: dict[str, Any], rto_target: float | None) -> str:
    """The restore-time forecast in plain words, or "" when no drill measured a restore speed."""
    if not f["available"]:
        return ""
    now = (f"Forecast: a restore now would take about {duration(f['expected_rto_seconds'])} "
           f"(restore speed {size(f['restore_bytes_per_second'])}/s).")  # fmt: skip
    growth = f["growth_bytes_per_day"]
    if growth is None:
        return f"{now} Too few backups to tell how fast the database grows."
    grows = f" The dump grows by {size(growth)} a day." if growth > 0 else " The dump is not growing."
    if not rto_target:
        return now + grows + " No RTO target is set."
    if f["expected_rto_seconds"] >= rto_target:
        return now + grows + f" That is already over the RTO target of {duration(rto_target)}."
    if f["rto_breach_date"]:
        return now + grows + f" At this rate restores will take longer than the RTO target of " \
                             f"{duration(rto_target)} around {f['rto_breach_date']}."  # fmt: skip
    return now + grows + f" Restores stay within the RTO target of {duration(rto_target)} at this rate."


def retention_rules(rules: dict[str, Any] | None) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in rules.items()) if rules else "none"


def storage(s: dict[str, Any]) -> str:
    region = f" (region {s['region']})" if s.get("region") else ""
    copies = "; copies: " + ", ".join(f"{c['name']} at {c['url']}" for c in s["copies"]) if s.get("copies") else ""
    return f"{s['url']}{region}; Object Lock: {s.get('object_lock') or 'off'}{copies}"


def schedule_line(job: str, st: dict[str, Any]) -> str:
    return (f"scheduled {job}: last {st['last_outcome'] or '-'} for slot {when(st['last_slot'])}; "
            f"missed slots so far: {st['missed_total'] or 0}")  # fmt: skip


def copies_line(target: str, ids: list[str]) -> str:
    return f"copies to {target} pending: {', '.join(ids)}"


# -- point-in-time recovery (policies with [pitr]) ----------------------------------------------------

MILESTONES = ("extracted", "verified", "server_started", "consistent", "promoted", "first_write")
MET = {True: "met", False: "MISSED", None: "-"}


def drill_name(x: dict[str, Any]) -> str:
    """The drill's id, marked when it is a PITR drill (the drill log lists both kinds)."""
    return x["drill_id"] + (" (PITR)" if x.get("kind") == "physical" else "")


def window(w: dict[str, Any]) -> str:
    if not w.get("earliest"):
        return "Restorable window: none (no base backup is restorable with the archived WAL)."
    newest = f"; newest archived segment {w['newest_segment']} completed {when(w['newest_segment_end'])}" \
        if w.get("newest_segment") else ""  # fmt: skip
    return (f"Restorable window: {when(w['earliest'])} to {when(w['latest'])} (timeline {w.get('timeline')}"
            f"{newest}).")  # fmt: skip


def figure(f: dict[str, Any]) -> str:
    v = f["value"]
    if isinstance(v, dict):
        return f"{when(v.get('earliest'))} to {when(v.get('latest'))}"
    return duration(v)


def figure_met(f: dict[str, Any]) -> str:
    """The figure and whether it meets its objective's target (nothing said without a target)."""
    return figure(f) + (f" ({MET[f['met']]})" if f["met"] is not None else "")


def interval(g: dict[str, Any]) -> str:
    after = f" after {g['after']}" if g.get("after") else ""
    return f"{duration(g['seconds'])} from {when(g['from'])} to {when(g['to'])}{after}"


def gap_line(g: dict[str, Any]) -> str:
    until = f"; restorable until {when(g['restorable_until'])}" if g.get("restorable_until") else ""
    return f"WAL gap: {g['missing']} through {g['through']} ({g['segments']} segment(s)) missing{until}: {g['breaks']}"


def phases(x: dict[str, Any]) -> str:
    """A drill's RTO phases: a PITR drill's milestones (seconds from its start), a logical drill's
    phase durations."""
    if x.get("kind") == "physical":
        m = x.get("milestones") or {}
        return ", ".join(f"{k.replace('_', ' ')} at {duration(m[k])}" for k in MILESTONES if m.get(k) is not None)
    return ", ".join(f"{k.replace('_', ' ')} {duration(v)}" for k, v in (x.get("phases") or {}).items())


def pitr_forecast(f: dict[str, Any], rto_target: float | None) -> str:
    """The physical restore forecast in plain words (from the PITR drills), or ""."""
    if not f.get("available"):
        return ""
    said = forecast(f, rto_target).replace("Forecast: a restore now", "Forecast: a physical restore of the newest base "
                                           "backup now").replace("restore speed", "base extract speed")  # fmt: skip
    return said.replace("The dump grows", "Base backups grow").replace("The dump is not", "Base backups are not")
