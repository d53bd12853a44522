"""Compliance reports, built only from the store's evidence: manifests, drill records and
schedule state. `build` is pure; `render_*` turn its document into Markdown or one
self-contained HTML file (inline CSS and SVG, no external resources)."""

from __future__ import annotations

import datetime as dt
import html
import json
import statistics
from typing import Any

from .clock import iso, parse_iso
from .durations import format_duration
from .health import COULD_NOT_RUN, drill_outcome
from .objectives import Point
from .objectives import gaps as rpo_gaps

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
    backups: list[dict],
    drills: list[dict],
    drill_problems: list[str],
    schedule_state: dict,
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
            for job, st in schedule_state.get("jobs", {}).items()
        },  # fmt: skip
        "copies_pending": {k: v for k, v in copies_pending.items() if v},
        "forecast": _forecast(backups, in_period or drills, rto_t),
    }


def _forecast(backups: list[dict], drills: list[dict], rto_t: int | None) -> dict[str, Any]:
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


def build(sections: list[dict], *, start: dt.datetime, end: dt.datetime, now: dt.datetime, version: str) -> dict:
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


def render_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _d(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


_RESULT = {"passed": "passed", "failed": "FAILED", "could-not-run": "could not run"}


def _drill_counts(d: dict) -> str:
    cnr = f" ({d['could_not_run']} could not run)" if d.get("could_not_run") else ""
    return f"{d['run']} / {d['passed']} / {d['failed']}{cnr}"


def _rto(x: dict) -> str:
    """A drill's RTO with the scratch server's settings beside it: a fast profile flatters it."""
    profile = x.get("scratch_profile")
    return _d(x["rto_seconds"]) + (f" ({profile})" if profile and x["rto_seconds"] is not None else "")


def _coverage(r: dict) -> str:
    u = r.get("uncovered")
    if not u:
        return ""
    return (
        f"Evidence starts at {u['to']}: no backup covers the period before it (from {u['from']}, {_d(u['seconds'])})."
    )


def render_md(doc: dict) -> str:
    out = ["# Backup and recovery compliance report", "",
           f"Period {doc['period']['from']} to {doc['period']['to']}; generated {doc['generated_at']} by drtool "
           f"{doc['tool']['version']}. Overall: **{'COMPLIANT' if doc['compliant'] else 'NOT COMPLIANT'}**.", ""]  # fmt: skip
    if not doc["policies"]:
        out += ["No policies: there is no evidence.", ""]
    for p in doc["policies"]:
        o, r, d = p["objectives"], p["rpo"], p["drills"]
        out += [f"## Policy `{p['policy']}`: {'compliant' if p['compliant'] else 'NOT compliant'}", ""]
        out += [f"- {x}" for x in p["reasons"]] + ([""] if p["reasons"] else [])
        out += ["| measure | achieved | target |", "|---|---|---|",
                f"| worst-case RPO | {_d(r['worst_seconds'])} ({r['worst_from'] or '-'} to {r['worst_to'] or '-'}) | {_d(o['rpo_seconds'])} |",
                f"| drills run / passed / failed | {_drill_counts(d)} | at least 1, all passed |",
                f"| RTO last / median / p95 | {_d(d['rto_last_seconds'])} / {_d(d['rto_median_seconds'])} / {_d(d['rto_p95_seconds'])} | {_d(o['rto_seconds'])} |",
                ""]  # fmt: skip
        if _coverage(r):
            out += [_coverage(r), ""]
        f = p["forecast"]
        if f["available"]:
            breach = f["rto_breach_date"] or "not within the trend"
            out += [f"Forecast: expected RTO now {_d(f['expected_rto_seconds'])} at {f['restore_bytes_per_second']} B/s; "
                    f"growth {f['growth_bytes_per_day']} B/day; RTO target reached: {breach}.", ""]  # fmt: skip
        out += [
            "### Drill log",
            "",
            "| drill | started | backup | from | result | RTO | checks |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in d["log"]:
            checks = ", ".join(
                f"{c['name']} {'ok' if c['ok'] else ('skip' if c['ok'] is None else 'FAIL')}" for c in x["checks"]
            )
            result = _RESULT[x["outcome"]] + (f": {x['failure']}" if x["outcome"] == "could-not-run" else "")
            out.append(f"| {x['drill_id']} | {x['started_at']} | {x['backup_id'] or '-'} | {x['storage_target']} | "
                       f"{result} | {_rto(x)} | {checks} |")  # fmt: skip
        out += [
            "",
            "### Backup inventory",
            "",
            "| id | recovery point | stored | targets | recipients |",
            "|---|---|---|---|---|",
        ]
        for b in p["inventory"]:
            out.append(f"| {b['id']} | {b['recovery_point']} | {b['stored_bytes']} B | {', '.join(b['targets'])} | "
                       f"{', '.join(b['recipients'])} |")  # fmt: skip
        out += ["", f"Retention rules {p['retention']['rules'] or 'none'}; {p['retention']['kept_backups']} backups kept. "
                f"Object Lock: {p['storage']['object_lock'] or 'off'}.", ""]  # fmt: skip
        for job, st in p["schedule"].items():
            out.append(f"- scheduled {job}: last {st['last_outcome']} for slot {st['last_slot']}; "
                       f"missed slots so far: {st['missed_total']}")  # fmt: skip
        for target, ids in p["copies_pending"].items():
            out.append(f"- copies to `{target}` pending: {', '.join(ids)}")
        out.append("")
    out += ["## Evidence map", "", "| control | asks for | evidence in this report |", "|---|---|---|"]
    out += [f"| {e['control']} | {e['asks']} | {e['evidence']} |" for e in doc["evidence_map"]]
    return "\n".join(out) + "\n"


def _svg_chart(title: str, points: list[tuple[float, float]], target: float | None, unit: str) -> str:
    """A small line chart with a dashed target line, as inline SVG."""
    w, h, pad = 640, 200, 40
    if not points:
        return f'<figure><figcaption>{html.escape(title)}</figcaption><p class="none">no data</p></figure>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ymax = max(ys + ([target] if target else [])) * 1.1 or 1

    def px(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad)

    def py(y: float) -> float:
        return h - pad - y / ymax * (h - 2 * pad)

    line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
    dots = "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3"/>' for x, y in points)
    tgt = (f'<line class="target" x1="{pad}" x2="{w - pad}" y1="{py(target):.1f}" y2="{py(target):.1f}"/>'
           f'<text x="{w - pad}" y="{py(target) - 4:.1f}" text-anchor="end">target {target:g} {unit}</text>') if target else ""  # fmt: skip
    return (f'<figure><figcaption>{html.escape(title)}</figcaption><svg viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{html.escape(title)}"><line class="axis" x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}"/>'
            f'<line class="axis" x1="{pad}" y1="{pad / 2}" x2="{pad}" y2="{h - pad}"/>'
            f'<text x="{pad - 4}" y="{pad / 2 + 8}" text-anchor="end">{ymax:.3g}</text>'
            f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">0</text>'
            f'<polyline points="{line}"/>{dots}{tgt}</svg></figure>')  # fmt: skip


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#111}
h1,h2,h3{line-height:1.2}table{border-collapse:collapse;margin:.5em 0;width:100%}
td,th{border:1px solid #bbb;padding:.25em .5em;text-align:left;vertical-align:top;font-size:13px}
.ok{color:#060}.bad{color:#a00;font-weight:bold}svg{width:100%;max-width:640px;height:auto}
svg polyline{fill:none;stroke:#246;stroke-width:2}svg circle{fill:#246}svg .axis{stroke:#444}
svg .target{stroke:#a00;stroke-dasharray:6 4}svg text{font-size:11px;fill:#333}
figure{margin:1em 0;break-inside:avoid}td small{word-break:break-all}figcaption{font-weight:bold}@media print{body{margin:0}}"""


def render_html(doc: dict) -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>drtool compliance report</title>"
             f"<style>{_CSS}</style></head><body><h1>Backup and recovery compliance report</h1>"
             f"<p>Period {e(doc['period']['from'])} to {e(doc['period']['to'])}; generated {e(doc['generated_at'])} "
             f"by drtool {e(doc['tool']['version'])}. Overall: <span class={'ok' if doc['compliant'] else 'bad'}>"
             f"{'COMPLIANT' if doc['compliant'] else 'NOT COMPLIANT'}</span>.</p>"]  # fmt: skip
    if not doc["policies"]:
        parts.append("<p class=bad>No policies: there is no evidence.</p>")
    for p in doc["policies"]:
        o, r, d = p["objectives"], p["rpo"], p["drills"]
        parts.append(f"<h2>Policy {e(p['policy'])}: <span class={'ok' if p['compliant'] else 'bad'}>"
                     f"{'compliant' if p['compliant'] else 'NOT compliant'}</span></h2>")  # fmt: skip
        if p["reasons"]:
            parts.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in p["reasons"]) + "</ul>")
        parts.append(
            "<table><tr><th>measure</th><th>achieved</th><th>target</th></tr>"
            f"<tr><td>worst-case RPO</td><td>{_d(r['worst_seconds'])} ({e(r['worst_from'] or '-')} to {e(r['worst_to'] or '-')})</td><td>{_d(o['rpo_seconds'])}</td></tr>"
            f"<tr><td>drills run / passed / failed</td><td>{_drill_counts(d)}</td><td>at least 1, all passed</td></tr>"
            f"<tr><td>RTO last / median / p95</td><td>{_d(d['rto_last_seconds'])} / {_d(d['rto_median_seconds'])} / {_d(d['rto_p95_seconds'])}</td><td>{_d(o['rto_seconds'])}</td></tr></table>"
        )  # fmt: skip
        if _coverage(r):
            parts.append(f"<p class=bad>{e(_coverage(r))}</p>")
        t = lambda s: parse_iso(s).timestamp() / 86400  # noqa: E731
        parts.append(_svg_chart("Achieved RPO over time (hours) against the target",
                                [(t(x["at"]), x["seconds"] / 3600) for x in r["series"]],
                                o["rpo_seconds"] / 3600 if o["rpo_seconds"] else None, "h"))  # fmt: skip
        parts.append(_svg_chart("Drill RTO (seconds) against the target",
                                [(t(x["started_at"]), x["rto_seconds"]) for x in d["log"] if x["rto_seconds"] is not None],
                                o["rto_seconds"], "s"))  # fmt: skip
        parts.append(_svg_chart("Backup size over time (MB stored)",
                                sorted((t(b["completed_at"]), b["stored_bytes"] / 1e6) for b in p["inventory"]), None, "MB"))  # fmt: skip
        f = p["forecast"]
        if f["available"]:
            parts.append(f"<p>Forecast: expected RTO now {_d(f['expected_rto_seconds'])} at {f['restore_bytes_per_second']} B/s "
                         f"restore speed; dump growth {f['growth_bytes_per_day']} B/day; RTO target reached: "
                         f"{e(f['rto_breach_date'] or 'not within the trend')}.</p>")  # fmt: skip
        parts.append("<h3>Drill log</h3><table><tr><th>drill</th><th>started</th><th>backup</th><th>from</th>"
                     "<th>result</th><th>RTO</th><th>checks</th></tr>")  # fmt: skip
        for x in d["log"]:
            checks = "<br>".join(
                f"{e(c['name'])}: {'ok' if c['ok'] else ('skipped' if c['ok'] is None else 'FAILED')} – {e(c['detail'])}"
                for c in x["checks"]
            )
            result = _RESULT[x["outcome"]] + (f": {x['failure']}" if x["outcome"] == "could-not-run" else "")
            cls = {"passed": "ok", "failed": "bad", "could-not-run": "none"}[x["outcome"]]
            parts.append(f"<tr><td>{e(x['drill_id'])}</td><td>{e(x['started_at'])}</td><td>{e(x['backup_id'] or '-')}</td>"
                         f"<td>{e(x['storage_target'])}</td><td class={cls}>{e(result)}</td>"
                         f"<td>{e(_rto(x))}</td><td>{checks}</td></tr>")  # fmt: skip
        parts.append("</table><h3>Backup inventory</h3><table><tr><th>id</th><th>recovery point</th><th>stored</th>"
                     "<th>targets</th><th>recipients</th><th>SHA-256</th></tr>")  # fmt: skip
        for b in p["inventory"]:
            parts.append(f"<tr><td>{e(b['id'])}</td><td>{e(b['recovery_point'])}</td><td>{b['stored_bytes']} B</td>"
                         f"<td>{e(', '.join(b['targets']))}</td><td>{e(', '.join(b['recipients']))}</td><td><small>{e(b['sha256'])}</small></td></tr>")  # fmt: skip
        parts.append(f"</table><p>Storage: {e(json.dumps(p['storage']))}. Retention rules {e(json.dumps(p['retention']['rules']))}; "
                     f"{p['retention']['kept_backups']} backups kept.</p>")  # fmt: skip
        if p["schedule"] or p["copies_pending"]:
            parts.append("<ul>" + "".join(f"<li>scheduled {e(j)}: last {e(str(s['last_outcome']))} for slot {e(str(s['last_slot']))}; "
                                          f"missed slots so far {s['missed_total']}</li>" for j, s in p["schedule"].items())
                         + "".join(f"<li class=bad>copies to {e(k)} pending: {e(', '.join(v))}</li>" for k, v in p["copies_pending"].items())
                         + "</ul>")  # fmt: skip
    parts.append(
        "<h2>Evidence map</h2><table><tr><th>control</th><th>asks for</th><th>evidence in this report</th></tr>"
    )
    parts += [
        f"<tr><td>{e(x['control'])}</td><td>{e(x['asks'])}</td><td>{e(x['evidence'])}</td></tr>"
        for x in doc["evidence_map"]
    ]
    parts.append("</table></body></html>\n")
    return "".join(parts)
