"""drtool's commands (click). Thin: each one calls App and renders its result."""

from __future__ import annotations

import time

COMMAND_T0 = time.monotonic()  # before the heavy imports: drill records how long the command ran

import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from .. import __version__  # noqa: E402
from ..app import App  # noqa: E402
from ..errors import EXIT_CHECK, EXIT_FAILED, EXIT_USAGE, DrtoolError, PolicyError, UsageError  # noqa: E402
from ..policy import InvalidPolicy, Policy, load_fleet  # noqa: E402
from .render import ProgressLine, human_bytes, table  # noqa: E402

JSON_SCHEMA_VERSION = 1


_LOG = {"json": False, "command": None}
# Policy files of a fleet that did not validate: named in the output and the metrics, never run,
# and the command's exit code is at least EXIT_USAGE (see main()).
_INVALID: list[InvalidPolicy] = []


def log(level: str, msg: str, **fields: Any) -> None:
    """One stderr line: `drtool: level: msg` for people, or one JSON object per line for log
    shippers (--log-format json) with the command and any fields (policy, job, backup_id, ...)."""
    if _LOG["json"]:
        from .. import clock

        doc = {"ts": clock.iso(clock.utcnow()), "level": level, "command": _LOG["command"], "msg": msg, **fields}
        click.echo(json.dumps({k: v for k, v in doc.items() if v is not None}, default=str), err=True)
    else:
        click.echo(f"drtool: {level + ': ' if level != 'info' else ''}{msg}", err=True)


class Ctx:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = ProgressLine(enabled=False if (quiet or _LOG["json"]) else None)
        self.app = App(progress=self.progress, warn=self.warn, command_t0=COMMAND_T0)

    def warn(self, msg: str) -> None:
        self.progress.clear()
        log("warning", msg)

    def info(self, msg: str, **fields: Any) -> None:
        self.progress.clear()
        if not self.quiet:
            log("info", msg, **fields)


pass_ctx = click.make_pass_decorator(Ctx)

