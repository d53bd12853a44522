"""Use case: the compliance report as a file: its period, its rendering, FILE.sha256 and FILE.sig.

The CLI parses options and prints the digest; this module decides the period and writes the files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from .. import __version__, clock, reports, trust
from ..durations import parse_duration
from ..errors import UsageError
from ..reports import stream

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


SPOOL_BYTES = 4 << 20  # rendered sections kept in memory up to this; a bigger report spills to a temporary file
CHUNK = 1 << 20


@dataclass
class StreamedReport:
    """A report whose policies' sections are rendered (into `spool`) and whose frame is not yet:
    `doc` is the document without its policies, which the caller may still amend (invalid
    policy files). `verdicts`: (policy, compliant) of each section."""

    fmt: str
    doc: dict[str, Any]
    verdicts: list[tuple[str, bool]]
    spool: IO[bytes]

    def chunks(self) -> Iterator[bytes]:
        head, tail = stream.frame(self.fmt, self.doc, empty=not self.verdicts)
        yield head.encode()
        self.spool.seek(0)
        while chunk := self.spool.read(CHUNK):
            yield chunk
        yield tail.encode()


@dataclass
class Written:
    sha256: str
    sha512: bytes  # what an SSH signature signs


def compose(sections: Iterable[dict[str, Any]], fmt: str, *, start: dt.datetime, end: dt.datetime) -> StreamedReport:
    """Render each section as it comes (sections may be a generator that reads the store): one
    policy's section in memory at a time, the rendered ones in a spool, not a second copy."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (closed with the report's life)
    verdicts: list[tuple[str, bool]] = []

    def rendered() -> Iterator[dict[str, Any]]:
        for section in sections:
            verdicts.append((section["policy"], bool(section["compliant"])))
            yield section

    for piece in stream.body(fmt, rendered()):
        spool.write(piece.encode())
    doc = reports.build([], start=start, end=end, now=clock.utcnow(), version=__version__)
    del doc["policies"]
    doc["compliant"] = bool(verdicts) and all(ok for _, ok in verdicts)
    return StreamedReport(fmt, doc, verdicts, spool)


def write_to(report: StreamedReport, out: BinaryIO) -> Written:
    """Write the report's bytes to `out` and hash them on the way."""
    h256, h512 = hashlib.sha256(), hashlib.sha512()
    for chunk in report.chunks():
        out.write(chunk)
        h256.update(chunk)
        h512.update(chunk)
    return Written(h256.hexdigest(), h512.digest())


def write_files(output: str, report: StreamedReport, signer: trust.Signer | None) -> tuple[str, str | None]:
    """FILE, FILE.sha256 (sha256sum -c reads it) and, when signing, FILE.sig; returns the SHA-256
    and the .sig path. (Output "-" is the CLI's: it writes the bytes to stdout with write_to.)"""
    try:
        with open(output, "wb") as f:
            written = write_to(report, f)
    except OSError as e:
        raise UsageError(f"--output {output}: cannot write: {e.strerror}") from None
    _write(output + ".sha256", f"{written.sha256}  {os.path.basename(output)}\n".encode())
    if signer is None:
        return written.sha256, None
    _write(output + ".sig", signer.sign_sha512(written.sha512, trust.NS_REPORT))
    return written.sha256, output + ".sig"


def _write(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise UsageError(f"--output {path}: cannot write: {e.strerror}") from None
