"""Notifications: a webhook (JSON POST with a Slack-compatible `text`) and a heartbeat ping
(healthchecks.io style: URL/start, URL on success, URL/fail). URLs come from environment
variables and never appear in messages. Sending never fails the job: errors are returned."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlparse

from .secrets import Secret


def _host(url: Secret) -> str:
    return urlparse(url.reveal()).hostname or "?"


def _send(url: str, data: bytes | None, timeout: float) -> None:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json", "User-Agent": "drtool"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - the operator's own URL
        r.read(1024)


def webhook(url: Secret, payload: dict, timeout: float) -> str | None:
    """POST the payload; None on success, else why it failed (without the URL's secret parts)."""
    try:
        _send(url.reveal(), json.dumps(payload).encode(), timeout)
        return None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return f"webhook to {_host(url)} failed: {reason}"


def heartbeat(url: Secret, state: str, timeout: float) -> str | None:
    """Ping URL/start, URL (success) or URL/fail; None on success, else why it failed."""
    base = url.reveal().rstrip("/")
    target = {"start": base + "/start", "ok": base, "fail": base + "/fail"}[state]
    try:
        _send(target, None, timeout)
        return None
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"heartbeat to {_host(url)} failed: {getattr(e, 'reason', e)}"