policy_option = click.option(
    "--policy",
    "-p",
    "policy_path",
    envvar="DRTOOL_POLICY",
    required=True,
    metavar="PATH",
    help="Policy file, or a folder of *.toml policies (env DRTOOL_POLICY).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
name_option = click.option("--name", "policy_name", metavar="NAME", help="Pick one policy from a folder by name.")


def _only_jobs(click_ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """--only backup,prune: a comma-separated subset of the jobs, in run order; bad usage otherwise."""
    if value is None:
        return None
    from ..scheduler import JOBS

    asked = {j.strip() for j in value.split(",") if j.strip()}
    unknown = sorted(asked - set(JOBS))
    if unknown or not asked:
        raise click.BadParameter(f"'{value}': give one or more of {', '.join(JOBS)}, separated by commas")
    return tuple(j for j in JOBS if j in asked)


def only_option(help_text: str):
    return click.option("--only", "only", metavar="JOBS", callback=_only_jobs, help=help_text)


def _backup_id(click_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--backup ID is checked before anything runs: a malformed id is bad usage (exit 2)."""
    from ..catalog import check_backup_id

    return None if value is None else check_backup_id(value)


def backup_id_option(help_text: str):
    return click.option("--backup", "backup_id", metavar="ID", callback=_backup_id, help=help_text)


def _policies(ctx: Ctx, path: str, name: str | None = None) -> list[Policy]:
    """The valid policies of a file or folder. A single invalid file raises PolicyError (exit 2);
    in a folder each file stands alone: an invalid one is logged and recorded in _INVALID, and
    the others are returned to run."""
    fleet = load_fleet(path, name)  # with --name, the other files are not validated
    policies, invalid = fleet.policies, fleet.invalid
    if name:
        claimed = [bad for bad in invalid if bad.name == name]
        if claimed:  # the policy asked for is itself invalid
            raise PolicyError(list(claimed[0].problems))
        policies = [p for p in policies if p.name == name]
        if not policies:
            unread = f" ({len(invalid)} invalid files there have no readable name)" if invalid else ""
            raise UsageError(f"{path}: no policy named '{name}'{unread}")
        for bad in invalid:
            ctx.warn(f"{bad.source}: invalid policy file, ignored while '{name}' is asked for")
        invalid = []
    for bad in invalid:
        _INVALID.append(bad)
        ctx.progress.clear()
        for line in bad.problems:
            log("error", line, policy_file=str(bad.source))
    for p in policies:
        for w in p.warnings:
            ctx.warn(w)
    return policies


def _policies_of(ctx: Ctx, paths: tuple[str, ...]) -> list[Policy]:
    """Policies of several PATHs, each on its own: one invalid file among them does not stop the rest."""
    if len(paths) == 1:
        return _policies(ctx, paths[0])
    policies: list[Policy] = []
    for path in paths:
        try:
            policies += _policies(ctx, path)
        except PolicyError as e:
            _INVALID.append(InvalidPolicy(Path(path), tuple(e.problems)))
            for line in e.problems:
                log("error", line, policy_file=path)
    return policies


def _invalid_json() -> list[dict[str, Any]]:
    return [{"file": str(b.source), "name": b.name, "problems": list(b.problems)} for b in _INVALID]


def _echo_invalid() -> None:
    """Text output: one line per problem of each invalid policy file (not run)."""
    for bad in _INVALID:
        for line in bad.problems:
            click.echo(f"INVALID (not run) {line}")


def _one(ctx: Ctx, path: str, name: str | None) -> Policy:
    policies = _policies(ctx, path, name)
    if len(policies) > 1 or _INVALID:  # an invalid file may be the one meant: never guess
        names = ", ".join([*(p.name for p in policies), *(f"invalid {b.source.name}" for b in _INVALID)])
        raise UsageError(f"{path} holds several policies ({names}); pick one with --name")
    return policies[0]


def _emit_json(doc: dict[str, Any]) -> None:
    extra = {"invalid_policies": _invalid_json()} if _INVALID else {}
    click.echo(json.dumps({"schema_version": JSON_SCHEMA_VERSION, **doc, **extra}, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="drtool")
@click.option("--quiet", "-q", is_flag=True, help="No progress or info lines (errors still go to stderr).")
@click.option("--lock-wait", default=0.0, metavar="SECONDS", help="Wait this long for a policy locked by another job.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", help="stderr as text or JSON lines.")
@click.pass_context
def cli(click_ctx: click.Context, quiet: bool, lock_wait: float, log_format: str) -> None:
    """Backups of PostgreSQL that are encrypted, streamed to object storage, and proven by restores."""
    _LOG["json"] = log_format == "json"
    _LOG["command"] = click_ctx.invoked_subcommand
    _INVALID.clear()
    click_ctx.obj = Ctx(quiet)
    click_ctx.obj.app.lock_wait = lock_wait


@cli.command()
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Where to write the key.")
@click.option(
    "--signing", is_flag=True, help="An Ed25519 signing key (OpenSSH format) and FILE.pub, not an age identity."
)
@click.option("--json", "as_json", is_flag=True, help="Print the file names and the public key as JSON.")
@pass_ctx
def keygen(ctx: Ctx, output: str, signing: bool, as_json: bool) -> None:
    """Make a new age identity (mode 0600) and print its recipient (age1...); with --signing an
    Ed25519 signing key for [signing].key_file, printing the line for [signing].trusted_keys."""
    if signing:
        result = ctx.app.keygen_signing(output)
        if as_json:
            _emit_json(result)
        else:
            ctx.info(f"wrote signing key to {result['key_file']} and {result['public_key_file']} "
                     f"({result['fingerprint']}); put the key_file on hosts that write, the public key line "
                     "in [signing].trusted_keys where backups are read")  # fmt: skip
            click.echo(result["public_key"])
        return
    result = ctx.app.keygen(output)
    if as_json:
        _emit_json(result)
    else:
        ctx.info(f"wrote identity to {result['identity_file']}; keep it away from backup hosts")
        click.echo(result["recipient"])


@cli.command()
@policy_option
@name_option
@json_option
@pass_ctx
def init(ctx: Ctx, policy_path: str, policy_name: str | None, as_json: bool) -> None:
    """Create the store root: the folder, or the bucket (with versioning and Object Lock when the
    policy asks), of the primary and every copy target. Safe to run again; nothing else creates it."""
    results, failed = [], None
    for p in _policies(ctx, policy_path, policy_name):
        try:
            results.append(ctx.app.init(p))
        except DrtoolError as e:
            failed = failed or e
            results.append(getattr(e, "result", {"policy": p.name, "ok": False, "error": str(e), "targets": []}))
    if as_json:
        _emit_json({"ok": failed is None, "policies": results})
    else:
        for r in results:
            for t in r["targets"]:
                click.echo(f"{r['policy']:<16} {t['target']:<9} {'ok  ' if t['ok'] else 'FAIL'}  {t['detail']}")
    if failed:
        raise failed


@cli.command()
@policy_option
@name_option
@only_option("Check only what these jobs need on this host, e.g. backup,prune (no identity) or drill.")
@json_option
@pass_ctx
def check(ctx: Ctx, policy_path: str, policy_name: str | None, only: tuple[str, ...] | None, as_json: bool) -> None:
    """Check policy, database, pg_dump, store and keys."""
    results, failed = [], None
    for p in _policies(ctx, policy_path, policy_name):
        try:
            results.append(ctx.app.check(p, only=frozenset(only) if only else None))
        except DrtoolError as e:
            failed = failed or e
            results.append(getattr(e, "result", {"policy": p.name, "ok": False, "error": str(e)}))
    if as_json:
        _emit_json({"ok": failed is None and not _INVALID, "policies": results})
    else:
        for r in results:
            for c in r.get("checks", []):
                click.echo(f"{r['policy']:<16} {c['check']:<9} {'ok  ' if c['ok'] else 'FAIL'}  {c['detail']}")
        _echo_invalid()
    if failed:
        raise failed


@cli.command()
@policy_option
@name_option
@click.option("--metrics-file", metavar="PATH", help="Also write Prometheus metrics (node_exporter textfile).")
@json_option
@pass_ctx
def backup(ctx: Ctx, policy_path: str, policy_name: str | None, metrics_file: str | None, as_json: bool) -> None:
    """Take one backup now (for each policy)."""
    done, first_error = [], None
    policies = _policies(ctx, policy_path, policy_name)
    for p in policies:
        try:
            m = ctx.app.backup(p)
        except DrtoolError as e:
            ctx.progress.clear()
            first_error = first_error or e
            log("error", f"backup {p.name}: {e}", policy=p.name, job="backup")
            continue
        from .. import clock

        took = (clock.parse_iso(m["completed_at"]) - clock.parse_iso(m["started_at"])).total_seconds()
        ctx.info(
            f"backup {p.name}: {m['id']} committed ({human_bytes(m['sizes']['stored_bytes'])} stored, "
            f"{len(m['tables'])} tables)",
            policy=p.name, job="backup", backup_id=m["id"], duration_seconds=round(took, 3),
        )  # fmt: skip
        done.append(m)
    if metrics_file:
        ctx.app.write_metrics(metrics_file, policies, invalid=_INVALID)
    if as_json:
        if len(done) == 1 and not first_error and not _INVALID:
            _emit_json(done[0])
        else:
            _emit_json({"backups": done})
    else:
        for m in done:
            click.echo(m["id"])
        _echo_invalid()
    if first_error:
        raise click.exceptions.Exit(first_error.exit_code)


@cli.command("list")
@policy_option
@name_option
@click.option("--target", "target", metavar="NAME", help="List a copy target ([[storage.copies]] name).")
@json_option
@pass_ctx
def list_(ctx: Ctx, policy_path: str, policy_name: str | None, target: str | None, as_json: bool) -> None:
    """Complete backups, newest first."""
    rows = []
    for p in _policies(ctx, policy_path, policy_name):
        rows.extend(ctx.app.list(p, target=target))
    if as_json:
        _emit_json({"backups": rows})
        return
    _echo_invalid()
    if not rows:
        ctx.info("no complete backups")
        return
    for r in rows:
        r["size"] = human_bytes(r.get("size_bytes"))
        last = r.get("last_drill")
        r["drill"] = "-" if not last else ("passed " if last["passed"] else "FAILED ") + last["started_at"][:16]
        r["pending"] = ", ".join(r.get("copies_pending") or []) or "-"
    click.echo(
        table(
            rows,
            [
                ("policy", "POLICY"),
                ("id", "ID"),
                ("status", "STATUS"),
                ("recovery_point", "RECOVERY POINT"),
                ("completed_at", "COMPLETED"),
                ("size", "SIZE"),
                ("tables", "TABLES"),
                ("drill", "LAST DRILL"),
                *([("pending", "COPIES PENDING")] if any("copies_pending" in r for r in rows) else []),
            ],
        )
    )


@cli.command()
@policy_option
@name_option
@backup_id_option("Backup to restore (default: the newest).")
@click.option("--target", required=True, metavar="DSN", help="Database to restore into (no password in it).")
@click.option("--target-password-env", metavar="NAME", help="Environment variable holding the target's password.")
@click.option("--clean", is_flag=True, help="Drop objects in the target before restoring them.")
@click.option("--jobs", "-j", default=1, show_default=True, type=int, help="pg_restore jobs for indexes, constraints.")
@click.option("--from", "from_copy", metavar="NAME", help="Restore from a copy target instead of the primary.")
@click.option("--role", metavar="ROLE", help="Restore as this role (pg_restore --role; implies --no-owner).")
@click.option("--no-owner", is_flag=True, help="Do not set object owners: objects belong to the restoring role.")
@click.option("--create", is_flag=True, help="Create the target database if missing (owned by --role if given).")
@json_option
@pass_ctx
def restore(
    ctx: Ctx,
    policy_path: str,
    policy_name: str | None,
    backup_id: str | None,
    target: str,
    target_password_env: str | None,
    clean: bool,
    jobs: int,
    from_copy: str | None,
    role: str | None,
    no_owner: bool,
    create: bool,
    as_json: bool,
) -> None:
    """Restore a backup into a database. The dump's SQL runs with the restoring role's privileges:
    restore as an unprivileged role that owns the target database (--role)."""
    p = _one(ctx, policy_path, policy_name)
    r = ctx.app.restore(
        p, target, backup_id=backup_id, clean=clean, jobs=jobs, target_password_env=target_password_env,
        from_copy=from_copy, role=role, no_owner=no_owner, create=create,
    )  # fmt: skip
    if as_json:
        _emit_json(r)
    else:
        rc = r["row_counts"]
        ctx.info(
            f"restored {r['backup']} into {r['target']} in {r['restore_seconds']:.1f}s; "
            f"row counts match the manifest for {rc['matched']} of {rc['tables']} tables"
        )


@cli.command()
@policy_option
@name_option
@backup_id_option("Backup to verify (default: the newest).")
@click.option("--all", "all_backups", is_flag=True, help="Verify every complete backup.")
@click.option("--shallow", is_flag=True, help="Only SHA-256, even when the identity file is at hand.")
@json_option
@pass_ctx
def verify(
    ctx: Ctx,
    policy_path: str,
    policy_name: str | None,
    backup_id: str | None,
    all_backups: bool,
    shallow: bool,
    as_json: bool,
) -> None:
    """Re-read stored objects and check their hashes (and, with the identity, their authentication)."""
    if backup_id and all_backups:
        raise UsageError("use either --backup ID or --all")
    results, failed = [], None
    for p in _policies(ctx, policy_path, policy_name):
        try:
            results.append(
                ctx.app.verify(p, backup_id=backup_id, all_backups=all_backups, deep=False if shallow else None)
            )
        except DrtoolError as e:
            failed = failed or e
            results.append(getattr(e, "result", {"policy": p.name, "error": str(e)}))
    if as_json:
        _emit_json({"ok": failed is None and not _INVALID, "policies": results})
    else:
        ctx.progress.clear()
        _echo_invalid()
        for r in results:
            for b in r.get("backups", []):
                state = "ok" if b["ok"] else "UNTRUSTED" if b.get("untrusted") else "DAMAGED"
                click.echo(f"{r['policy']:<16} {b['id']}  {state}  ({b.get('proved', 'nothing')})")
    if failed:
        raise failed


def _bound_malloc() -> None:
    """Keep glibc from retaining freed multi-MB buffers (upload parts, zstd jobs).

    glibc raises its mmap threshold after each large free, so later part-sized buffers come
    from heap arenas that are rarely returned; a fixed 1 MiB threshold keeps them in mmap.
    Measured: ~14 MB less peak memory for a backup. No effect off glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


@cli.command()
@policy_option
@name_option
@click.option("--dry-run", is_flag=True, help="Say what would be kept and deleted, and why; change nothing.")
@json_option
@pass_ctx
def prune(ctx: Ctx, policy_path: str, policy_name: str | None, dry_run: bool, as_json: bool) -> None:
    """Apply retention: keep what the rules say (with reasons), delete the rest and failed backups."""
    results = [ctx.app.prune(p, dry_run=dry_run) for p in _policies(ctx, policy_path, policy_name)]
    if as_json:
        _emit_json(results[0] if len(results) == 1 and not _INVALID else {"policies": results})
        return
    _echo_invalid()
    for r in results:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{r['policy']}: keep {r['kept']}, {verb} {r['deleted']} (rules: {r['rules'] or 'none'})")
        for b in r["backups"]:
            action = b["action"].upper() if b["action"] == "delete" else b["action"]
            click.echo(f"  {action:<6} {b['id']}  {b['recovery_point']}  {'; '.join(b['reasons'])}")
        for x in r["incomplete"]:
            action = x["action"].upper() if x["action"] == "delete" else x["action"]
            parts = f"{x['objects']} objects, {x['unfinished_uploads']} unfinished uploads"
            click.echo(f"  {action:<6} {x['id']}  incomplete ({parts}): {x['reason']}")
        for u in r.get("unreadable", []):
            click.echo(f"  keep   {u['id']}  unreadable manifest, not pruned: {u['error']}")
        for t in r.get("untrusted", []):
            click.echo(f"  keep   {t['id']}  untrusted, not pruned (evidence of tampering): {t['error']}")


@cli.command()
@policy_option
@name_option
@backup_id_option("Backup to drill (default: drill.pick, the newest).")
@click.option("--from", "from_copy", metavar="COPY", help="Drill from a copy target instead of the primary.")
@click.option("--metrics-file", metavar="PATH", help="Also write Prometheus metrics (node_exporter textfile).")
@json_option
@pass_ctx
def drill(ctx: Ctx, policy_path: str, policy_name: str | None, backup_id: str | None, from_copy: str | None,
          metrics_file: str | None, as_json: bool) -> None:  # fmt: skip
    """Restore test: restore into a scratch database, verify, measure RPO and RTO, record it."""
    records, worst = [], 0
    policies = _policies(ctx, policy_path, policy_name)
    for p in policies:
        ctx.info(f"drill {p.name}: restoring into a scratch database...")
        r = ctx.app.drill(p, backup_id=backup_id, from_copy=from_copy)
        records.append(r)
        if r["outcome"] == "could-not-run":  # nothing is known about the backup: the operation failed
            worst = max(worst, EXIT_FAILED)
            log("error", f"drill {p.name}: could not run: {r['failure']}", policy=p.name, job="drill")
        elif not r["passed"] or r["rpo_met"] is False:
            worst = EXIT_CHECK
        if not as_json:
            _render_drill(r)
    if metrics_file:
        ctx.app.write_metrics(metrics_file, policies, invalid=_INVALID)
    if as_json:
        _emit_json(records[0] if len(records) == 1 and not _INVALID else {"drills": records})
    else:
        _echo_invalid()
    if worst:
        raise click.exceptions.Exit(worst)


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--dry-run", is_flag=True, help="Say what is due now and the next three times of each job.")
@click.option("--metrics-file", metavar="PATH", help="Also write Prometheus metrics (node_exporter textfile).")
@only_option("Only these jobs, e.g. backup,prune on the database host and drill on a restore host.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 64), envvar="DRTOOL_RUN_JOBS",
              help="Run up to N policies at once, each under its own lock (env DRTOOL_RUN_JOBS).")  # fmt: skip
@json_option
@pass_ctx
def run(ctx: Ctx, paths: tuple[str, ...], dry_run: bool, metrics_file: str | None, only: tuple[str, ...] | None,
        jobs: int, as_json: bool) -> None:  # fmt: skip
    """What cron/systemd calls: do whatever the policies' [schedule] says is due, once per slot."""
    policies = _policies_of(ctx, paths)
    if jobs > 1:
        ctx.progress.enabled = False  # one progress line cannot show several jobs
    results, worst = [], 0
    selected = frozenset(only) if only else None
    for p, r in ctx.app.run_fleet(policies, jobs=jobs, dry_run=dry_run, only=selected):  # one failing stops no other
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
        ctx.app.write_metrics(metrics_file, policies, invalid=_INVALID)
    if as_json:
        _emit_json({"dry_run": dry_run, "policies": results})
    else:
        for r in results:
            if r.get("skipped"):
                click.echo(f"{r['policy']}: skipped: {r['skipped']}")
            for job, o in r["jobs"].items():
                if dry_run:
                    state = f"due (slot {o['slot']}, {o['missed']} missed)" if o["due"] else "not due"
                    click.echo(f"{r['policy']:<16} {job:<7} {state}; next: {', '.join(o['next'])}")
                elif o["due"]:
                    missed = f", {o['missed']} earlier slots missed" if o["missed"] else ""
                    missed = f"slot {o['slot']}{missed}" if o["slot"] else "retrying earlier failures"
                    detail = o.get("summary") if o["outcome"] == "ok" else o.get("error")
                    click.echo(f"{r['policy']:<16} {job:<7} {o['outcome']} ({missed}): {detail}")
        _echo_invalid()
    if worst:
        raise click.exceptions.Exit(worst)


@cli.command()
@policy_option
@click.option("--format", "fmt", type=click.Choice(["systemd", "cron"]), required=True)
@click.option("--install", "install_dir", type=click.Path(file_okay=False), help="Write the files into this folder.")
@click.option("--drtool-bin", help="The drtool command the units call (default: this one).")
@only_option("Units that run only these jobs (drtool-backup-prune.timer, drtool-drill.timer, ...).")
@click.option("--serve", "serve_listen", is_flag=False, flag_value="127.0.0.1:9187", default=None,
              metavar="[HOST:PORT]", help="The drtool-serve.service of `drtool serve` (127.0.0.1:9187).")  # fmt: skip
@pass_ctx
def schedule(ctx: Ctx, policy_path: str, fmt: str, install_dir: str | None, drtool_bin: str | None,
             only: tuple[str, ...] | None, serve_listen: str | None) -> None:  # fmt: skip
    """Print (or --install) the systemd timer and service, or the crontab lines, that run drtool."""
    from .. import units

    policies = _policies(ctx, policy_path)
    path = os.path.abspath(policy_path)
    command = drtool_bin or _self_command()
    if serve_listen:
        if fmt != "systemd" or only:
            raise UsageError("--serve makes a systemd service; it takes neither --format cron nor --only")
        files = units.serve_unit(path, command, serve_listen, "30s")
    else:
        files = (units.systemd_units if fmt == "systemd" else units.crontab)(policies, path, command, only)
    if install_dir:
        for name, text in files.items():
            try:
                os.makedirs(install_dir, exist_ok=True)
                with open(os.path.join(install_dir, name), "w") as f:
                    f.write(text)
            except OSError as e:
                raise UsageError(f"--install {install_dir}: cannot write {name}: {e.strerror}") from None
            ctx.info(f"wrote {os.path.join(install_dir, name)}")
        if fmt == "systemd":
            unit = next(n for n in files if n.endswith((".timer", "-serve.service")))
            ctx.info(f"then: systemctl daemon-reload && systemctl enable --now {unit}")
        else:
            ctx.info("then: copy the line into root's crontab (crontab -e), or /etc/cron.d with a user field")
    else:
        for name, text in files.items():
            click.echo(f"# ---- {name}\n{text}")


@cli.command()
@policy_option
@click.option("--listen", default="127.0.0.1:9187", show_default=True, metavar="HOST:PORT", help="Address to bind.")
@click.option("--cache", "cache", default="30s", show_default=True, metavar="DURATION",
              help="Answers are recomputed at most this often, so scrapes never hammer the store.")  # fmt: skip
@click.option("--allow-remote", is_flag=True, help="Allow a --listen address that is not loopback.")
@pass_ctx
def serve(ctx: Ctx, policy_path: str, listen: str, cache: str, allow_remote: bool) -> None:
    """Read-only HTTP: GET /health (status JSON; 200 healthy, 503 otherwise) and GET /metrics (Prometheus)."""
    from ..app.serve import HealthServer, parse_listen
    from ..durations import parse_duration

    host, port = parse_listen(listen, allow_remote)
    try:
        cache_seconds = parse_duration(cache)
    except ValueError as e:
        raise UsageError(f"--cache: {e}") from None
    _policies(ctx, policy_path)  # an unreadable policy path is bad usage now, not a 503 later
    try:
        server = HealthServer(ctx.app, policy_path, host, port, cache_seconds, log=lambda m: log("error", m))
    except OSError as e:
        raise UsageError(f"--listen {listen}: cannot bind: {e.strerror or e}") from None
    bound_host, bound_port = server.address
    if not ctx.quiet:
        log("info", f"serving GET /health and /metrics on http://{listen.rsplit(':', 1)[0]}:{bound_port}/ "
                    f"(answers cached {cache}); Ctrl-C stops")  # fmt: skip
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from systemd: a clean stop
        pass
    finally:
        server.close()


def _self_command() -> str:
    """How to call this drtool again: the installed script, or this interpreter with -m."""
    argv0 = sys.argv[0]
    if argv0.endswith("__main__.py") or not argv0:
        return f"{sys.executable} -m drtool"
    return os.path.abspath(argv0) if os.path.exists(argv0) else (shutil.which(argv0) or argv0)


@cli.command()
@policy_option
@name_option
@click.option("--metrics-file", metavar="PATH", help="Also write Prometheus metrics (node_exporter textfile).")
@json_option
@pass_ctx
def status(ctx: Ctx, policy_path: str, policy_name: str | None, metrics_file: str | None, as_json: bool) -> None:
    """Health per policy and overall; exit 0 healthy, 3 otherwise (a Nagios-style check)."""
    from .. import clock, health

    policies = _policies(ctx, policy_path, policy_name)
    per = {p.name: ctx.app.status(p) for p in policies}
    overall = health.worst(*(r["status"] for r in per.values()), *(["unhealthy"] if _INVALID else []))
    components: dict[str, str] = {}
    for r in per.values():
        for k, v in r["components"].items():
            if components.get(k, "ok") == "ok":
                components[k] = v
    if metrics_file:
        ctx.app.write_metrics(metrics_file, policies, invalid=_INVALID)
    if as_json:
        _emit_json({"status": overall, "checked_at": clock.iso(clock.utcnow()), "policies": per,
                    "components": components})  # fmt: skip
    else:
        click.echo(f"drtool: {overall.upper()}")
        for name, r in per.items():
            age_s = r["last_backup_age_seconds"]
            click.echo(f"  {name}: {r['status']}; newest backup {'-' if age_s is None else f'{age_s:.0f}s'} old")
            for reason in r["reasons"]:
                click.echo(f"    - {reason}")
        _echo_invalid()
    if overall != "healthy":
        raise click.exceptions.Exit(EXIT_CHECK)


@cli.group(invoke_without_command=True)
@click.option("--policy", "-p", "policy_paths", multiple=True, envvar="DRTOOL_POLICY", metavar="PATH",
              help="Policy file or folder (repeatable).")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["html", "md", "json"]), help="Report format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Where to write the report.")
@click.option("--since", default="90d", show_default=True, help="Period: this long before now.")
@click.option("--from", "date_from", help="Period start (YYYY-MM-DD or ISO 8601), instead of --since.")
@click.option("--to", "date_to", help="Period end (default: now).")
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False, exists=True),
    help="Signing key (drtool keygen --signing) to write FILE.sig with (SSH signature, namespace drtool-report).",
)
@click.option("--fail-on-noncompliant", is_flag=True,
              help="Exit 3 when any policy is not compliant (the report is written all the same).")  # fmt: skip
