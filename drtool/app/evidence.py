"""Use cases: status, compliance report, metrics, check."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .. import __version__, catalog, clock, health, ledger, metrics, pgtools, postgres, reports, trust
from ..crypto import age, signing, sshsig
from ..durations import format_size
from ..errors import CheckFailed, DrtoolError, IdentityError, IntegrityError, PreconditionFailed, UsageError
from ..policy import InvalidPolicy, Policy, StorageTarget
from ..records import ScheduleState, recipient_fingerprints
from ..storage import Store, put_bytes
from . import fanout, walview
from .base import _check_region
from .context import UseCase
from .outcome import Outcome
from .walhealth import wal_health


@dataclass
class Evidence:
    """What the store says about a policy, read once for status, report and metrics."""

    restorable: list[catalog.Backup]  # newest first
    records: list[dict[str, Any]]  # drill records, newest first
    problems: list[str]  # unreadable drill records
    pending: dict[str, dict]  # copies not yet made: target -> {backup_id: ...}
    schedule: ScheduleState
    untrusted: list[str] = field(default_factory=list)  # objects no trusted key signed, ignored as evidence

    @cached_property
    def backups(self) -> list[dict[str, Any]]:
        """The manifests, newest first, as far as a report publishes them (catalog.Backup.published:
        read from the index, only the published fields are checked); `newest` is checked whole."""
        return [b.published for b in self.restorable]

    @property
    def newest(self) -> dict[str, Any] | None:
        return self.restorable[0].manifest if self.restorable else None


class DatabaseProbe:
    """A memo of database reachability for one fleet-wide command: policies with the same DSN
    and password variable share one connection attempt (the first thread to ask makes it)."""

    def __init__(self, probe: Callable[[Policy], str]) -> None:
        self._probe = probe
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, str | None], Future[str]] = {}

    def __call__(self, policy: Policy) -> str:
        key = (policy.dsn, policy.password_env)
        with self._lock:
            answer = self._answers.get(key)
            mine = answer is None
            if mine:
                answer = self._answers[key] = Future()
        assert answer is not None
        if mine:
            try:
                answer.set_result(self._probe(policy))
            except BaseException as e:  # the threads waiting on it get it too, rather than waiting forever
                answer.set_exception(e)
                raise
        return answer.result()


class EvidenceJobs(UseCase):
    # -- status and reports ------------------------------------------------------------------------
    def _evidence(self, policy: Policy, store: Store, *, all_drills: bool = True) -> Evidence:
        """With [signing].trusted_keys only what a trusted key signed; the rest is named in `untrusted`.
        The backups come from the catalog index when it is usable; `all_drills` False (status)
        takes the newest drill attempt and the newest drill that ran from it too."""
        verifier, untrusted = self.ctx.verifier(policy), []
        # status parses the newest manifest only, and a report checks only what it publishes of
        # the others (Evidence.backups), unless the WAL archive's figures need the base backups'
        deferred = not policy.pitr.enabled
        indexed = self.ctx.read_index(policy, store, () if all_drills else ("drills",), deferred=deferred)
        if indexed is not None and not all_drills:
            records, problems = indexed.drill_records(), list(indexed.index.drills.get("problems") or [])
            untrusted += list(indexed.index.drills.get("untrusted") or [])
        else:
            records, problems = ledger.list_drill_records(store, policy.name, verifier, untrusted.append)
        listing = indexed.listing if indexed is not None else catalog.scan(store, policy.name, verifier)
        untrusted += [f"{t.reason}; ignored as evidence" for t in listing.untrusted]
        return Evidence(
            restorable=listing.restorable,
            records=records,
            problems=problems,
            pending=self._pending_copies(policy, store, verifier, untrusted.append),
            schedule=ledger.read_schedule_state(store, policy.name, verifier, untrusted.append),
            untrusted=untrusted,
        )

    @staticmethod
    def _pending_copies(policy: Policy, store: Store, verifier: trust.Verifier | None,
                        on_untrusted: Callable[[str], None]) -> dict[str, dict]:  # fmt: skip
        """The copies not yet made to the policy's copy targets (status, metrics and the report all
        show those only): a policy without copy targets has none, and its copy state is not read."""
        if not policy.copies:
            return {}
        pending = ledger.read_copy_state(store, policy.name, verifier, on_untrusted).pending
        return {c.name: pending[c.name] for c in policy.copies if c.name in pending}

    def status(self, policy: Policy, probe: DatabaseProbe | None = None) -> dict[str, Any]:
        """Health of one policy from the store's evidence plus live probes of its components
        (`probe`: a fleet's database_probe(), so policies sharing a database connect once)."""
        return self._status(policy, all_drills=False, probe=probe)[0]

    def database_probe(self) -> DatabaseProbe:
        """policy -> "ok" or "unreachable: why", connecting once per distinct DSN and password
        variable however many policies share them (and however many threads ask at once)."""
        return DatabaseProbe(self._probe_database)

    def _probe_database(self, policy: Policy) -> str:
        try:
            with postgres.connect(self.ctx.source(policy), timeout=5) as conn:
                conn.execute("SELECT 1")
            return "ok"
        except DrtoolError as e:
            return f"unreachable: {e}"

    def _status(self, policy: Policy, *, all_drills: bool = True,
                probe: DatabaseProbe | None = None) -> tuple[dict[str, Any], Evidence | None]:  # fmt: skip
        components: dict[str, str] = {"database": (probe or self.database_probe())(policy)}
        try:
            store = self.ctx.store(policy)
            components["storage"] = "ok"
        except DrtoolError as e:
            components["storage"] = f"unreachable: {e}"
            result = health.evaluate(now=clock.utcnow(), rpo=policy.rpo, newest_recovery_point=None, last_drill=None,
                                     copies_pending={}, schedule_state=ScheduleState(),
                                     components=components)  # fmt: skip
            return result, None
        for c in policy.copies:
            try:
                self.ctx.store(policy, target=c.name)
                components[f"copy:{c.name}"] = "ok"
            except DrtoolError as e:
                components[f"copy:{c.name}"] = f"unreachable: {e}"
        try:
            for r in policy.recipients:
                age.parse_recipient(r)
            components["keys"] = "ok"
        except ValueError as e:
            components["keys"] = f"invalid recipient: {e}"
        ev = self._evidence(policy, store, all_drills=all_drills)
        if ev.problems:
            components["drill_records"] = f"{len(ev.problems)} unreadable"
        if ev.untrusted:  # someone who is not a trusted signer wrote to the store: unhealthy until resolved
            components["origin"] = f"{len(ev.untrusted)} untrusted object(s): " + "; ".join(ev.untrusted)
        if policy.identity_file:  # this host is meant to restore and drill: can it?
            components["restore"] = self._restore_readiness(policy, ev.newest)
        ran = health.drills_that_ran(ev.records)
        result = health.evaluate(
            now=clock.utcnow(),
            rpo=policy.rpo,
            newest_recovery_point=ev.restorable[0].recovery_point if ev.restorable else None,
            last_drill=ran[0] if ran else None,
            last_attempt=ev.records[0] if ev.records else None,
            copies_pending={c.name: len(ev.pending.get(c.name, {})) for c in policy.copies},
            schedule_state=ev.schedule,
            components=components,
        )
        result["backups"] = len(ev.restorable)
        if policy.pitr.enabled:
            self._wal_status(policy, store, ev, result)
        return result, ev

    def _wal_status(self, policy: Policy, store: Store, ev: Evidence, result: dict[str, Any]) -> None:
        """The WAL archive's figures and state (degraded when it lags more than objectives.rpo)."""
        physical = [(m["id"], m["physical"]) for m in ev.backups if m.get("kind") == "physical" and m.get("physical")]
        try:
            figures, state = wal_health(store, policy, physical, self.ctx.source(policy), self.ctx.warn)
        except DrtoolError as e:
            figures, state = {}, f"cannot be read: {e}"
        result["wal_archive"] = figures
        result["components"]["wal_archive"] = state
        if state != "ok":
            result["status"] = health.worst(result["status"], "degraded")
            result["reasons"].append(f"wal_archive: {state}")

    def _restore_readiness(self, policy: Policy, newest: dict[str, Any] | None) -> str:
        """Returns "ok" when this host could restore the newest backup now: the identity file is there,
        readable and opens it (matches one of its recipients), and pg_restore (and, for drills
        on a throwaway server, the server binaries) of the backup's major version are found.
        Otherwise the problems, in one line."""
        problems = []
        try:
            mine = {age.recipient_fingerprint(i.recipient) for i in self.ctx.identities(policy)}
            if newest is not None:  # a manifest may carry no recipients, or odd ones: matched by none
                theirs = set(recipient_fingerprints(newest))
                what = f"the recipients of the newest backup {newest.get('id')}"
            else:
                theirs = {age.recipient_fingerprint(r) for r in policy.recipients}
                what = "encryption.recipients"
            if not mine & theirs:
                problems.append(f"identity file {policy.identity_file} matches none of {what}: it cannot decrypt it")
        except DrtoolError as e:
            problems.append(str(e))
        try:
            major = pgtools.server_major(int(newest["server_version_num"])) if newest else None
        except (KeyError, TypeError, ValueError):
            major = None
        try:
            tool = pgtools.find_tool("pg_restore", policy.backup.pg_bin_dir)
            if major is not None and tool.major < major:
                problems.append(f"pg_restore {tool.version} ({tool.path}) cannot read a PostgreSQL {major} backup")
        except DrtoolError as e:
            problems.append(str(e))
        if major is not None and not policy.drill.target_dsn:
            try:
                pgtools.find_server_bin(major, policy.drill.pg_bin_dir)
            except DrtoolError as e:
                problems.append(str(e))
        return "; ".join(problems) or "ok"

    def metrics_rows(self, policies: list[Policy]) -> list[dict[str, Any]]:
        """Per-policy figures for the Prometheus textfile, from one read of the store's evidence."""
        probe = self.database_probe()

        def one(p: Policy) -> dict[str, Any]:
            row: dict[str, Any] = {"policy": p.name, "rpo_objective_seconds": p.rpo, "rto_objective_seconds": p.rto}
            try:
                st, ev = self._status(p, probe=probe)
            except DrtoolError:
                ev = None
            if ev is None:
                return {**row, "healthy": 0}
            row["healthy"] = 1 if st["status"] == "healthy" else 0
            row["rpo_achieved_seconds"] = st["last_backup_age_seconds"]
            row["copies_pending"] = sum(st["copies_pending"].values())
            success = []
            m = ev.newest
            if m is not None:
                done = clock.parse_iso(m["completed_at"])
                row["last_backup_timestamp_seconds"] = done.timestamp()
                row["last_backup_duration_seconds"] = (done - clock.parse_iso(m["started_at"])).total_seconds()
                row["last_backup_size_bytes"] = m["sizes"]["stored_bytes"]
                success.append(done.timestamp())
            ran = health.drills_that_ran(ev.records)  # a drill that could not run is no evidence either way
            if ran:
                r = ran[0]
                row["drill_rto_seconds"] = r.get("rto_seconds")
                row["drill_success"] = 1 if r.get("passed") else 0
                row["drill_last_timestamp_seconds"] = clock.parse_iso(r["started_at"]).timestamp()
                success += [clock.parse_iso(x["completed_at"]).timestamp() for x in ran if x.get("passed")][:1]
            row["last_success_timestamp_seconds"] = max(success) if success else None
            wal = st.get("wal_archive") or {}
            row["wal_archive_lag_seconds"] = wal.get("lag_seconds")
            row["wal_backlog_segments"] = wal.get("backlog")
            row["wal_gap"] = None if not wal else (1 if wal.get("gaps") else 0)
            now = clock.utcnow()
            row["compliant"] = int(self._report_section(p, ev, now - dt.timedelta(days=90), now,
                                                        self.ctx.store(p))["compliant"])  # fmt: skip
            return row

        return list(fanout.in_order(one, policies, fanout.readers(policies), "metrics"))

    def write_metrics(self, path: str, policies: list[Policy], invalid: Sequence[InvalidPolicy] = ()) -> None:
        """Write the textfile; a failure is reported and never fails the job that ran. Every policy
        file gets drtool_policy_valid{file=...}: 1, or 0 for an invalid one (which has no other figures)."""
        files = {str(p.source): True for p in policies} | {str(b.source): False for b in invalid}
        try:
            metrics.write(path, self.metrics_rows(policies), files)
        except OSError as e:
            self.ctx.warn(f"cannot write metrics file {path}: {e.strerror or e}")

    def report(self, policies: list[Policy], *, start, end) -> dict[str, Any]:
        """The compliance report document for these policies over [start, end], whole in memory
        (the CLI streams report_sections instead)."""
        sections = list(self.report_sections(policies, start=start, end=end))
        return reports.build(sections, start=start, end=end, now=clock.utcnow(), version=__version__)

    def report_sections(self, policies: list[Policy], *, start, end) -> Iterator[dict[str, Any]]:
        """The report's section of each policy, read from the store as it is asked for, a few
        policies at once: a fleet's report holds a few policies' evidence at a time."""

        def one(p: Policy) -> dict[str, Any]:
            store = self.ctx.store(p)
            ev = self._evidence(p, store)
            for problem in [*ev.problems, *ev.untrusted]:
                self.ctx.warn(problem)
            section = self._report_section(p, ev, start, end, store)
            section["ignored_untrusted"] = ev.untrusted  # what the figures leave out, and why
            if ev.untrusted:  # the figures hold without them, but someone wrote to the store who should not
                section["reasons"].append(f"{len(ev.untrusted)} object(s) no trusted key signed were ignored as "
                                          f"evidence: {'; '.join(ev.untrusted)}")  # fmt: skip
                section["compliant"] = False
            return section

        return fanout.in_order(one, policies, fanout.readers(policies), "report")

    # -- report signatures -------------------------------------------------------------------------------
    def report_signer(self, path: str) -> trust.Signer:
        """The --sign-key: an OpenSSH Ed25519 key (keygen --signing), or for one more version the
        PEM key 0.1 used (the signature is in SSH format either way)."""
        signer = self.ctx.load_signer(path, "--sign-key", allow_pem=True)
        with open(path, "rb") as f:
            if b"BEGIN OPENSSH PRIVATE KEY" not in f.read():
                self.ctx.warn(f"--sign-key {path}: PEM signing keys are deprecated; make an OpenSSH one with "
                          "'drtool keygen --signing --output FILE'")  # fmt: skip
        return signer

    @staticmethod
    def sign_report(signer: trust.Signer, data: bytes) -> bytes:
        return signer.sign(data, trust.NS_REPORT)

    def verify_report(self, file: str, *, policies: list[Policy], public_key_file: str | None) -> dict[str, Any]:
        """Check FILE.sig against the trusted keys of the policies and/or the --public-key file,
        never against the key inside the signature. UsageError (exit 2) without any trusted key;
        trust.Untrusted (exit 3) naming the file when the signature is missing or does not hold."""
        keys: list[sshsig.PublicKey] = []
        for p in policies:
            verifier = self.ctx.verifier(p)
            if verifier is None:
                raise UsageError(f"{p.source}: no [signing].trusted_keys to verify the report against")
            keys += verifier.keys
        if public_key_file:
            keys += _public_keys_from_file(public_key_file)
        if not keys:
            raise UsageError("no trusted key given: pass --policy (its [signing].trusted_keys) or --public-key FILE")
        sig_path = file + ".sig"
        try:
            with open(file, "rb") as f:
                data = f.read()
            with open(sig_path, "rb") as f:
                sig = f.read(sshsig.MAX_ARMORED + 1)
        except FileNotFoundError as e:
            if e.filename != sig_path:
                raise UsageError(f"{file}: no such file") from None
            raise trust.Untrusted(file, f"its signature {os.path.basename(sig_path)} is missing") from None
        except OSError as e:
            raise UsageError(f"{e.filename}: cannot read: {e.strerror}") from None
        if signing.is_legacy(sig):
            try:
                signer = signing.verify_legacy(data, sig, keys).fingerprint
            except signing.SigningError as e:
                raise trust.Untrusted(file, str(e)) from None
            self.ctx.warn(f"{sig_path} is in the old drtool signature format (deprecated, read until the next "
                      "version); sign reports with a key from 'drtool keygen --signing'")  # fmt: skip
            fmt = "drtool-0.1-json (deprecated)"
        else:
            signer = trust.Verifier(keys).verify(data, sig, trust.NS_REPORT, file)
            fmt = "sshsig"
        return {"file": file, "signature": sig_path, "signed_by": signer, "format": fmt, "namespace": trust.NS_REPORT}

    def _report_section(self, p: Policy, ev: Evidence, start, end, store: Store) -> dict[str, Any]:
        lock = f"{p.storage.object_lock_mode} {p.storage.object_lock_days} days" if p.storage.object_lock_days else None
        copies = [{"name": c.name, "url": c.url, "region": c.region} for c in p.copies]
        info = {
            "name": p.name,
            "drill_kind": p.drill.kind,
            "rpo_seconds": p.rpo,
            "rto_seconds": p.rto,
            "retention": {k: v for k, v in vars(p.retention).items() if v},
            "copies": copies,
            "storage": {"url": p.storage.url, "region": p.storage.region, "object_lock": lock, "copies": copies},
            "encryption": {
                "scheme": "age-v1-x25519",
                "recipients": [age.recipient_fingerprint(r) for r in p.recipients],
            },
        }
        pitr = None
        if p.pitr.enabled:  # the window and archive continuity, from one listing of <policy>/wal/
            pitr = walview.coverage(store, p.name, ev.backups, since=start, until=end, warn=self.ctx.warn)
            pitr = pitr or {"window": {}, "points": [], "worst_exact": False, "bound": walview.COVERAGE_BOUND}
        return reports.build_policy(
            policy=info, backups=ev.backups, drills=ev.records, drill_problems=ev.problems, schedule_state=ev.schedule,
            copies_pending={k: sorted(v) for k, v in ev.pending.items()}, start=start, end=end, pitr=pitr,
        )  # fmt: skip

    # -- check -----------------------------------------------------------------------------------------
    def _check_signing(self, policy: Policy, checks: list[dict[str, Any]], probe) -> None:
        """[signing]: the key_file loads; without trusted_keys, a warning that origin is not checked."""

        def signing() -> str:
            signer, verifier = self.ctx.signer(policy), self.ctx.verifier(policy)
            parts = [f"signing key {signer.source} loads ({signer.fingerprint})"] if signer else []
            if verifier:
                parts.append(f"{len(verifier.keys)} trusted key(s): {', '.join(verifier.fingerprints)}")
                if signer and signer.fingerprint not in verifier.fingerprints:
                    warning = (f"signing key {signer.source} ({signer.fingerprint}) is not among "
                               "[signing].trusted_keys: what this host writes would be untrusted where this policy "
                               "reads it")  # fmt: skip
                    self.ctx.warn(f"{policy.source}: {warning}")
                    checks.append({"check": "signing", "ok": True, "detail": "warning: " + warning})
            return "; ".join(parts)

        def origin() -> str:
            """Every backup signed by a trusted key; after a key left trusted_keys, its backups are named."""
            listing = catalog.scan(self.ctx.store(policy), policy.name, self.ctx.verifier(policy))
            if listing.untrusted:
                names = "; ".join(t.reason for t in listing.untrusted)
                raise IntegrityError(f"{len(listing.untrusted)} backup(s) not signed by a trusted key (kept, never "
                                     f"restored or counted): {names}")  # fmt: skip
            return f"all {len(listing.backups)} backup(s) signed by a trusted key"

        if policy.signing.key_file or policy.signing.trusted_keys:
            probe("signing", signing)
        if policy.signing.trusted_keys:
            probe("origin", origin)
        if not policy.signing.trusted_keys:
            warning = "origin of backups is not verified (no [signing].trusted_keys)"
            self.ctx.warn(f"{policy.source}: {warning}")
            checks.append({"check": "signing", "ok": True, "detail": "warning: " + warning})

    def check(self, policy: Policy, only: frozenset[str] | None = None) -> Outcome:
        """Probe every part a backup needs; the result lists each with ok and a detail, and the
        error is CheckFailed naming the probes that failed. `only`
        (jobs, as `run --only`) probes what those jobs need on this host: without backup, no
        database or pg_dump; without drill, the identity is not needed (nor looked for)."""
        backs_up = only is None or "backup" in only
        restores = only is None or "drill" in only
        checks: list[dict[str, Any]] = []

        def probe(name: str, fn: Callable[[], str]) -> None:
            try:
                checks.append({"check": name, "ok": True, "detail": fn()})
            except DrtoolError as e:
                checks.append({"check": name, "ok": False, "detail": str(e)})

        checks.append({"check": "policy", "ok": True, "detail": f"{policy.source} is valid"})
        for w in policy.warnings:
            checks.append({"check": "policy", "ok": True, "detail": "warning: " + w})
        snap_holder: dict[str, Any] = {}

        def database() -> str:
            db = self.ctx.source(policy)
            with postgres.exported_snapshot(db) as (_, snap):
                snap_holder["snap"] = snap
                return f"{db.label}: PostgreSQL {snap.server_version}, {format_size(snap.database_size)} on disk"

        def pg_dump() -> str:
            tool = pgtools.find_tool("pg_dump", policy.backup.pg_bin_dir)
            if "snap" in snap_holder:
                pgtools.require_compatible(tool, snap_holder["snap"])
            return f"{tool.path} {tool.version}"

        def store() -> str:
            s = self.ctx.store(policy)
            _check_region(s, policy.storage)
            key = f"{policy.name}/.drtool-check-{os.getpid()}"
            s.put(key, [b"drtool write probe\n"], if_absent=True)
            try:
                s.put(key, [b"second writer\n"], if_absent=True)
                honoured = False
            except PreconditionFailed:
                honoured = True
            s.delete(key)
            if not honoured:
                self.ctx.warn(f"{s.url} ignores conditional writes (If-None-Match): policy locks cannot keep two "
                          "hosts apart; run drtool from one host only")  # fmt: skip
                checks.append({"check": "storage", "ok": True, "detail": "warning: conditional writes are ignored"})
            lock = f"; Object Lock {policy.storage.object_lock_mode} for {policy.storage.object_lock_days} days, " \
                "bucket has Object Lock and versioning" if policy.storage.object_lock_days else ""  # fmt: skip
            return f"{s.url} is writable; conditional writes {'honoured' if honoured else 'IGNORED'}{lock}"

        def keys() -> str:
            for r in policy.recipients:
                age.parse_recipient(r)
            detail = f"{len(policy.recipients)} recipient(s)"
            if not restores:
                detail += f"; identity not needed for {', '.join(sorted(only or ()))}: not looked for"
            elif policy.identity_file:
                ids = self.ctx.identities(policy)
                if not {i.recipient for i in ids} & set(policy.recipients):
                    raise IdentityError(
                        f"identity file {policy.identity_file} matches none of "
                        "encryption.recipients: backups could not be restored with it"
                    )
                detail += f"; identity file {policy.identity_file} matches"
            else:
                detail += "; no identity file on this host (restore and deep verify need one)"
            return detail

        if backs_up:
            probe("database", database)
            probe("pg_dump", pg_dump)
        probe("storage", store)
        for c in policy.copies:

            def copy_target(c: StorageTarget = c) -> str:
                s = self.ctx.store(policy, target=c.name)
                _check_region(s, c)
                key = f"{policy.name}/.drtool-check-{os.getpid()}"
                put_bytes(s, key, b"drtool write probe\n")
                s.delete(key)
                region = f" in region {c.region}" if c.region else ""
                return f"copy target '{c.name}': {s.url} is writable{region}"

            if backs_up:
                probe(f"copy:{c.name}", copy_target)
        probe("keys", keys)
        self._check_signing(policy, checks, probe)
        if backs_up and policy.pitr.enabled:
            try:
                checks.extend(pitr_rows(policy, postgres.archive_settings(self.ctx.source(policy))))
            except DrtoolError as e:
                checks.append({"check": "pitr", "ok": False, "detail": str(e)})
        ok = all(c["ok"] for c in checks)
        result = {"policy": policy.name, "ok": ok, "checks": checks}
        error = None if ok else CheckFailed("; ".join(c["detail"] for c in checks if not c["ok"]))
        return Outcome(result, error)


def _public_keys_from_file(path: str) -> list[sshsig.PublicKey]:
    """--public-key: ssh-ed25519 lines (a .pub file, or an allowed_signers file), or the PEM
    public key of drtool 0.1. UsageError naming the file and line when it holds none."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise UsageError(f"--public-key {path}: cannot read: {e.strerror}") from None
    try:
        if b"BEGIN PUBLIC KEY" in data:
            return [sshsig.public_key_from_pem(data)]
        keys = []
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            start = words.index(sshsig.KEY_TYPE) if sshsig.KEY_TYPE in words else 0  # allowed_signers: principal first
            try:
                keys.append(sshsig.parse_public_key(" ".join(words[start:])))
            except sshsig.SignatureError as e:
                raise sshsig.SignatureError(f"line {n}: {e}") from None
    except sshsig.SignatureError as e:
        raise UsageError(f"--public-key {path}: {e}") from None
    if not keys:
        raise UsageError(f"--public-key {path}: holds no ssh-ed25519 public key")
    return keys


# -- [pitr] prerequisites ---------------------------------------------------------------------------


def pitr_rows(policy: Policy, server: postgres.ArchiveSettings) -> list[dict[str, Any]]:
    """One check row per archiving prerequisite this host can see: the server's settings, the role's
    REPLICATION, and the spool folder (when the data directory is on this host)."""
    rows: list[dict[str, Any]] = []

    def row(ok: bool, detail: str, warn: bool = False) -> None:
        rows.append({"check": "pitr", "ok": ok, "detail": ("warning: " if warn else "") + detail})

    level_ok = server.wal_level in ("replica", "logical")
    row(level_ok, f"wal_level = {server.wal_level}" + ("" if level_ok else "; WAL archiving needs replica or logical"))
    mode_ok = server.archive_mode in ("on", "always")
    row(mode_ok, f"archive_mode = {server.archive_mode}" + ("" if mode_ok else "; set it to on (needs a restart)"))
    if server.archive_command is None:
        row(True, "archive_command cannot be read by this role (pg_read_all_settings); not checked", warn=True)
    elif "wal push" not in server.archive_command:
        row(True, f"archive_command '{server.archive_command}' does not run 'drtool wal push --policy "
                  f"{policy.source} %p'", warn=True)  # fmt: skip
    else:
        row(True, "archive_command runs drtool wal push")
    row(server.replication, "the role may open replication connections (pg_basebackup)" if server.replication
        else "the role lacks REPLICATION: base backups will fail (ALTER ROLE ... REPLICATION)")  # fmt: skip
    rows.append(_spool_row(policy))
    return rows


def _spool_row(policy: Policy) -> dict[str, Any]:
    spool, pgdata = policy.pitr.spool_dir or "", policy.pitr.pgdata or ""
    try:
        owner = os.stat(pgdata)
    except OSError:
        detail = f"warning: pitr.pgdata {pgdata} is not on this host: spool_dir {spool} not checked"
        return {"check": "pitr", "ok": True, "detail": detail}
    try:
        st = os.stat(spool)
    except OSError as e:
        return {"check": "pitr", "ok": False, "detail": f"pitr.spool_dir {spool}: {e.strerror}; create it, owned by "
                "the cluster's OS user"}  # fmt: skip
    if st.st_uid == owner.st_uid:
        writable = st.st_mode & 0o300 == 0o300
    elif st.st_gid == owner.st_gid:
        writable = st.st_mode & 0o030 == 0o030
    else:
        writable = st.st_mode & 0o003 == 0o003
    if not os.path.isdir(spool) or not writable:
        return {"check": "pitr", "ok": False, "detail": f"pitr.spool_dir {spool} is not a folder the cluster's OS "
                f"user (uid {owner.st_uid}, owner of {pgdata}) can write"}  # fmt: skip
    return {"check": "pitr", "ok": True, "detail": f"pitr.spool_dir {spool} is writable by the cluster's OS user"}
