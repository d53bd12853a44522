"""stderr logging for the CLI: stdlib `logging` with a text or a JSON-lines formatter.

Use cases log through `logging.getLogger("drtool....")` (AppBase.warn is a shim over it); only the
CLI installs a handler. Text lines read `drtool: warning: msg` (`drtool: msg` for info); JSON lines
are one object each with ts, level, command, msg and any extra fields (policy, job, backup_id, ...).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from .. import clock

LOGGER = "drtool"
# LogRecord's own attributes: anything else on a record came from `extra=` and is a field
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_") and v is not None}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        return f"drtool: {level + ': ' if level != 'info' else ''}{record.getMessage()}"


class JsonFormatter(logging.Formatter):
    def __init__(self, command: str | None):
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": clock.iso(clock.utcnow()), "level": record.levelname.lower(), "command": self.command,
               "msg": record.getMessage(), **fields_of(record)}  # fmt: skip
        return json.dumps({k: v for k, v in doc.items() if v is not None}, default=str)


class StderrHandler(logging.StreamHandler):
    """Writes to the current sys.stderr, after clearing the progress line a log line would break."""

    def __init__(self, before_emit: Callable[[], None] = lambda: None):
        super().__init__()
        self.before_emit = before_emit

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        self.before_emit()
        super().emit(record)


def configure(*, json_lines: bool, command: str | None, quiet: bool, before_emit: Callable[[], None]) -> None:
    """One handler on the `drtool` logger; --quiet drops info lines (warnings and errors stay)."""
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = StderrHandler(before_emit)
    handler.setFormatter(JsonFormatter(command) if json_lines else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def log(level: str, msg: str, **fields: Any) -> None:
    """A CLI event with optional fields (policy, job, backup_id, duration_seconds, ...)."""
    logging.getLogger(f"{LOGGER}.cli").log(logging.getLevelName(level.upper()), msg, extra=fields)
