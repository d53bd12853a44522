"""A small fault-injecting HTTP proxy between drtool and a real S3 server (SeaweedFS).

Point `storage.endpoint_url` at `proxy.endpoint`. Every request is forwarded to the real server
unless a fault matches it. The faults are those real stores produce under load and that a real
server will not produce on demand:

    error        answer `status` (503 SlowDown by default) without forwarding
    lose_reply   forward the request (the store acts), then answer `status` instead of the real
                 reply, or drop the connection when `status` is None
    reset        forward, send the reply's headers and the first `after` bytes of its body, then
                 reset the connection (RST)
    stall        forward, send the headers and `after` bytes, then send nothing for `seconds`
                 and close; when that would be the whole reply (a PUT's has no body), send
                 nothing at all
    hold         forward (the store acts), then send nothing at all, not even the headers, for
                 `seconds`, and reset: a reply held back (a PUT's empty reply cannot stall)

    proxy.add("PUT", r"\\.manifest\\.json$", "lose_reply")          # every matching request
    proxy.add("GET", r"\\.dump\\.zst\\.age$", "reset", after=65536, times=1)
    proxy.add("GET", r"/obj$", "reset", after=100, times=1, then=replace_it)  # then(): run as the fault hits
    proxy.requests                                                 # [(method, path, outcome)]
    proxy.ranges                                                   # [(path, Range header)] of ranged requests
    proxy.if_match                                                 # [(path, If-Match header)] of conditional ones
    proxy.presigned                                                # [path] of requests signed in their URL

Faults match, and `requests` records, the path without a presigned URL's signature (the X-Amz-*
query parameters drtool's lean reads carry): `\\.dump\\.zst\\.age$` matches a presigned GET too.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    action: str
    status: int | None = 503
    after: int = 0
    seconds: float = 0.0
    skip: int = 0  # let this many matching requests through first
    times: int | None = None  # apply this many times (None: for ever)
    then: Callable[[], None] | None = None  # run after the fault's partial reply, before it ends
    seen: int = 0
    applied: int = 0

    def take(self, method: str, path: str) -> bool:
        if self.method not in ("*", method) or not self.path.search(path):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.applied >= self.times):
            return False
        self.applied += 1
        return True


class FaultProxy:
    def __init__(self, upstream: str):
        u = urlparse(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str]] = []
        self.ranges: list[tuple[str, str]] = []
        self.if_match: list[tuple[str, str]] = []
        self.presigned: list[str] = []  # paths of the requests signed in their URL (lean reads)
        self._mutex = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- control ---------------------------------------------------------------------------------
    def add(self, method: str, path: str, action: str, **kw) -> Fault:
        assert action in ("error", "lose_reply", "reset", "stall", "hold"), action
        if action == "lose_reply" and "status" not in kw:
            kw["status"] = 500
        fault = Fault(method.upper(), re.compile(path), action, **kw)
        with self._mutex:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._mutex:
            self.faults.clear()

    def count(self, method: str = "*", path: str = "", outcome: str | None = None) -> int:
        pat = re.compile(path)
        with self._mutex:
            return sum(
                1
                for m, p, o in self.requests
                if method in ("*", m) and pat.search(p) and (outcome is None or o == outcome)
            )

    def _match(self, method: str, path: str) -> Fault | None:
        with self._mutex:
            for f in self.faults:
                if f.take(method, path):
                    return f
        return None

    def _record(self, method: str, path: str, outcome: str) -> None:
        with self._mutex:
            self.requests.append((method, path, outcome))

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fault-proxy").start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # A reply goes out as two writes (headers, then body). Without TCP_NODELAY, Nagle holds the
        # body back until the client's delayed ACK: ~40 ms a reply, which read as the store's
        # latency in every test and bench behind the proxy.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self) -> None:
        method, path = self.command, _unsigned(self.path)
        body = self._body()
        with self.owner._mutex:
            if self.headers.get("Range"):
                self.owner.ranges.append((path, self.headers["Range"]))
            if self.headers.get("If-Match"):
                self.owner.if_match.append((path, self.headers["If-Match"]))
            if "X-Amz-Signature=" in self.path:
                self.owner.presigned.append(path)
        fault = self.owner._match(method, path)
        if fault and fault.action == "error":
            self.owner._record(method, path, f"error {fault.status}")
            self._reply(fault.status or 503, {}, _error_xml(fault.status or 503))
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=120)
        try:
            conn.request(method, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            rheaders = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP and k.lower() != "content-length"]
            status = resp.status
        finally:
            conn.close()
        if fault is None:
            self.owner._record(method, path, str(status))
            self._reply(status, rheaders, data)
            return
        self.owner._record(method, path, f"{fault.action} (store said {status})")
        if fault.action == "hold":
            time.sleep(fault.seconds)
            self._drop()
            return
        if fault.action == "lose_reply":
            if fault.status is None:
                self._drop()
            else:
                self._reply(fault.status, {}, _error_xml(fault.status))
            return
        if fault.action == "stall" and fault.after >= len(data):
            # what would go first is the whole reply (a PUT's has no body): hold it all back
            if fault.then:
                fault.then()
            time.sleep(fault.seconds)
            self.close_connection = True
            return
        # reset / stall: the real headers, part of the body, then the fault
        self.send_response(status)
        for k, v in rheaders:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: fault.after])
        self.wfile.flush()
        if fault.then:
            fault.then()
        if fault.action == "stall":
            time.sleep(fault.seconds)
            self.close_connection = True
            return
        self._drop()

    def _reply(self, status: int, headers, data: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items() if isinstance(headers, dict) else headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _drop(self) -> None:
        """Reset the connection (SO_LINGER 0 sends RST instead of a clean FIN)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def _unsigned(path: str) -> str:
    """The request's path without a presigned URL's X-Amz-* query parameters."""
    base, _, query = path.partition("?")
    kept = [p for p in query.split("&") if p and not p.startswith("X-Amz-")]
    return base + ("?" + "&".join(kept) if kept else "")


def _error_xml(status: int) -> bytes:
    code = {503: "SlowDown", 500: "InternalError", 403: "AccessDenied", 404: "NoSuchKey"}.get(status, "InternalError")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>injected by the test proxy</Message></Error>"
    ).encode()