@click.pass_context
def report(click_ctx, policy_paths, fmt, output, since, date_from, date_to, sign_key, fail_on_noncompliant) -> None:
    """Compliance report from the store's evidence (html, md or json); `report verify FILE` checks one."""
    if click_ctx.invoked_subcommand:
        click_ctx.meta["report_policy_paths"] = policy_paths  # `report -p P verify FILE` trusts P's keys too
        return
    from .. import clock, reports
    from ..durations import parse_duration

    ctx: Ctx = click_ctx.obj
    if not policy_paths or not fmt or not output:
        raise UsageError("report needs --policy, --format and --output (or: drtool report verify FILE)")
    policies = _policies_of(ctx, policy_paths)
    signer = ctx.app.report_signer(sign_key) if sign_key else None  # a bad key fails before the work
    end = _when(date_to) if date_to else clock.utcnow()
    try:
        start = _when(date_from) if date_from else end - datetime.timedelta(seconds=parse_duration(since))
    except ValueError as e:
        raise UsageError(f"--since: {e}") from None
    doc = ctx.app.report(policies, start=start, end=end)
    if _INVALID:  # a policy that could not be read is not proven: the fleet is not compliant
        doc["compliant"] = False
        doc["invalid_policies"] = _invalid_json()
    text = {"json": reports.render_json, "md": reports.render_md, "html": reports.render_html}[fmt](doc)
    data = text.encode()
    digest = hashlib.sha256(data).hexdigest()
    try:
        with open(output, "wb") as f:
            f.write(data)
        with open(output + ".sha256", "w") as f:
            f.write(f"{digest}  {os.path.basename(output)}\n")
    except OSError as e:
        raise UsageError(f"--output {output}: cannot write: {e.strerror}") from None
    if sign_key:
        sig = ctx.app.sign_report(signer, data)
        try:
            with open(output + ".sig", "wb") as f:
                f.write(sig)
        except OSError as e:
            raise UsageError(f"--output {output}.sig: cannot write: {e.strerror}") from None
        ctx.info(f"signed with key {signer.fingerprint} -> {output}.sig (SSH signature, namespace drtool-report)")
    verdict = "compliant" if doc["compliant"] else "NOT compliant"
    ctx.info(f"wrote {output} ({fmt}, {verdict}); SHA-256 {digest}")
    click.echo(digest)
    if fail_on_noncompliant and not doc["compliant"]:
        failing = [p["policy"] for p in doc["policies"] if not p["compliant"]]
        log("error", f"not compliant: {', '.join(failing) or 'no policies'} (see {output})")
        raise click.exceptions.Exit(EXIT_CHECK)


