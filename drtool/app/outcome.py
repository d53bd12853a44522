"""What a use case that checks several things returns: its whole result and, apart, the error.

check, verify and init look at several parts (probes, backups, storage targets) and report on
each even when one fails; the command still fails. The result used to ride back to the CLI on
the exception (`err.result`, read with getattr); now the use case returns both, typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import DrtoolError


@dataclass(frozen=True)
class Outcome:
    result: dict[str, Any]  # the document the CLI renders (and --json emits as it is)
    error: DrtoolError | None = None  # what the command ends with (its exit code), or None when all went well

    @property
    def ok(self) -> bool:
        return self.error is None
