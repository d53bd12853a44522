"""The report as JSON and as Markdown. Every value that came from the store goes through `cell`
(tables) or `md` (prose): a `|` in a failure message cannot break a table, nor `<`, `*` or `[`
turn text into HTML, emphasis or links."""

from __future__ import annotations

import json
import re
from typing import Any

from .. import jsontext
from . import text

_SPECIAL = re.compile(r"([\\`*\[\]<>|])")


def md(value: Any) -> str:
    """Plain text made inert in Markdown: specials backslash-escaped, line breaks folded."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(value).splitlines()))


def row(*cells: Any) -> str:
    return "| " + " | ".join(md(c) for c in cells) + " |"


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


# The report a policy at a time (reports/stream.py): the document without its policies makes the
# frame, each policy's section is rendered on its own. render_json above is the reference.
_POLICIES = "\x00drtool-report-policies\x00"  # where the policies go in the frame; never in a real report


def json_frame(doc: dict[str, Any]) -> tuple[str, str]:
    head, tail = render_json({**doc, "policies": _POLICIES}).split(json.dumps(_POLICIES))
    return head, tail


def json_section(p: dict[str, Any], first: bool) -> str:
    body = jsontext.dumps(p, sort_keys=True, margin="    ")  # render_json's text of it, indented
    return ("[\n    " if first else ",\n    ") + body


def json_close(empty: bool) -> str:
    return "[]" if empty else "\n  ]"


def render_md(doc: dict[str, Any]) -> str:
    head, tail = md_frame(doc, empty=not doc["policies"])
    return head + "".join(md_section(p) for p in doc["policies"]) + tail


def md_frame(doc: dict[str, Any], *, empty: bool) -> tuple[str, str]:
    overall = "COMPLIANT" if doc["compliant"] else "NOT COMPLIANT"
    head = ["# Backup and recovery compliance report", "",
            md(f"Period {text.when(doc['period']['from'])} to {text.when(doc['period']['to'])}; generated "
               f"{text.when(doc['generated_at'])} by drtool "
               f"{doc['tool']['version']}.") + f" Overall: **{overall}**.", ""]  # fmt: skip
    if empty:
        head += ["No policies: there is no evidence.", ""]
    tail = ["## Evidence map", "", "| control | asks for | evidence in this report |", "|---|---|---|"]
    tail += [row(e["control"], e["asks"], e["evidence"]) for e in doc["evidence_map"]]
    return "\n".join(head) + "\n", "\n".join(tail) + "\n"


def md_section(p: dict[str, Any]) -> str:
    return "\n".join(_policy(p)) + "\n"


def _policy(p: dict[str, Any]) -> list[str]:
    o, r, d = p["objectives"], p["rpo"], p["drills"]
    out = [f"## Policy {md(p['policy'])}: {text.verdict(p['compliant'])}", ""]
    out += [f"- {md(x)}" for x in p["reasons"]] + ([""] if p["reasons"] else [])
    rtos = " / ".join(text.duration(d[k]) for k in ("rto_last_seconds", "rto_median_seconds", "rto_p95_seconds"))
    out += ["| measure | achieved | target |", "|---|---|---|",
            row("worst-case RPO", text.worst_rpo(r), text.duration(o["rpo_seconds"])),
            row("drills run / passed / failed", text.drill_counts(d), "at least 1, all passed"),
            row("RTO last / median / p95", rtos, text.duration(o["rto_seconds"])), ""]  # fmt: skip
    if text.coverage(r):
        out += [md(text.coverage(r)), ""]
    if text.forecast(p["forecast"], o["rto_seconds"]):
        out += [md(text.forecast(p["forecast"], o["rto_seconds"])), ""]
    out += [
        "### Drill log",
        "",
        "| drill | started | backup | from | result | RTO | checks |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in d["log"]:
        checks = ", ".join(text.check(c) for c in x["checks"])
        out.append(row(text.drill_name(x), text.when(x["started_at"]), x["backup_id"] or "-", x["storage_target"], text.drill_result(x),
                       text.rto(x), checks))  # fmt: skip
    if p.get("pitr") is not None:
        out += ["", *_pitr(p["pitr"], o, d["log"])]
    out += [
        "",
        "### Backup inventory",
        "",
        "| id | recovery point | stored | targets | recipients |",
        "|---|---|---|---|---|",
    ]
    for b in p["inventory"]:
        out.append(row(b["id"], text.when(b["recovery_point"]), text.size(b["stored_bytes"]), ", ".join(b["targets"]),
                       ", ".join(b["recipients"])))  # fmt: skip
    out += ["", md(f"Storage: {text.storage(p['storage'])}. Retention rules: {text.retention_rules(p['retention']['rules'])}; "
                   f"{text.backups_kept(p['retention']['kept_backups'])}."), ""]  # fmt: skip
    out += [f"- {md(text.schedule_line(job, st))}" for job, st in p["schedule"].items()]
    out += [f"- {md(text.copies_line(target, ids))}" for target, ids in p["copies_pending"].items()]
    return out + [""]


def _pitr(t: dict[str, Any], o: dict[str, Any], log: list[dict[str, Any]]) -> list[str]:
    """Point-in-time recovery: the window, the figures and the objective each proves, the gaps and
    largest uncovered intervals, the physical forecast, and the RTO phases of drills of both kinds."""
    out = ["### Point-in-time recovery", "", md(text.window(t["window"])), "",
           "| PITR measure | achieved | target | objective | proves |", "|---|---|---|---|---|"]  # fmt: skip
    for f in t["proves"]:
        target = "-" if f["objective"] == "rpo" and f["target"] is None else text.duration(f["target"])
        out.append(row(f["figure"], text.figure_met(f), target, f["objective"].upper(),
                       f["proves"]))  # fmt: skip
    out += ["", md(f"Worst-case RPO from the archive: {text.interval(t['rpo'])}" if t["rpo"]["seconds"] is not None
                   else "Worst-case RPO from the archive: none measured") + ". " + md(f"Bound: {t['rpo']['bound']}."), ""]  # fmt: skip
    out += [f"- {md(text.gap_line(g))}" for g in t["gaps"]]
    out += [f"- {md('largest interval not covered by archived WAL: ' + text.interval(g))}" for g in t["rpo"]["largest"]]
    out += [f"- {md('not restorable: ' + u['backup'] + ': ' + u['reason'])}" for u in t["unrestorable"]]
    if forecast := text.pitr_forecast(t["forecast"], o["rto_seconds"]):
        out += ["", md(forecast)]
    out += ["", "#### RTO phases", "", "| drill | kind | result | RTO | phases (PITR: milestones from the start) |",
            "|---|---|---|---|---|"]  # fmt: skip
    for x in log:
        out.append(row(x["drill_id"], x["kind"], text.drill_result(x), text.rto(x), text.phases(x) or "-"))
    return out
