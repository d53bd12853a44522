"""The manifest as a typed record: one serialisation, one validating parser (no I/O)."""

from __future__ import annotations

import json

import pytest

from drtool.records import ManifestInvalid, parse_manifest, serialise_manifest

DOC = {
    "format": "drtool-backup-manifest", "version": 1, "id": "20261126T192709Z-b76a94", "policy": "orders",
    "database": "orders", "encoding": "UTF8", "source": "db1.internal:5432/orders", "host": "backup-host-1",
    "server_version": "15.18", "server_version_num": 150018, "pg_dump_version": "15.18",
    "recovery_point": "2026-11-26T19:27:09.721165Z", "started_at": "2026-11-26T19:27:09.700000Z",
    "completed_at": "2026-11-26T19:27:10.100368Z",
    "sizes": {"database_bytes": 26361191, "plain_bytes": 101022292, "compressed_bytes": 941000,
              "stored_bytes": 941383},
    "objects": [{"role": "dump", "key": "dump.zst.age", "size": 941383, "sha256": "ab" * 32}],
    "payload_format": "age-v1(zstd(pg_dump --format=custom --compress=0))",
    "compression": {"algorithm": "zstd", "level": 1},
    "encryption": {"scheme": "age-v1-x25519", "recipients": [{"recipient": "age1x", "fingerprint": "sha256:0"}]},
    "tables": {"public.orders": 200000}, "row_count_method": "dump-stream",
    "tool": {"name": "drtool", "version": "0.1.0"}, "future_field": {"kept": True},
}  # fmt: skip


def test_manifest_round_trips_unchanged_unknown_fields_included():
    raw = json.dumps(DOC).encode()
    m = parse_manifest(raw, "x")
    assert m.dump.sha256 == "ab" * 32 and m.sizes.stored_bytes == 941383
    assert json.loads(serialise_manifest(m)) == DOC


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"version": "1"}, "'version'"),
        ({"version": 2}, "newer"),
        ({"recovery_point": None}, "'recovery_point' is missing"),
        ({"objects": []}, "role 'dump'"),
        ({"objects": [{"role": "dump", "key": "../x", "size": 1, "sha256": "ab" * 32}]}, "leaves"),
        ({"objects": [{"role": "dump", "key": "d", "size": 1, "sha256": "xyz"}]}, "sha256"),
        ({"completed_at": "not a time"}, "ISO 8601"),
        ({"sizes": {"stored_bytes": -1, "plain_bytes": 1}}, "negative"),
        ({"sizes": {"stored_bytes": True, "plain_bytes": 1}}, "wrong type"),
        ({"tables": {"t": "many"}}, "row counts"),
    ],
)
def test_malformed_manifest_is_one_error_naming_the_object(change, needle):
    doc = {**DOC, **change}
    with pytest.raises(ManifestInvalid) as e:
        parse_manifest(json.dumps(doc).encode(), "s3://b/p/orders/backups/X/manifest.json")
    assert "s3://b/p/orders/backups/X/manifest.json" in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize("raw", [b"", b"[1]", b"{", "\xff".encode("latin-1"), b'{"format": "other"}'])
def test_garbage_is_one_error(raw):
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw, "where")
