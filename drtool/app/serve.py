"""`drtool serve`: /health and /metrics over HTTP for load balancers, probes and Prometheus.

Read-only: GET only, nothing is written to the store or the database. Each answer is computed at
most once per cache interval, whatever the number of clients, so scrapes never hammer the store.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .. import __version__, clock, metrics
from ..errors import DrtoolError, UsageError
from ..policy import Fleet, load_fleet
from .fleet import fleet_status as status_of

DEFAULT_LISTEN = "127.0.0.1:9187"


def parse_listen(text: str, allow_remote: bool) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) to bind. UsageError for a malformed one, and for an address that
    is not loopback unless allow_remote: /health names databases and stores."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen '{text}': expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    if not allow_remote and not _is_loopback(host):
        raise UsageError(f"--listen '{text}' is not a loopback address; pass --allow-remote to serve other hosts")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fleet_status(app: Any, fleet: Fleet) -> dict[str, Any]:
    """The `drtool status --json` document of a fleet: each policy's health and the worst of them
    (an invalid policy file makes the fleet unhealthy)."""
    doc: dict[str, Any] = {"schema_version": 1, **status_of(app.evidence, fleet.policies, fleet.invalid)}
    if fleet.invalid:
        doc["invalid_policies"] = [{"file": str(b.source), "name": b.name, "problems": list(b.problems)}
                                   for b in fleet.invalid]  # fmt: skip
    return doc


class _Cached:
    """One value recomputed at most every `ttl` seconds; concurrent readers wait for one computation."""

    def __init__(self, ttl: float, compute: Callable[[], Any]):
        self.ttl, self.compute = ttl, compute
        self._lock = threading.Lock()
        self._value: Any = None
        self._at: float | None = None

    def get(self) -> Any:
        with self._lock:
            if self._at is None or clock.monotonic() - self._at >= self.ttl:
                self._value = self.compute()
                self._at = clock.monotonic()
            return self._value


class HealthServer:
    """The HTTP server of `drtool serve`. `app` gives status() and metrics_rows(); the policies
    are read again from `policy_path` at each recomputation, so edits show without a restart."""

    def __init__(self, app: Any, policy_path: str, host: str, port: int, cache_seconds: float,
                 log: Callable[[str], None]) -> None:  # fmt: skip
        self.app, self.policy_path, self.log = app, policy_path, log
        self.server_metrics = metrics.ServerMetrics()
        self.health = _Cached(cache_seconds, self._health)
        self.metrics = _Cached(cache_seconds, self._metrics)
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.server_close()

    # -- answers: (HTTP status, content type, body) ------------------------------------------------
    def _health(self) -> tuple[int, str, bytes]:
        try:
            doc = fleet_status(self.app, load_fleet(self.policy_path))
        except DrtoolError as e:  # the policies cannot be read: nothing is known to be healthy
            doc = {"schema_version": 1, "status": "unhealthy", "checked_at": clock.iso(clock.utcnow()),
                   "error": str(e)}  # fmt: skip
        code = 200 if doc["status"] == "healthy" else 503
        return code, "application/json", (json.dumps(doc, indent=2, default=str) + "\n").encode()

    def _metrics(self) -> tuple[int, str, bytes]:
        try:
            fleet = load_fleet(self.policy_path)
        except DrtoolError as e:
            self.log(f"/metrics: {e}")
            return 200, metrics.CONTENT_TYPE, metrics.exposition([], {self.policy_path: False})
        files = {str(p.source): True for p in fleet.policies} | {str(b.source): False for b in fleet.invalid}
        return 200, metrics.CONTENT_TYPE, metrics.exposition(self.app.metrics_rows(fleet.policies), files)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/health":
            return self.health.get()
        if path == "/metrics":
            code, ctype, body = self.metrics.get()
            return code, ctype, body + self.server_metrics.exposition()
        if path == "/":
            text = f"drtool {__version__}: GET /health (status JSON; 503 unless healthy), GET /metrics (Prometheus)\n"
            return 200, "text/plain; charset=utf-8", text.encode()
        return 404, "text/plain; charset=utf-8", b"not found: GET /health or /metrics\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = f"drtool/{__version__}"
            sys_version = ""

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                t0 = time.monotonic()
                path = self.path.split("?", 1)[0]
                try:
                    code, ctype, body = server.answer(path)
                except Exception as e:  # a bug must not stop the server: answer 500, log one line
                    server.log(f"{path}: {type(e).__name__}: {e}")
                    code, ctype, body = 500, "text/plain; charset=utf-8", b"internal error; see drtool serve's log\n"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                label = path if path in ("/", "/health", "/metrics") else "other"  # bounded label values
                server.server_metrics.observe(label, code, time.monotonic() - t0)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # scrapes every 15 s: no line each
                pass

        return Handler
