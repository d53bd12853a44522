"""The one place that reads the wall clock, so tests can inject time."""

from __future__ import annotations

import datetime as dt
import os
import time


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def monotonic() -> float:
    return time.monotonic()


def iso(t: dt.datetime) -> str:
    """ISO 8601 UTC with a Z suffix, second precision kept to microseconds."""
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_iso(s: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return t if t.tzinfo is dt.UTC else t.astimezone(dt.UTC)  # what iso() writes is UTC already


def process_age() -> float | None:
    """Seconds since this process was started by the kernel (Linux), interpreter start-up
    included; None where /proc is not available."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
