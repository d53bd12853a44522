"""Evidence kept in the store beside the backups: check records (what verify and drill found, per
backup), drill records, and the state of `drtool run` (schedule) and of pending copies.

Layout under the store root (docs/storage-format.md):
    <policy>/checks/<backup_id>/<utc>-<rand>.json   append-only, one per verify or drill
    <policy>/drills/<drill_id>.json                 append-only, one per drill
    <policy>/state/schedule.json, copies.json       rewritten by run
The manifests and their listing (what a backup is) stay in catalog.py."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .catalog import MANIFEST_READERS, OnUntrusted, get_record, note_untrusted, put_record
from .clock import iso
from .errors import NotFound, StorageError
from .records import (
    SCHEDULE_STATE_FORMAT,
    CheckRecord,
    CheckRecordInvalid,
    CopyState,
    DrillRecord,
    DrillRecordInvalid,
    ScheduleState,
    StateInvalid,
    drill_record,
    parse_check,
    parse_copy_state,
    parse_drill_record,
    parse_schedule_state,
    serialise_check,
    serialise_copy_state,
    serialise_drill_record,
    serialise_schedule_state,
)
from .storage import Store
from .trust import NS_EVIDENCE, Signer, Untrusted, Verifier

# -- check records: what verify and drill found, per backup (append-only) -------------------------


def check_key(policy: str, backup_id: str, at) -> str:
    """<policy>/checks/<backup_id>/<utc>-<rand>.json: keys of one backup sort by time."""
    return f"{policy}/checks/{backup_id}/{at.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(3)}.json"


def write_check(store: Store, record: CheckRecord, signer: Signer | None = None) -> str:
    """Store a check record under a new key (never overwrites one); returns the key."""
    key = check_key(record.policy, record.backup_id, record.checked_at)
    put_record(store, key, serialise_check(record), NS_EVIDENCE, signer, if_absent=True)
    return key


@dataclass(frozen=True)
class CheckStates:
    """The newest check record of each backup, and what could not be read."""

    newest: dict[str, CheckRecord]
    problems: list[str]

    @property
    def damaged(self) -> frozenset[str]:
        """Backups whose newest check found them damaged."""
        return frozenset(b for b, c in self.newest.items() if c.damaged)

    @property
    def verified(self) -> frozenset[str]:
        """Backups whose newest check is a passed drill or a deep (full) verify."""
        return frozenset(b for b, c in self.newest.items() if not c.damaged and c.kind in ("drill", "deep-verify"))

    def reasons(self) -> dict[str, str]:
        """Backup id -> why it is known to be damaged."""
        return {b: self.reason(b) or "" for b in self.damaged}

    def reason(self, backup_id: str) -> str | None:
        c = self.newest.get(backup_id)
        if c is None or not c.damaged:
            return None
        return f"{c.kind} at {iso(c.checked_at)} found it damaged: {c.reason}"


def read_checks(store: Store, policy: str, verifier: Verifier | None = None,
                on_untrusted: OnUntrusted | None = None) -> CheckStates:  # fmt: skip
    """One LIST, then one GET per backup that has checks (the newest only). With a verifier, the
    newest trusted record counts: an untrusted one is ignored as evidence (reported to
    on_untrusted, else in `problems`) and must not hide the finding before it (a planted "ok"
    would clear a damaged backup)."""
    base = f"{policy}/checks/"
    per_backup: dict[str, list[str]] = {}
    for obj in store.list_objects(base):
        bid = obj.key[len(base) :].split("/", 1)[0]
        if obj.key.endswith(".json"):
            per_backup.setdefault(bid, []).append(obj.key)

    def read(keys: list[str]) -> tuple[CheckRecord | None, list[str]]:
        problems: list[str] = []
        for key in sorted(keys, reverse=True):  # newest first; older ones only past untrusted ones
            try:
                record = parse_check(get_record(store, key, NS_EVIDENCE, verifier), f"{store.url}/{key}")
                if (record.policy, record.backup_id) == (policy, key[len(base) :].split("/", 1)[0]):
                    return record, problems
                # a genuine record replayed under another backup's folder must not speak for it
                problems.append(f"{store.url}/{key}: check record is about backup '{record.backup_id}' of "
                                f"'{record.policy}', not of its folder; ignored")  # fmt: skip
            except Untrusted as e:
                note_untrusted(e, problems, on_untrusted)
            except CheckRecordInvalid as e:
                return None, [*problems, str(e)]
            except StorageError as e:
                return None, [*problems, f"{store.url}/{key}: check record cannot be read: {e}"]
        return None, problems

    with ThreadPoolExecutor(max_workers=MANIFEST_READERS) as pool:
        found = dict(zip(per_backup, pool.map(read, per_backup.values()), strict=True))
    return CheckStates({b: c for b, (c, _) in found.items() if c is not None},
                       [p for _, problems in found.values() for p in problems])  # fmt: skip


# -- schedule state: what `drtool run` did, per job ------------------------------------------------

STATE_FORMAT = SCHEDULE_STATE_FORMAT  # kept for callers that name it through the catalog


def state_key(policy: str) -> str:
    return f"{policy}/state/schedule.json"


def read_schedule_state(store: Store, policy: str, verifier: Verifier | None = None,
                        on_untrusted: OnUntrusted | None = None) -> ScheduleState:  # fmt: skip
    """The schedule state, empty if none was written yet, or (with a verifier) when no trusted key
    signed it: then on_untrusted is told (without it, Untrusted is raised). StateInvalid naming the
    object if it is malformed."""
    key = state_key(policy)
    try:
        raw = _get_state(store, key, verifier, on_untrusted)
    except NotFound:
        return ScheduleState()
    try:
        return parse_schedule_state(raw, f"{store.url}/{key}")
    except StateInvalid as e:
        raise StateInvalid(f"{e} (delete it to start the schedule afresh: each job then runs once)") from None


def write_schedule_state(store: Store, policy: str, state: ScheduleState, signer: Signer | None = None) -> None:
    put_record(store, state_key(policy), serialise_schedule_state(state), NS_EVIDENCE, signer)


def _get_state(store: Store, key: str, verifier: Verifier | None, on_untrusted: OnUntrusted | None) -> bytes:
    """A state object's bytes; NotFound also when it is untrusted and on_untrusted was told."""
    try:
        return get_record(store, key, NS_EVIDENCE, verifier)
    except Untrusted as e:
        if on_untrusted is None:
            raise
        on_untrusted(f"{e}; ignored")
        raise NotFound(key) from None


