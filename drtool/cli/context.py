"""The object every command gets (ctx.obj), the shared options, and loading policies of a PATH."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..app import App, Context
from ..errors import PolicyError, UsageError
from ..policy import InvalidPolicy, Policy, load_fleet
from .logs import log
from .output import INVALID
from .render import ProgressLine


class Ctx:
    def __init__(self, quiet: bool, json_logs: bool, command_t0: float | None):
        self.quiet = quiet
        self.progress = ProgressLine(enabled=False if (quiet or json_logs) else None)
        # warnings of the use cases go through logging (AppBase.warn's default)
        self.app = App(Context(progress=self.progress, command_t0=command_t0))

    def warn(self, msg: str, **fields: Any) -> None:
        log("warning", msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        log("info", msg, **fields)  # --quiet drops it (logs.configure)


pass_ctx = click.make_pass_decorator(Ctx)

POLICY_HELP = "Policy file, or a folder of *.toml policies (env DRTOOL_POLICY)."
policy_option = click.option(
    "--policy", "-p", "policy_path", envvar="DRTOOL_POLICY", required=True, metavar="PATH", help=POLICY_HELP
)
# for commands that take several: `run -p A -p B` (and run's positional PATH...), `report -p A -p B`
policies_option = click.option(
    "--policy", "-p", "policy_paths", multiple=True, envvar="DRTOOL_POLICY", metavar="PATH",
    help="Policy file or folder (repeatable; env DRTOOL_POLICY).",
)  # fmt: skip
json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
name_option = click.option("--name", "policy_name", metavar="NAME", help="Pick one policy from a folder by name.")
metrics_option = click.option(
    "--metrics-file", metavar="PATH", help="Also write Prometheus metrics (node_exporter textfile)."
)


def _backup_id(click_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--backup ID is checked before anything runs: a malformed id is bad usage (exit 2)."""
    from ..catalog import check_backup_id

    return None if value is None else check_backup_id(value)


def backup_id_option(help_text: str):
    return click.option("--backup", "backup_id", metavar="ID", callback=_backup_id, help=help_text)


def policies(ctx: Ctx, path: str, name: str | None = None) -> list[Policy]:
    """The valid policies of a file or folder. A single invalid file raises PolicyError (exit 2);
    in a folder each file stands alone: an invalid one is logged and recorded in INVALID, and
    the others are returned to run."""
    fleet = load_fleet(path, name)  # with --name, the other files are not validated
    valid, invalid = fleet.policies, fleet.invalid
    if name:
        claimed = [bad for bad in invalid if bad.name == name]
        if claimed:  # the policy asked for is itself invalid
            raise PolicyError(list(claimed[0].problems))
        valid = [p for p in valid if p.name == name]
        if not valid:
            unread = f" ({len(invalid)} invalid files there have no readable name)" if invalid else ""
            raise UsageError(f"{path}: no policy named '{name}'{unread}")
        for bad in invalid:
            ctx.warn(f"{bad.source}: invalid policy file, ignored while '{name}' is asked for")
        invalid = []
    for bad in invalid:
        INVALID.append(bad)
        for line in bad.problems:
            log("error", line, policy_file=str(bad.source))
    for p in valid:
        for w in p.warnings:
            ctx.warn(w)
    return valid


def policies_of(ctx: Ctx, paths: tuple[str, ...]) -> list[Policy]:
    """Policies of several PATHs, each on its own: one invalid file among them does not stop the rest."""
    if len(paths) == 1:
        return policies(ctx, paths[0])
    found: list[Policy] = []
    for path in paths:
        try:
            found += policies(ctx, path)
        except PolicyError as e:
            INVALID.append(InvalidPolicy(Path(path), tuple(e.problems)))
            for line in e.problems:
                log("error", line, policy_file=path)
    return found


def one_policy(ctx: Ctx, path: str, name: str | None) -> Policy:
    found = policies(ctx, path, name)
    if len(found) > 1 or INVALID:  # an invalid file may be the one meant: never guess
        names = ", ".join([*(p.name for p in found), *(f"invalid {b.source.name}" for b in INVALID)])
        raise UsageError(f"{path} holds several policies ({names}); pick one with --name")
    return found[0]


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
