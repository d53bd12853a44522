"""Notifications: a webhook (JSON POST with a Slack-compatible `text`) and a heartbeat ping
(healthchecks.io style: URL/start, URL on success, URL/fail). URLs come from environment
variables and hold tokens: no message shows more of one than its scheme and host. Sending
never fails the job: every error, whatever raised it, is returned as one line."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from .secrets import Secret


def where(url: str) -> str:
    """scheme://host of a URL, the most of it a message may show; a description when it has none."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:  # e.g. an unbalanced '[' of an IPv6 host
        return "an unparsable URL"
    if not parts.scheme or not host or not parts.netloc:
        return "a URL without scheme://host"
    if any(c.isspace() or not c.isprintable() for c in parts.scheme + host):
        return "an unparsable URL"
    return f"{parts.scheme}://{host}"


def _why(e: BaseException) -> str:
    """Why sending failed, in words that cannot carry the URL: urllib and http.client quote the
    whole URL (its token included) in their ValueError and InvalidURL messages."""
    import http.client
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        if not isinstance(e.reason, BaseException):  # "no host given", "unknown url type: ..."
            return "not a valid URL"
        e = e.reason
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    if isinstance(e, ValueError | http.client.InvalidURL):
        return "not a valid URL"
    return type(e).__name__


def _send(url: str, data: bytes | None, timeout: float) -> None:
    import urllib.request  # here: every command imports this module, few send (http.client and email, ~20 ms)

    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ValueError("not http(s)")  # urllib would also open file:// and ftp://
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json", "User-Agent": "drtool"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - the operator's own URL, http(s) only
        r.read(1024)


def webhook(url: Secret, payload: dict, timeout: float) -> str | None:
    """POST the payload; None on success, else why it failed (scheme and host only). Never raises."""
    try:
        _send(url.reveal(), json.dumps(payload, default=str).encode(), timeout)
        return None
    except Exception as e:  # noqa: BLE001 - no notification error may change a job's outcome
        return f"webhook to {where(url.reveal())} failed: {_why(e)}"


def heartbeat(url: Secret, state: str, timeout: float) -> str | None:
    """Ping URL/start, URL (success) or URL/fail; None on success, else why it failed. Never raises."""
    try:
        base = url.reveal().rstrip("/")
        target = {"start": base + "/start", "ok": base, "fail": base + "/fail"}[state]
        _send(target, None, timeout)
        return None
    except Exception as e:  # noqa: BLE001 - no notification error may change a job's outcome
        return f"heartbeat to {where(url.reveal())} failed: {_why(e)}"
