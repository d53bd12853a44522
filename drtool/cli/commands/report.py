"""drtool report: the compliance report (and `report verify FILE`)."""

from __future__ import annotations

import sys

import click

from ...app import reporting
from ...errors import EXIT_CHECK, UsageError
from ..context import Ctx, json_option, policies, policies_of
from ..logs import log
from ..output import INVALID, emit_json, invalid_json

STDOUT = "-"


class ReportGroup(click.Group):
    """`report` takes options or the `verify` subcommand: a stray word is not a command name."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands:
            raise UsageError(
                f"report: unexpected argument '{args[0]}'; write the period as one word, "
                f"--since 3mo ({reporting.SINCE_FORMS}), or use `drtool report verify FILE`"
            )
        return super().resolve_command(ctx, args)


@click.group(cls=ReportGroup, invoke_without_command=True)
@click.option("--policy", "-p", "policy_paths", multiple=True, envvar="DRTOOL_POLICY", metavar="PATH",
              help="Policy file or folder (repeatable).")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["html", "md", "json"]), help="Report format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write the report; - for stdout (then no FILE.sha256 and no signature).")  # fmt: skip
@click.option("--since", default="90d", show_default=True,
              help=f"Period: this long before the end ({reporting.SINCE_FORMS}).")  # fmt: skip
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
    ctx: Ctx = click_ctx.obj
    if not policy_paths or not fmt or not output:
        raise UsageError("report needs --policy, --format and --output (or: drtool report verify FILE)")
    if output == STDOUT and sign_key:
        raise UsageError("--sign-key needs --output FILE: the signature goes to FILE.sig")
    start, end = reporting.period(since, date_from, date_to)  # bad usage fails before any work
    found = policies_of(ctx, policy_paths)
    signer = ctx.app.report_signer(sign_key) if sign_key else None  # a bad key fails before the work
    sections = ctx.app.report_sections(found, start=start, end=end)  # read and rendered one policy at a time
    rendered = reporting.compose(sections, fmt, start=start, end=end)
    if INVALID:  # a policy that could not be read is not proven: the fleet is not compliant
        rendered.doc["compliant"] = False
        rendered.doc["invalid_policies"] = invalid_json()
    compliant = rendered.doc["compliant"]
    verdict = "compliant" if compliant else "NOT compliant"
    if output == STDOUT:
        out = sys.stdout.buffer  # click.get_binary_stream is deprecated (Click 9 drops it)
        sha256 = reporting.write_to(rendered, out).sha256
        out.flush()
        ctx.info(f"report ({fmt}, {verdict}); SHA-256 {sha256}")
    else:
        sha256, sig_file = reporting.write_files(output, rendered, signer)
        if sig_file and signer:
            ctx.info(f"signed with key {signer.fingerprint} -> {sig_file} (SSH signature, namespace drtool-report)")
        ctx.info(f"wrote {output} ({fmt}, {verdict}); SHA-256 {sha256}")
        click.echo(sha256)
    if fail_on_noncompliant and not compliant:
        failing = [name for name, ok in rendered.verdicts if not ok]
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
    trusted = [p for path in paths for p in policies(ctx, path)]
    r = ctx.app.verify_report(file, policies=trusted, public_key_file=public_key)
    if as_json:
        emit_json({"ok": True, **r})
    else:
        click.echo(f"{file}: signature valid, signed by trusted key {r['signed_by']}")
