"""Use case: take a backup (pg_dump -> zstd -> age -> store, manifest last) and copy it."""

from __future__ import annotations

import functools
import socket
from typing import Any

from .. import __version__, catalog, catalog_index, clock, ledger, pgtools, pipeline, postgres, trust
from ..crypto import age
from ..dumpscan import DamagedArchive, UnsupportedArchive, scanner_for
from ..durations import format_size
from ..errors import DatabaseError, DrtoolError, IntegrityError, UsageError
from ..policy import Policy, StorageTarget
from ..records import Manifest, ManifestObject, Sizes, manifest_to_dict
from ..storage import ObjectInfo, ServerCopy, Store
from .base import _check_region
from .context import UseCase


def discard_uncommitted(store: Store, key: str) -> None:
    """Delete what a backup that did not commit wrote, as far as the store lets it: the failure
    that stopped the backup is the one to report. A dump written under Object Lock, or a store
    that refuses the delete, leaves it to prune's cleanup of incomplete backups."""
    try:
        store.delete(key)
    except DrtoolError:
        pass


class BackupJobs(UseCase):
    # -- backup ----------------------------------------------------------------------------------
    def backup(self, policy: Policy) -> dict[str, Any]:
        """Take one backup now; returns its manifest. Nothing is listed unless everything worked.

        If a table is dropped between our snapshot and pg_dump's lock on it, pg_dump fails; the
        attempt leaves nothing behind and one more attempt runs with a fresh snapshot.
        """
        with self.ctx.reported(policy, "backup") as outcome:
            store = self.ctx.store(policy)
            with self.ctx.locked(policy, store, "backup"):
                m = self.backup_locked(policy, store)
            outcome.update(summary=f"backup {m['id']} ({format_size(m['sizes']['stored_bytes'])} stored)",
                           details={"backup_id": m["id"], "copies": m.get("copies")})  # fmt: skip
            return m

    def backup_locked(self, policy: Policy, store: Store,
                      seen: catalog_index.IndexRead | None = None) -> dict[str, Any]:  # fmt: skip
        """backup() for a caller that holds the policy's lock on `store` (run) and reports itself.
        `seen`: the catalog index the caller read under that lock; the commit merges into it (one
        LIST and one GET fewer, see catalog_index.update)."""
        self.ctx.signer(policy)  # a signing key that does not load fails the backup before any dump
        try:
            manifest = self._backup_once(policy, store, seen)
        except pgtools.ConcurrentDDL as e:
            self.ctx.warn(f"backup {policy.name}: {e}; a table was dropped while the backup started, retrying once")
            manifest = self._backup_once(policy, store, seen)
        if policy.copies:
            manifest = {**manifest, "copies": self.copy_pending(policy, store, new=manifest["id"])}
        return manifest

    # -- copies: each committed backup, replicated to every [[storage.copies]] target ----------------
    def copy_pending(self, policy: Policy, primary: Store, new: str | None = None) -> dict[str, str]:
        """(Under the policy's lock.) Copy `new` and every earlier copy that failed to each copy
        target; a failure is kept in the store's state and retried on the next run. Returns
        {target: "ok" | error}."""
        state = ledger.read_copy_state(primary, policy.name, self.ctx.verifier(policy), self.ctx.warn)
        outcome: dict[str, str] = {}
        for target in policy.copies:
            pending = state.pending.setdefault(target.name, {})
            if new:
                pending.setdefault(new, {"attempts": 0})
            if not pending:
                continue
            try:
                dst = self.ctx.store(policy, target=target.name)
                _check_region(dst, target)
                for bid in sorted(pending):
                    self._copy_one(policy, primary, dst, target, bid)
                    del pending[bid]
                outcome[target.name] = "ok"
            except DrtoolError as e:
                for info in pending.values():
                    info.update(
                        attempts=info.get("attempts", 0) + 1, last_error=str(e), last_attempt=clock.iso(clock.utcnow())
                    )
                outcome[target.name] = f"failed: {e}"
                self.ctx.warn(f"copy to '{target.name}' failed, will retry on the next run: {e}")
        ledger.write_copy_state(primary, policy.name, state, self.ctx.signer(policy))
        return outcome

    def _copy_one(self, policy: Policy, src: Store, dst: Store, target: StorageTarget, backup_id: str) -> None:
        """Stream one backup's objects to dst, checking each SHA-256 on the way; manifest last,
        signed by this host. With trusted keys the source manifest must be trusted (Untrusted
        otherwise): re-signing a planted one would launder it."""
        try:
            backup = catalog.read_manifest(src, policy.name, backup_id, self.ctx.verifier(policy))
        except UsageError:
            return  # pruned before it could be copied: nothing to do
        prefix = backup.prefix  # the copy keeps the source's layout
        method = "streamed"
        for o in backup.record.objects:
            obj = o.as_dict()
            key = prefix + obj["key"]
            if isinstance(dst, ServerCopy) and dst.copy_from(src, key, obj["size"], retain=True):
                method = "server-side"  # same endpoint: the provider copies; the size is checked
                continue
            with src.get(key) as raw:
                reader = pipeline.HashingReader(raw)
                dst.put(key, iter(functools.partial(reader.read, 1 << 20), b""), size_hint=obj["size"], retain=True)
            if reader.hexdigest() != obj["sha256"]:
                discard_uncommitted(dst, key)
                raise IntegrityError(f"backup {backup_id}, object {src.url}/{key}: SHA-256 expected {obj['sha256']}, "
                                     f"read {reader.hexdigest()} while copying; not copied")  # fmt: skip
        copy = backup.record.with_copy({"target": target.name, "source": src.url,
                                        "copied_at": clock.iso(clock.utcnow()), "method": method})  # fmt: skip
        catalog.write_manifest(dst, copy, self.ctx.signer(policy), prefix)  # the copy's own commit marker, written last
        self.ctx.update_index(policy, dst, written=[copy])

    def _backup_once(self, policy: Policy, store: Store, seen: catalog_index.IndexRead | None) -> dict[str, Any]:
        """One attempt; returns the manifest's JSON document."""
        started = clock.utcnow()
        backup_id = catalog.new_backup_id(started)
        db = self.ctx.source(policy)
        pg_dump = pgtools.find_tool("pg_dump", policy.backup.pg_bin_dir)
        key = catalog.dump_key(policy.name, backup_id)
        with postgres.exported_snapshot(db) as (conn, snap):
            pgtools.require_compatible(pg_dump, snap)
            scanner = scanner_for(snap.database_size)
            stats = pipeline.EncodeStats()
            stream = pipeline.encode(
                pgtools.pg_dump_stream(pg_dump, db, snap.snapshot_id),
                recipients=policy.recipients,
                level=policy.backup.zstd_level,
                threads=policy.backup.zstd_threads,
                stats=stats,
                observe=scanner.feed,
                progress=self._backup_progress(policy, store, snap.database_size),
            )
            try:
                stored = store.put(key, stream, size_hint=snap.database_size * 2, retain=True)
            except BaseException:
                scanner.abort()
                raise
            try:
                try:
                    info = scanner.finish()
                    tables, method = info.row_counts(), "dump-stream"
                except DamagedArchive as e:
                    raise DatabaseError(f"database {db.label}: pg_dump exited 0, but its archive is not whole: {e}; "
                                        "nothing was committed") from None  # fmt: skip
                except UnsupportedArchive as e:
                    self.ctx.warn(f"counting rows with count(*) in the dump's snapshot: {e}")
                    tables, method = postgres.count_rows(conn), "count(*)"
                completed = clock.utcnow()
                manifest = Manifest(
                    id=backup_id,
                    policy=policy.name,
                    database=snap.database,
                    encoding=snap.encoding,
                    source=db.label,
                    host=socket.gethostname(),
                    server_version=snap.server_version,
                    server_version_num=snap.server_version_num,
                    pg_dump_version=pg_dump.version,
                    recovery_point=snap.recovery_point,
                    started_at=started,
                    completed_at=completed,
                    sizes=Sizes(
                        database_bytes=snap.database_size,
                        plain_bytes=stats.plain_bytes,
                        compressed_bytes=stats.compressed_bytes,
                        stored_bytes=stored.size,
                    ),
                    objects=(ManifestObject("dump", catalog.DUMP_NAME, stored.size, stats.sha256),),
                    payload_format=catalog.PAYLOAD_FORMAT,
                    compression={"algorithm": "zstd", "level": policy.backup.zstd_level},
                    encryption={
                        "scheme": "age-v1-x25519",
                        "recipients": [
                            {"recipient": r, "fingerprint": age.recipient_fingerprint(r)} for r in policy.recipients
                        ],
                    },
                    tables=tables,
                    row_count_method=method,
                    tool={"name": "drtool", "version": __version__},
                )
                self.ctx.ensure_lock_held(policy)  # a job that lost its lock commits nothing
            except BaseException:
                discard_uncommitted(store, key)
                raise
            wrote = self.commit(store, manifest, key, self.ctx.signer(policy))
            self.ctx.update_index(policy, store, written=[manifest], seen=seen if wrote else None,
                                  added=[stored, *wrote])  # fmt: skip
        return manifest_to_dict(manifest)

    def _backup_progress(self, policy: Policy, store: Store, database_size: int) -> pipeline.Progress:
        """Progress counts plain dump bytes: the previous backup's plain size predicts them; the
        first backup has only the database's on-disk size (indexes and bloat included), an estimate.
        Nothing is read when no progress is shown (run, --quiet, no terminal): a LIST and a GET saved."""
        if not self.ctx.progress_shown():
            return self.ctx.progress(f"backup {policy.name}", None)
        previous = catalog.newest_manifest(store, policy.name, self.ctx.verifier(policy))
        if previous is not None and previous.sizes.plain_bytes:
            return self.ctx.progress(f"backup {policy.name}", previous.sizes.plain_bytes)
        return self.ctx.progress(f"backup {policy.name}", database_size, estimate=True)

    def commit(self, store: Store, manifest: Manifest, dump: str,
               signer: trust.Signer | None = None) -> list[ObjectInfo]:  # fmt: skip
        """Write the manifest, the commit marker, last; returns what was written (signature
        first), or [] when a lost reply was found to have landed. Once its write was attempted the
        dump is deleted only when a read proves the manifest absent: a write whose reply was lost
        may have landed, and deleting the dump would leave a listed backup with no data."""
        where = f"{store.url}/{catalog.manifest_key(manifest.policy, manifest.id)}"
        try:
            return catalog.write_manifest(store, manifest, signer)  # its signature first, when signing
        except DrtoolError as e:
            failure = e
        try:
            stored = catalog.stored_manifest(store, manifest.policy, manifest.id)
        except DrtoolError as e:
            raise DrtoolError(f"backup {manifest.id}: writing {where} failed ({failure}), and reading it back "
                              f"failed too ({e}); its objects are left in place: `drtool list` will show "
                              "whether it committed, and prune cleans up if it did not") from None  # fmt: skip
        if stored == catalog.serialise_manifest(manifest):
            self.ctx.warn(f"backup {manifest.id}: the store's reply to writing {where} was lost, but the manifest "
                      "is stored: the backup committed")  # fmt: skip
            return []
        if stored is not None:
            raise DrtoolError(f"backup {manifest.id}: writing {where} failed ({failure}) and the store holds a "
                              "different manifest there; objects left in place")  # fmt: skip
        discard_uncommitted(store, dump)
        raise failure
