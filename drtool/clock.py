"""The one place that reads the wall clock, so tests can inject time."""

from __future__ import annotations

import datetime as dt
import time


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def monotonic() -> float:
    return time.monotonic()


def iso(t: dt.datetime) -> str:
    """ISO 8601 UTC with a Z suffix, second precision kept to microseconds."""
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_iso(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(dt.UTC)