@report.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--policy", "-p", "policy_paths", multiple=True, envvar="DRTOOL_POLICY", metavar="PATH",
              help="Trust the keys in this policy's [signing].trusted_keys (repeatable).")  # fmt: skip
@click.option("--public-key", type=click.Path(dir_okay=False, exists=True),
              help="Trust the ssh-ed25519 key(s) in this file (a .pub or allowed_signers file).")  # fmt: skip
@json_option
@click.pass_context
def report_verify(click_ctx, file: str, policy_paths: tuple[str, ...], public_key: str | None, as_json: bool) -> None:
    """Check a report's signature (FILE.sig) against keys you trust; no decryption key needed."""
    ctx: Ctx = click_ctx.obj
    paths = (*click_ctx.meta.get("report_policy_paths", ()), *policy_paths)
    policies = [p for path in paths for p in _policies(ctx, path)]
    r = ctx.app.verify_report(file, policies=policies, public_key_file=public_key)
    if as_json:
        _emit_json({"ok": True, **r})
    else:
        click.echo(f"{file}: signature valid, signed by trusted key {r['signed_by']}")


def _when(text: str):
    from .. import clock

    try:
        t = clock.parse_iso(text if "T" in text else text + "T00:00:00Z")
    except ValueError:
        raise UsageError(f"'{text}' is not a date (YYYY-MM-DD or ISO 8601)") from None
    return t


