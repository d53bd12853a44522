"""drtool serve: read-only HTTP for load balancers, probes and Prometheus."""

from __future__ import annotations

import click

from ...errors import UsageError
from ..context import Ctx, pass_ctx, policies, policy_option
from ..logs import log


@click.command()
@policy_option
@click.option("--listen", default="127.0.0.1:9187", show_default=True, metavar="HOST:PORT", help="Address to bind.")
@click.option("--cache", "cache", default="30s", show_default=True, metavar="DURATION",
              help="Answers are recomputed at most this often, so scrapes never hammer the store.")  # fmt: skip
@click.option("--allow-remote", is_flag=True, help="Allow a --listen address that is not loopback.")
@pass_ctx
def serve(ctx: Ctx, policy_path: str, listen: str, cache: str, allow_remote: bool) -> None:
    """Read-only HTTP: GET /health (status JSON; 200 healthy, 503 otherwise) and GET /metrics (Prometheus)."""
    from ...app.serve import HealthServer, parse_listen
    from ...durations import parse_duration

    host, port = parse_listen(listen, allow_remote)
    try:
        cache_seconds = parse_duration(cache)
    except ValueError as e:
        raise UsageError(f"--cache: {e}") from None
    policies(ctx, policy_path)  # an unreadable policy path is bad usage now, not a 503 later
    try:
        server = HealthServer(ctx.app, policy_path, host, port, cache_seconds, log=lambda m: log("error", m))
    except OSError as e:
        raise UsageError(f"--listen {listen}: cannot bind: {e.strerror or e}") from None
    _, bound_port = server.address
    if not ctx.quiet:
        log("info", f"serving GET /health and /metrics on http://{listen.rsplit(':', 1)[0]}:{bound_port}/ "
                    f"(answers cached {cache}); Ctrl-C stops")  # fmt: skip
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from systemd: a clean stop
        pass
    finally:
        server.close()