# -- copies still to make ---------------------------------------------------------------------------


def copy_state_key(policy: str) -> str:
    return f"{policy}/state/copies.json"


def read_copy_state(store: Store, policy: str, verifier: Verifier | None = None,
                    on_untrusted: OnUntrusted | None = None) -> CopyState:  # fmt: skip
    """Copies not yet made, empty if none are pending, or (with a verifier) when no trusted key
    signed the state: then on_untrusted is told. StateInvalid naming the object if it is malformed."""
    key = copy_state_key(policy)
    try:
        raw = _get_state(store, key, verifier, on_untrusted)
    except NotFound:
        return CopyState()
    return parse_copy_state(raw, f"{store.url}/{key}")


def write_copy_state(store: Store, policy: str, state: CopyState, signer: Signer | None = None) -> None:
    put_record(store, copy_state_key(policy), serialise_copy_state(state), NS_EVIDENCE, signer)


# -- drill records: append-only evidence, one object per drill --------------------------------


def drill_key(policy: str, drill_id: str) -> str:
    return f"{policy}/drills/{drill_id}.json"


def write_drill_record(store: Store, record: dict[str, Any], signer: Signer | None = None) -> str:
    """Store a drill record under a new key (never overwrites one); returns the key. The record is
    validated by the same parser that reads it, so a record drtool writes always reads back."""
    key = drill_key(record["policy"], record["drill_id"])
    put_record(store, key, serialise_drill_record(drill_record(record, key)), NS_EVIDENCE, signer, retain=True)
    return key


def list_drill_records(store: Store, policy: str, verifier: Verifier | None = None,
                       on_untrusted: OnUntrusted | None = None) -> tuple[list[dict[str, Any]], list[str]]:  # fmt: skip
    """(records newest first, problems): unreadable records are reported, never fatal. A record
    stored under a key that is not its own (another policy's, a replayed copy) is unreadable too.
    With a verifier, a record no trusted key signed is ignored as evidence (reported to
    on_untrusted, else in problems)."""
    found: list[DrillRecord] = []
    problems: list[str] = []
    for obj in store.list_objects(f"{policy}/drills/"):
        if not obj.key.endswith(".json"):
            continue
        where = f"{store.url}/{obj.key}"
        try:
            record = parse_drill_record(get_record(store, obj.key, NS_EVIDENCE, verifier), where)
            if drill_key(record.policy, record.drill_id) != obj.key or record.policy != policy:
                raise DrillRecordInvalid(
                    f"{where}: unreadable drill record: {record.policy}/{record.drill_id} stored under another key"
                )
            found.append(record)
        except Untrusted as e:
            note_untrusted(e, problems, on_untrusted)
        except DrillRecordInvalid as e:
            problems.append(str(e))
        except NotFound as e:
            problems.append(f"{where}: unreadable drill record: {e}")
    found.sort(key=lambda r: r.started_at, reverse=True)
    return [r.as_dict() for r in found], problems