def _render_drill(r: dict[str, Any]) -> None:
    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}s"

    obj = r["objectives"]
    verdict = {"passed": "PASSED", "failed": "FAILED", "could-not-run": "COULD NOT RUN"}[r["outcome"]]
    profile = f" (scratch server: {r['scratch_profile']})" if r.get("scratch_profile") else ""
    click.echo(f"{r['policy']}: drill {r['drill_id']} of backup {r['backup_id'] or '-'}: {verdict}{profile}")
    if r["failure"]:
        click.echo(f"  reason: {r['failure']}")
    met = {True: "met", False: "MISSED", None: "not measured"}
    rpo_t = f" (target {secs(obj['rpo_seconds'])}, {met[r['rpo_met']]})" if obj["rpo_seconds"] else ""
    rto_t = f" (target {secs(obj['rto_seconds'])}, {met[r['rto_met']]})" if obj["rto_seconds"] else ""
    click.echo(f"  RPO {secs(r['rpo_seconds'])}{rpo_t}   RTO {secs(r['rto_seconds'])}{rto_t}")
    if r["worst_rpo"]:
        click.echo(
            f"  worst-case RPO over {r['worst_rpo']['backups_considered']} backups: {secs(r['worst_rpo']['seconds'])}"
        )
    click.echo("  phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in r["phases"].items()))
    for c in r["checks"]:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[c["ok"]]
        click.echo(f"  {mark} {c['name']}: {c['detail']}")


def _on_sigterm(signum, frame) -> None:
    """SIGTERM (systemd stop, kill) unwinds like Ctrl-C, so scratch servers and uploads are cleaned up."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps DrtoolError to its exit code and one stderr line; bugs keep their traceback."""
    _bound_malloc()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rc = cli.main(args=argv, prog_name="drtool", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("drtool: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_USAGE if e.exit_code == 2 else e.exit_code)
    except PolicyError as e:
        for line in e.problems:
            log("error", line)
        sys.exit(e.exit_code)
    except DrtoolError as e:
        ProgressLine().clear()
        for line in str(e).splitlines() or [type(e).__name__]:
            log("error", line)
        sys.exit(_worst(e.exit_code))
    except KeyboardInterrupt:
        click.echo("\ndrtool: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        os._exit(1)
    _exit(_worst(rc if isinstance(rc, int) else 0))


def _worst(code: int) -> int:
    """A fleet with an invalid policy file exits at least EXIT_USAGE, whatever the others did."""
    return max(code, EXIT_USAGE) if _INVALID else code


def _exit(code: int) -> None:
    """Leave without the interpreter's slow module teardown: every job is finished, its files
    closed and its children reaped by now; only our own output needs flushing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
