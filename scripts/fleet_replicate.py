"""Grow a bench fleet to B backups per policy without making B real backups of each.

Making 100,000 real backups one by one takes hours; what list, status, report and prune cost
depends on how many backups a policy has, not on what is inside them. So each policy's real
backups (made by drtool) are replicated under new backup ids: the stored objects are copied
byte for byte, and a manifest with the new id and earlier times (one an hour, going back from
the oldest real backup) is written through drtool's own records and catalog code
(catalog.write_manifest; on a folder store the same bytes, written without fsync). Then the
catalog index is updated as a commit updates it (Context.update_index with the manifests just
written, so no manifest is read back).

The bench output says so: "replicated from N real backups".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drtool import catalog
from drtool.app import Context
from drtool.policy import Policy, load_policies
from drtool.records import Manifest, serialise_manifest
from drtool.storage import Store, get_bytes

THREADS = 8  # policies replicated at once (one shared S3 client; boto3 clients are thread-safe)


def replicate_fleet(folder: Path, backups: int, threads: int = THREADS) -> dict[str, int]:
    """Bring every policy of the folder to `backups` backups; {"real": ..., "replicated": ...}
    summed over the fleet (real: the backups drtool made, replicated: those made here, in total)."""
    app = Context()
    policies = load_policies(folder)
    with ThreadPoolExecutor(threads) as pool:
        counts = list(pool.map(lambda p: _replicate(app, p, backups), policies))
    return {"real": sum(c[0] for c in counts), "replicated": sum(c[1] for c in counts)}


def _replicate(app: Context, policy: Policy, backups: int) -> tuple[int, int]:
    store = app.store(policy)
    listing = catalog.scan(store, policy.name)
    have = [b.record for b in listing.backups]
    real = [m for m in have if not m.extra.get("bench_replica_of")]
    if not real:
        raise SystemExit(f"bench: policy {policy.name} has no real backup to replicate")
    oldest = min(m.started_at for m in have)
    dumps = {b.id: get_bytes(store, b.prefix + b.dump["key"]) for b in listing.backups
             if not b.record.extra.get("bench_replica_of")}  # fmt: skip
    written = []
    for i in range(backups - len(have)):
        src = real[i % len(real)]
        written.append(_copy(store, policy.name, src, dumps[src.id], oldest - dt.timedelta(hours=i + 1)))
    if written:
        app.update_index(policy, store, written=written)
    return len(real), len(have) - len(real) + len(written)


def _copy(store: Store, policy: str, src: Manifest, dump: bytes, started: dt.datetime) -> Manifest:
    """The replica of `src` started at `started`: its dump object first, its manifest last, as a
    backup commits."""
    took = src.completed_at - src.started_at
    m = dataclasses.replace(
        src,
        id=catalog.new_backup_id(started),
        started_at=started,
        recovery_point=started + (src.recovery_point - src.started_at),
        completed_at=started + took,
        extra={**src.extra, "bench_replica_of": src.id},  # kept by readers (unknown fields stay in extra)
    )
    if store.url.startswith("file://"):  # the same bytes, without the two fsyncs of each put (hours at 100,000)
        root = Path(store.url.removeprefix("file://"))
        prefix = root / catalog.backup_prefix(policy, m.id)
        Path(f"{prefix}{catalog.DUMP_NAME}").write_bytes(dump)
        Path(f"{prefix}{catalog.MANIFEST_NAME}").write_bytes(serialise_manifest(m))
        return m
    store.put(catalog.dump_key(policy, m.id), [dump], size_hint=len(dump))
    catalog.write_manifest(store, m)
    return m
