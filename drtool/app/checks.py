"""What verify and drill found about a backup, kept in the store so prune and restore know it
(docs/storage-format.md, check records)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from .. import __version__, clock, ledger, trust
from ..errors import DrtoolError
from ..records import CheckRecord
from ..storage import Store

OK = None  # a finding with no damage


def record_check(
    store: Store,
    policy: str,
    backup_id: str,
    kind: str,
    damage: str | None,
    warn: Callable[[str], None],
    signer: trust.Signer | None = None,
) -> CheckRecord | None:
    """Append one finding (damage None: the backup checked out ok), signed when a signer is given.
    A store that refuses the write (read-only credentials) costs the record, never the check's own
    result. Returns the record when it was stored."""
    rec = CheckRecord(policy, backup_id, kind, "damaged" if damage else "ok", clock.utcnow(), damage,
                      socket.gethostname(), __version__)  # fmt: skip
    try:
        ledger.write_check(store, rec, signer)
    except DrtoolError as e:
        warn(f"backup {backup_id}: could not record the {kind} result in the store: {e}")
        return None
    return rec


def drill_finding(record: dict[str, Any]) -> tuple[bool, str | None]:
    """(is a finding about the backup, damage). Only a drill that passed, or one that failed
    because of the backup itself (its bytes, or row counts that differ from its manifest), says
    anything about the backup; a failed policy check, a missed RTO or an unavailable store does not."""
    if record.get("outcome") == "could-not-run":  # the store, scratch server or tools were down
        return False, None
    if record.get("passed"):
        return True, OK
    for c in record.get("checks", []):
        if c.get("ok") is False and c.get("name") in ("fetch", "row_counts"):
            return True, f"drill {record.get('drill_id')}: {c['name']}: {c.get('detail')}"
    return False, None


def record_drill(
    store: Store, record: dict[str, Any], warn: Callable[[str], None], signer: trust.Signer | None = None
) -> CheckRecord | None:
    """Record what a drill found about its backup, if it found anything (drill_finding)."""
    finding, damage = drill_finding(record)
    if finding:
        return record_check(store, record["policy"], record["backup_id"], "drill", damage, warn, signer)
    return None
