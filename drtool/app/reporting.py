"""Use case: the compliance report as a file: its period, its rendering, FILE.sha256 and FILE.sig.

The CLI parses options and prints the digest; this module decides the period and writes the files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from dataclasses import dataclass

from .. import clock, reports, trust
from ..durations import parse_duration
from ..errors import UsageError

RENDERERS = {"json": reports.render_json, "md": reports.render_md, "html": reports.render_html}

# --since: a count and a unit. Months and years are calendar ones (3mo before 31 May is 28 Feb);
# the others are durations as in policies (90d, 2w, 36h). "m" is minutes there, so a report
# period never reads it: `--since 3m` asks which was meant.
_CALENDAR = re.compile(r"^\s*(\d{1,4})\s*(mo|months?|y|yr|years?)\s*$", re.IGNORECASE)
_WORDS = {"day": "d", "days": "d", "week": "w", "weeks": "w", "hour": "h", "hours": "h"}
_WORDED = re.compile(r"^\s*(\d{1,12})\s*(days?|weeks?|hours?)\s*$", re.IGNORECASE)
SINCE_FORMS = "e.g. 90d, 2w, 3mo (calendar months), 1y"


def months_before(t: dt.datetime, months: int) -> dt.datetime:
    """The same day and time `months` calendar months earlier (clamped to the month's last day)."""
    y, m = divmod(t.year * 12 + (t.month - 1) - months, 12)
    if y < 1:
        raise ValueError("before year 1")
    first_of_next = dt.date(y + (m == 11), (m + 1) % 12 + 1, 1)
    last_day = (first_of_next - dt.timedelta(days=1)).day
    return t.replace(year=y, month=m + 1, day=min(t.day, last_day))


def period_start(since: str, end: dt.datetime) -> dt.datetime:
    """Start of the period `since` before `end`; UsageError naming --since and the accepted forms."""
    if calendar := _CALENDAR.match(since):
        n, unit = int(calendar[1]), calendar[2].lower()
        try:
            return months_before(end, n * (12 if unit.startswith("y") else 1))
        except ValueError:
            raise UsageError(f"--since {since}: too long ago") from None
    if worded := _WORDED.match(since):
        since_text = worded[1] + _WORDS[worded[2].lower()]
    else:
        since_text = since
    if re.fullmatch(r"\s*\d+\s*m\s*", since):
        raise UsageError(f"--since {since}: 'm' is minutes; for months write {since.strip()[:-1]}mo ({SINCE_FORMS})")
    try:
        return end - dt.timedelta(seconds=parse_duration(since_text))
    except (ValueError, OverflowError) as e:
        raise UsageError(f"--since: {e} ({SINCE_FORMS})") from None


def parse_when(text: str, option: str) -> dt.datetime:
    try:
        return clock.parse_iso(text if "T" in text else text + "T00:00:00Z")
    except ValueError:
        raise UsageError(f"{option} '{text}' is not a date (YYYY-MM-DD or ISO 8601)") from None


def period(since: str, date_from: str | None, date_to: str | None) -> tuple[dt.datetime, dt.datetime]:
    """(start, end): --from/--to dates, or --since before the end (default: now)."""
    end = parse_when(date_to, "--to") if date_to else clock.utcnow()
    start = parse_when(date_from, "--from") if date_from else period_start(since, end)
    return start, end


@dataclass
class RenderedReport:
    data: bytes
    sha256: str


def render(doc: dict, fmt: str) -> RenderedReport:
    data = RENDERERS[fmt](doc).encode()
    return RenderedReport(data, hashlib.sha256(data).hexdigest())


def write_files(output: str, report: RenderedReport, signer: trust.Signer | None) -> str | None:
    """FILE, FILE.sha256 (sha256sum -c reads it) and, when signing, FILE.sig; returns the .sig path.
    (Output "-" is the CLI's: it writes the bytes to stdout itself.)"""
    _write(output, report.data)
    _write(output + ".sha256", f"{report.sha256}  {os.path.basename(output)}\n".encode())
    if signer is None:
        return None
    _write(output + ".sig", signer.sign(report.data, trust.NS_REPORT))
    return output + ".sig"


def _write(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise UsageError(f"--output {path}: cannot write: {e.strerror}") from None
