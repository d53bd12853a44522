"""drtool run: what cron/systemd calls."""

from __future__ import annotations

from typing import Any

import click

from ...errors import DrtoolError, UsageError
from ..context import Ctx, json_option, metrics_option, only_option, pass_ctx, policies_of, policies_option
from ..logs import log
from ..output import INVALID, echo_invalid, emit_json


@click.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@policies_option
@click.option("--dry-run", is_flag=True, help="Say what is due now and the next three times of each job.")
@metrics_option
@only_option("Only these jobs, e.g. backup,prune on the database host and drill on a restore host.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 64), envvar="DRTOOL_RUN_JOBS",
              help="Run up to N policies at once, each under its own lock (env DRTOOL_RUN_JOBS).")  # fmt: skip
@json_option
@pass_ctx
def run(ctx: Ctx, paths: tuple[str, ...], policy_paths: tuple[str, ...], dry_run: bool, metrics_file: str | None,
        only: tuple[str, ...] | None, jobs: int, as_json: bool) -> None:  # fmt: skip
    """What cron/systemd calls: do whatever the policies' [schedule] says is due, once per slot.
    Policies as PATH arguments or -p/--policy PATH (both repeatable)."""
    all_paths = (*paths, *policy_paths)
    if not all_paths:
        raise UsageError("run needs a policy: drtool run -p PATH (a file or a folder; or PATH as an argument)")
    found = policies_of(ctx, all_paths)
    if jobs > 1:
        ctx.progress.enabled = False  # one progress line cannot show several jobs
    results, worst = [], 0
    selected = frozenset(only) if only else None
    for p, r in ctx.app.run_fleet(found, jobs=jobs, dry_run=dry_run, only=selected):  # one failing stops no other
        if isinstance(r, DrtoolError):
            e, r = r, {"policy": p.name, "error": str(r), "jobs": {}}
            worst = max(worst, e.exit_code)
            log("error", f"run {p.name}: {e}", policy=p.name, job="run")
        for job, o in r["jobs"].items():
            if o.get("outcome") == "failed":
                worst = max(worst, o.get("exit_code", 1))
                log("error", f"{p.name} {job}: {o.get('error')}", policy=p.name, job=job)
        results.append(r)
    if metrics_file and not dry_run:
        ctx.app.write_metrics(metrics_file, found, invalid=INVALID)
    if as_json:
        emit_json({"dry_run": dry_run, "policies": results})
    else:
        for r in results:
            for line in run_lines(r, dry_run):
                click.echo(line)
        echo_invalid()
    if worst:
        raise click.exceptions.Exit(worst)


def run_lines(r: dict[str, Any], dry_run: bool) -> list[str]:
    """The lines of one policy: one per job that was due (or every job with --dry-run), and one
    line saying so when nothing was due, so every run leaves a trace in the log."""
    name = r["policy"]
    if r.get("skipped"):
        return [f"{name:<16} skipped: {r['skipped']}"]
    if r.get("error"):
        return [f"{name:<16} failed: {r['error']}"]
    lines = []
    for job, o in r["jobs"].items():
        if dry_run:
            state = f"due (slot {o['slot']}, {o['missed']} missed)" if o["due"] else "not due"
            if o.get("counted_backup"):
                state += f", but backup {o['counted_backup']} (taken since the slot began) counts for it"
            lines.append(f"{name:<16} {job:<7} {state}; next: {', '.join(o['next'])}")
        elif o["due"]:
            missed = f", {o['missed']} earlier slots missed" if o["missed"] else ""
            missed = f"slot {o['slot']}{missed}" if o["slot"] else "retrying earlier failures"
            detail = o.get("summary") if o["outcome"] == "ok" else o.get("error")
            lines.append(f"{name:<16} {job:<7} {o['outcome']} ({missed}): {detail}")
    if not lines:
        lines.append(f"{name:<16} {r.get('note') or 'nothing due (' + ', '.join(r['jobs']) + ' not due)'}")
    return lines
