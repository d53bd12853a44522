"""Use cases: physical base backups (pg_basebackup -> zstd -> age -> store, manifest last), the
restore of one into an empty data directory with its recovery configuration, and `wal fetch`
(restore_command) with read-ahead into a spool (docs/pitr.md)."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import socket
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import (
    __version__,
    basetar,
    catalog,
    clock,
    fetchspool,
    ledger,
    pgtools,
    pipeline,
    postgres,
    walarchive,
    walnames,
)
from ..crypto import age
from ..errors import DatabaseError, DrtoolError, IntegrityError, NotFound, UsageError
from ..policy import Policy
from ..records import Manifest, ManifestObject, PhysicalInfo, Sizes, manifest_to_dict
from ..storage import ObjectInfo, Store
from . import datadir
from .backup import BackupJobs, discard_uncommitted
from .context import Context, UseCase
from .restore import RestoreJobs

BASE_NAME = "base.tar.zst.age"
BASE_PAYLOAD_FORMAT = "age-v1(zstd(pg_basebackup --format=tar --wal-method=none))"
WAL_WAIT_SECONDS = 60  # how long a base backup waits for the archiver to store the WAL it needs


@dataclass(frozen=True)
class StartedBase:
    """A base backup under way: pg_basebackup runs, nothing is read or stored yet."""

    db: postgres.Conninfo
    tool: pgtools.Tool
    stream: pgtools.StartedBaseBackup
    at: dt.datetime


class PhysicalJobs(UseCase):
    """Base backups, their restore and wal fetch. A base backup commits its manifest as a logical
    one does and a restore finds its backup as a logical one does: it is given those use cases."""

    def __init__(self, ctx: Context, *, backups: BackupJobs, restores: RestoreJobs) -> None:
        super().__init__(ctx)
        self.backups, self.restores = backups, restores

    # -- backup --physical ---------------------------------------------------------------------------
    def backup_physical(self, policy: Policy) -> dict[str, Any]:
        """Take one base backup now; returns its manifest. Listed only once the tar is stored and
        every WAL segment from its start to its end is in the archive."""
        with self.ctx.reported(policy, "base") as outcome:
            # pg_basebackup starts first: its checkpoint and first pieces overlap opening the store
            # (boto3, HeadBucket) and taking the lock; a lock held elsewhere kills it unread. With
            # --lock-wait the lock comes first, so a wait never holds a backup open on the server.
            started = None if self.ctx.lock_wait else self.start_base(policy)
            try:
                store = self.ctx.store(policy)
                with self.ctx.locked(policy, store, "base"):
                    m = self.base_backup_locked(policy, store, started)
            finally:
                if started is not None:
                    started.stream.pieces.close()  # not read (refused): kills pg_basebackup; else a no-op
            outcome.update(summary=f"base backup {m['id']} ({m['sizes']['stored_bytes']} bytes stored)",
                           details={"backup_id": m["id"]})  # fmt: skip
            return m

    def start_base(self, policy: Policy) -> StartedBase:
        """pg_basebackup running for the policy's database (after the checks that need no server)."""
        if not policy.pitr.enabled:
            raise UsageError(f"{policy.source}: base backups need [pitr] enabled = true (and WAL archiving): "
                             "without the WAL a base backup cannot be restored")  # fmt: skip
        db = self.ctx.source(policy)
        tool = pgtools.find_tool("pg_basebackup", policy.backup.pg_bin_dir)
        return StartedBase(db, tool, pgtools.start_basebackup(tool, db), clock.utcnow())

    def base_backup_locked(self, policy: Policy, store: Store, started: StartedBase | None = None) -> dict[str, Any]:
        started = started or self.start_base(policy)
        try:
            return self._base_backup(policy, store, started)
        finally:
            started.stream.pieces.close()  # stopped early: kills pg_basebackup; read to the end: a no-op

    def _base_backup(self, policy: Policy, store: Store, started: StartedBase) -> dict[str, Any]:
        db, tool = started.db, started.tool
        signer = self.ctx.signer(policy)
        cluster = postgres.cluster_info(db)
        if cluster.extra_tablespaces:
            raise DatabaseError(f"database {db.label}: base backups of clusters with tablespaces are not supported "
                                f"(found: {', '.join(cluster.extra_tablespaces)}); use logical backups for this "
                                "cluster")  # fmt: skip
        if tool.major < pgtools.server_major(cluster.server_version_num):
            raise DatabaseError(f"pg_basebackup {tool.version} ({tool.path}) is older than the server "
                                f"({cluster.server_version})")  # fmt: skip
        started_at = started.at
        backup_id = catalog.new_backup_id(started_at)
        key = catalog.backup_prefix(policy.name, backup_id) + BASE_NAME
        scanner = basetar.TarScanner()
        stats = pipeline.EncodeStats()
        stream = pipeline.encode(
            started.stream.pieces,
            recipients=policy.recipients,
            level=policy.backup.zstd_level,
            threads=policy.backup.zstd_threads,
            stats=stats,
            observe=scanner.feed,
            progress=self.ctx.progress(f"base backup {policy.name}", cluster.size or None),
            stop_source=started.stream.kill,  # pipelined: zstd and age+SHA-256 in threads of their own
        )
        try:  # the tar is about the cluster's size; the hint sizes multipart parts for it
            stored = store.put(key, stream, size_hint=cluster.size * 2 or None, retain=True)
        except basetar.BaseTarInvalid as e:
            raise DatabaseError(f"database {db.label}: pg_basebackup's output is not a base backup tar: {e}; "
                                "nothing was committed") from None  # fmt: skip
        finally:
            stream.close()  # stopped early: stops pg_basebackup, then joins the stage threads
        finished = clock.utcnow()  # pg_basebackup's stream ended with the upload
        try:
            info = self._physical_info(db, scanner, cluster, started_at)
            last = self._wait_for_wal(store, policy, info, backup_id)
            completed = clock.utcnow()
            # the backup is consistent once its last segment is complete: that segment's end time (on the
            # server's clock, as the window's latest end is) never falls after the window it opens ends
            info = PhysicalInfo(**{**vars(info), "end_time": _completed_at(last) or finished})
            manifest = Manifest(
                id=backup_id, policy=policy.name, database=db.dbname, source=db.label, host=socket.gethostname(),
                server_version=cluster.server_version, server_version_num=cluster.server_version_num,
                pg_dump_version=tool.version, recovery_point=info.end_time, started_at=started_at,
                completed_at=completed,
                sizes=Sizes(plain_bytes=stats.plain_bytes, compressed_bytes=stats.compressed_bytes,
                            stored_bytes=stored.size, database_bytes=cluster.size),
                objects=(ManifestObject("base", BASE_NAME, stored.size, stats.sha256),),
                tables={}, payload_format=BASE_PAYLOAD_FORMAT,
                compression={"algorithm": "zstd", "level": policy.backup.zstd_level},
                encryption={"scheme": "age-v1-x25519", "recipients": [
                    {"recipient": r, "fingerprint": age.recipient_fingerprint(r)} for r in policy.recipients]},
                tool={"name": "drtool", "version": __version__}, kind="physical", physical=info,
            )  # fmt: skip
            self.ctx.ensure_lock_held(policy)  # a job that lost its lock commits nothing
        except BaseException:
            discard_uncommitted(store, key)
            raise
        self.backups.commit(store, manifest, key, signer)
        self.ctx.update_index(policy, store, written=[manifest])  # as a logical commit does: readers trust it
        return manifest_to_dict(manifest)

    @staticmethod
    def _physical_info(db: postgres.Conninfo, scanner: basetar.TarScanner, cluster: postgres.ClusterInfo,
                       started: dt.datetime) -> PhysicalInfo:  # fmt: skip
        try:
            tar = scanner.finish()
            rng = basetar.backup_range(tar)
        except basetar.BaseTarInvalid as e:
            raise DatabaseError(f"database {db.label}: pg_basebackup's output is not a base backup: {e}; "
                                "nothing was committed") from None  # fmt: skip
        if tar.pg_control_head and walnames.sysid_of_pg_control(tar.pg_control_head) != cluster.sysid:
            raise DatabaseError(f"database {db.label}: the base backup's pg_control has system identifier "
                                f"{walnames.sysid_of_pg_control(tar.pg_control_head)}, the server said "
                                f"{cluster.sysid}; nothing was committed")  # fmt: skip
        return PhysicalInfo(
            sysid=str(cluster.sysid), timeline=rng.timeline, start_lsn=rng.start_lsn, end_lsn=rng.end_lsn,
            wal_segment_size=cluster.wal_segment_size, pg_version=str(pgtools.server_major(cluster.server_version_num)),
            start_time=rng.start_time or started, end_time=started,
        )  # fmt: skip

    def _wait_for_wal(self, store: Store, policy: Policy, info: PhysicalInfo, backup_id: str) -> ObjectInfo | None:
        """Every segment from the backup's start to its end must be archived before it is listed.
        pg_basebackup already waited for PostgreSQL's archiver; the wait here covers an archiver
        that acknowledged late (bounded: WAL_WAIT_SECONDS). Returns the last segment's object."""
        deadline = time.monotonic() + WAL_WAIT_SECONDS
        last = None
        for seg in needed_segments(info):
            key = walnames.key_for(policy.name, info.sysid, seg.name)
            while True:
                try:
                    last = store.stat(key)
                    break
                except NotFound:
                    if time.monotonic() > deadline:
                        raise DrtoolError(
                            f"base backup {backup_id}: WAL segment {seg.name} ({store.url}/{key}) is not in the "
                            f"store {WAL_WAIT_SECONDS} s after the backup ended; is archive_command "
                            "'drtool wal push' working (drtool wal status)? nothing was committed"
                        ) from None
                    time.sleep(0.5)
        return last

    # -- restore --pgdata ------------------------------------------------------------------------------
    def restore_physical(
        self,
        policy: Policy,
        pgdata: str,
        *,
        to_time: dt.datetime | None = None,
        backup_id: str | None = None,
        owner: str | None = None,
        from_copy: str | None = None,
        drtool: str | None = None,
    ) -> dict[str, Any]:
        """Restore a base backup into the empty folder `pgdata` and configure recovery to `to_time`
        (None: to the end of the archive). The operator starts the server (the command is returned).
        `drtool`: the program restore_command runs (default: this drtool)."""
        target_dir = Path(os.path.abspath(pgdata))
        uid, gid, user = datadir.owner_ids(owner)
        command = datadir.drtool_for_server(drtool)
        store = self.ctx.store(policy, target=from_copy)
        backup = self.choose_base(store, policy, backup_id, to_time, from_copy)
        info = backup.record.physical
        assert info is not None  # a physical manifest always has it
        if to_time is not None:
            self._check_wal_reaches(store, policy, info, to_time)
        identities = self.ctx.identities(policy)
        if uid is not None:
            for path, what in ((policy.source, "the policy file"), (policy.identity_file, "the identity file")):
                if path and not datadir.readable_by(Path(path), uid, gid):
                    self.ctx.warn(f"{path} ({what}) is not readable by user {user}, who runs restore_command: "
                              "recovery will stop at the first WAL fetch until it is")  # fmt: skip
        verify_tool = pgtools.find_tool("pg_verifybackup", policy.backup.pg_bin_dir)
        created = datadir.prepare_empty_dir(target_dir)
        started, t0 = clock.utcnow(), clock.monotonic()
        key = backup.prefix + backup.dump["key"]
        where = f"backup {backup.id}, object {store.url}/{key}"
        try:
            extracted = self.extract(store, key, backup, identities, where, target_dir)
            pgtools.verify_backup(verify_tool, target_dir)
            spool = self._fetch_spool(policy, uid, gid)
            recovery = datadir.restore_command(command, policy, spool)
            datadir.write_recovery_config(target_dir, recovery, backup.id, to_time)
            if uid is not None:
                datadir.chown_tree(target_dir, uid, gid)
        except BaseException:
            datadir.empty_dir(target_dir, remove=created)
            raise
        bin_dir, _ = pgtools.find_server_bin(int(info.pg_version), policy.drill.pg_bin_dir)
        log_file = shlex.quote(str(target_dir / "restore.log"))
        start = f"{bin_dir / 'pg_ctl'} -D {shlex.quote(str(target_dir))} -l {log_file} start"
        if os.geteuid() == 0:
            start = f"runuser -u {user} -- {start}"
        return {
            "backup": backup.id,
            "pgdata": str(target_dir),
            "target_time": clock.iso(to_time) if to_time else None,
            "target": "time" if to_time else "latest",
            "backup_end_time": clock.iso(info.end_time),
            "timeline": info.timeline,
            "owner": user,
            "started_at": clock.iso(started),
            "completed_at": clock.iso(clock.utcnow()),
            "restore_seconds": round(clock.monotonic() - t0, 3),
            "bytes_restored": extracted,
            "verified": "pg_verifybackup",
            "start_command": start,
        }

    def choose_base(self, store: Store, policy: Policy, backup_id: str | None, to_time: dt.datetime | None,
                     from_copy: str | None) -> catalog.Backup:  # fmt: skip
        """The named base backup, or the newest one (not known to be damaged) that ended before
        `to_time`; an error naming the earliest restorable time when every one ended after it."""
        if backup_id or to_time is None:
            b = self.restores.find_backup(store, policy, backup_id, from_copy, kind="physical")
            if to_time is not None and b.record.physical and b.record.physical.end_time > to_time:
                raise UsageError(f"base backup {b.id} ends at {clock.iso(b.record.physical.end_time)}, after "
                                 f"--to-time {clock.iso(to_time)}; pick an earlier backup or a later time")  # fmt: skip
            return b
        verifier = self.ctx.verifier(policy)
        damaged = {} if from_copy else ledger.read_checks(store, policy.name, verifier, self.ctx.warn).reasons()
        bases = [b for b in catalog.scan(store, policy.name, verifier).backups
                 if b.record.is_physical and not b.damaged and b.id not in damaged]  # fmt: skip
        if not bases:
            raise DrtoolError(f"{store.url}: policy '{policy.name}' has no complete base backup yet")
        fits = [b for b in bases if b.record.physical.end_time <= to_time]  # type: ignore[union-attr]
        if not fits:
            oldest = min(bases, key=lambda b: b.record.physical.end_time)  # type: ignore[union-attr]
            raise UsageError(f"--to-time {clock.iso(to_time)} is before the oldest base backup ({oldest.id}, "
                             f"restorable from {clock.iso(oldest.record.physical.end_time)}); "  # type: ignore[union-attr]
                             "choose a later time")  # fmt: skip
        return max(fits, key=lambda b: b.record.physical.end_time)  # type: ignore[union-attr]

    def _check_wal_reaches(self, store: Store, policy: Policy, info: PhysicalInfo, to_time: dt.datetime) -> None:
        """A target later than the newest archived WAL cannot be reached: name the latest time that can."""
        newest = newest_archived(store, policy, info.sysid, info.wal_segment_size)
        if newest is None:
            raise DrtoolError(f"{store.url}: no WAL is archived for policy '{policy.name}' (system identifier "
                              f"{info.sysid}); a base backup alone cannot be restored to a time")  # fmt: skip
        name, end = newest
        if end is not None and to_time > end:
            raise UsageError(f"--to-time {clock.iso(to_time)} is after the newest archived WAL ({name}, completed "
                             f"{clock.iso(end)}); the latest restorable time is {clock.iso(end)}, or use "
                             "--to-latest")  # fmt: skip

    def extract(self, store: Store, key: str, backup: catalog.Backup, identities, where: str, target: Path) -> int:
        """Stream the base tar into `target`: decrypted and decompressed on the way, every member
        checked by tarfile's 'data' filter (no absolute paths, no '..', no links out, no devices)."""
        try:
            store.stat(key)
        except NotFound:
            raise IntegrityError(f"{where}: object is missing; this backup cannot be restored") from None
        reader = datadir.PiecesReader(self.ctx.decoded(store, key, backup, identities, where))
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    datadir.extract_member(tar, member, target)
        except datadir.UNSAFE_MEMBER as e:
            raise IntegrityError(f"{where}: refused to extract: {e}") from None
        except tarfile.TarError as e:
            raise IntegrityError(f"{where}: not a readable tar: {e}") from None
        return reader.size

    def _fetch_spool(self, policy: Policy, uid: int | None, gid: int | None) -> Path | None:
        """<spool_dir>/fetch, emptied: what an earlier restore fetched ahead must not be served
        to this one."""
        if not policy.pitr.spool_dir:
            return None
        spool = Path(policy.pitr.spool_dir)
        fetch = spool / "fetch"
        try:
            spool.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.rmtree(fetch, ignore_errors=True)
            fetch.mkdir(mode=0o700)
            if uid is not None:
                for p in (spool, fetch):
                    os.chown(p, uid, gid)  # type: ignore[arg-type]
        except OSError as e:
            raise UsageError(f"pitr.spool_dir {spool}: cannot prepare {fetch}: {e.strerror}") from None
        return spool

    # -- wal fetch (restore_command) -----------------------------------------------------------------
    def wal_fetch(self, policy: Policy, name: str, dest: str, spool: str | None = None) -> bool:
        """Write the archived WAL file `name` to `dest`: True when written, False when it is not
        archived. With a spool, a segment the read-ahead process already downloaded is a rename
        (drtool/app/walahead.py keeps the next `pitr.prefetch` ones there; the thin `wal fetch`,
        drtool/walget.py, starts it). A miss is never cached."""
        target = Path(dest)
        if not target.is_absolute():
            target = Path.cwd() / target  # PostgreSQL runs restore_command in the data directory
        if spool and walnames.kind_of(name) == "segment":
            try:
                if fetchspool.serve(fetchspool.ahead_dir(Path(spool)), name, target):
                    return True
            except OSError:
                pass  # the store has it too
        return walarchive.fetch_file(self.ctx.store(policy), policy, self.ctx.identities(policy), name, target)


