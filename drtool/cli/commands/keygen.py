"""drtool keygen: an age identity, or with --signing an Ed25519 signing key."""

from __future__ import annotations

import click

from ..context import Ctx, pass_ctx
from ..output import emit_json


@click.command()
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Where to write the key.")
@click.option(
    "--signing", is_flag=True, help="An Ed25519 signing key (OpenSSH format) and FILE.pub, not an age identity."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON document instead of the public key: {identity_file, recipient}, or with --signing "
    "{key_file, public_key_file, public_key, fingerprint}. The private key is never printed.",
)
@pass_ctx
def keygen(ctx: Ctx, output: str, signing: bool, as_json: bool) -> None:
    """Make a new age identity (mode 0600) and print its recipient (age1...); with --signing an
    Ed25519 signing key for [signing].key_file, printing the line for [signing].trusted_keys."""
    if signing:
        result = ctx.app.keygen_signing(output)
        if as_json:
            emit_json(result)
        else:
            ctx.info(f"wrote signing key to {result['key_file']} and {result['public_key_file']} "
                     f"({result['fingerprint']}); put the key_file on hosts that write, the public key line "
                     "in [signing].trusted_keys where backups are read")  # fmt: skip
            click.echo(result["public_key"])
        return
    result = ctx.app.keygen(output)
    if as_json:
        emit_json(result)
    else:
        ctx.info(f"wrote identity to {result['identity_file']}; keep it away from backup hosts")
        click.echo(result["recipient"])
