"""The report as one self-contained HTML file: string.Template files from templates/, inline CSS
and SVG, no script and no external resource. Values are escaped by `fill` unless they are `Html`
(markup this module built from escaped parts), so no store-derived string reaches the page raw."""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from . import text
from .charts import BYTES, SECONDS, Series, line_chart


class Html(str):
    """Markup that is already safe: built here from escaped values."""


def escape(value: Any) -> Html:
    return value if isinstance(value, Html) else Html(html.escape(str(value)))


@cache
def _template(name: str) -> Template:
    return Template(resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8"))


def fill(template: str, /, **values: Any) -> Html:
    return Html(_template(template).substitute({k: escape(v) for k, v in values.items()}))


def tag(name: str, content: Any, cls: str | None = None) -> Html:
    attr = f' class="{escape(cls)}"' if cls else ""
    return Html(f"<{name}{attr}>{escape(content)}</{name}>")


def table(headers: list[str], rows: list[list[Any]]) -> Html:
    """A table; a cell is a value (escaped) or a (value, css class) pair."""
    head = "<tr>" + "".join(tag("th", h) for h in headers) + "</tr>"
    body = "".join("<tr>" + "".join(tag("td", *c) if isinstance(c, tuple) else tag("td", c) for c in r) + "</tr>"
                   for r in rows)  # fmt: skip
    return Html(f"<table>{head}{body}</table>")


def items(lines: list[tuple[str, str | None]]) -> Html:
    return Html("<ul>" + "".join(tag("li", line, cls) for line, cls in lines) + "</ul>") if lines else Html("")


def render_html(doc: dict[str, Any]) -> str:
    head, tail = html_frame(doc)
    sections = [_policy(p) for p in doc["policies"]] or [html_empty()]
    return head + "\n".join(sections) + tail


# The report a policy at a time (reports/stream.py): the page without its policies is the frame.
_POLICIES = "\x00drtool-report-policies\x00"  # where the policies go; escaped away from any real value


def html_frame(doc: dict[str, Any]) -> tuple[str, str]:
    page = fill(
        "page.html",
        css=Html(_template("style.css").template),
        period_from=text.when(doc["period"]["from"]),
        period_to=text.when(doc["period"]["to"]),
        generated_at=text.when(doc["generated_at"]),
        version=doc["tool"]["version"],
        overall_class="ok" if doc["compliant"] else "bad",
        overall="COMPLIANT" if doc["compliant"] else "NOT COMPLIANT",
        policies=Html(_POLICIES),
        evidence_map=table(["control", "asks for", "evidence in this report"],
                           [[e["control"], e["asks"], e["evidence"]] for e in doc["evidence_map"]]),
    )  # fmt: skip
    head, tail = page.split(_POLICIES)
    return head, tail


def html_section(p: dict[str, Any], first: bool) -> str:
    return ("" if first else "\n") + _policy(p)


def html_empty() -> Html:
    return tag("p", "No policies: there is no evidence.", "bad")


def _policy(p: dict[str, Any]) -> Html:
    o, r, d = p["objectives"], p["rpo"], p["drills"]
    rtos = " / ".join(text.duration(d[k]) for k in ("rto_last_seconds", "rto_median_seconds", "rto_p95_seconds"))
    measures = table(["measure", "achieved", "target"], [
        ["worst-case RPO", text.worst_rpo(r), text.duration(o["rpo_seconds"])],
        ["drills run / passed / failed", text.drill_counts(d), "at least 1, all passed"],
        ["RTO last / median / p95", rtos, text.duration(o["rto_seconds"])],
    ])  # fmt: skip
    coverage = text.coverage(r)
    forecast = text.forecast(p["forecast"], o["rto_seconds"])
    notes: list[tuple[str, str | None]] = [(text.schedule_line(job, st), None) for job, st in p["schedule"].items()]
    notes += [(text.copies_line(target, ids), "bad") for target, ids in p["copies_pending"].items()]
    return fill(
        "policy.html",
        name=p["policy"],
        verdict_class="ok" if p["compliant"] else "bad",
        verdict=text.verdict(p["compliant"]),
        reasons=items([(x, None) for x in p["reasons"]]),
        measures=measures,
        coverage=tag("p", coverage, "bad") if coverage else "",
        charts=Html("".join(_charts(p))),
        forecast=tag("p", forecast) if forecast else "",
        drill_log=_drill_log(d["log"]),
        pitr=_pitr(p["pitr"], o, d["log"]) if p.get("pitr") is not None else "",
        inventory=table(["id", "recovery point", "stored", "targets", "recipients", "SHA-256"],
                        [[b["id"], text.when(b["recovery_point"]), text.size(b["stored_bytes"]), ", ".join(b["targets"]),
                          ", ".join(b["recipients"]), (b["sha256"], "hash")] for b in p["inventory"]]),
        storage=text.storage(p["storage"]),
        retention=text.retention_rules(p["retention"]["rules"]),
        kept=text.backups_kept(p["retention"]["kept_backups"]),
        notes=items(notes),
    )  # fmt: skip


_RESULT_CLASS = {"passed": "ok", "failed": "bad", "could-not-run": "none"}


def _drill_log(log: list[dict[str, Any]]) -> Html:
    rows = []
    for x in log:
        checks = Html("<br>".join(escape(f"{text.check(c)} – {c['detail']}") for c in x["checks"]))
        rows.append([text.drill_name(x), text.when(x["started_at"]), x["backup_id"] or "-", x["storage_target"],
                     (text.drill_result(x), _RESULT_CLASS[x["outcome"]]), text.rto(x), checks])  # fmt: skip
    return table(["drill", "started", "backup", "from", "result", "RTO", "checks"], rows)


def _charts(p: dict[str, Any]) -> list[str]:
    o, r, d = p["objectives"], p["rpo"], p["drills"]
    return [
        line_chart("Achieved RPO over time against the target",
                   Series.of([(x["at"], x["seconds"]) for x in r["series"]]), o["rpo_seconds"], SECONDS, escape),
        line_chart("Drill RTO against the target",
                   Series.of([(x["started_at"], x["rto_seconds"]) for x in d["log"] if x["rto_seconds"] is not None]),
                   o["rto_seconds"], SECONDS, escape),
        line_chart("Backup size over time (stored)",
                   Series.of([(b["completed_at"], b["stored_bytes"]) for b in p["inventory"]]), None, BYTES, escape),
    ]  # fmt: skip


_MET_CLASS = {True: "ok", False: "bad", None: None}


def _pitr(t: dict[str, Any], o: dict[str, Any], log: list[dict[str, Any]]) -> Html:
    """Point-in-time recovery, as markdown._pitr says it."""
    figures = table(["PITR measure", "achieved", "target", "objective", "proves"], [
        [f["figure"], (text.figure_met(f), _MET_CLASS[f["met"]]),
         "-" if f["target"] is None else text.duration(f["target"]), f["objective"].upper(), f["proves"]]
        for f in t["proves"]])  # fmt: skip
    worst = text.interval(t["rpo"]) if t["rpo"]["seconds"] is not None else "none measured"
    lines: list[tuple[str, str | None]] = [(text.gap_line(g), "bad") for g in t["gaps"]]
    lines += [("largest interval not covered by archived WAL: " + text.interval(g), None) for g in t["rpo"]["largest"]]
    lines += [(f"not restorable: {u['backup']}: {u['reason']}", "bad") for u in t["unrestorable"]]
    forecast = text.pitr_forecast(t["forecast"], o["rto_seconds"])
    phases = table(["drill", "kind", "result", "RTO", "phases (PITR: milestones from the start)"],
                   [[x["drill_id"], x["kind"], (text.drill_result(x), _RESULT_CLASS[x["outcome"]]), text.rto(x),
                     text.phases(x) or "-"] for x in log])  # fmt: skip
    return Html(tag("h3", "Point-in-time recovery") + tag("p", text.window(t["window"])) + figures
                + tag("p", f"Worst-case RPO from the archive: {worst}. Bound: {t['rpo']['bound']}.") + items(lines)
                + (tag("p", forecast) if forecast else "") + tag("h4", "RTO phases") + phases)  # fmt: skip