def _completed_at(segment: ObjectInfo | None) -> dt.datetime | None:
    """When an archived segment was completed: its `end` metadata (the file's mtime on the server),
    else when the store got it; as the restorable window reads it (walview.end_time)."""
    if segment is None:
        return None
    end = segment.metadata.get("end")
    try:
        return clock.parse_iso(end) if end else segment.modified
    except ValueError:
        return segment.modified


def needed_segments(info: PhysicalInfo) -> list[walnames.Segment]:
    """The WAL segments from a base backup's start LSN to its end LSN (the end's own segment
    holds the byte before it), on the backup's timeline."""
    start = walnames.segment_of(walnames.parse_lsn(info.start_lsn), info.timeline, info.wal_segment_size)
    end_lsn = walnames.parse_lsn(info.end_lsn)
    end = walnames.segment_of(max(end_lsn - 1, walnames.parse_lsn(info.start_lsn)), info.timeline,
                              info.wal_segment_size)  # fmt: skip
    return walnames.segments_between(start, end)


def newest_archived(
    store: Store, policy: Policy, sysid: str, segment_size: int
) -> tuple[str, dt.datetime | None] | None:
    """(name, completed time) of the newest archived WAL segment (highest position, then
    timeline), from its object metadata `end`; None when nothing is archived."""
    best: tuple[int, int, str, str] | None = None
    for obj in walarchive.archived(store, policy, sysid):
        name = walnames.name_of_key(obj.key)
        base = name[:24]
        if walnames.kind_of(name) not in ("segment", "partial"):
            continue
        seg = walnames.parse_segment(base, segment_size)
        rank = (seg.number, seg.timeline, name, obj.key)
        if best is None or rank > best:
            best = rank
    if best is None:
        return None
    end = store.stat(best[3]).metadata.get("end")
    return best[2], clock.parse_iso(end) if end else None
